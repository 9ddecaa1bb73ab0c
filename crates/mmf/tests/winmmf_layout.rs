//! The second lock and the `winmmf` crate's headerless layout (`mmf::winmmf`): sizes, the
//! bytes in the object, mappings made the way winmmf 0.6 makes them (opened by `mmf`) and
//! the reverse, two and three real processes sharing data under `WinMmfLock`, and the wedge
//! a dead holder leaves, which the layout documents.
//!
//! winmmf 0.6.2 itself does not build for `x86_64-pc-windows-gnu` (its dependency microseh
//! 1.2 compiles a C stub with MSVC's `__try`/`__except`, which mingw's gcc rejects), so the
//! Windows tests below make and open sections with the very calls winmmf makes
//! (`CreateFileMappingW(INVALID_HANDLE_VALUE, PAGE_EXECUTE_READWRITE | SEC_COMMIT, size + 4
//! rounded to the page, "Local\<name>")`, `OpenFileMappingW(FILE_MAP_ALL_ACCESS)`,
//! `MapViewOfFile(FILE_MAP_ALL_ACCESS)`, its zeroing and its `0xFF00_0000` then `0` word),
//! and take its locks with its compare-exchanges on the word; on Linux the same is done on
//! the object's bytes through `/dev/shm`.

mod common;

use std::time::{Duration, Instant};

use common::{arg, arg_u64, say, unique_name, CHILD_TIMEOUT};
use mmf::winmmf::WinMmf;
#[cfg(any(target_os = "linux", windows))]
use mmf::winmmf::LOCK_WORD_LEN;
use mmf::{Error, Mmf, MmfOptions, WinMmfLock};

/// The entry point of every child process of this file (ignored in a normal test run).
#[test]
#[ignore = "not a test: the entry point of this file's child processes, which run it with --include-ignored"]
fn child() {
    common::child_main(|role| match role {
        "hammer" => hammer_role(),
        "holder" => holder_role(),
        other => panic!("unknown child role {other:?}"),
    });
}

#[test]
fn handles_and_guards_have_the_thread_bounds_of_mmfs() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<WinMmf>();
    send_sync::<mmf::winmmf::WinMmfReadGuard<'_>>();
    send_sync::<mmf::winmmf::WinMmfWriteGuard<'_>>();
    send_sync::<mmf::winmmf::WinMmfOptions>();
}

fn options(name: &str) -> mmf::winmmf::WinMmfOptions {
    MmfOptions::new(name)
        .lock::<WinMmfLock>()
        .winmmf_compatible()
}

// ---------------------------------------------------------------------------------------
// The lock in an ordinary segment
// ---------------------------------------------------------------------------------------

#[test]
fn an_mmf_segment_can_use_the_winmmf_lock_and_other_locks_are_refused() {
    let name = unique_name("wlock");
    let segment = MmfOptions::new(&name)
        .lock::<WinMmfLock>()
        .create(4096)
        .expect("create");
    segment.write_at(0, b"spin").expect("write_at");
    let other = MmfOptions::new(&name)
        .lock::<WinMmfLock>()
        .open()
        .expect("open with the same lock");
    let guard = other.read().expect("read");
    assert_eq!(&guard[..4], b"spin");
    assert!(matches!(
        common::lock_error(segment.try_write()),
        Some(Error::WouldBlock)
    ));
    let second = segment.try_read().expect("readers share");
    drop((guard, second));
    assert!(!segment.is_poisoned());
    match Mmf::open(&name) {
        Err(Error::LockMismatch { expected, found }) => {
            assert_eq!(found, u32::from_be_bytes(*b"WMF6"));
            assert_ne!(expected, found);
        }
        other => panic!("the default lock opened a WinMmfLock segment: {other:?}"),
    }
    let held = segment.write().expect("write");
    let waited = match common::lock_error(segment.write_timeout(Duration::from_millis(30))) {
        Some(Error::Timeout { waited }) => waited,
        other => panic!("a second write lock: {other:?}"),
    };
    drop(held);
    assert!(waited >= Duration::from_millis(30));
}

// ---------------------------------------------------------------------------------------
// The headerless layout: sizes and bytes
// ---------------------------------------------------------------------------------------

/// The page size winmmf rounds to: 4096 on every system these tests run on.
const PAGE: usize = 4096;

