//! Truncation: another process shrinks a segment (`ftruncate`) under processes that use it.
//!
//! Touching a page past the end of a shrunk shm object raises SIGBUS. The copy methods must
//! turn that into `Error::Truncated` and keep the process running; faults anywhere else must
//! still reach the application's handler or kill the process, as if mmf were not there.
//!
//! The faulting code runs in a child process (this test binary re-launched, see
//! `tests/common`), so that a fault the library fails to catch kills the child, not the test.
#![cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "x86")))]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{arg, arg_u64, say, unique_name, CHILD_TIMEOUT};
use mmf::{Error, Mmf};

const HEADER_LEN: u64 = mmf::header::HEADER_LEN as u64;
/// Page size of x86 Linux. Every cut below is a multiple of it, so that each byte past a cut
/// lies on a vanished page (bytes past the end of a partly cut page still read as zeros
/// without a fault: see the note on the test of a cut inside the data).
const PAGE: usize = 4096;

#[test]
#[ignore = "not a test: the entry point of this file's child processes"]
fn child() {
    common::child_main(|role| {
        let name = arg("segment");
        match role {
            "copier" => copier(&name),
            "crasher" => crasher(&name),
            "guard" => guard_reader(&name),
            "chain" => chained_guard_reader(&name),
            other => panic!("unknown role {other}"),
        }
    });
}

/// Shrinks the shm object `name` to `len` bytes, as a hostile or buggy peer would.
fn truncate(name: &str, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{name}"))
        .and_then(|file| file.set_len(len))
        .expect("truncate the shm object");
}

/// The contents every copier test keeps in its segment: different at every offset, so a copy
/// that returns bytes from the wrong place, stale bytes or zeros is told apart from the data.
fn contents(data_len: usize) -> Vec<u8> {
    common::pattern(0x7472_756e_6361_7465, data_len)
}

// ---- the copier: every copy method, before and after another process cuts the segment --------

/// Longest a copier may take from its `cut` to its exit. It needs well under a second (a few
/// thousand copies of at most 32 KiB); twenty times that leaves room for a loaded 2-core
/// machine, and a copier stuck in a fault it cannot leave fails in bounded time.
const COPIER_LIMIT: Duration = Duration::from_secs(20);
/// Iterations the copier runs before it tells the parent it is ready (all before the cut, so
/// every copy in them must succeed).
const ITERATIONS_BEFORE: u64 = 30;
/// Iterations the copier runs after it has been told that the cut is done.
const ITERATIONS_AFTER: u64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Read,
    ReadOnlyRead,
    ReadToVec,
    Write,
}

const METHODS: [Method; 4] = [
    Method::Read,
    Method::ReadOnlyRead,
    Method::ReadToVec,
    Method::Write,
];

/// One copy of `len` bytes at `offset` of the data region.
#[derive(Debug, Clone, Copy)]
struct Op {
    method: Method,
    offset: usize,
    len: usize,
}

/// The copies of iteration `i` on a segment of `data_len` bytes of which the first `survive`
/// outlive the cut: ranges wholly before the cut, across it, wholly past it, and the pages
/// on either side of it, each through every copy method. Deterministic, so the parent can
/// count what the child must have seen.
fn plan(i: u64, data_len: usize, survive: usize) -> Vec<Op> {
    let i = i as usize;
    let chunk = data_len / 8;
    let mut ranges = vec![
        // Inside the first half (surviving if the cut keeps at least 5/8 of the data).
        ((i * 4099) % (data_len / 2), chunk),
        // Across the cut (or, if nothing survives, from the start).
        (survive.saturating_sub(chunk / 2 + i % PAGE), chunk),
        // In the last chunk, past any cut.
        (data_len - chunk - i % PAGE, chunk),
    ];
    if survive >= PAGE {
        ranges.push((survive - PAGE, PAGE)); // the last surviving page, exactly
    }
    if survive < data_len {
        ranges.push((survive, 1)); // the first lost byte
    }
    ranges
        .into_iter()
        .flat_map(|(offset, len)| {
            METHODS.map(|method| Op {
                method,
                offset,
                len,
            })
        })
        .collect()
}

/// What the copier counted in one phase.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    iterations: u64,
    /// Copies wholly before the cut that succeeded with the right bytes.
    ok_surviving: u64,
    /// Copies touching the lost part that succeeded with the right bytes (only possible
    /// before the cut).
    ok_lost: u64,
    /// Copies touching the lost part reported as `Truncated` with the right sizes.
    truncated: u64,
    /// Everything else: wrong bytes, a refused surviving copy, a wrong error or wrong sizes.
    bad: u64,
    /// Iterations after which the lock could not be taken at once (a failed copy kept it).
    lock_stuck: u64,
}

