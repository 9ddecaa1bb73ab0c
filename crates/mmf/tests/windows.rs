//! Windows-specific behaviour of `mmf`: namespaces, the handle-counted lifetime of a section,
//! read-only views the OS enforces, large pages, the cross-process wake-up through the
//! segment's named semaphore, and the security descriptors and owner checks of both objects. Runs on Windows and under wine (see the README).
#![cfg(windows)]

mod common;

use std::mem::size_of;
use std::ptr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::ffi::c_void;

use common::{arg, say, CHILD_TIMEOUT};
use mmf::{Error, LockError, Mmf, MmfOptions, Namespace};
use windows_sys::core::PWSTR;
use windows_sys::Win32::Foundation::{
    CloseHandle, LocalFree, FALSE, FILETIME, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
    ConvertStringSidToSidW, GetSecurityInfo, SetSecurityInfo, SDDL_REVISION_1, SE_KERNEL_OBJECT,
};
use windows_sys::Win32::Security::{
    AclSizeInformation, GetAce, GetAclInformation, GetSecurityDescriptorControl,
    GetSecurityDescriptorDacl, GetTokenInformation, TokenPrimaryGroup, TokenUser,
    ACCESS_ALLOWED_ACE, ACL, ACL_SIZE_INFORMATION, DACL_SECURITY_INFORMATION,
    GROUP_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION,
    PSECURITY_DESCRIPTOR, PSID, SECURITY_ATTRIBUTES, SE_DACL_PROTECTED, TOKEN_PRIMARY_GROUP,
    TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, OpenFileMappingW, VirtualQuery, MEMORY_BASIC_INFORMATION, PAGE_READONLY,
    PAGE_READWRITE, SECTION_ALL_ACCESS,
};
use windows_sys::Win32::System::Threading::{
    CreateSemaphoreW, GetCurrentProcess, GetProcessTimes, OpenProcessToken, OpenSemaphoreW,
    SEMAPHORE_ALL_ACCESS,
};

/// `READ_CONTROL`, `WRITE_DAC` and `WRITE_OWNER` (winnt.h), the standard rights these tests
/// ask for to read and change a descriptor.
const READ_CONTROL: u32 = 0x0002_0000;
const WRITE_DAC: u32 = 0x0004_0000;
const WRITE_OWNER: u32 = 0x0008_0000;

/// The entry point of every child process of this file (ignored in a normal test run).
#[test]
#[ignore = "not a test: the entry point of this file's child processes, which run it with --include-ignored"]
fn child() {
    common::child_main(|role| match role {
        "blocked" => blocked_role(),
        other => panic!("unknown child role {other:?}"),
    });
}

