//! Security descriptors and owner checks for the kernel objects of a segment (issue 11).
//!
//! Every section and wake semaphore this crate creates gets an explicit descriptor built from
//! the Unix permission bits the caller passes (`MmfOptions::mode`, `FrameSpec::mode`), instead
//! of the token's default DACL:
//!
//! | mode bits | trustee (ACE SID)                | section rights                                  | semaphore rights |
//! |-----------|----------------------------------|-------------------------------------------------|------------------|
//! | owner     | the creating token's user        | `SECTION_ALL_ACCESS`, whatever the bits say     | `SEMAPHORE_ALL_ACCESS` |
//! | group     | the creating token's primary group | by the bits, as below                         | by the bits |
//! | other     | Everyone (`S-1-1-0`)             | by the bits, as below                           | by the bits |
//! | `r`       |                                  | `SECTION_MAP_READ \| SECTION_QUERY \| READ_CONTROL` | `SYNCHRONIZE \| READ_CONTROL` (waiters) |
//! | `w`       |                                  | the `r` rights and `SECTION_MAP_WRITE`          | the `r` rights and `SEMAPHORE_MODIFY_STATE` (wakers) |
//! | `x`       |                                  | nothing (views are never executable)            | nothing |
//!
//! A class whose bits grant nothing gets no ACE. `w` implies `r` because Windows cannot map a
//! page writable but not readable. `READ_CONTROL` comes with `r` because an opener must read
//! the object's owner before it trusts it. The DACL is protected (`SE_DACL_PROTECTED`, no
//! inherited ACEs) and the descriptor names the creating token's user as the object's owner,
//! not the token's default owner (which is `BUILTIN\Administrators` in an elevated token).
//!
//! Openers read the owner back (`GetSecurityInfo`) and accept it only if
//! [`TrustedOwners::accepts_sid`] does: see `trust.rs` for who is trusted and why.

use std::ffi::c_void;
use std::mem::size_of;
use std::os::windows::io::{AsRawHandle, OwnedHandle};
use std::ptr;
use std::sync::OnceLock;

use windows_sys::core::PWSTR;
use windows_sys::Win32::Foundation::{
    GetLastError, LocalFree, ERROR_INSUFFICIENT_BUFFER, ERROR_SUCCESS, FALSE, HANDLE, HLOCAL,
    WIN32_ERROR,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
    ConvertStringSidToSidW, GetSecurityInfo, SDDL_REVISION_1, SE_KERNEL_OBJECT,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, TokenPrimaryGroup, TokenUser, OWNER_SECURITY_INFORMATION,
    PSECURITY_DESCRIPTOR, PSID, SECURITY_ATTRIBUTES, TOKEN_INFORMATION_CLASS, TOKEN_PRIMARY_GROUP,
    TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::System::Memory::{
    SECTION_ALL_ACCESS, SECTION_MAP_READ, SECTION_MAP_WRITE, SECTION_QUERY,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcessToken, SEMAPHORE_ALL_ACCESS, SEMAPHORE_MODIFY_STATE,
    SYNCHRONIZATION_SYNCHRONIZE,
};

use crate::error::{Error, Owner, Result};
use crate::trust::TrustedOwners;

/// `READ_CONTROL` (winnt.h): read the object's security descriptor, owner included. Defined
/// here rather than taken from windows-sys, which files it under `Storage_FileSystem`.
pub(super) const READ_CONTROL: u32 = 0x0002_0000;

/// What each permission class may do with one kind of object (see the module's table).
#[derive(Debug, Clone, Copy)]
pub(super) struct Rights {
    /// The owner's rights, whatever its bits say: it created the object and may always
    /// change the descriptor anyway, as a Unix owner may always `chmod`.
    pub full: u32,
    /// Granted by an `r` (or `w`) bit.
    pub read: u32,
    /// Granted, with `read`, by a `w` bit.
    pub write: u32,
}

/// Rights on a section.
pub(super) const SECTION: Rights = Rights {
    full: SECTION_ALL_ACCESS,
    read: SECTION_MAP_READ | SECTION_QUERY | READ_CONTROL,
    write: SECTION_MAP_WRITE,
};

/// Rights on a wake semaphore: waiters need `SYNCHRONIZE`, wakers `SEMAPHORE_MODIFY_STATE`.
pub(super) const SEMAPHORE: Rights = Rights {
    full: SEMAPHORE_ALL_ACCESS,
    read: SYNCHRONIZATION_SYNCHRONIZE | READ_CONTROL,
    write: SEMAPHORE_MODIFY_STATE,
};

impl Rights {
    /// The access mask for one class's three `rwx` bits (`x` is ignored); 0 for none.
    pub(super) fn for_bits(self, bits: u32) -> u32 {
        let mut mask = 0;
        if bits & 0o6 != 0 {
            mask |= self.read;
        }
        if bits & 0o2 != 0 {
            mask |= self.write;
        }
        mask
    }
}

/// The SDDL text of the descriptor for `mode` (see the module's table): owner and group are
/// `user` and `group`, the DACL is protected (`P`), its ACEs allow and inherit nothing.
pub(super) fn sddl(mode: u32, rights: Rights, user: &str, group: &str) -> String {
    let mut text = format!("O:{user}G:{group}D:P(A;;{:#x};;;{user})", rights.full);
    let group_mask = rights.for_bits((mode >> 3) & 0o7);
    if group_mask != 0 {
        text.push_str(&format!("(A;;{group_mask:#x};;;{group})"));
    }
    let other_mask = rights.for_bits(mode & 0o7);
    if other_mask != 0 {
        // WD ("world") is SDDL's alias for Everyone, S-1-1-0.
        text.push_str(&format!("(A;;{other_mask:#x};;;WD)"));
    }
    text
}

/// Memory a Win32 call allocated with `LocalAlloc` for us; freed on drop.
struct Local(HLOCAL);

impl Drop for Local {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a Win32 call documented to allocate it with
            // LocalAlloc for the caller to free with LocalFree, and is freed only here.
            let failed = unsafe { LocalFree(self.0) };
            // LocalFree of our own allocation can only fail on a bug; nothing to do in drop.
            debug_assert!(failed.is_null(), "LocalFree failed");
        }
    }
}