const COUNT_KEYS: [&str; 6] = [
    "iterations",
    "ok_surviving",
    "ok_lost",
    "truncated",
    "bad",
    "lock_stuck",
];

impl Counts {
    fn values(&self) -> [u64; 6] {
        [
            self.iterations,
            self.ok_surviving,
            self.ok_lost,
            self.truncated,
            self.bad,
            self.lock_stuck,
        ]
    }

    fn say(&self, phase: &str) {
        for (key, value) in COUNT_KEYS.iter().zip(self.values()) {
            say(&format!("{phase}_{key}"), value);
        }
    }

    fn read(out: &common::Output, phase: &str) -> Self {
        let v = |key: &str| out.value(&format!("{phase}_{key}"));
        Counts {
            iterations: v("iterations"),
            ok_surviving: v("ok_surviving"),
            ok_lost: v("ok_lost"),
            truncated: v("truncated"),
            bad: v("bad"),
            lock_stuck: v("lock_stuck"),
        }
    }
}

/// Child: opens the segment read-write and read-only, then runs `plan` in a loop: first
/// [`ITERATIONS_BEFORE`] iterations, then says `ready` and goes on until the parent says `cut`
/// (sent once the object was cut to `found` bytes, keeping `survive` data bytes), then
/// [`ITERATIONS_AFTER`] more. Every copy is checked on the spot (bytes read back compared to
/// the contents, errors compared to the cut) and counted, per phase.
fn copier(name: &str) {
    let found = arg_u64("found");
    let survive = arg_u64("survive") as usize;
    let rw = Mmf::open(name).expect("open read-write");
    let ro = Mmf::open_read_only(name).expect("open read-only");
    let data_len = rw.len();
    let needed = HEADER_LEN + data_len as u64;
    let data = contents(data_len);
    let complement: Vec<u8> = data.iter().map(|b| !b).collect();

    static CUT: AtomicBool = AtomicBool::new(false);
    std::thread::spawn(|| {
        if common::command().as_deref() == Some("cut") {
            // Release/Acquire: the flag is set after the parent's ftruncate returned, and
            // every copy that starts after the load below sees it set.
            CUT.store(true, Ordering::Release);
        }
    });

    let mut phases = [Counts::default(); 3]; // before ready, between ready and cut, after
    let mut after = 0;
    let mut i = 0u64;
    while after < ITERATIONS_AFTER {
        let phase = if i < ITERATIONS_BEFORE {
            0
        } else if !CUT.load(Ordering::Acquire) {
            1
        } else {
            after += 1;
            2
        };
        let counts = &mut phases[phase];
        for op in plan(i, data_len, survive) {
            let expected = &data[op.offset..op.offset + op.len];
            let result = match op.method {
                Method::Read | Method::ReadOnlyRead => {
                    // Filled with the complement of the data: a copy that stops early, or
                    // never ran, cannot pass for the data.
                    let mut buf = complement[op.offset..op.offset + op.len].to_vec();
                    let handle = if op.method == Method::Read { &rw } else { &ro };
                    handle.read_at(op.offset, &mut buf).map(|()| Some(buf))
                }
                Method::ReadToVec => rw.read_to_vec(op.offset, op.len).map(Some),
                // Writes put back the bytes that are there, so the contents stay known.
                Method::Write => rw.write_at(op.offset, expected).map(|()| None),
            };
            let touches_lost = op.offset + op.len > survive;
            let verdict = match &result {
                Ok(Some(bytes)) if bytes[..] != *expected => "wrong bytes",
                Ok(_) if !touches_lost => {
                    counts.ok_surviving += 1;
                    continue;
                }
                Ok(_) if phase < 2 => {
                    counts.ok_lost += 1;
                    continue;
                }
                Ok(_) => "success after the cut",
                Err(Error::Truncated {
                    found: f,
                    needed: n,
                    ..
                }) if *f == found && *n == needed => {
                    if !touches_lost {
                        "surviving part refused"
                    } else if phase == 0 {
                        "truncated before the cut"
                    } else {
                        counts.truncated += 1;
                        continue;
                    }
                }
                Err(_) => "wrong error",
            };
            counts.bad += 1;
            if counts.bad <= 10 {
                let result = result.map(|bytes| bytes.map(|b| b.len()));
                eprintln!("iteration {i} phase {phase}: {op:?}: {verdict} ({result:?})");
            }
        }
        // A copy that failed must have released its lock. Once the header is lost the lock
        // reads a private page and refuses with `Truncated`, which is not stuck.
        if common::lock_error(rw.try_write()).is_some_and(|e| !matches!(e, Error::Truncated { .. }))
        {
            counts.lock_stuck += 1;
        }
        counts.iterations += 1;
        i += 1;
        if i == ITERATIONS_BEFORE {
            say("ready", i);
        }
    }
    for (counts, phase) in phases.iter().zip(["before", "between", "after"]) {
        counts.say(phase);
    }
}

