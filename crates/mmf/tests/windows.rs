//! Windows-specific behaviour of `mmf`: namespaces, the handle-counted lifetime of a section,
//! read-only views the OS enforces, large pages, and the cross-process wake-up through the
//! segment's named semaphore. Runs on Windows and under wine (see the README).
#![cfg(windows)]

mod common;

use std::mem::size_of;
use std::ptr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{arg, say, CHILD_TIMEOUT};
use mmf::{Error, LockError, Mmf, MmfOptions, Namespace};
use windows_sys::Win32::Foundation::{CloseHandle, FALSE, FILETIME};
use windows_sys::Win32::System::Memory::{
    VirtualQuery, MEMORY_BASIC_INFORMATION, PAGE_READONLY, PAGE_READWRITE,
};
use windows_sys::Win32::System::Threading::{CreateSemaphoreW, GetCurrentProcess, GetProcessTimes};

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
    // SAFETY: `info` is a valid, writable MEMORY_BASIC_INFORMATION of the size passed;
    // VirtualQuery reads only the address-space bookkeeping for `at`.
    let written =
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