/// A self-relative security descriptor, as `SECURITY_ATTRIBUTES` for a Create* call.
pub(super) struct Descriptor(Local);

impl Descriptor {
    /// The descriptor for a new object of kind `rights` created with Unix mode `mode`.
    pub(super) fn new(mode: u32, rights: Rights) -> Result<Self> {
        let me = identity()?;
        let text: Vec<u16> = sddl(mode, rights, &me.user, &me.group)
            .encode_utf16()
            .chain(std::iter::once(0))
            .collect();
        let mut sd: PSECURITY_DESCRIPTOR = ptr::null_mut();
        // SAFETY: `text` is a NUL-terminated UTF-16 string that outlives the call; `sd` is a
        // valid out pointer, which on success receives a LocalAlloc'd descriptor we own; the
        // size is not asked for (null).
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                text.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                ptr::null_mut(),
            )
        };
        if ok == FALSE {
            return Err(Error::os(
                "ConvertStringSecurityDescriptorToSecurityDescriptorW",
                io_error(last_error()),
            ));
        }
        Ok(Descriptor(Local(sd)))
    }

    /// Attributes pointing at this descriptor (valid while `self` lives); not inheritable.
    pub(super) fn attributes(&self) -> SECURITY_ATTRIBUTES {
        SECURITY_ATTRIBUTES {
            nLength: size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: self.0 .0,
            bInheritHandle: FALSE,
        }
    }
}

fn last_error() -> WIN32_ERROR {
    // SAFETY: GetLastError has no preconditions; it reads thread-local state.
    unsafe { GetLastError() }
}

fn io_error(code: WIN32_ERROR) -> std::io::Error {
    // Win32 error codes are below 2^16, so the cast is lossless.
    std::io::Error::from_raw_os_error(code as i32)
}

/// The string form (`S-1-5-…`) of the SID at `sid`.
///
/// # Safety
/// `sid` must point to a valid SID that stays alive during the call.
unsafe fn sid_string(sid: PSID) -> std::result::Result<String, WIN32_ERROR> {
    let mut text: PWSTR = ptr::null_mut();
    // SAFETY: `sid` is valid (the caller's contract); `text` is a valid out pointer that on
    // success receives a LocalAlloc'd NUL-terminated string we own.
    let ok = unsafe { ConvertSidToStringSidW(sid, &mut text) };
    if ok == FALSE {
        return Err(last_error());
    }
    let text = Local(text.cast::<c_void>());
    let chars = text.0.cast::<u16>().cast_const();
    let mut len = 0;
    loop {
        // SAFETY: the string is NUL-terminated and no NUL was found before `len`, so index
        // `len` is at most the NUL's and inside the allocation.
        let at = unsafe { chars.add(len) };
        // SAFETY: `at` is inside the allocation (above), which the call filled.
        if unsafe { at.read() } == 0 {
            break;
        }
        len += 1;
    }
    // SAFETY: the `len` characters before the NUL were just read, so they are initialised
    // and inside the allocation, which lives until `text` drops at the end of this function.
    let units = unsafe { std::slice::from_raw_parts(chars, len) };
    Ok(String::from_utf16_lossy(units))
}