/// Parent of a copier: creates a segment of `data_len` bytes filled with [`contents`], lets
/// the copier run, cuts the object to `HEADER_LEN + survive` bytes (or to nothing if
/// `survive` is `None`), and returns the copier's counts for each phase.
fn run_copier(tag: &str, data_len: usize, survive: Option<usize>) -> [Counts; 3] {
    let name = unique_name(tag);
    let segment = Mmf::create(&name, data_len).unwrap();
    segment.write_at(0, &contents(data_len)).unwrap();
    let found = survive.map_or(0, |s| HEADER_LEN + s as u64);
    let mut copier = common::child("copier")
        .arg("segment", &name)
        .arg("found", found)
        .arg("survive", survive.unwrap_or(0))
        .spawn();
    copier.expect("ready", CHILD_TIMEOUT);
    // Let the child get well into its loop, so the cut lands at an arbitrary point of it
    // (in the middle of a copy, often).
    std::thread::sleep(Duration::from_millis(30));
    truncate(&name, found);
    copier.send("cut");
    let out = copier.finish(COPIER_LIMIT);
    let phases = ["before", "between", "after"].map(|phase| Counts::read(&out, phase));
    println!("{tag}: {phases:#?}");
    assert!(
        phases.iter().all(|c| c.bad == 0 && c.lock_stuck == 0),
        "{phases:#?}\n--- copier's stderr\n{}",
        out.stderr
    );
    phases
}

/// Sums, over `iterations` starting at `first`, the copies of `plan` that stay wholly before
/// the cut and those that touch the lost part.
fn planned(first: u64, iterations: u64, data_len: usize, survive: usize) -> (u64, u64) {
    let (mut surviving, mut lost) = (0, 0);
    for i in first..first + iterations {
        for op in plan(i, data_len, survive) {
            if op.offset + op.len > survive {
                lost += 1;
            } else {
                surviving += 1;
            }
        }
    }
    (surviving, lost)
}

/// Checks the copier's counts against `plan`: before `ready` every copy succeeded; between
/// `ready` and `cut` every copy touching the lost part either succeeded or was `Truncated`;
/// after `cut` every one was `Truncated` and every other one succeeded, with the right bytes.
fn check_counts(phases: [Counts; 3], data_len: usize, survive: usize) {
    let [before, between, after] = phases;
    assert_eq!(before.iterations, ITERATIONS_BEFORE, "{phases:#?}");
    assert_eq!(after.iterations, ITERATIONS_AFTER, "{phases:#?}");
    let (surviving, lost) = planned(0, ITERATIONS_BEFORE, data_len, survive);
    assert_eq!(
        (before.ok_surviving, before.ok_lost, before.truncated),
        (surviving, lost, 0),
        "before the cut every copy succeeds: {phases:#?}"
    );
    let (surviving, lost) = planned(ITERATIONS_BEFORE, between.iterations, data_len, survive);
    assert_eq!(between.ok_surviving, surviving, "{phases:#?}");
    assert_eq!(between.ok_lost + between.truncated, lost, "{phases:#?}");
    let first_after = ITERATIONS_BEFORE + between.iterations;
    let (surviving, lost) = planned(first_after, ITERATIONS_AFTER, data_len, survive);
    assert!(lost >= ITERATIONS_AFTER, "the plan touches the lost part");
    assert_eq!(
        (after.ok_surviving, after.ok_lost, after.truncated),
        (surviving, 0, lost),
        "after the cut exactly the copies touching the lost part fail: {phases:#?}"
    );
}

/// Truncation to zero takes the header page too: the handler maps a private page over it,
/// and every copy through the handle is `Truncated` from then on (found 0).
#[test]
fn copy_api_survives_truncation_to_zero_by_another_process() {
    const DATA_LEN: usize = 64 * PAGE;
    let phases = run_copier("zero", DATA_LEN, None);
    check_counts(phases, DATA_LEN, 0);
}