#[test]
fn sizes_are_the_size_asked_plus_the_word_rounded_to_the_page_less_the_word() {
    for (asked, len) in [
        (1, PAGE - 4),
        (1000, PAGE - 4),
        (PAGE - 4, PAGE - 4),
        (PAGE - 3, 2 * PAGE - 4),
    ] {
        let name = unique_name("wsize");
        let created = options(&name).create(asked).expect("create");
        assert_eq!(created.len(), len, "create({asked})");
        let opened = options(&name).open().expect("open");
        assert_eq!(opened.len(), len, "open after create({asked})");
    }
    let name = unique_name("wsize");
    assert!(matches!(
        options(&name).create(0),
        Err(Error::InvalidSize { size: 0, .. })
    ));
    assert!(matches!(
        options(&name).create(usize::MAX - 2),
        Err(Error::InvalidSize { .. })
    ));
    assert!(matches!(
        MmfOptions::new(&name)
            .lock::<WinMmfLock>()
            .large_pages(true)
            .winmmf_compatible()
            .create(64),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(options(&name).open(), Err(Error::NotFound { .. })));
    assert!(matches!(
        options("bad/name").create(64),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn copies_and_guards_stay_in_bounds_and_exclude_each_other() {
    let name = unique_name("wguard");
    let a = options(&name).create(100).expect("create");
    let b = options(&name).open().expect("open");
    a.write_at(0, b"hello").expect("write_at");
    assert_eq!(b.read_to_vec(0, 5).expect("read_to_vec"), b"hello");
    assert!(matches!(
        a.write_at(a.len() - 1, b"xy"),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        b.read_to_vec(usize::MAX, 2),
        Err(Error::OutOfBounds { .. })
    ));
    {
        let mut w = a.write().expect("write");
        w[a.len() - 1] = 7;
        assert!(matches!(b.try_read(), Err(Error::WouldBlock)));
        assert!(matches!(b.try_write(), Err(Error::WouldBlock)));
        let start = Instant::now();
        assert!(matches!(
            b.read_timeout(Duration::from_millis(20)),
            Err(Error::Timeout { .. })
        ));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
    let r1 = b.read().expect("read");
    let r2 = a.try_read().expect("a second reader");
    assert_eq!(r1[b.len() - 1], 7);
    assert!(matches!(a.try_write(), Err(Error::WouldBlock)));
    assert!(matches!(
        b.write_timeout(Duration::from_millis(10)),
        Err(Error::Timeout { .. })
    ));
    drop((r1, r2));
    assert!(a.try_write().is_ok());
}

// ---------------------------------------------------------------------------------------
// Byte-exact: the object as winmmf sees it (Linux: through /dev/shm)
// ---------------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
mod linux_bytes {
    use super::*;
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::{FileExt, OpenOptionsExt};

    fn object(name: &str) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/dev/shm/{name}"))
            .expect("the object under /dev/shm")
    }

    fn word(file: &File) -> u32 {
        let mut bytes = [0; 4];
        file.read_exact_at(&mut bytes, 0).expect("read the word");
        u32::from_le_bytes(bytes)
    }

    fn set_word(file: &File, value: u32) {
        file.write_all_at(&value.to_le_bytes(), 0)
            .expect("write the word");
    }

    #[test]
    fn the_object_holds_the_lock_word_at_0_and_the_data_from_4() {
        let name = unique_name("wbytes");
        // A timeout, so that data written over the word (a wrong offset) fails the test
        // rather than wedging it.
        let mapping = MmfOptions::new(&name)
            .lock::<WinMmfLock>()
            .lock_timeout(Some(Duration::from_secs(5)))
            .winmmf_compatible()
            .create(1000)
            .expect("create");
        let file = object(&name);
        assert_eq!(file.metadata().unwrap().len(), PAGE as u64);
        assert_eq!(word(&file), 0, "a new mapping is initialised and unlocked");
        mapping.write_at(0, b"hello").expect("write_at");
        mapping
            .write_at(mapping.len() - 3, b"end")
            .expect("write_at");
        let mut bytes = vec![0; PAGE];
        file.read_exact_at(&mut bytes, 0).unwrap();
        assert_eq!(&bytes[..4], &[0; 4]);
        assert_eq!(&bytes[LOCK_WORD_LEN..LOCK_WORD_LEN + 5], b"hello");
        assert_eq!(&bytes[PAGE - 3..], b"end");
        {
            let _w = mapping.write().expect("write");
            assert_eq!(word(&file), 0x8000_0000, "bit 31: the writer");
        }
        {
            let _r1 = mapping.read().expect("read");
            let _r2 = mapping.read().expect("read");
            assert_eq!(word(&file), 2, "the low 24 bits: the readers");
        }
        assert_eq!(word(&file), 0);
        drop(mapping);
        assert!(
            File::open(format!("/dev/shm/{name}")).is_err(),
            "the creator's drop removes the name"
        );
    }

    /// An object made as winmmf's creator makes it: zeroed, the word `0xFF00_0000` while it
    /// initialises, then `0`; an `mmf` opener waits for the `0`, and both sides' locks then
    /// exclude each other on the word.
    #[test]
    fn a_mapping_laid_out_by_winmmf_is_opened_and_its_locks_are_respected() {
        let name = unique_name("wforeign");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(format!("/dev/shm/{name}"))
            .expect("create the object by hand");
        file.set_len(PAGE as u64).unwrap();
        set_word(&file, 0xFF00_0000);
        file.write_all_at(b"from winmmf", LOCK_WORD_LEN as u64)
            .unwrap();
        let waiting = MmfOptions::new(&name)
            .lock::<WinMmfLock>()
            .open_timeout(Duration::from_millis(30))
            .winmmf_compatible()
            .open();
        assert!(
            matches!(waiting, Err(Error::NotReady { .. })),
            "opened an uninitialised mapping: {waiting:?}"
        );
        let opener = std::thread::spawn({
            let name = name.clone();
            move || {
                MmfOptions::new(&name)
                    .lock::<WinMmfLock>()
                    .open_timeout(Duration::from_secs(10))
                    .winmmf_compatible()
                    .open()
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        set_word(&file, 0); // winmmf's `set_init`
        let mapping = opener.join().unwrap().expect("open once initialised");
        assert_eq!(mapping.len(), PAGE - 4);
        assert_eq!(mapping.read_to_vec(0, 11).unwrap(), b"from winmmf");
        // winmmf's write lock (its `lock_write`: `chunk | WRITE_LOCK_MASK`).
        set_word(&file, 0x8000_0000);
        assert!(matches!(mapping.try_read(), Err(Error::WouldBlock)));
        assert!(matches!(mapping.try_write(), Err(Error::WouldBlock)));
        // Two of winmmf's read locks (`chunk + 1`).
        set_word(&file, 2);
        assert!(matches!(mapping.try_write(), Err(Error::WouldBlock)));
        let guard = mapping.try_read().expect("readers share");
        assert_eq!(word(&file), 3);
        drop(guard);
        assert_eq!(word(&file), 2);
        set_word(&file, 0);
        mapping.write_at(0, b"from mmf").unwrap();
        let mut bytes = [0; 8];
        file.read_exact_at(&mut bytes, LOCK_WORD_LEN as u64)
            .unwrap();
        assert_eq!(&bytes, b"from mmf");
        // An object too short for a word and a byte is refused, typed.
        file.set_len(4).unwrap();
        drop(mapping);
        assert!(matches!(options(&name).open(), Err(Error::Corrupt { .. })));
        Mmf::remove(&name).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Byte-exact: sections made and opened with winmmf's own calls (Windows, and wine)
// ---------------------------------------------------------------------------------------

#[cfg(windows)]
mod windows_calls {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    use windows_sys::Win32::Foundation::{
        CloseHandle, LocalFree, FALSE, HANDLE, INVALID_HANDLE_VALUE,
    };
    use windows_sys::Win32::Security::Authorization::{
        GetSecurityInfo, SetSecurityInfo, SE_KERNEL_OBJECT,
    };
    use windows_sys::Win32::Security::{
        GetTokenInformation, TokenUser, OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID,
        TOKEN_QUERY, TOKEN_USER,
    };
    use windows_sys::Win32::System::Memory::{
        CreateFileMappingW, MapViewOfFile, OpenFileMappingW, UnmapViewOfFile, FILE_MAP_ALL_ACCESS,
        MEMORY_MAPPED_VIEW_ADDRESS, PAGE_EXECUTE_READWRITE, SEC_COMMIT,
    };
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

    /// A section and view opened or created as winmmf 0.6 does it.
    struct WinmmfSide {
        handle: HANDLE,
        view: MEMORY_MAPPED_VIEW_ADDRESS,
    }

    fn wide(name: &str) -> Vec<u16> {
        format!("Local\\{name}").encode_utf16().chain([0]).collect()
    }

    impl WinmmfSide {
        /// `MemoryMappedFile::new(size, name, Namespace::LOCAL, Some(false))`, stopped
        /// before its `set_init` (the word left at `0xFF00_0000`).
        fn create_uninitialised(name: &str, size: usize) -> Self {
            let total = (size + 4).next_multiple_of(PAGE);
            let wide = wide(name);
            // SAFETY: a pagefile-backed section (INVALID_HANDLE_VALUE), default security, a
            // NUL-terminated name that outlives the call.
            let handle = unsafe {
                CreateFileMappingW(
                    INVALID_HANDLE_VALUE,
                    std::ptr::null(),
                    PAGE_EXECUTE_READWRITE | SEC_COMMIT,
                    0,
                    total as u32,
                    wide.as_ptr(),
                )
            };
            assert!(!handle.is_null(), "CreateFileMappingW");
            let side = Self::map(handle, total);
            // SAFETY: the view is `total` bytes, writable, and ours alone so far.
            unsafe { std::ptr::write_bytes(side.view.Value.cast::<u8>(), 0, total) };
            side.word().store(0xFF00_0000, Release); // `RWLock::from_raw`
            side
        }

        /// `MemoryMappedFile::open(size, name, Namespace::LOCAL, false, Some(false))`.
        fn open(name: &str, size: usize) -> Self {
            let total = (size + 4).next_multiple_of(PAGE);
            let wide = wide(name);
            // SAFETY: a NUL-terminated name that outlives the call.
            let handle = unsafe { OpenFileMappingW(FILE_MAP_ALL_ACCESS, 0, wide.as_ptr()) };
            assert!(!handle.is_null(), "OpenFileMappingW(FILE_MAP_ALL_ACCESS)");
            Self::map(handle, total)
        }

        fn map(handle: HANDLE, total: usize) -> Self {
            // SAFETY: `handle` is a section of at least `total` bytes, just created or opened.
            let view = unsafe { MapViewOfFile(handle, FILE_MAP_ALL_ACCESS, 0, 0, total) };
            assert!(!view.Value.is_null(), "MapViewOfFile(FILE_MAP_ALL_ACCESS)");
            WinmmfSide { handle, view }
        }

        /// Whether the section's descriptor names an owner: on Windows a default descriptor
        /// (winmmf passes none) is owned by the token's default owner; wine 8 names none.
        fn has_owner(&self) -> bool {
            let mut owner: PSID = std::ptr::null_mut();
            let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
            // SAFETY: the handle has full access; the out pointers are valid; only the owner
            // is asked for, and the descriptor is freed below.
            let code = unsafe {
                GetSecurityInfo(
                    self.handle,
                    SE_KERNEL_OBJECT,
                    OWNER_SECURITY_INFORMATION,
                    &mut owner,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut sd,
                )
            };
            assert_eq!(code, 0, "GetSecurityInfo: {code}");
            let named = !owner.is_null();
            // SAFETY: `sd` was allocated by GetSecurityInfo, freed once.
            unsafe { LocalFree(sd) };
            named
        }

        /// Makes this process's token user the section's owner, as Windows does for a
        /// default descriptor.
        fn own(&self) {
            let mut token: HANDLE = std::ptr::null_mut();
            // SAFETY: no preconditions; a pseudo handle that needs no closing.
            let process = unsafe { GetCurrentProcess() };
            // SAFETY: the current-process pseudo handle; `token` is a valid out pointer.
            let ok = unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) };
            assert_ne!(ok, FALSE, "OpenProcessToken");
            let mut buffer = vec![0u64; 128];
            let mut needed = 0;
            // SAFETY: `buffer` is writable and 8-aligned for its 1024 bytes, plenty for a
            // TOKEN_USER and its SID; `needed` is a valid out pointer.
            let ok = unsafe {
                GetTokenInformation(
                    token,
                    TokenUser,
                    buffer.as_mut_ptr().cast(),
                    1024,
                    &mut needed,
                )
            };
            assert_ne!(ok, FALSE, "GetTokenInformation");
            // SAFETY: the buffer holds the TOKEN_USER the call wrote.
            let user = unsafe { buffer.as_ptr().cast::<TOKEN_USER>().read() }
                .User
                .Sid;
            // SAFETY: the section handle has WRITE_OWNER; `user` points into `buffer`.
            let code = unsafe {
                SetSecurityInfo(
                    self.handle,
                    SE_KERNEL_OBJECT,
                    OWNER_SECURITY_INFORMATION,
                    user,
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    std::ptr::null(),
                )
            };
            assert_eq!(code, 0, "SetSecurityInfo(owner): {code}");
            // SAFETY: opened above, closed once.
            unsafe { CloseHandle(token) };
        }

        /// The word at offset 0, as winmmf's `AtomicU32::from_ptr`.
        fn word(&self) -> &AtomicU32 {
            // SAFETY: the view is page aligned, at least a page long and lives as long as
            // `self`; the word is only accessed atomically.
            unsafe { &*self.view.Value.cast::<AtomicU32>() }
        }

        /// The data's first byte: offset 4 of the view.
        fn data_ptr(&self) -> *mut u8 {
            // SAFETY: the view is at least a page long, so offset 4 is inside it.
            unsafe { self.view.Value.cast::<u8>().add(LOCK_WORD_LEN) }
        }

        fn data(&self, len: usize) -> Vec<u8> {
            let mut out = vec![0; len];
            // SAFETY: 4 + len lies inside the view; a test-only snapshot.
            unsafe { std::ptr::copy_nonoverlapping(self.data_ptr(), out.as_mut_ptr(), len) };
            out
        }

        fn put(&self, bytes: &[u8]) {
            // SAFETY: 4 + len lies inside the writable view; the caller holds winmmf's lock.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data_ptr(), bytes.len()) };
        }

        /// winmmf's `lock_write`: `chunk | WRITE_LOCK_MASK` from an unlocked, initialised word.
        fn lock_write(&self) -> bool {
            let chunk = self.word().load(Acquire);
            chunk & 0xFF00_0000 != 0xFF00_0000
                && chunk & 0x80FF_FFFF == 0
                && self
                    .word()
                    .compare_exchange(chunk, chunk | 0x8000_0000, Acquire, Relaxed)
                    .is_ok()
        }

        fn unlock_write(&self) {
            self.word().fetch_xor(0x8000_0000, Release);
        }
    }

    impl Drop for WinmmfSide {
        fn drop(&mut self) {
            // SAFETY: the view and handle came from MapViewOfFile / CreateFileMappingW above
            // and are released once, here.
            unsafe { UnmapViewOfFile(self.view) };
            // SAFETY: as above.
            unsafe { CloseHandle(self.handle) };
        }
    }

    #[test]
    fn a_section_made_as_winmmf_makes_it_is_opened_and_shares_its_lock() {
        let name = unique_name("wwin");
        let winmmf = WinmmfSide::create_uninitialised(&name, 1000);
        if !winmmf.has_owner() {
            // mmf opens only what a trusted owner made, and nobody vouches for no owner.
            println!("wine: a default descriptor has no owner; the test names this user");
            assert!(matches!(
                options(&name).open(),
                Err(Error::UntrustedOwner { owner: mmf::Owner::Sid(ref s), .. }) if s == "(no owner)"
            ));
            winmmf.own();
        }
        let waiting = MmfOptions::new(&name)
            .lock::<WinMmfLock>()
            .open_timeout(Duration::from_millis(30))
            .winmmf_compatible()
            .open();
        assert!(
            matches!(waiting, Err(Error::NotReady { .. })),
            "opened an uninitialised section: {waiting:?}"
        );
        // `set_init`, then winmmf writes under its lock.
        winmmf
            .word()
            .compare_exchange(0xFF00_0000, 0, Release, Relaxed)
            .unwrap();
        assert!(winmmf.lock_write());
        winmmf.put(b"from winmmf");
        let mapping = options(&name).open().expect("open the section");
        assert_eq!(mapping.len(), PAGE - 4, "winmmf's size()");
        assert!(matches!(mapping.try_read(), Err(Error::WouldBlock)));
        winmmf.unlock_write();
        assert_eq!(mapping.read_to_vec(0, 11).unwrap(), b"from winmmf");
        let guard = mapping.write().expect("write");
        assert_eq!(winmmf.word().load(Relaxed), 0x8000_0000);
        assert!(!winmmf.lock_write(), "winmmf got in past mmf's writer");
        drop(guard);
        assert!(winmmf.lock_write());
        winmmf.unlock_write();
    }

    #[test]
    fn a_mapping_made_by_mmf_is_opened_as_winmmf_opens_it() {
        let name = unique_name("wwin");
        let mapping = options(&name).create(1000).expect("create");
        mapping.write_at(0, b"from mmf").unwrap();
        let winmmf = WinmmfSide::open(&name, 1000);
        assert_eq!(winmmf.word().load(Relaxed), 0, "initialised and unlocked");
        assert_eq!(winmmf.data(8), b"from mmf");
        {
            let _r = mapping.read().expect("read");
            assert_eq!(winmmf.word().load(Relaxed), 1);
            assert!(!winmmf.lock_write(), "winmmf got in past mmf's reader");
        }
        assert!(winmmf.lock_write());
        assert!(matches!(mapping.try_read(), Err(Error::WouldBlock)));
        winmmf.put(b"winmmf!!");
        winmmf.unlock_write();
        assert_eq!(mapping.read_to_vec(0, 8).unwrap(), b"winmmf!!");
    }
}

// ---------------------------------------------------------------------------------------
// Real processes
// ---------------------------------------------------------------------------------------

const ROUNDS: u64 = if cfg!(windows) { 300 } else { 2000 };

/// Under the write lock: checks that the two counters at 0 and 8 are equal, then increments
/// the first, yields, and increments the second, so that a second writer or a reader inside
/// would see them differ or lose an increment. Under read locks: checks they are equal.
fn hammer(mapping: &WinMmf, rounds: u64) {
    for _ in 0..rounds {
        {
            let mut guard = mapping.write().expect("write");
            let a = u64::from_le_bytes(guard[0..8].try_into().unwrap());
            let b = u64::from_le_bytes(guard[8..16].try_into().unwrap());
            assert_eq!(a, b, "a write half done was seen by a writer");
            guard[0..8].copy_from_slice(&(a + 1).to_le_bytes());
            std::thread::yield_now();
            guard[8..16].copy_from_slice(&(b + 1).to_le_bytes());
        }
        let guard = mapping.read().expect("read");
        let a = u64::from_le_bytes(guard[0..8].try_into().unwrap());
        let b = u64::from_le_bytes(guard[8..16].try_into().unwrap());
        assert_eq!(a, b, "a write half done was seen by a reader");
    }
}

fn hammer_role() {
    let mapping = options(&arg("name")).open().expect("child opens");
    say("ready", 1);
    hammer(&mapping, arg_u64("rounds"));
    say("done", 1);
}

#[test]
fn processes_sharing_the_headerless_layout_never_see_a_write_half_done() {
    let name = unique_name("whammer");
    let mapping = options(&name).create(64).expect("create");
    let mut children: Vec<_> = (0..2)
        .map(|_| {
            common::child("hammer")
                .arg("name", &name)
                .arg("rounds", ROUNDS)
                .spawn()
        })
        .collect();
    for child in &mut children {
        child.expect("ready", CHILD_TIMEOUT);
    }
    hammer(&mapping, ROUNDS);
    for child in children {
        child.finish(CHILD_TIMEOUT);
    }
    let guard = mapping.read().unwrap();
    assert_eq!(
        u64::from_le_bytes(guard[0..8].try_into().unwrap()),
        3 * ROUNDS
    );
    assert_eq!(
        u64::from_le_bytes(guard[8..16].try_into().unwrap()),
        3 * ROUNDS
    );
}

fn holder_role() {
    let mapping = options(&arg("name")).open().expect("child opens");
    let mut guard = mapping.write().expect("write");
    guard[..4].copy_from_slice(b"torn");
    say("holding", 1);
    // Held until killed.
    let _ = common::command();
    unreachable!("the parent kills this child");
}

/// What the layout gives up: a writer that dies holding the lock wedges it for good, and
/// every wait ends only at its timeout, with nothing to say the holder is gone.
#[test]
fn a_writer_killed_holding_the_lock_wedges_it_until_the_timeout() {
    let name = unique_name("wwedge");
    let mapping = options(&name).create(64).expect("create");
    let mut holder = common::child("holder").arg("name", &name).spawn();
    holder.expect("holding", CHILD_TIMEOUT);
    holder.kill();
    for _ in 0..2 {
        let start = Instant::now();
        assert!(matches!(
            mapping.write_timeout(Duration::from_millis(50)),
            Err(Error::Timeout { .. })
        ));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(matches!(
            mapping.read_timeout(Duration::from_millis(10)),
            Err(Error::Timeout { .. })
        ));
    }
}