/// The canonical string form of SID text `text` (`S-1-1-0` for `s-1-1-0` or `WD`), or `None`
/// if Windows does not parse it as a SID.
pub(super) fn canonical_sid(text: &str) -> Option<String> {
    // Wine 8 parses "" as the null SID S-1-0-0; an empty name is a mistake, not a SID.
    if text.trim().is_empty() {
        return None;
    }
    let wide: Vec<u16> = text.encode_utf16().chain(std::iter::once(0)).collect();
    let mut sid: PSID = ptr::null_mut();
    // SAFETY: `wide` is NUL-terminated and outlives the call; `sid` is a valid out pointer
    // that on success receives a LocalAlloc'd SID we own.
    let ok = unsafe { ConvertStringSidToSidW(wide.as_ptr(), &mut sid) };
    if ok == FALSE {
        return None;
    }
    let sid = Local(sid);
    // SAFETY: `sid.0` is the valid SID just returned, alive until `sid` drops.
    unsafe { sid_string(sid.0) }.ok()
}

/// The canonical form of every SID `trusted` names, or [`Error::InvalidSid`] for the first
/// one Windows cannot parse. Checked on every create and open, so a typo fails at once
/// rather than only when a stranger's object turns up.
pub(super) fn trusted_sids(trusted: &TrustedOwners) -> Result<Vec<String>> {
    trusted
        .sids()
        .iter()
        .map(|sid| canonical_sid(sid).ok_or_else(|| Error::InvalidSid { sid: sid.clone() }))
        .collect()
}

/// The calling process's user and primary group, as SID strings.
pub(super) struct Identity {
    pub user: String,
    pub group: String,
}

/// This process's [`Identity`] (cached: a process's token user never changes; impersonation
/// is per thread and not used by this crate).
pub(super) fn identity() -> Result<&'static Identity> {
    static IDENTITY: OnceLock<Identity> = OnceLock::new();
    if let Some(identity) = IDENTITY.get() {
        return Ok(identity);
    }
    // SAFETY: no preconditions; returns a pseudo handle that needs no closing.
    let process = unsafe { GetCurrentProcess() };
    let mut raw: HANDLE = ptr::null_mut();
    // SAFETY: `process` is the current-process pseudo handle; `raw` is a valid out pointer.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut raw) } == FALSE || raw.is_null() {
        return Err(Error::os("OpenProcessToken", io_error(last_error())));
    }
    let token =
        // SAFETY: `raw` is the valid token handle just opened, owned by nothing else.
        unsafe { <OwnedHandle as std::os::windows::io::FromRawHandle>::from_raw_handle(raw) };
    let user = token_information(&token, TokenUser)?;
    // SAFETY: GetTokenInformation(TokenUser) filled the 8-aligned buffer, which is large
    // enough, with a TOKEN_USER followed by the SID it points to.
    let sid = unsafe { user.as_ptr().cast::<TOKEN_USER>().read() }
        .User
        .Sid;
    // SAFETY: `sid` points into `user`, alive until the end of this function.
    let user = unsafe { sid_string(sid) }
        .map_err(|code| Error::os("ConvertSidToStringSidW", io_error(code)))?;
    let group = token_information(&token, TokenPrimaryGroup)?;
    // SAFETY: as above, with a TOKEN_PRIMARY_GROUP.
    let sid = unsafe { group.as_ptr().cast::<TOKEN_PRIMARY_GROUP>().read() }.PrimaryGroup;
    // SAFETY: `sid` points into `group`, alive until the end of this function.
    let group = unsafe { sid_string(sid) }
        .map_err(|code| Error::os("ConvertSidToStringSidW", io_error(code)))?;
    Ok(IDENTITY.get_or_init(|| Identity { user, group }))
}

/// The token information of `class`, in a buffer aligned for any of the TOKEN_* structures.
fn token_information(token: &OwnedHandle, class: TOKEN_INFORMATION_CLASS) -> Result<Vec<u64>> {
    let mut needed = 0u32;
    // SAFETY: a null buffer of length 0 only asks for the size, written to `needed`.
    let ok = unsafe {
        GetTokenInformation(
            token.as_raw_handle(),
            class,
            ptr::null_mut(),
            0,
            &mut needed,
        )
    };
    if ok == FALSE && last_error() != ERROR_INSUFFICIENT_BUFFER {
        return Err(Error::os("GetTokenInformation", io_error(last_error())));
    }
    let mut buffer = vec![0u64; (needed as usize).div_ceil(8).max(1)];
    let len = u32::try_from(buffer.len() * 8).unwrap_or(u32::MAX);
    // SAFETY: `buffer` is writable for `len` bytes and 8-aligned (TOKEN_* structures need at
    // most pointer alignment); `needed` is a valid out pointer.
    let ok = unsafe {
        GetTokenInformation(
            token.as_raw_handle(),
            class,
            buffer.as_mut_ptr().cast::<c_void>(),
            len,
            &mut needed,
        )
    };
    if ok == FALSE {
        return Err(Error::os("GetTokenInformation", io_error(last_error())));
    }
    Ok(buffer)
}