/// A cut inside the data leaves the header page: copies of the surviving part go on
/// working, and exactly the copies touching the lost pages are `Truncated` with the object's
/// new size. A data-page fault passed off as success (or as a lost header) fails here.
///
/// The cut is page aligned. Bytes between an unaligned cut and the end of its page are not
/// lost pages: they read as zeros without a fault, so a copy of them succeeds (with zeros).
/// The library does not detect that (it would take an `fstat` per copy); avoid cutting
/// segments, or restrict who may open them read-write.
#[test]
fn copies_after_a_cut_inside_the_data_fail_exactly_where_the_data_is_lost() {
    const DATA_LEN: usize = 64 * PAGE;
    const SURVIVE: usize = 40 * PAGE;
    let phases = run_copier("inside", DATA_LEN, Some(SURVIVE));
    check_counts(phases, DATA_LEN, SURVIVE);
}

#[test]
fn truncation_inside_the_data_fails_only_the_lost_part_and_releases_the_lock() {
    let name = unique_name("part");
    let data = contents(4 * PAGE);
    let segment = Mmf::create(&name, 4 * PAGE).unwrap();
    segment.write_at(0, &data).unwrap();
    let ro = Mmf::open_read_only(&name).unwrap();
    truncate(&name, HEADER_LEN + 2 * PAGE as u64);
    let is_cut = |result: &mmf::Result<()>| match *result {
        Err(Error::Truncated { found, needed, .. }) => {
            found == HEADER_LEN + 2 * PAGE as u64 && needed == HEADER_LEN + 4 * PAGE as u64
        }
        _ => false,
    };

    for handle in [&segment, &ro] {
        let mut buf = [0u8; 2 * PAGE];
        handle.read_at(0, &mut buf).unwrap();
        assert!(
            buf == data[..2 * PAGE],
            "the surviving pages keep their data"
        );
        let result = handle.read_at(PAGE, &mut buf);
        assert!(is_cut(&result), "{result:?}");
    }
    let result = segment.write_at(3 * PAGE, &[1; 100]);
    assert!(is_cut(&result), "{result:?}");
    let result = segment.write_at(2 * PAGE - 50, &[1; 100]);
    assert!(is_cut(&result), "{result:?}");
    // Both failed copies released their locks: the lock word (intact, in the header page)
    // is free again, and the surviving part is still written and read through it.
    drop(
        segment
            .try_write()
            .expect("write lock released after the fault"),
    );
    segment.write_at(0, &[9; 10]).unwrap();
    let written = [&[9; 10], &data[10..12]].concat();
    assert_eq!(segment.read_to_vec(0, 12).unwrap(), written);
    assert_eq!(ro.read_to_vec(0, 10).unwrap(), [9; 10]);
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
    let segment = Mmf::create(&name, 3 * PAGE).unwrap();
    let ro = Mmf::open_read_only(&name).unwrap();
    let needed = HEADER_LEN + 3 * PAGE as u64;
    truncate(&name, 0);
    let is_lost = |result: mmf::Result<()>, found: u64| match result {
        Err(Error::Truncated {
            found: f,
            needed: n,
            ..
        }) => f == found && n == needed,
        _ => false,
    };
    for _ in 0..3 {
        let mut buf = [0u8; 16];
        assert!(is_lost(segment.read_at(0, &mut buf), 0));
        assert!(is_lost(segment.write_at(100, &buf), 0));
        assert!(is_lost(segment.read_to_vec(PAGE, 16).map(drop), 0));
        assert!(is_lost(ro.read_at(PAGE, &mut buf), 0));
    }
    // Locking touches the vanished header: it must not kill us either. The lock words now
    // read from a private zero page, on which this handle's slot is not its own, so the
    // lock refuses; the segment reports why: it was truncated.
    assert!(is_lost(
        common::lock_error(segment.try_read()).map_or(Ok(()), Err),
        0
    ));
    assert!(is_lost(
        common::lock_error(segment.try_write()).map_or(Ok(()), Err),
        0
    ));
    // Once the header was lost the handle's lock excludes nobody, so even after the object
    // grows back (its pages readable again) every copy stays refused.
    truncate(&name, needed);
    let mut buf = [0u8; 16];
    assert!(is_lost(segment.read_at(0, &mut buf), needed));
    assert!(is_lost(segment.write_at(0, &buf), needed));
    assert!(is_lost(ro.read_at(0, &mut buf), needed));
}

