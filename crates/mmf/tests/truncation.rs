//! Truncation: another process shrinks a segment (`ftruncate`) under processes that use it.
//!
//! Touching a page past the end of a shrunk shm object raises SIGBUS. The copy methods must
//! turn that into `Error::Truncated` and keep the process running; faults anywhere else must
//! still reach the application's handler or kill the process, as if mmf were not there.
//!
//! Each test re-launches this test binary as a child (`--exact <test>` plus the role in an
//! environment variable), so the faulting code runs in a real separate process.
#![cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "x86")))]

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mmf::{Error, Mmf};

const ROLE: &str = "MMF_TRUNCATION_ROLE";
const SEGMENT: &str = "MMF_TRUNCATION_SEGMENT";
const HEADER_LEN: u64 = mmf::header::HEADER_LEN as u64;

fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "mmf-trunc-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Shrinks the shm object `name` to `len` bytes, as a hostile or buggy peer would.
fn truncate(name: &str, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{name}"))
        .and_then(|file| file.set_len(len))
        .expect("truncate the shm object");
}

/// This binary again, running only `test`, in `role`, on `segment`.
fn spawn_child(test: &str, role: &str, segment: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(SEGMENT, segment)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child")
}

/// The role this process was launched in, if it is a child.
fn role() -> Option<(String, String)> {
    Some((std::env::var(ROLE).ok()?, std::env::var(SEGMENT).ok()?))
}

/// Waits for `child` at most `limit`, killing it (and failing) if it hangs.
fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("child did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads the child's stdout until a line containing `marker` (libtest may have printed the
/// test's name on the same line); returns the line from `marker` on.
fn line_with(reader: &mut impl BufRead, marker: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "child closed stdout before printing {marker:?}");
        if let Some(at) = line.find(marker) {
            return line[at..].trim().to_owned();
        }
    }
}

/// `key=value` fields of a report line.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .unwrap()
}

const DATA_LEN: usize = 1 << 20;
const CHUNK: usize = 64 << 10;
/// Operations the copier keeps running after its first `Truncated`, each of which must fail.
const OPS_AFTER_TRUNCATION: u64 = 2000;

/// Child: copies through every copy method (read-write handle and read-only handle) in a loop;
/// once the segment is truncated, keeps going and checks that every call is `Truncated`.
fn copier(name: &str) -> ! {
    let rw = Mmf::open(name).expect("open read-write");
    let ro = Mmf::open_read_only(name).expect("open read-only");
    let pattern: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; CHUNK];
    let (mut ok, mut ok_after, mut truncated, mut other) = (0u64, 0u64, 0u64, 0u64);
    let mut iteration = 0usize;
    let start = Instant::now();
    while truncated < OPS_AFTER_TRUNCATION && start.elapsed() < Duration::from_secs(20) {
        let offset = (iteration * CHUNK) % (DATA_LEN - CHUNK + 1);
        let results = [
            rw.write_at(offset, &pattern),
            rw.read_at(offset, &mut buf),
            rw.read_to_vec(DATA_LEN - CHUNK, CHUNK).map(drop),
            ro.read_at(offset, &mut buf),
        ];
        for result in results {
            match result {
                Ok(()) if truncated > 0 => ok_after += 1,
                Ok(()) => ok += 1,
                Err(Error::Truncated {
                    found: 0, needed, ..
                }) if needed == HEADER_LEN + DATA_LEN as u64 => truncated += 1,
                Err(e) => {
                    eprintln!("unexpected error: {e}");
                    other += 1;
                }
            }
        }
        iteration += 1;
        if iteration == 50 {
            println!("copier ready");
        }
    }
    println!("report ok={ok} truncated={truncated} ok_after={ok_after} other={other}");
    std::process::exit(0)
}