/// The owner SID of the kernel object behind `handle`, which must have `READ_CONTROL`;
/// `None` for a descriptor without an owner.
pub(super) fn owner_of(handle: HANDLE) -> std::result::Result<Option<String>, WIN32_ERROR> {
    let mut owner: PSID = ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // On success `sd` is a LocalAlloc'd descriptor we own and `owner` points into it.
    // SAFETY: `handle` is a valid kernel-object handle (the caller's); only the owner is
    // asked for, so the other out pointers may be null; `owner` and `sd` are valid.
    let code = unsafe {
        GetSecurityInfo(
            handle,
            SE_KERNEL_OBJECT,
            OWNER_SECURITY_INFORMATION,
            &mut owner,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            &mut sd,
        )
    };
    if code != ERROR_SUCCESS {
        return Err(code);
    }
    let _sd = Local(sd);
    if owner.is_null() {
        return Ok(None);
    }
    // SAFETY: `owner` points into the descriptor, which lives until `_sd` drops at the end
    // of this function.
    unsafe { sid_string(owner) }.map(Some)
}

/// [`Error::UntrustedOwner`] unless `trusted` accepts the owner of the object behind
/// `handle` (opened with `READ_CONTROL`); `object` names it in errors (the segment name, or
/// `<name>#mmf-wake` for its semaphore).
pub(super) fn check_owner(
    handle: HANDLE,
    object: &str,
    trusted: &TrustedOwners,
    map_error: impl FnOnce(&'static str, WIN32_ERROR) -> Error,
) -> Result<()> {
    let named = trusted_sids(trusted)?;
    let me = identity()?;
    let owner = owner_of(handle).map_err(|code| map_error("GetSecurityInfo", code))?;
    match owner {
        Some(owner) if TrustedOwners::accepts_sid(&me.user, &owner, &named) => Ok(()),
        // A descriptor without an owner: nobody vouches for the object.
        owner => Err(Error::UntrustedOwner {
            name: object.to_owned(),
            owner: Owner::Sid(owner.unwrap_or_else(|| "(no owner)".to_owned())),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_text_is_canonicalised_and_garbage_is_not_a_sid() {
        assert_eq!(canonical_sid("S-1-1-0").as_deref(), Some("S-1-1-0"));
        assert_eq!(canonical_sid("s-1-5-18").as_deref(), Some("S-1-5-18"));
        assert_eq!(
            canonical_sid("WD").as_deref(),
            Some("S-1-1-0"),
            "SDDL alias"
        );
        for bad in ["", "S-1-banana", "S-", "1-5-18", "uid 1000"] {
            assert_eq!(canonical_sid(bad), None, "{bad:?}");
        }
        let named = TrustedOwners::new().sid("s-1-5-18").sid("BA");
        assert_eq!(trusted_sids(&named).unwrap(), ["S-1-5-18", "S-1-5-32-544"]);
        let bad = TrustedOwners::new().sid("S-1-5-18").sid("nope");
        assert!(matches!(trusted_sids(&bad), Err(Error::InvalidSid { sid }) if sid == "nope"));
    }

    #[test]
    fn the_descriptor_text_follows_the_mode_table() {
        let (u, g) = ("S-1-5-21-1-2-3-1000", "S-1-5-21-1-2-3-513");
        assert_eq!(
            sddl(0o600, SECTION, u, g),
            format!("O:{u}G:{g}D:P(A;;0xf001f;;;{u})")
        );
        assert_eq!(
            sddl(0o640, SEMAPHORE, u, g),
            format!("O:{u}G:{g}D:P(A;;0x1f0003;;;{u})(A;;0x120000;;;{g})")
        );
        assert_eq!(
            sddl(0o606, SECTION, u, g),
            format!("O:{u}G:{g}D:P(A;;0xf001f;;;{u})(A;;0x20007;;;WD)")
        );
        assert_eq!(SECTION.for_bits(0o1), 0, "execute alone grants nothing");
        assert_eq!(
            SEMAPHORE.for_bits(0o2),
            SEMAPHORE.for_bits(0o6),
            "w implies r"
        );
        // The descriptor Windows builds from it for this process parses.
        Descriptor::new(0o644, SECTION).unwrap();
    }
}