/// `(protection, region size)` of the pages at `at`, as the OS reports them.
fn query(at: *const u8) -> (u32, usize) {
    let mut info = MEMORY_BASIC_INFORMATION::default();
    let written =
        // SAFETY: `info` is a valid, writable MEMORY_BASIC_INFORMATION of the size passed;
        // VirtualQuery reads only the address-space bookkeeping for `at`.
        unsafe { VirtualQuery(at.cast(), &mut info, size_of::<MEMORY_BASIC_INFORMATION>()) };
    assert_ne!(
        written,
        0,
        "VirtualQuery: {}",
        std::io::Error::last_os_error()
    );
    (info.Protect, info.RegionSize)
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

// ---------------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------------

#[test]
fn local_names_work_end_to_end() {
    let name = common::unique_name("local");
    let local = MmfOptions::new(&name).namespace(Namespace::Local);
    let writer = local.create(4096).unwrap();
    writer.write_at(100, b"local").unwrap();
    // `Mmf::open` uses the default namespace, which is Local.
    let reader = Mmf::open(&name).unwrap();
    assert_eq!(reader.read_to_vec(100, 5).unwrap(), b"local");
    let reader = local.open_read_only().unwrap();
    assert_eq!(reader.read_to_vec(100, 5).unwrap(), b"local");
}

#[test]
fn global_names_work_or_fail_with_the_missing_privilege() {
    let name = common::unique_name("global");
    let global = MmfOptions::new(&name).namespace(Namespace::Global);
    match global.create(4096) {
        Ok(writer) => {
            println!("Global\\ create allowed (the token holds SeCreateGlobalPrivilege)");
            writer.write_at(0, b"global").unwrap();
            let reader = global.open().unwrap();
            assert_eq!(reader.read_to_vec(0, 6).unwrap(), b"global");
            let reader = global.open_read_only().unwrap();
            assert_eq!(reader.read_to_vec(0, 6).unwrap(), b"global");
            // The waiter's semaphore lives in the Global namespace too: the lock works.
            drop(reader);
            let guard = writer.write().unwrap();
            drop(guard);
        }
        Err(Error::PermissionDenied { hint, .. }) => {
            println!("Global\\ create refused: {hint}");
            assert!(hint.contains("SeCreateGlobalPrivilege"), "{hint}");
        }
        Err(other) => panic!("Global\\ create: expected Ok or PermissionDenied, got {other:?}"),
    }
}

#[test]
fn a_name_taken_by_another_kind_of_kernel_object_is_not_a_segment() {
    let name = common::unique_name("foreign");
    let object = utf16(&format!("Local\\{name}"));
    // SAFETY: null attributes (default descriptor), counts 0 and 1, and a NUL-terminated name
    // that outlives the call.
    let semaphore = unsafe { CreateSemaphoreW(ptr::null(), 0, 1, object.as_ptr()) };
    assert!(!semaphore.is_null(), "{}", std::io::Error::last_os_error());
    assert!(matches!(
        Mmf::create(&name, 4096),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(Mmf::open(&name), Err(Error::NotMmf { .. })));
    assert!(matches!(Mmf::remove(&name), Err(Error::NotFound { .. })));
    // SAFETY: `semaphore` is the valid handle created above, closed only here.
    assert_ne!(unsafe { CloseHandle(semaphore) }, FALSE);
}

// ---------------------------------------------------------------------------------------
// Lifetime: a section lives exactly as long as its handles
// ---------------------------------------------------------------------------------------

#[test]
fn segment_is_gone_after_its_last_handle_closes() {
    let name = common::unique_name("lifetime");
    let creator = Mmf::create(&name, 4096).unwrap();
    creator.write_at(0, b"first").unwrap();
    let other = Mmf::open(&name).unwrap();
    assert!(
        Mmf::remove(&name).is_ok(),
        "remove reports an existing section"
    );

    // The creator's drop does not end the section while another handle is open...
    drop(creator);
    let reopened = Mmf::open(&name).expect("still alive through `other`");
    assert_eq!(reopened.read_to_vec(0, 5).unwrap(), b"first");
    other.write_at(0, b"again").unwrap();
    assert_eq!(reopened.read_to_vec(0, 5).unwrap(), b"again");

    // ...but the last close does, name and all.
    drop(other);
    drop(reopened);
    assert!(matches!(Mmf::open(&name), Err(Error::NotFound { .. })));
    assert!(matches!(
        Mmf::open_read_only(&name),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(Mmf::remove(&name), Err(Error::NotFound { .. })));

    // A new segment of the same name starts from fresh, zeroed memory.
    let fresh = Mmf::create(&name, 4096).unwrap();
    assert_eq!(fresh.read_to_vec(0, 5).unwrap(), [0; 5]);
}

#[test]
fn failed_create_of_an_existing_name_leaves_its_data_intact() {
    let name = common::unique_name("exists");
    let data = common::pattern(7, 8192);
    let first = Mmf::create(&name, data.len()).unwrap();
    first.write_at(0, &data).unwrap();
    for size in [data.len(), 4096, 1 << 20] {
        assert!(
            matches!(Mmf::create(&name, size), Err(Error::AlreadyExists { .. })),
            "create with size {size}"
        );
    }
    assert_eq!(first.read_to_vec(0, data.len()).unwrap(), data);
    assert_eq!(first.len(), data.len());
    // open_or_create opens the existing segment rather than failing or resetting it.
    let second = Mmf::open_or_create(&name, data.len()).unwrap();
    assert_eq!(second.read_to_vec(0, data.len()).unwrap(), data);
    assert!(matches!(
        Mmf::open_or_create(&name, 4096),
        Err(Error::SizeMismatch { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Read-only views
// ---------------------------------------------------------------------------------------

#[test]
fn read_only_view_cannot_be_written_and_is_mapped_read_only() {
    let name = common::unique_name("ro");
    let writer = Mmf::create(&name, 3 * 4096).unwrap();
    writer.write_at(0, b"data").unwrap();
    let reader = Mmf::open_read_only(&name).unwrap();
    assert!(matches!(
        reader.write_at(0, b"evil"),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(
        reader.write(),
        Err(LockError::Failed(Error::ReadOnly { .. }))
    ));
    assert_eq!(reader.read_to_vec(0, 4).unwrap(), b"data");

    // The refusal is not only in software: the OS mapped every page without write access,
    // so not even a stray pointer could write. The writable handle, asked the same way,
    // reports read-write pages, so the query does tell the two apart.
    let (protect, size) = query(reader.mapping_ptr_for_tests());
    assert_eq!(protect, PAGE_READONLY, "read-only view");
    assert!(
        size >= 4 * 4096,
        "every page has that protection ({size} bytes)"
    );
    let (protect, size) = query(writer.mapping_ptr_for_tests());
    assert_eq!(protect, PAGE_READWRITE, "read-write view");
    assert!(size >= 4 * 4096, "{size} bytes");
}

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

#[test]
fn prefaulted_segments_work_for_creator_and_opener() {
    let name = common::unique_name("prefault");
    let options = MmfOptions::new(&name).prefault(true);
    let writer = options.create(1 << 20).unwrap();
    writer.write_at((1 << 20) - 4, b"tail").unwrap();
    let reader = options.open_read_only().unwrap();
    assert_eq!(reader.read_to_vec((1 << 20) - 4, 4).unwrap(), b"tail");
}

#[test]
fn large_pages_work_or_fail_with_a_typed_error() {
    let name = common::unique_name("large");
    match MmfOptions::new(&name).large_pages(true).create(4096) {
        Ok(segment) => {
            println!("large pages allowed");
            assert_eq!(segment.len(), 4096, "the data size is what was asked for");
            segment.write_at(4000, b"big").unwrap();
            let reader = Mmf::open(&name).unwrap();
            assert_eq!(reader.read_to_vec(4000, 3).unwrap(), b"big");
        }
        Err(Error::PermissionDenied { hint, .. }) => {
            println!("large pages refused: {hint}");
            assert!(hint.contains("SeLockMemoryPrivilege"), "{hint}");
        }
        Err(Error::Unsupported { what }) => println!("large pages unsupported: {what}"),
        Err(other) => panic!("expected Ok, PermissionDenied or Unsupported, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Wake-up across processes through the named semaphore
// ---------------------------------------------------------------------------------------

/// CPU time (kernel + user) this process has used so far.
fn cpu_time() -> Duration {
    let mut times = [FILETIME::default(); 4];
    let [created, exited, kernel, user] = &mut times;
    // SAFETY: no preconditions; returns a pseudo handle that needs no closing.
    let me = unsafe { GetCurrentProcess() };
    // SAFETY: `me` is the current-process pseudo handle; the four out pointers are valid,
    // distinct FILETIMEs.
    let ok = unsafe { GetProcessTimes(me, created, exited, kernel, user) };
    assert_ne!(ok, FALSE, "{}", std::io::Error::last_os_error());
    let ticks = |t: &FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    // FILETIME durations count 100 ns ticks.
    Duration::from_nanos((ticks(&times[2]) + ticks(&times[3])) * 100)
}

fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// Blocks on the lock the parent holds; reports when it got in and what the wait cost.
fn blocked_role() {
    // The lock's liveness checks would wake the child every 50 ms by default and hide a lost
    // wake-up; pushed far out, only the semaphore (or the backend's 1 s wait cap) wakes it.
    let segment = MmfOptions::new(arg("name"))
        .recovery_interval(Duration::from_secs(30))
        .open()
        .unwrap();
    let before = cpu_time();
    say("blocking", 1);
    let start = Instant::now();
    match arg("kind").as_str() {
        "write" => drop(segment.write().unwrap()),
        "read" => drop(segment.read().unwrap()),
        other => panic!("unknown kind {other}"),
    }
    let acquired = unix_micros();
    let waited = start.elapsed();
    let cpu = cpu_time() - before;
    say("acquired_unix_us", acquired);
    say("waited_us", waited.as_micros());
    say("cpu_us", cpu.as_micros());
}

fn blocked_process_is_woken_promptly_without_spinning(kind: &str) {
    let name = common::unique_name("wake");
    let segment = Mmf::create(&name, 4096).unwrap();
    let guard = segment.write().unwrap();
    let mut child = common::child("blocked")
        .arg("name", &name)
        .arg("kind", kind)
        .spawn();
    child.expect("blocking", CHILD_TIMEOUT);
    let hold = Duration::from_millis(300);
    std::thread::sleep(hold);
    let released = unix_micros();
    drop(guard);
    let out = child.finish(CHILD_TIMEOUT);
    let waited = Duration::from_micros(out.value("waited_us"));
    let cpu = Duration::from_micros(out.value("cpu_us"));
    let acquired = u128::from(out.value("acquired_unix_us"));
    // Both clocks are the one system clock; the child can only get in after the release.
    let latency = Duration::from_micros(acquired.saturating_sub(released) as u64);
    println!(
        "{kind} waiter blocked {waited:?}, got in {latency:?} after the release, used {cpu:?} CPU"
    );
    assert!(
        waited >= hold - Duration::from_millis(50),
        "the child did not block (waited {waited:?})"
    );
    // A lost wake-up would leave the child asleep until its 1 s wait cap (about 0.7 s after
    // the release): "promptly" is well under that.
    assert!(
        latency < Duration::from_millis(250),
        "woken {latency:?} after the release"
    );
    assert!(
        cpu < Duration::from_millis(100),
        "a blocked {kind} waiter burnt {cpu:?} of CPU in {waited:?}"
    );
}

#[test]
fn blocked_writer_in_another_process_is_woken_promptly_without_spinning() {
    blocked_process_is_woken_promptly_without_spinning("write");
}

#[test]
fn blocked_reader_in_another_process_is_woken_promptly_without_spinning() {
    blocked_process_is_woken_promptly_without_spinning("read");
}

// ---------------------------------------------------------------------------------------
// Security descriptors and owner checks (issue 11)
//
// Wine cannot switch users, so "another user may / may not" is shown through the DACL read
// back (which SIDs get which rights) and through this user's own rights after the owner has
// narrowed them, never by a second account.
// ---------------------------------------------------------------------------------------

/// Memory a Win32 call allocated with `LocalAlloc` for the caller.
struct Local(*mut c_void);

impl Drop for Local {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a call documented to LocalAlloc it for the caller,
        // and is freed only here.
        unsafe { LocalFree(self.0) };
    }
}

/// The string form of the SID at `sid`.
fn sid_text(sid: PSID) -> String {
    let mut text: PWSTR = ptr::null_mut();
    // SAFETY: `sid` points to a valid SID inside a live descriptor or token buffer; `text`
    // is a valid out pointer for a LocalAlloc'd string.
    let ok = unsafe { ConvertSidToStringSidW(sid, &mut text) };
    assert_ne!(ok, FALSE, "{}", std::io::Error::last_os_error());
    let text = Local(text.cast());
    let chars = text.0.cast::<u16>();
    let mut len = 0;
    loop {
        // SAFETY: the string is NUL-terminated and no NUL came before `len`, so index `len`
        // is inside it.
        let at = unsafe { chars.add(len) };
        // SAFETY: `at` is inside the string the call wrote (above).
        if unsafe { at.read() } == 0 {
            break;
        }
        len += 1;
    }
    // SAFETY: the `len` units before the NUL are initialised and alive while `text` lives.
    String::from_utf16(unsafe { std::slice::from_raw_parts(chars, len) }).unwrap()
}

/// This process's token user and primary group, as SID strings.
fn token_user_and_group() -> (String, String) {
    fn info(token: HANDLE, class: i32) -> Vec<u64> {
        let mut buffer = vec![0u64; 128];
        let mut needed = 0;
        // SAFETY: `buffer` is writable and 8-aligned for its 1024 bytes, plenty for a
        // TOKEN_USER or TOKEN_PRIMARY_GROUP and its SID; `needed` is a valid out pointer.
        let ok = unsafe {
            GetTokenInformation(token, class, buffer.as_mut_ptr().cast(), 1024, &mut needed)
        };
        assert_ne!(ok, FALSE, "{}", std::io::Error::last_os_error());
        buffer
    }
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: no preconditions; a pseudo handle that needs no closing.
    let process = unsafe { GetCurrentProcess() };
    // SAFETY: the current-process pseudo handle; `token` is a valid out pointer.
    let ok = unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) };
    assert_ne!(ok, FALSE, "{}", std::io::Error::last_os_error());
    let user = info(token, TokenUser);
    // SAFETY: the buffer holds the TOKEN_USER the call wrote, whose SID lies in the buffer.
    let user = sid_text(
        unsafe { user.as_ptr().cast::<TOKEN_USER>().read() }
            .User
            .Sid,
    );
    let group = info(token, TokenPrimaryGroup);
    let group =
        // SAFETY: as above, a TOKEN_PRIMARY_GROUP.
        sid_text(unsafe { group.as_ptr().cast::<TOKEN_PRIMARY_GROUP>().read() }.PrimaryGroup);
    // SAFETY: `token` was opened above and is closed only here.
    unsafe { CloseHandle(token) };
    (user, group)
}

/// A security descriptor parsed from SDDL.
fn descriptor(sddl: &str) -> Local {
    let text = utf16(sddl);
    let mut sd: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // SAFETY: `text` is NUL-terminated and outlives the call; `sd` is a valid out pointer.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            text.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            ptr::null_mut(),
        )
    };
    assert_ne!(ok, FALSE, "{sddl}: {}", std::io::Error::last_os_error());
    Local(sd)
}

fn attributes(sd: &Local) -> SECURITY_ATTRIBUTES {
    SECURITY_ATTRIBUTES {
        nLength: size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd.0,
        bInheritHandle: FALSE,
    }
}

/// A kernel object handle, closed on drop.
struct Handle(HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a valid handle this test opened, closed only here.
        unsafe { CloseHandle(self.0) };
    }
}

/// Opens the kernel object `Local\<object>` (a section or a semaphore) with `access`.
fn open_object(object: &str, semaphore: bool, access: u32) -> Result<Handle, std::io::Error> {
    let name = utf16(&format!("Local\\{object}"));
    let raw = if semaphore {
        // SAFETY: `name` is NUL-terminated and outlives the call; not inheritable.
        unsafe { OpenSemaphoreW(access, FALSE, name.as_ptr()) }
    } else {
        // SAFETY: as above.
        unsafe { OpenFileMappingW(access, FALSE, name.as_ptr()) }
    };
    if raw.is_null() {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(Handle(raw))
    }
}

/// One access-allowed entry of a DACL.
#[derive(Debug, PartialEq)]
struct Ace {
    sid: String,
    mask: u32,
    /// ACE type and flags (0 and 0: allowed, not inheritable, not inherited).
    kind: (u8, u8),
}

/// What an object's descriptor says, read back through `GetSecurityInfo`.
#[derive(Debug)]
struct Security {
    owner: String,
    group: String,
    dacl_protected: bool,
    aces: Vec<Ace>,
}

fn security_of(handle: &Handle) -> Security {
    let (mut owner, mut group): (PSID, PSID) = (ptr::null_mut(), ptr::null_mut());
    let mut dacl: *mut ACL = ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // SAFETY: `handle` has READ_CONTROL; the out pointers are valid; the SACL is not asked for.
    let code = unsafe {
        GetSecurityInfo(
            handle.0,
            SE_KERNEL_OBJECT,
            OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
            &mut owner,
            &mut group,
            &mut dacl,
            ptr::null_mut(),
            &mut sd,
        )
    };
    assert_eq!(
        code,
        0,
        "GetSecurityInfo: {}",
        std::io::Error::from_raw_os_error(code as i32)
    );
    let sd = Local(sd);
    let (mut control, mut revision) = (0u16, 0u32);
    // SAFETY: `sd` is the valid descriptor just returned; valid out pointers.
    let ok = unsafe { GetSecurityDescriptorControl(sd.0, &mut control, &mut revision) };
    assert_ne!(ok, FALSE);
    assert!(
        !dacl.is_null(),
        "the descriptor has no DACL (everyone may do anything)"
    );
    let mut size = ACL_SIZE_INFORMATION::default();
    // SAFETY: `dacl` points into `sd`; `size` is a valid ACL_SIZE_INFORMATION.
    let ok = unsafe {
        GetAclInformation(
            dacl,
            (&mut size as *mut ACL_SIZE_INFORMATION).cast(),
            size_of::<ACL_SIZE_INFORMATION>() as u32,
            AclSizeInformation,
        )
    };
    assert_ne!(ok, FALSE, "{}", std::io::Error::last_os_error());
    let aces = (0..size.AceCount)
        .map(|i| {
            let mut ace: *mut c_void = ptr::null_mut();
            // SAFETY: `i` < AceCount; `ace` is a valid out pointer into the DACL.
            assert_ne!(unsafe { GetAce(dacl, i, &mut ace) }, FALSE);
            let ace = ace.cast::<ACCESS_ALLOWED_ACE>();
            // SAFETY: every ACE starts with an ACE_HEADER and, for the allowed/denied types
            // this crate writes, a mask and the SID, inside the live descriptor.
            let header = unsafe { (*ace).Header };
            // SAFETY: as above.
            let mask = unsafe { (*ace).Mask };
            // SAFETY: the SID starts at SidStart, inside the ACE.
            let sid = sid_text(unsafe { ptr::addr_of_mut!((*ace).SidStart) }.cast());
            Ace {
                sid,
                mask,
                kind: (header.AceType, header.AceFlags),
            }
        })
        .collect();
    Security {
        owner: sid_text(owner),
        group: sid_text(group),
        dacl_protected: control & SE_DACL_PROTECTED != 0,
        aces,
    }
}

/// `SECTION_MAP_READ | SECTION_QUERY | READ_CONTROL`, spelt out independently of the crate.
const SECTION_R: u32 = 0x4 | 0x1 | 0x2_0000;
/// `SECTION_MAP_WRITE` added.
const SECTION_RW: u32 = SECTION_R | 0x2;
/// `SYNCHRONIZE | READ_CONTROL`.
const SEMAPHORE_R: u32 = 0x10_0000 | 0x2_0000;
/// `SEMAPHORE_MODIFY_STATE` added.
const SEMAPHORE_RW: u32 = SEMAPHORE_R | 0x2;
const EVERYONE: &str = "S-1-1-0";

fn allowed(sid: &str, mask: u32) -> Ace {
    Ace {
        sid: sid.to_owned(),
        mask,
        kind: (0, 0),
    }
}

#[test]
fn the_mode_becomes_a_protected_dacl_on_the_section_and_its_wake_semaphore() {
    let (me, my_group) = token_user_and_group();
    println!("token user {me}, primary group {my_group}");
    // (mode, the group's and everyone's section rights, the same for the semaphore)
    let cases = [
        (0o600, None, None, None, None),
        (
            0o644,
            Some(SECTION_R),
            Some(SECTION_R),
            Some(SEMAPHORE_R),
            Some(SEMAPHORE_R),
        ),
        (0o640, Some(SECTION_R), None, Some(SEMAPHORE_R), None),
        (0o660, Some(SECTION_RW), None, Some(SEMAPHORE_RW), None),
        (0o606, None, Some(SECTION_RW), None, Some(SEMAPHORE_RW)),
        // Execute alone grants nothing; write alone grants read too (no write-only pages).
        (0o712, None, Some(SECTION_RW), None, Some(SEMAPHORE_RW)),
        // The owner keeps full control whatever its bits say.
        (0o000, None, None, None, None),
    ];
    for (mode, group_section, other_section, group_sem, other_sem) in cases {
        let name = common::unique_name("dacl");
        let segment = MmfOptions::new(&name).mode(mode).create(4096).unwrap();
        for (object, semaphore, full, group_mask, other_mask) in [
            (
                name.clone(),
                false,
                SECTION_ALL_ACCESS,
                group_section,
                other_section,
            ),
            (
                format!("{name}#mmf-wake"),
                true,
                SEMAPHORE_ALL_ACCESS,
                group_sem,
                other_sem,
            ),
        ] {
            let handle = open_object(&object, semaphore, READ_CONTROL).unwrap();
            let security = security_of(&handle);
            let what = format!("mode {mode:#o}, {object}");
            assert_eq!(security.owner, me, "{what}: owned by the creating user");
            assert_eq!(security.group, my_group, "{what}");
            assert!(security.dacl_protected, "{what}: nothing inherited");
            let mut expected = vec![allowed(&me, full)];
            expected.extend(group_mask.map(|m| allowed(&my_group, m)));
            expected.extend(other_mask.map(|m| allowed(EVERYONE, m)));
            assert_eq!(security.aces, expected, "{what}");
        }
        drop(segment);
    }
}

#[test]
fn the_dacl_is_enforced_once_the_owner_narrows_its_own_rights() {
    // No second user under wine; instead the owner narrows its own entry to what "other"
    // gets with 0o644, which a new handle must then be held to.
    let name = common::unique_name("enforce");
    let segment = MmfOptions::new(&name).mode(0o644).create(4096).unwrap();
    segment.write_at(0, b"seen").unwrap();
    let handle = open_object(&name, false, READ_CONTROL | WRITE_DAC).unwrap();
    let narrowed = descriptor(&format!("D:P(A;;{SECTION_R:#x};;;WD)"));
    let mut present = 0;
    let mut dacl: *mut ACL = ptr::null_mut();
    let mut defaulted = 0;
    let ok =
        // SAFETY: `narrowed` is a valid descriptor; the out pointers are valid.
        unsafe { GetSecurityDescriptorDacl(narrowed.0, &mut present, &mut dacl, &mut defaulted) };
    assert!(ok != FALSE && present != FALSE);
    // SAFETY: `handle` has WRITE_DAC; `dacl` points into `narrowed`, alive for the call.
    let code = unsafe {
        SetSecurityInfo(
            handle.0,
            SE_KERNEL_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            ptr::null_mut(),
            ptr::null_mut(),
            dacl,
            ptr::null(),
        )
    };
    assert_eq!(
        code,
        0,
        "{}",
        std::io::Error::from_raw_os_error(code as i32)
    );
    let read_write = Mmf::open(&name);
    let read_only = Mmf::open_read_only(&name).expect("read access is still granted");
    assert_eq!(read_only.read_to_vec(0, 4).unwrap(), b"seen");
    // Wine 8 enforces DACLs on sections (and the kernel does on Windows).
    match read_write {
        Err(Error::PermissionDenied { hint, .. }) => println!("read-write open refused: {hint}"),
        other => panic!("read-write open: expected PermissionDenied, got {other:?}"),
    }
}

/// Sets the owner of the object behind `handle` to `sid`; the error code if refused.
fn set_owner(handle: &Handle, sid: &str) -> Result<(), u32> {
    let text = utf16(sid);
    let mut psid: PSID = ptr::null_mut();
    // SAFETY: `text` is NUL-terminated; `psid` is a valid out pointer.
    let ok = unsafe { ConvertStringSidToSidW(text.as_ptr(), &mut psid) };
    assert_ne!(ok, FALSE, "{sid}");
    let psid = Local(psid);
    // SAFETY: `handle` was opened with WRITE_OWNER; `psid.0` is a valid SID for the call.
    let code = unsafe {
        SetSecurityInfo(
            handle.0,
            SE_KERNEL_OBJECT,
            OWNER_SECURITY_INFORMATION,
            psid.0,
            ptr::null_mut(),
            ptr::null(),
            ptr::null(),
        )
    };
    if code == 0 {
        Ok(())
    } else {
        Err(code)
    }
}

/// A SID no process of this test runs as: a made-up account of a made-up domain.
const STRANGER: &str = "S-1-5-21-1111111111-2222222222-3333333333-4242";

#[track_caller]
fn assert_untrusted<T: std::fmt::Debug>(result: mmf::Result<T>, object: &str, sid: &str) {
    match result {
        Err(e @ Error::UntrustedOwner { .. }) => {
            let message = e.to_string();
            println!("refused as expected: {message}");
            let Error::UntrustedOwner { name, owner } = e else {
                unreachable!()
            };
            assert_eq!(name, object);
            assert_eq!(owner, mmf::Owner::Sid(sid.to_owned()));
            assert!(
                message.contains(&format!("trust_sid(\"{sid}\")")),
                "the message must name the option that accepts it: {message}"
            );
        }
        other => panic!("expected UntrustedOwner for {object}, got {other:?}"),
    }
}

#[test]
fn a_segment_owned_by_a_stranger_is_refused_unless_its_sid_is_trusted() {
    let name = common::unique_name("stranger");
    let creator = Mmf::create(&name, 4096).unwrap();
    creator.write_at(0, b"mine").unwrap();
    // Hand the section to a stranger, as a squatter's own section would be.
    let section = open_object(&name, false, READ_CONTROL | WRITE_OWNER).unwrap();
    match set_owner(&section, STRANGER) {
        Ok(()) => {}
        Err(code) => {
            // Windows allows only SIDs of the caller's token (or SeRestorePrivilege).
            println!(
                "SKIPPED the owner change of a live segment: SetSecurityInfo refused it ({}); \
                 the next test builds a stranger's section from scratch instead",
                std::io::Error::from_raw_os_error(code as i32)
            );
            return;
        }
    }
    assert_eq!(
        security_of(&section).owner,
        STRANGER,
        "the owner change took"
    );
    assert_untrusted(Mmf::open(&name), &name, STRANGER);
    assert_untrusted(Mmf::open_read_only(&name), &name, STRANGER);
    assert_untrusted(Mmf::open_or_create(&name, 4096), &name, STRANGER);
    assert_untrusted(mmf::FrameReader::open(&name), &name, STRANGER);
    // Named, it opens, also in the canonical form's other spellings.
    let trusted = MmfOptions::new(&name).trust_sid(STRANGER).open().unwrap();
    assert_eq!(trusted.read_to_vec(0, 4).unwrap(), b"mine");
    let lower = STRANGER.to_lowercase();
    let trusted = MmfOptions::new(&name)
        .trust_sid(&lower)
        .open_read_only()
        .unwrap();
    assert_eq!(trusted.read_to_vec(0, 4).unwrap(), b"mine");
    // Another SID does not help.
    assert_untrusted(
        MmfOptions::new(&name)
            .trust_sid("S-1-5-21-1-2-3-4243")
            .open(),
        &name,
        STRANGER,
    );
    drop(trusted);

    // Openers check the wake semaphore's owner too (they open the creator's, or one put in
    // its place once every handle to the creator's was closed).
    set_owner(&section, &token_user_and_group().0).unwrap();
    MmfOptions::new(&name)
        .open()
        .expect("the section is trusted again");
    let wake = format!("{name}#mmf-wake");
    let semaphore = open_object(&wake, true, READ_CONTROL | WRITE_OWNER).unwrap();
    set_owner(&semaphore, STRANGER).unwrap();
    assert_untrusted(Mmf::open(&name), &wake, STRANGER);
    assert_untrusted(Mmf::open_read_only(&name), &wake, STRANGER);
    let trusted = MmfOptions::new(&name).trust_sid(STRANGER).open().unwrap();
    drop(trusted.write().unwrap());
}

#[test]
fn a_section_created_for_a_stranger_is_refused_before_its_bytes_are_read() {
    // A squatter's section from scratch, with the stranger as owner in its descriptor; not
    // an mmf segment at all (zeroed), so trusting it gets past the owner check and then
    // fails on the header instead.
    let name = common::unique_name("squat");
    let sd = descriptor(&format!("O:{STRANGER}D:P(A;;GA;;;WD)"));
    let sa = attributes(&sd);
    let object = utf16(&format!("Local\\{name}"));
    // SAFETY: pagefile-backed; `sa` points to `sd`, alive for the call; `object` is
    // NUL-terminated.
    let raw = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            &sa,
            PAGE_READWRITE,
            0,
            65536,
            object.as_ptr(),
        )
    };
    if raw.is_null() {
        let e = std::io::Error::last_os_error();
        // ERROR_INVALID_OWNER (1307) is Windows' answer without SeRestorePrivilege.
        println!("SKIPPED: cannot create a section owned by {STRANGER} here: {e}");
        assert_eq!(e.raw_os_error(), Some(1307), "{e}");
        return;
    }
    let _squat = Handle(raw);
    let owner = security_of(&open_object(&name, false, READ_CONTROL).unwrap()).owner;
    assert_eq!(owner, STRANGER, "the descriptor's owner was applied");
    assert_untrusted(Mmf::open(&name), &name, STRANGER);
    assert_untrusted(Mmf::open_read_only(&name), &name, STRANGER);
    let past_the_owner_check = MmfOptions::new(&name)
        .trust_sid(STRANGER)
        .open_timeout(Duration::from_millis(50))
        .open();
    assert!(
        matches!(
            past_the_owner_check,
            Err(Error::NotReady { .. } | Error::NotMmf { .. })
        ),
        "trusted, the zeroed section is judged by its header: {past_the_owner_check:?}"
    );
}

#[test]
fn a_squatted_wake_semaphore_makes_create_fail_unless_its_owner_is_trusted() {
    let name = common::unique_name("semsquat");
    let wake = format!("{name}#mmf-wake");
    // The squatter's semaphore lets everybody do everything, so that its victim attaches.
    let sd = descriptor(&format!("O:{STRANGER}D:P(A;;GA;;;WD)"));
    let sa = attributes(&sd);
    let object = utf16(&format!("Local\\{wake}"));
    // SAFETY: `sa` points to `sd`, alive for the call; counts 0 and 1; `object` is
    // NUL-terminated.
    let raw = unsafe { CreateSemaphoreW(&sa, 0, 1, object.as_ptr()) };
    if raw.is_null() {
        let e = std::io::Error::last_os_error();
        println!("SKIPPED: cannot create a semaphore owned by {STRANGER} here: {e}");
        assert_eq!(e.raw_os_error(), Some(1307), "{e}");
        return;
    }
    let squat = Handle(raw);
    assert_eq!(
        security_of(&open_object(&wake, true, READ_CONTROL).unwrap()).owner,
        STRANGER
    );
    assert_untrusted(Mmf::create(&name, 4096), &wake, STRANGER);
    assert_untrusted(Mmf::open_or_create(&name, 4096), &wake, STRANGER);
    // The failed create left nothing behind: the section went with its only handle.
    assert!(matches!(Mmf::open(&name), Err(Error::NotFound { .. })));
    // Named, the squatter's semaphore is accepted (it only carries tokens).
    let segment = MmfOptions::new(&name)
        .trust_sid(STRANGER)
        .create(4096)
        .unwrap();
    segment.write_at(0, b"ok").unwrap();
    drop(segment);
    drop(squat);
    // A squatter's semaphore that lets us read its owner but not wait on it or signal it
    // is still reported by its owner; one that hides its owner too is a plain refusal.
    for (dacl, readable) in [
        (format!("(A;;{READ_CONTROL:#x};;;WD)"), true),
        (String::new(), false),
    ] {
        let name = common::unique_name("semlocked");
        let wake = format!("{name}#mmf-wake");
        let sd = descriptor(&format!("O:{STRANGER}D:P{dacl}"));
        let sa = attributes(&sd);
        let object = utf16(&format!("Local\\{wake}"));
        // SAFETY: as above.
        let raw = unsafe { CreateSemaphoreW(&sa, 0, 1, object.as_ptr()) };
        assert!(!raw.is_null(), "{}", std::io::Error::last_os_error());
        let _squat = Handle(raw);
        if readable {
            assert_untrusted(Mmf::create(&name, 4096), &wake, STRANGER);
        } else {
            let result = Mmf::create(&name, 4096);
            assert!(
                matches!(result, Err(Error::PermissionDenied { .. })),
                "{result:?}"
            );
        }
        assert!(matches!(Mmf::open(&name), Err(Error::NotFound { .. })));
    }

    // Gone with the squatter, the name is free again and gets our own semaphore.
    let segment = Mmf::create(&name, 4096).unwrap();
    let (me, _) = token_user_and_group();
    assert_eq!(
        security_of(&open_object(&wake, true, READ_CONTROL).unwrap()).owner,
        me
    );
    drop(segment);
}

#[test]
fn a_leftover_wake_semaphore_of_this_user_is_reused() {
    // Not a squat: this user's own semaphore, e.g. of an earlier segment of the name whose
    // last user is still closing. Create must accept it, not fail.
    let (me, _) = token_user_and_group();
    let name = common::unique_name("leftover");
    let object = utf16(&format!("Local\\{name}#mmf-wake"));
    let sd = descriptor(&format!("O:{me}D:P(A;;GA;;;{me})"));
    let sa = attributes(&sd);
    // SAFETY: `sa` points to `sd`, alive for the call; counts 0 and 1; `object` is
    // NUL-terminated.
    let raw = unsafe { CreateSemaphoreW(&sa, 0, 1, object.as_ptr()) };
    assert!(!raw.is_null(), "{}", std::io::Error::last_os_error());
    let leftover = Handle(raw);
    let segment = Mmf::create(&name, 4096).unwrap();
    drop(segment.write().unwrap());
    drop((segment, leftover));

    // One made with the default descriptor (by other code, or an mmf before issue 11) is
    // owned by the token's default owner on Windows, this user or Administrators, both
    // trusted; wine 8 gives such an object no owner at all, and nobody vouches for that.
    // SAFETY: default descriptor; counts 0 and 1; `object` is NUL-terminated.
    let raw = unsafe { CreateSemaphoreW(ptr::null(), 0, 1, object.as_ptr()) };
    assert!(!raw.is_null(), "{}", std::io::Error::last_os_error());
    let leftover = Handle(raw);
    let handle = open_object(&format!("{name}#mmf-wake"), true, READ_CONTROL).unwrap();
    match owner_or_none(&handle) {
        Some(owner) => {
            println!("a default descriptor's owner is {owner}");
            let segment = Mmf::create(&name, 4096).unwrap();
            drop(segment.write().unwrap());
        }
        None => {
            println!("wine: a default descriptor has no owner, so create refuses the semaphore");
            assert!(matches!(
                Mmf::create(&name, 4096),
                Err(Error::UntrustedOwner { owner: mmf::Owner::Sid(ref s), .. }) if s == "(no owner)"
            ));
        }
    }
    drop(leftover);
}

/// The owner SID of the object behind `handle`, or `None` if its descriptor names none.
fn owner_or_none(handle: &Handle) -> Option<String> {
    let mut owner: PSID = ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // SAFETY: `handle` has READ_CONTROL; the out pointers are valid; only the owner is asked.
    let code = unsafe {
        GetSecurityInfo(
            handle.0,
            SE_KERNEL_OBJECT,
            OWNER_SECURITY_INFORMATION,
            &mut owner,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            &mut sd,
        )
    };
    assert_eq!(code, 0, "GetSecurityInfo: {code}");
    let _sd = Local(sd);
    (!owner.is_null()).then(|| sid_text(owner))
}

#[test]
fn a_malformed_trusted_sid_is_a_typed_error_on_create_and_open() {
    let name = common::unique_name("badsid");
    let bad = MmfOptions::new(&name).trust_sid("S-1-banana");
    assert!(
        matches!(bad.create(4096), Err(Error::InvalidSid { ref sid }) if sid == "S-1-banana"),
        "create"
    );
    let _segment = Mmf::create(&name, 4096).unwrap();
    let err = bad.open().unwrap_err();
    assert!(matches!(err, Error::InvalidSid { .. }), "open: {err:?}");
    println!("{err}");
    // SDDL aliases are SIDs too: "BA" is BUILTIN\Administrators.
    MmfOptions::new(&name).trust_sid("BA").open().unwrap();
}