/// A handle that found the slot table full is untracked: on the private zero page that
/// replaces a vanished header its lock is simply free, so without a check after acquiring it
/// would hand out guards over a lock that excludes nobody (and over vanished data). Every
/// acquisition must release that lock and report `Truncated` instead, as it does for tracked
/// handles (whose slot is not theirs on the zero page).
#[test]
fn untracked_handle_locks_after_the_header_is_lost_are_truncated() {
    let name = unique_name("untracked");
    let creator = Mmf::create(&name, 3 * PAGE).unwrap();
    // The creator holds one slot; these take every other one, so the next handle is untracked.
    let tracked: Vec<Mmf> = (1..mmf::lock::SLOTS)
        .map(|_| Mmf::open(&name).unwrap())
        .collect();
    let untracked = Mmf::open(&name).unwrap();
    let needed = HEADER_LEN + 3 * PAGE as u64;
    // Before the loss the untracked handle locks as usual.
    drop(untracked.try_write().expect("untracked write lock"));
    drop(untracked.read().expect("untracked read lock"));
    truncate(&name, 0);
    let is_lost = |error: Option<Error>| matches!(error, Some(Error::Truncated { found: 0, needed: n, .. }) if n == needed);
    let timeout = Duration::from_millis(50);
    for handle in [&untracked, &creator, &tracked[0]] {
        for _ in 0..2 {
            assert!(is_lost(common::lock_error(handle.try_read())));
            assert!(is_lost(common::lock_error(handle.try_write())));
            assert!(is_lost(common::lock_error(handle.read())));
            assert!(is_lost(common::lock_error(handle.write())));
            assert!(is_lost(common::lock_error(handle.read_timeout(timeout))));
            assert!(is_lost(common::lock_error(handle.write_timeout(timeout))));
        }
    }
}

/// Child: opens the segment (installing mmf's handler), then reads an invalid address.
fn crasher(name: &str) {
    let _segment = Mmf::open(name).unwrap();
    say("opened", 1);
    let bad = std::hint::black_box(8usize) as *const u8;
    // SAFETY: none; this child exists to crash on an invalid read.
    let byte = unsafe { std::ptr::read_volatile(bad) };
    println!("read {byte} from an invalid address?!");
}

#[test]
fn segfault_outside_the_copy_routine_still_kills() {
    let name = unique_name("segv");
    let _segment = Mmf::create(&name, PAGE).unwrap();
    let mut child = common::child("crasher").arg("segment", &name).spawn();
    child.expect("opened", CHILD_TIMEOUT);
    let out = child.wait(CHILD_TIMEOUT);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{out:?}");
}

/// Child for the two tests below: maps a segment, has it truncated, then touches a lost page
/// directly through a guard (unprotected, as documented) rather than through a copy method.
fn touch_lost_page_through_guard(name: &str) -> u8 {
    let segment = Mmf::open(name).unwrap();
    truncate(name, HEADER_LEN);
    let guard = segment.read().unwrap();
    let last: *const u8 = &guard[guard.len() - 1];
    say("touching", 1);
    // SAFETY: none for the lost page: the child exists to fault here.
    unsafe { std::ptr::read_volatile(last) }
}

fn guard_reader(name: &str) {
    let byte = touch_lost_page_through_guard(name);
    println!("read {byte} from a truncated page?!");
}

#[test]
fn sigbus_from_a_guard_still_kills_by_default() {
    let name = unique_name("guard");
    let _segment = Mmf::create(&name, 2 * PAGE).unwrap();
    let mut child = common::child("guard").arg("segment", &name).spawn();
    child.expect("touching", CHILD_TIMEOUT);
    let out = child.wait(CHILD_TIMEOUT);
    assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{out:?}");
}

const APP_HANDLER_EXIT: i32 = 42;

extern "C" fn app_sigbus_handler(_sig: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(APP_HANDLER_EXIT) };
}

fn chained_guard_reader(name: &str) {
    // SAFETY: all-zero is a valid sigaction (SIG_DFL, no flags, empty mask).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = app_sigbus_handler as extern "C" fn(libc::c_int) as usize;
    // SAFETY: a live sigaction with a valid one-argument handler (no SA_SIGINFO).
    let rc = unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) };
    assert_eq!(rc, 0);
    let byte = touch_lost_page_through_guard(name);
    println!("read {byte} from a truncated page?!");
}

#[test]
fn an_application_sigbus_handler_installed_first_is_chained_to() {
    let name = unique_name("chain");
    let _segment = Mmf::create(&name, 2 * PAGE).unwrap();
    let mut child = common::child("chain").arg("segment", &name).spawn();
    child.expect("touching", CHILD_TIMEOUT);
    let out = child.wait(CHILD_TIMEOUT);
    assert_eq!(out.status.code(), Some(APP_HANDLER_EXIT), "{out:?}");
}