#[test]
fn copy_api_survives_truncation_to_zero_by_another_process() {
    if let Some((_, name)) = role() {
        copier(&name);
    }
    let name = unique_name("zero");
    let _segment = Mmf::create(&name, DATA_LEN).unwrap();
    let mut child = spawn_child(
        "copy_api_survives_truncation_to_zero_by_another_process",
        "copier",
        &name,
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    line_with(&mut out, "copier ready");
    // Let the child get well into its loop, so the cut lands at an arbitrary point of it.
    std::thread::sleep(Duration::from_millis(30));
    truncate(&name, 0);
    let report = line_with(&mut out, "report ");
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    println!("truncation to zero: {report}");
    assert!(status.success(), "copier died: {status:?}");
    assert!(field(&report, "ok") >= 200, "{report}");
    assert!(
        field(&report, "truncated") >= OPS_AFTER_TRUNCATION,
        "{report}"
    );
    assert_eq!(
        field(&report, "ok_after"),
        0,
        "nothing can succeed once the data is gone: {report}"
    );
    assert_eq!(field(&report, "other"), 0, "{report}");
}

#[test]
fn truncation_inside_the_data_fails_only_the_lost_part_and_releases_the_lock() {
    let name = unique_name("part");
    let segment = Mmf::create(&name, 4 * 4096).unwrap();
    segment.write_at(0, &[7; 4 * 4096]).unwrap();
    truncate(&name, HEADER_LEN + 8192);

    let mut buf = [0u8; 8192];
    segment.read_at(0, &mut buf).unwrap();
    assert!(
        buf.iter().all(|&b| b == 7),
        "the surviving pages keep their data"
    );
    match segment.read_at(4096, &mut buf) {
        Err(Error::Truncated { found, needed, .. }) => {
            assert_eq!(found, HEADER_LEN + 8192);
            assert_eq!(needed, HEADER_LEN + 4 * 4096);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert!(matches!(
        segment.write_at(3 * 4096, &[1; 100]),
        Err(Error::Truncated { .. })
    ));
    // Both failed copies released their locks: the lock word (intact, in the header page)
    // is free again.
    drop(
        segment
            .try_write()
            .expect("write lock released after the fault"),
    );
    segment.write_at(0, &[9; 10]).unwrap();
    // A new handle sees at open that the object is shorter than its header says. (It cannot
    // tell a cut object from a header whose size field was overwritten, hence `Corrupt`.)
    match Mmf::open(&name) {
        Err(Error::Corrupt { reason }) => assert!(reason.contains("holds only"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn truncation_below_the_header_fails_every_copy_in_process() {
    let name = unique_name("header");
    let segment = Mmf::create(&name, 3 * 4096).unwrap();
    let ro = Mmf::open_read_only(&name).unwrap();
    truncate(&name, 0);
    for _ in 0..3 {
        let mut buf = [0u8; 16];
        assert!(matches!(
            segment.read_at(0, &mut buf),
            Err(Error::Truncated { found: 0, .. })
        ));
        assert!(matches!(
            segment.write_at(100, &buf),
            Err(Error::Truncated { found: 0, .. })
        ));
        assert!(matches!(
            ro.read_at(4096, &mut buf),
            Err(Error::Truncated { found: 0, .. })
        ));
    }
    // Locking touches the vanished header: it must not kill us either.
    drop(segment.try_read());
    drop(segment.try_write());
}

#[test]
fn segfault_outside_the_copy_routine_still_kills() {
    if let Some((_, name)) = role() {
        let _segment = Mmf::open(&name).unwrap(); // installs mmf's handler
        let bad = std::hint::black_box(8usize) as *const u8;
        // SAFETY: none; this child exists to crash on an invalid read.
        let byte = unsafe { std::ptr::read_volatile(bad) };
        println!("read {byte} from an invalid address?!");
        std::process::exit(0);
    }
    let name = unique_name("segv");
    let _segment = Mmf::create(&name, 4096).unwrap();
    let mut child = spawn_child(
        "segfault_outside_the_copy_routine_still_kills",
        "crasher",
        &name,
    );
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}");
}

/// Child for the two tests below: maps a segment, has it truncated, then touches a lost page
/// directly through a guard (unprotected, as documented) rather than through a copy method.
fn touch_lost_page_through_guard(name: &str) -> u8 {
    let segment = Mmf::open(name).unwrap();
    truncate(name, HEADER_LEN);
    let guard = segment.read().unwrap();
    let last: *const u8 = &guard[guard.len() - 1];
    // SAFETY: none for the lost page: the child exists to fault here.
    unsafe { std::ptr::read_volatile(last) }
}

#[test]
fn sigbus_from_a_guard_still_kills_by_default() {
    if let Some((_, name)) = role() {
        let byte = touch_lost_page_through_guard(&name);
        println!("read {byte} from a truncated page?!");
        std::process::exit(0);
    }
    let name = unique_name("guard");
    let _segment = Mmf::create(&name, 2 * 4096).unwrap();
    let mut child = spawn_child("sigbus_from_a_guard_still_kills_by_default", "guard", &name);
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
}

const APP_HANDLER_EXIT: i32 = 42;

extern "C" fn app_sigbus_handler(_sig: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(APP_HANDLER_EXIT) };
}

#[test]
fn an_application_sigbus_handler_installed_first_is_chained_to() {
    if let Some((_, name)) = role() {
        // SAFETY: all-zero is a valid sigaction (SIG_DFL, no flags, empty mask).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = app_sigbus_handler as extern "C" fn(libc::c_int) as usize;
        // SAFETY: a live sigaction with a valid one-argument handler (no SA_SIGINFO).
        let rc = unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) };
        assert_eq!(rc, 0);
        let byte = touch_lost_page_through_guard(&name);
        println!("read {byte} from a truncated page?!");
        std::process::exit(0);
    }
    let name = unique_name("chain");
    let _segment = Mmf::create(&name, 2 * 4096).unwrap();
    let mut child = spawn_child(
        "an_application_sigbus_handler_installed_first_is_chained_to",
        "chain",
        &name,
    );
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(APP_HANDLER_EXIT), "{status:?}");
}
