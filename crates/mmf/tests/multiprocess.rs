//! Multi-process behaviour of `mmf`, with real child processes (see `common` for how a test
//! re-launches this binary as a child playing a role).

mod common;

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

use common::{arg, arg_u64, command, fnv1a, lock_error, pattern, say, Rng, CHILD_TIMEOUT};
use mmf::header::HEADER_LEN;
use mmf::{Error, Mmf, MmfOptions};

/// The entry point of every child process of this file (ignored in a normal test run).
#[test]
#[ignore = "not a test: the entry point of this file's child processes, which run it with --include-ignored"]
fn child() {
    common::child_main(|role| match role {
        "verify" => verify_role(),
        "creator" => creator_role(),
        "reopen" => reopen_role(),
        "holder" => holder_role(),
        "hammer_writer" => hammer_writer_role(),
        "hammer_reader" => hammer_reader_role(),
        "ro_copier" => ro_copier_role(),
        "loop_reader" => loop_reader_role(),
        "racing_creator" => racing_creator_role(),
        #[cfg(any(target_os = "linux", windows))]
        "cpu_waiter" => cpu_waiter_role(),
        "seq_pong" => seq_pong_role(),
        #[cfg(any(target_os = "linux", windows))]
        "seq_waiter" => seq_waiter_role(),
        other => panic!("unknown child role {other:?}"),
    });
}

// ---------------------------------------------------------------------------------------
// Created in one process, read in another
// ---------------------------------------------------------------------------------------

const ANSWER_LEN: usize = 64;

/// Where the child writes its answer: right after the parent's pattern.
fn answer(seed: u64, read_checksum: u64) -> Vec<u8> {
    let mut bytes = read_checksum.to_le_bytes().to_vec();
    bytes.extend(pattern(seed ^ 0xa5a5, ANSWER_LEN - 8));
    bytes
}

/// Opens the parent's segment, checks the pattern through both access paths, answers.
fn verify_role() {
    let (name, seed, len) = (arg("name"), arg_u64("seed"), arg_u64("len") as usize);
    // A name nobody created yet is NotFound, in the child as anywhere.
    let missing = format!("{name}-missing");
    match Mmf::open(&missing) {
        Err(Error::NotFound { name: n }) => assert_eq!(n, missing),
        other => panic!("open of a name not created yet: {other:?}"),
    }
    let segment = Mmf::open(&name).expect("child opens the parent's segment");
    assert_eq!(
        segment.len(),
        len + ANSWER_LEN,
        "size learnt from the header"
    );
    let expected = pattern(seed, len);
    let copied = segment.read_to_vec(0, len).unwrap();
    assert!(
        copied == expected,
        "read_to_vec differs from the parent's pattern"
    );
    {
        let guard = segment.read().unwrap();
        assert!(
            guard[..len] == expected[..],
            "read guard differs from the pattern"
        );
    }
    segment
        .write_at(len, &answer(seed, fnv1a(&copied)))
        .unwrap();
    say("verified", len);
}

/// Creates a segment, fills it, and keeps it alive until the parent says `done`; then
/// checks what the parent wrote back.
fn creator_role() {
    let (name, seed, len) = (arg("name"), arg_u64("seed"), arg_u64("len") as usize);
    let segment = Mmf::create(&name, len + ANSWER_LEN).unwrap();
    segment.write_at(0, &pattern(seed, len)).unwrap();
    say("created", &name);
    assert_eq!(command().as_deref(), Some("done"));
    let reply = segment.read_to_vec(len, ANSWER_LEN).unwrap();
    assert!(
        reply == answer(seed, fnv1a(&pattern(seed, len))),
        "parent's answer is wrong"
    );
    say("answer_ok", 1);
}

#[test]
fn created_in_one_process_read_in_another() {
    // Parent creates, child reads and answers.
    let (seed, len) = (0x5eed_0001, 3 * 4096 + 100);
    let name = common::unique_name("xproc");
    let segment = Mmf::create(&name, len + ANSWER_LEN).unwrap();
    segment.write_at(0, &pattern(seed, len)).unwrap();
    let out = common::child("verify")
        .arg("name", &name)
        .arg("seed", seed)
        .arg("len", len)
        .spawn()
        .finish(CHILD_TIMEOUT);
    assert_eq!(out.value("verified"), len as u64);
    assert_eq!(
        segment.read_to_vec(len, ANSWER_LEN).unwrap(),
        answer(seed, fnv1a(&pattern(seed, len))),
        "the child's answer"
    );

    // Child creates, parent reads and answers while the child keeps it alive.
    let seed = 0x5eed_0002;
    let name = common::unique_name("xproc-rev");
    let mut creator = common::child("creator")
        .arg("name", &name)
        .arg("seed", seed)
        .arg("len", len)
        .spawn();
    creator.expect("created", CHILD_TIMEOUT);
    let opened = Mmf::open(&name).unwrap();
    assert_eq!(opened.len(), len + ANSWER_LEN);
    let copied = opened.read_to_vec(0, len).unwrap();
    assert!(copied == pattern(seed, len), "pattern written by the child");
    opened.write_at(len, &answer(seed, fnv1a(&copied))).unwrap();
    creator.send("done");
    assert_eq!(creator.finish(CHILD_TIMEOUT).value("answer_ok"), 1);
}

// ---------------------------------------------------------------------------------------
// Reopen: the creator drops, another process's handle lives on
// ---------------------------------------------------------------------------------------

fn reopen_role() {
    let name = arg("name");
    let segment = Mmf::open(&name).unwrap();
    assert_eq!(segment.read_to_vec(0, 6).unwrap(), b"parent");
    say("opened", 1);
    assert_eq!(command().as_deref(), Some("creator-dropped"));
    // The mapping outlives the creator's handle: still readable and writable.
    assert_eq!(segment.read_to_vec(0, 6).unwrap(), b"parent");
    segment.write_at(100, b"child").unwrap();
    assert_eq!(&segment.read().unwrap()[100..105], b"child");
    match Mmf::open(&name) {
        // Linux: the creator removed the name when it dropped.
        #[cfg(unix)]
        Err(Error::NotFound { name: n }) => assert_eq!(n, name),
        // Windows: the section and its name live while any handle (ours) is open.
        #[cfg(windows)]
        Ok(again) => assert_eq!(again.read_to_vec(100, 5).unwrap(), b"child"),
        other => panic!("open by name after the creator dropped: {other:?}"),
    }
    say("reopen_ok", 1);
}

#[test]
fn handle_in_another_process_outlives_the_creator() {
    let name = common::unique_name("reopen");
    let creator = Mmf::create(&name, 4096).unwrap();
    creator.write_at(0, b"parent").unwrap();
    let mut child = common::child("reopen").arg("name", &name).spawn();
    child.expect("opened", CHILD_TIMEOUT);
    drop(creator);
    child.send("creator-dropped");
    assert_eq!(child.finish(CHILD_TIMEOUT).value("reopen_ok"), 1);
    // Every handle is gone now, on both platforms.
    assert!(matches!(Mmf::open(&name), Err(Error::NotFound { .. })));
}

// ---------------------------------------------------------------------------------------
// Opening while another process creates: never a half-written header
// ---------------------------------------------------------------------------------------

const RACE_ROUNDS: u64 = 300;

fn race_len(round: u64) -> usize {
    4096 + 64 * round as usize
}

/// Creates `<prefix>-0`, `<prefix>-1`, … as fast as it can, keeping them all alive until the
/// parent has opened every one.
fn racing_creator_role() {
    let prefix = arg("prefix");
    let mut alive = Vec::new();
    for round in 0..RACE_ROUNDS {
        let segment = Mmf::create(&format!("{prefix}-{round}"), race_len(round)).unwrap();
        segment.write_at(0, &round.to_le_bytes()).unwrap();
        alive.push(segment);
    }
    say("created_all", RACE_ROUNDS);
    assert_eq!(command().as_deref(), Some("done"));
}

#[test]
fn open_racing_a_creator_never_sees_a_half_written_header() {
    let prefix = common::unique_name("race");
    let mut creator = common::child("racing_creator")
        .arg("prefix", &prefix)
        .spawn();
    let give_up = Instant::now() + CHILD_TIMEOUT;
    let mut not_found = 0u64;
    for round in 0..RACE_ROUNDS {
        let name = format!("{prefix}-{round}");
        // Spin on the name while the child creates it: every answer must be "not there
        // yet" or the finished segment, never a typed complaint about its header.
        let segment = loop {
            match Mmf::open(&name) {
                Ok(segment) => break segment,
                Err(Error::NotFound { .. }) => not_found += 1,
                Err(e) => panic!("round {round}: open while the creator initialises: {e:?}"),
            }
            assert!(Instant::now() < give_up, "round {round}: never created");
            std::hint::spin_loop();
        };
        assert_eq!(segment.len(), race_len(round), "round {round}");
        // The creator writes the round number right after creating; we may be earlier.
        let first = u64::from_le_bytes(segment.read_to_vec(0, 8).unwrap().try_into().unwrap());
        assert!(first == 0 || first == round, "round {round}: read {first}");
    }
    creator.expect("created_all", CHILD_TIMEOUT);
    creator.send("done");
    creator.finish(CHILD_TIMEOUT);
    println!("open raced {RACE_ROUNDS} creations ({not_found} NotFound answers while waiting)");
}

// ---------------------------------------------------------------------------------------
// Lock forms across processes
// ---------------------------------------------------------------------------------------

/// Takes and releases locks on command: `read`, `write`, `release`; acknowledges each.
fn holder_role() {
    let segment = Mmf::open(&arg("name")).unwrap();
    let mut read = None;
    let mut write = None;
    while let Some(cmd) = command() {
        match cmd.as_str() {
            "read" => read = Some(segment.read().unwrap()),
            "write" => write = Some(segment.write().unwrap()),
            "release" => {
                read = None;
                write = None;
            }
            other => panic!("unknown command {other:?}"),
        }
        say("ack", &cmd);
    }
    drop((read, write));
}

/// Checks that a `_timeout` call failed with `Timeout` after about `asked`.
#[track_caller]
fn assert_timed_out<T, E: Into<Error>>(result: Result<T, E>, started: Instant, asked: Duration) {
    let elapsed = started.elapsed();
    match result.map_err(Into::into) {
        Err(Error::Timeout { waited }) => {
            assert!(waited >= asked, "reported wait {waited:?} < {asked:?}");
            assert!(elapsed >= asked, "returned after {elapsed:?} < {asked:?}");
            assert!(
                elapsed < asked + Duration::from_secs(2),
                "returned after {elapsed:?}, far beyond {asked:?}"
            );
        }
        // Guards are not Debug: show only the error, if any.
        other => panic!("expected Timeout, got {:?}", other.err()),
    }
}

#[test]
fn lock_forms_respect_a_holder_in_another_process() {
    let name = common::unique_name("forms");
    let segment = Mmf::create(&name, 4096).unwrap();
    let short = Duration::from_millis(250);
    let timed = MmfOptions::new(&name)
        .lock_timeout(Some(short))
        .open()
        .unwrap();
    let mut holder = common::child("holder").arg("name", &name).spawn();

    // The child holds the write lock: nothing gets in.
    holder.send("write");
    assert_eq!(holder.expect("ack", CHILD_TIMEOUT), "write");
    assert!(matches!(
        lock_error(segment.try_read()),
        Some(Error::WouldBlock)
    ));
    assert!(matches!(
        lock_error(segment.try_write()),
        Some(Error::WouldBlock)
    ));
    let t = Instant::now();
    assert_timed_out(segment.read_timeout(short), t, short);
    let t = Instant::now();
    assert_timed_out(segment.write_timeout(short), t, short);
    // The copy methods and plain guards honour the handle's lock timeout.
    let t = Instant::now();
    assert_timed_out(timed.read_to_vec(0, 8), t, short);
    let t = Instant::now();
    assert_timed_out(timed.write_at(0, b"x"), t, short);
    let t = Instant::now();
    assert_timed_out(timed.read(), t, short);

    holder.send("release");
    assert_eq!(holder.expect("ack", CHILD_TIMEOUT), "release");
    drop(
        segment
            .try_write()
            .expect("free again after the child released"),
    );

    // The child holds a read lock: readers share, writers wait.
    holder.send("read");
    assert_eq!(holder.expect("ack", CHILD_TIMEOUT), "read");
    drop(
        segment
            .try_read()
            .expect("a read lock is shared across processes"),
    );
    drop(segment.read_timeout(short).expect("shared"));
    assert!(matches!(
        lock_error(segment.try_write()),
        Some(Error::WouldBlock)
    ));
    let t = Instant::now();
    assert_timed_out(segment.write_timeout(short), t, short);
    // A writer that gave up must not keep holding new readers back.
    drop(
        segment
            .try_read()
            .expect("a timed-out writer withdrew its claim"),
    );

    holder.send("release");
    assert_eq!(holder.expect("ack", CHILD_TIMEOUT), "release");
    drop(segment.try_write().expect("free after the reader released"));
    holder.finish(CHILD_TIMEOUT);
}

// ---------------------------------------------------------------------------------------
// Hammer: several writer and reader processes, no torn record ever
// ---------------------------------------------------------------------------------------

/// Bytes 0..8 of the hammer's region: a count that a writer makes odd as soon as it holds the
/// write lock and even again just before it lets go. Whoever holds the lock must find it even
/// (nobody else writing) and, for a reader, unchanged when it lets go (no writer got in
/// meanwhile). This checks exclusion itself, whether or not a record is caught half-written.
const WRITES_AT: usize = 0;
/// The records follow, one per slot.
const RECORDS_AT: usize = 64;
const RECORD: usize = 1024;
const SLOTS: usize = 64;
const HAMMER_LEN: usize = RECORDS_AT + SLOTS * RECORD;
const HAMMER_MS: u64 = 3000;

fn slot_at(slot: usize) -> usize {
    RECORDS_AT + slot * RECORD
}

fn write_count(region: &[u8]) -> u64 {
    u64::from_le_bytes(region[WRITES_AT..WRITES_AT + 8].try_into().unwrap())
}

fn set_write_count(region: &mut [u8], count: u64) {
    region[WRITES_AT..WRITES_AT + 8].copy_from_slice(&count.to_le_bytes());
}

/// Record layout: seq u64 | writer u32 | RECORD u32 | payload (PRNG seeded by seq and
/// writer) | FNV-1a of everything before it.
fn fill_record(rec: &mut [u8], seq: u64, writer: u32) {
    rec[0..8].copy_from_slice(&seq.to_le_bytes());
    rec[8..12].copy_from_slice(&writer.to_le_bytes());
    rec[12..16].copy_from_slice(&(RECORD as u32).to_le_bytes());
    // Generated in place, slowly: a long window in which a broken lock would show a tear.
    Rng::new(seq ^ (u64::from(writer) << 56)).fill(&mut rec[16..RECORD - 8]);
    let sum = fnv1a(&rec[..RECORD - 8]);
    rec[RECORD - 8..].copy_from_slice(&sum.to_le_bytes());
}

/// Checks one record: `Ok(false)` for a never-written (all-zero) slot, `Ok(true)` for a
/// whole record, `Err` describing a torn one.
fn check_record(rec: &[u8]) -> Result<bool, String> {
    if rec.iter().all(|&b| b == 0) {
        return Ok(false);
    }
    let stored = u64::from_le_bytes(rec[RECORD - 8..].try_into().unwrap());
    let sum = fnv1a(&rec[..RECORD - 8]);
    let seq = u64::from_le_bytes(rec[0..8].try_into().unwrap());
    let writer = u32::from_le_bytes(rec[8..12].try_into().unwrap());
    if stored != sum {
        return Err(format!(
            "checksum {stored:#x} != {sum:#x} (seq {seq}, writer {writer})"
        ));
    }
    let mut expected = vec![0; RECORD];
    fill_record(&mut expected, seq, writer);
    if rec != expected {
        return Err(format!(
            "checksum matches but payload differs (seq {seq}, writer {writer})"
        ));
    }
    Ok(true)
}

fn hammer_writer_role() {
    let segment = Mmf::open(&arg("name")).unwrap();
    let writer = arg_u64("id") as u32;
    let deadline = Instant::now() + Duration::from_millis(arg_u64("ms"));
    let mut rng = Rng::new(u64::from(writer) + 1);
    let (mut seq, mut by_guard, mut by_copy) = (0u64, 0u64, 0u64);
    let mut record = vec![0; RECORD];
    while Instant::now() < deadline {
        seq += 1;
        let at = slot_at(rng.below(SLOTS as u64) as usize);
        if seq % 2 == 0 {
            let mut guard = segment.write().unwrap();
            let count = write_count(&guard);
            assert!(
                count % 2 == 0,
                "writer {writer}: write count {count} is odd: another writer is inside"
            );
            set_write_count(&mut guard, count + 1);
            fill_record(&mut guard[at..at + RECORD], seq, writer);
            set_write_count(&mut guard, count + 2);
            by_guard += 1;
        } else {
            fill_record(&mut record, seq, writer);
            segment.write_at(at, &record).unwrap();
            by_copy += 1;
        }
    }
    say("by_guard", by_guard);
    say("by_copy", by_copy);
}

fn hammer_reader_role() {
    // A read-only handle cannot take the lock; its read_at copies optimistically and retries.
    let read_only = arg_u64("ro") == 1;
    let segment = if read_only {
        Mmf::open_read_only(&arg("name")).unwrap()
    } else {
        Mmf::open(&arg("name")).unwrap()
    };
    let reader = arg_u64("id");
    let deadline = Instant::now() + Duration::from_millis(arg_u64("ms"));
    let mut rng = Rng::new(1000 + reader);
    let (mut verified, mut by_guard, mut by_copy) = (0u64, 0u64, 0u64);
    let mut record = vec![0; RECORD];
    while Instant::now() < deadline {
        if (by_guard + by_copy) % 2 == 1 && !read_only {
            // Every slot under one shared lock: no writer may be inside, or get in meanwhile.
            let guard = segment.read().unwrap();
            let count = write_count(&guard);
            assert!(
                count % 2 == 0,
                "reader {reader}: write count {count} is odd: a writer is inside with this reader"
            );
            for slot in 0..SLOTS {
                match check_record(&guard[slot_at(slot)..slot_at(slot) + RECORD]) {
                    Ok(whole) => verified += u64::from(whole),
                    Err(why) => {
                        panic!("reader {reader}: torn record in slot {slot} (guard): {why}")
                    }
                }
            }
            let after = write_count(&guard);
            assert!(
                after == count,
                "reader {reader}: write count went {count} -> {after} while this reader held a read lock"
            );
            by_guard += 1;
        } else {
            let slot = rng.below(SLOTS as u64) as usize;
            segment.read_at(slot_at(slot), &mut record).unwrap();
            match check_record(&record) {
                Ok(whole) => verified += u64::from(whole),
                Err(why) => panic!("reader {reader}: torn record in slot {slot} (read_at): {why}"),
            }
            by_copy += 1;
        }
    }
    say("verified", verified);
    say("by_guard", by_guard);
    say("by_copy", by_copy);
}

#[test]
fn hammer_two_writers_four_readers_never_tear_a_record() {
    let name = common::unique_name("hammer");
    let segment = Mmf::create(&name, HAMMER_LEN).unwrap();
    let started = Instant::now();
    let writers: Vec<_> = (0..2)
        .map(|id| {
            common::child("hammer_writer")
                .arg("name", &name)
                .arg("id", id)
                .arg("ms", HAMMER_MS)
                .spawn()
        })
        .collect();
    // Three readers through read() and read_at, and one more through a read-only handle.
    let readers: Vec<_> = (0..4)
        .map(|id| {
            common::child("hammer_reader")
                .arg("name", &name)
                .arg("id", id)
                .arg("ro", u8::from(id == 3))
                .arg("ms", HAMMER_MS)
                .spawn()
        })
        .collect();
    let mut written = Vec::new();
    for (id, w) in writers.into_iter().enumerate() {
        let out = w.finish(CHILD_TIMEOUT);
        let (guard, copy) = (out.value("by_guard"), out.value("by_copy"));
        println!("hammer writer {id}: {guard} records through write(), {copy} through write_at");
        written.push(guard + copy);
    }
    let mut verified = 0;
    let mut guard_rounds = Vec::new();
    for (id, r) in readers.into_iter().enumerate() {
        let out = r.finish(CHILD_TIMEOUT);
        let (v, guard, copy) = (
            out.value("verified"),
            out.value("by_guard"),
            out.value("by_copy"),
        );
        if id == 3 {
            println!("hammer reader {id} (read-only read_at): {v} whole records verified in {copy} reads");
        } else {
            println!("hammer reader {id}: {v} whole records verified in {guard} read() scans and {copy} read_at");
            guard_rounds.push(guard);
        }
        assert!(v > 0, "reader {id} verified nothing");
        verified += v;
    }
    // Writers are not starved (the lock module, "Fairness"): a writer asking for the lock blocks new
    // readers, so it gets in as soon as the readers inside have left. Each reader scan holds a
    // read lock over all 64 records, the longest hold here, and a writer's record costs about a
    // sixtieth of a scan, so a writer that shares fairly completes many records per scan of the
    // busiest reader: measured 30 to 75 on Linux (x86_64 and i686) and 12 to 35 under wine,
    // on 2 cores loaded by other builds and this file's other tests. Expected here: at least 1,
    // a 12x slack for scheduling (a writer process descheduled for a while).
    let most_scans = guard_rounds.iter().copied().max().unwrap_or(0);
    assert!(most_scans > 0, "no reader completed a scan");
    for (id, &records) in written.iter().enumerate() {
        assert!(
            records >= most_scans,
            "writer {id} starved: {records} records while a reader completed {most_scans} scans"
        );
    }
    // The parent checks the final state too: every slot whole or never written.
    let guard = segment.read().unwrap();
    assert_eq!(
        write_count(&guard) % 2,
        0,
        "a writer left the write count odd"
    );
    let whole = (0..SLOTS)
        .map(|slot| {
            check_record(&guard[slot_at(slot)..slot_at(slot) + RECORD]).expect("final state")
        })
        .filter(|&w| w)
        .count();
    assert!(whole > 0);
    println!(
        "hammer: {written:?} records written ({:.0} per scan of the busiest reader), {verified} verified, 0 torn, {whole}/{SLOTS} slots filled, {:?}",
        written.iter().copied().min().unwrap_or(0) as f64 / most_scans as f64,
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Read-only copies: a write that begins during the copy is never returned half-done
// ---------------------------------------------------------------------------------------

/// Data region of the read-only copy test: 8 MiB, so that one copy takes long enough
/// (measured 1 to 8 ms) for a write aimed at it to land inside it even when the writer
/// process reacts late.
const RO_LEN: usize = 8 << 20;
/// Every `STAMP_EVERY` bytes the region holds the number (u32 LE) of the round that last
/// wrote it. A write changes only these 2048 stamps, which takes a small fraction of a copy,
/// so a copy that a write begins during sees some stamps old and some new, whatever order
/// the copy goes in: a torn copy cannot pass for a whole one.
const STAMP_EVERY: usize = 4096;
/// The control segment's words (u32, atomics shared by the two processes).
/// The reader's round: "write now, once" (`DONE`: the reader has finished).
const REQUEST: usize = 0;
/// The last round the writer has written.
const WRITTEN: usize = 1;
/// How long the writer waits after a request before it writes, in ns: an eighth of a copy,
/// so that the write begins after the copy did (the reader asks just before calling
/// `read_at`) and well before it ends.
const DELAY_NS: usize = 2;
const DONE: u32 = u32::MAX;
/// The reader stops once this many writes began during its copies (typically within 2 s)...
const RO_OVERLAPS: u64 = 50;
/// ... or after this long, when the machine is so loaded that the writer often comes late.
const RO_MS: u64 = 10_000;
/// The least number of overlaps the test accepts as proof that the window was hit. Any one
/// of them catches a read_at that returns a copy a write began during. Measured: the 50
/// overlaps come within 1 to 2.5 s, in 50 to 100 rounds (Linux and wine, 2 loaded cores), so
/// 20 in 10 s leaves room for a far more loaded machine.
const RO_MIN_OVERLAPS: u64 = 20;

/// The words of `control`'s data region, shared with the other process.
fn control_words(control: &Mmf) -> &[AtomicU32] {
    let data = control.mapping_ptr_for_tests().wrapping_add(HEADER_LEN);
    // SAFETY: `control` is a read-write handle on the test's control segment, whose data
    // region (page aligned, 64 bytes) is mapped for as long as `control` lives, which bounds
    // the returned borrow; both processes touch these four words only as AtomicU32.
    unsafe { std::slice::from_raw_parts(data.cast::<AtomicU32>(), 4) }
}

/// The segment's write sequence (header offset 40 in `header.rs`'s byte table): odd while a
/// write guard is held, and changed at both ends of every write. Read by the test only to
/// tell when a write happened relative to a copy.
fn write_seq(segment: &Mmf) -> &AtomicU32 {
    let word = segment.mapping_ptr_for_tests().wrapping_add(40);
    // On a read-only mapping the test only loads it, Relaxed, which std allows on read-only
    // memory for atomics of register width ("Atomic accesses to read-only memory" in
    // `core::sync::atomic`).
    // SAFETY: the mapping starts with the page-aligned header, so offset 40 is u32-aligned and
    // mapped as long as `segment`; the library accesses this word only as an AtomicU32.
    unsafe { &*word.cast::<AtomicU32>() }
}

/// The one value every stamp of `copy` holds, or a description of the tear.
fn stamp_of(copy: &[u8]) -> Result<u32, String> {
    let stamp = |at: usize| u32::from_le_bytes(copy[at..at + 4].try_into().unwrap());
    let first = stamp(0);
    let stamps = (0..copy.len()).step_by(STAMP_EVERY);
    let differ = stamps.clone().filter(|&at| stamp(at) != first).count();
    if differ == 0 {
        return Ok(first);
    }
    let last = stamp(copy.len() - STAMP_EVERY);
    Err(format!(
        "torn copy: {differ} of {} stamps differ from the first ({first}; the last is {last})",
        stamps.count()
    ))
}

/// Spins until `word` holds something other than `old` (`None` after `timeout`).
fn wait_for_change(word: &AtomicU32, old: u32, timeout: Duration) -> Option<u32> {
    let give_up = Instant::now() + timeout;
    loop {
        let now = word.load(Acquire);
        if now != old {
            return Some(now);
        }
        if Instant::now() >= give_up {
            return None;
        }
        std::hint::spin_loop();
    }
}

/// Copies the whole region through a read-only handle, round after round; in each round the
/// parent writes once, aimed at the middle of the copy. Every copy must be whole.
fn ro_copier_role() {
    let data = MmfOptions::new(arg("data"))
        // A read_at that never finds a quiet moment (there is one after each round's single
        // write) fails the test instead of hanging it.
        .lock_timeout(Some(Duration::from_secs(5)))
        .open_read_only()
        .unwrap();
    let control = Mmf::open(&arg("control")).unwrap();
    let (words, seq) = (control_words(&control), write_seq(&data));
    // Tells the parent to stop writing when this role ends, even by a failed check (the
    // drop runs while the panic unwinds), so that it reports the failure at once.
    struct Finished<'a>(&'a AtomicU32);
    impl Drop for Finished<'_> {
        fn drop(&mut self) {
            self.0.store(DONE, Release);
        }
    }
    let _finished = Finished(&words[REQUEST]);
    let mut copy = vec![0u8; RO_LEN];
    // Faults the buffer and the mapping in, and measures an undisturbed copy.
    let mut fastest = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        data.read_at(0, &mut copy).unwrap();
        fastest = fastest.min(t.elapsed());
    }
    let mut delay = (fastest / 8).as_nanos().min(u128::from(u32::MAX)) as u32;
    words[DELAY_NS].store(delay, Release);
    say("ready", fastest.as_micros());

    let deadline = Instant::now() + Duration::from_millis(RO_MS);
    let (mut before, mut during, mut after) = (0u64, 0u64, 0u64);
    let mut round = 0u32;
    while during < RO_OVERLAPS && Instant::now() < deadline {
        round += 1;
        let s0 = seq.load(Relaxed);
        words[REQUEST].store(round, Release);
        let s1 = seq.load(Relaxed);
        data.read_at(0, &mut copy).unwrap();
        let s2 = seq.load(Relaxed);
        let stamp = stamp_of(&copy).unwrap_or_else(|why| {
            panic!(
                "round {round}: a read-only read_at returned a {why} (write sequence {s1} -> {s2})"
            )
        });
        // When this round's write began, from the write sequence around the call: it
        // changes only when a write begins or ends, and the writer writes once per round.
        if s1 != s0 {
            before += 1;
            assert_eq!(
                stamp, round,
                "round {round}: the write finished before the copy"
            );
            // Steer the writer's aim: its write came too early for this round's copy...
            delay = delay.saturating_add(delay / 4 + 1_000);
        } else if s2 != s1 {
            // The interesting case: without its re-check, read_at returns this copy torn.
            during += 1;
            assert!(
                stamp == round || stamp == round - 1,
                "round {round}: copy holds round {stamp}"
            );
        } else {
            after += 1;
            assert_eq!(
                stamp,
                round - 1,
                "round {round}: no write yet, but the copy is new"
            );
            // ... or too late: a loaded machine wakes the writer late, and a faster copy
            // shrinks the window, so the aim adapts rather than missing round after round.
            delay -= delay / 4;
        }
        // Relaxed: published by the Release store of the next request, which the writer
        // loads with Acquire before it reads this.
        words[DELAY_NS].store(delay, Relaxed);
        wait_for_change(&words[WRITTEN], round - 1, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("round {round}: the writer never wrote"));
    }
    say("before", before);
    say("during", during);
    say("after", after);
}

/// A read-only handle cannot take the lock: its `read_at` copies, then re-checks the write
/// sequence and copies again if a write began meanwhile. Here every round's single write is
/// aimed at the middle of the copy, and each copy is checked whole; the test also counts
/// how many writes really began during a copy, so that it fails if the window was missed.
#[test]
fn read_only_copy_never_returns_a_write_that_began_during_it() {
    let data_name = common::unique_name("rocopy");
    let control_name = common::unique_name("rocopy-ctl");
    let data = MmfOptions::new(&data_name)
        .prefault(true)
        .create(RO_LEN)
        .unwrap();
    let control = Mmf::create(&control_name, 64).unwrap();
    let words = control_words(&control);
    let mut reader = common::child("ro_copier")
        .arg("data", &data_name)
        .arg("control", &control_name)
        .spawn();
    let copy_us = reader.expect("ready", CHILD_TIMEOUT);
    let mut seen = 0;
    let mut writes = 0u64;
    // The writer: once per request, an eighth of a copy later, stamps every page.
    while let Some(round) = wait_for_change(&words[REQUEST], seen, Duration::from_secs(20)) {
        if round == DONE {
            break;
        }
        seen = round;
        // Acquire (via the request's): the copier adjusts the delay each round.
        let delay = Duration::from_nanos(u64::from(words[DELAY_NS].load(Acquire)));
        let aim = Instant::now() + delay;
        while Instant::now() < aim {
            std::hint::spin_loop();
        }
        let mut guard = data.write().unwrap();
        for at in (0..RO_LEN).step_by(STAMP_EVERY) {
            guard[at..at + 4].copy_from_slice(&round.to_le_bytes());
        }
        drop(guard);
        writes += 1;
        words[WRITTEN].store(round, Release);
    }
    let out = reader.finish(CHILD_TIMEOUT);
    let (before, during, after) = (out.value("before"), out.value("during"), out.value("after"));
    println!(
        "read-only copies of {} MiB ({copy_us} us undisturbed): {writes} writes, which began before {before}, during {during}, after {after} copies",
        RO_LEN >> 20
    );
    assert_eq!(before + during + after, writes);
    assert!(
        during >= RO_MIN_OVERLAPS,
        "only {during} writes began during a copy: the window this test is about was not exercised"
    );
}

// ---------------------------------------------------------------------------------------
// A writer gets in while 4 readers loop
// ---------------------------------------------------------------------------------------

/// Byte 0 of the segment: the parent sets it to tell the readers to stop.
const STOP: usize = 0;
/// The writer fills bytes FILL.. with one value per round; readers check it is uniform.
const FILL: usize = 64;

fn loop_reader_role() {
    let segment = Mmf::open(&arg("name")).unwrap();
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut loops = 0u64;
    loop {
        let guard = segment.read().unwrap();
        if guard[STOP] == 1 {
            break;
        }
        // Hold the lock for a while, reading everything: readers overlap continuously.
        let first = guard[FILL];
        assert!(
            guard[FILL..].iter().all(|&b| b == first),
            "a write was visible half-done under a read lock"
        );
        drop(guard);
        loops += 1;
        if loops == 1 {
            say("looping", 1);
        }
        assert!(Instant::now() < give_up, "the parent never said stop");
    }
    say("loops", loops);
}

#[test]
fn writer_gets_in_while_four_readers_loop() {
    let name = common::unique_name("starve");
    let segment = Mmf::create(&name, 64 * 1024).unwrap();
    let mut readers: Vec<_> = (0..4)
        .map(|_| common::child("loop_reader").arg("name", &name).spawn())
        .collect();
    for r in &mut readers {
        r.expect("looping", CHILD_TIMEOUT);
    }
    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    const ROUNDS: u32 = 50;
    for round in 0..ROUNDS {
        let t = Instant::now();
        let mut guard = segment
            .write_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("round {round}: writer starved: {e}"));
        let waited = t.elapsed();
        worst = worst.max(waited);
        total += waited;
        guard[FILL..].fill(round as u8 + 1);
        drop(guard);
        std::thread::sleep(Duration::from_millis(2));
    }
    segment.write().unwrap()[STOP] = 1;
    let loops: Vec<u64> = readers
        .into_iter()
        .map(|r| r.finish(CHILD_TIMEOUT).value("loops"))
        .collect();
    println!(
        "writer vs 4 looping readers: {ROUNDS} acquisitions, worst wait {worst:?}, mean {:?}; reader loops {loops:?}",
        total / ROUNDS
    );
    assert!(loops.iter().all(|&n| n > 0));
}

// ---------------------------------------------------------------------------------------
// A blocked waiter sleeps: its own CPU time (getrusage on Linux, GetProcessTimes on Windows)
// ---------------------------------------------------------------------------------------

/// CPU time (user + system) this process has used so far.
#[cfg(target_os = "linux")]
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a whole rusage into the pointer, which is valid for writes of
    // one rusage (it points to our MaybeUninit); RUSAGE_SELF is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    // SAFETY: getrusage returned 0, so it initialised the struct.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time (user + kernel) this process has used so far.
#[cfg(windows)]
fn cpu_time() -> Duration {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessTimes};
    let zero = || FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero(), zero(), zero(), zero());
    // SAFETY: GetCurrentProcess has no preconditions; it returns a pseudo-handle that needs
    // no closing.
    let process = unsafe { GetCurrentProcess() };
    // SAFETY: the four pointers are valid for writes of one FILETIME each (locals above);
    // the handle is this process's pseudo-handle, which has PROCESS_QUERY_INFORMATION.
    let ok = unsafe { GetProcessTimes(process, &mut created, &mut exited, &mut kernel, &mut user) };
    assert_ne!(
        ok,
        0,
        "GetProcessTimes: {}",
        std::io::Error::last_os_error()
    );
    // FILETIME counts 100 ns units.
    let ticks = |t: FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    Duration::from_nanos((ticks(kernel) + ticks(user)) * 100)
}

/// Proves that [`cpu_time`] measures something here (a clock stuck at zero would make the
/// waiter look perfect): spins until it has advanced by 20 ms.
#[cfg(any(target_os = "linux", windows))]
fn check_cpu_clock() {
    let (start, wall) = (cpu_time(), Instant::now());
    while cpu_time() - start < Duration::from_millis(20) {
        assert!(
            wall.elapsed() < Duration::from_secs(5),
            "the CPU clock did not advance while this process spun for 5 s"
        );
        std::hint::spin_loop();
    }
}

#[cfg(any(target_os = "linux", windows))]
fn cpu_waiter_role() {
    let segment = Mmf::open(&arg("name")).unwrap();
    check_cpu_clock();
    let before = cpu_time();
    say("blocking", 1);
    let t = Instant::now();
    match arg("kind").as_str() {
        "write" => drop(segment.write().unwrap()),
        "read" => drop(segment.read().unwrap()),
        other => panic!("unknown kind {other}"),
    }
    let waited = t.elapsed();
    let cpu = cpu_time() - before;
    say("waited_us", waited.as_micros());
    say("cpu_us", cpu.as_micros());
}

/// The parent holds the write lock for 1 s while a child blocks on `kind`; the child must
/// get in once it is released, and must have slept rather than spun meanwhile.
#[cfg(any(target_os = "linux", windows))]
fn blocked_waiter_uses_almost_no_cpu(kind: &str) {
    let name = common::unique_name("cpu");
    let segment = Mmf::create(&name, 4096).unwrap();
    let guard = segment.write().unwrap();
    let mut child = common::child("cpu_waiter")
        .arg("name", &name)
        .arg("kind", kind)
        .spawn();
    child.expect("blocking", CHILD_TIMEOUT);
    std::thread::sleep(Duration::from_secs(1));
    drop(guard);
    let out = child.finish(CHILD_TIMEOUT);
    let waited = Duration::from_micros(out.value("waited_us"));
    let cpu = Duration::from_micros(out.value("cpu_us"));
    println!("{kind} waiter blocked {waited:?} and used {cpu:?} of CPU");
    assert!(
        waited >= Duration::from_millis(800),
        "the child did not block (waited {waited:?})"
    );
    // A spinning waiter would burn about the whole second.
    assert!(
        cpu < Duration::from_millis(50),
        "a blocked {kind} waiter burnt {cpu:?} of CPU in {waited:?}"
    );
}

#[cfg(any(target_os = "linux", windows))]
#[test]
fn blocked_writer_uses_almost_no_cpu() {
    blocked_waiter_uses_almost_no_cpu("write");
}

#[cfg(any(target_os = "linux", windows))]
#[test]
fn blocked_reader_uses_almost_no_cpu() {
    blocked_waiter_uses_almost_no_cpu("read");
}

// ---------------------------------------------------------------------------------------
// Noticing writes without a lock: wait_for_write across processes (issue 12)
// ---------------------------------------------------------------------------------------

/// Long enough that a wait_for_write sleeper never wakes for its own liveness check during
/// these tests: a lost wake-up then shows as a timeout, not as a 50 ms delay.
const NO_RECOVERY: Duration = Duration::from_secs(600);

/// How long one side of the ping-pong waits for the other before it calls the wake-up lost.
const LOST: Duration = Duration::from_secs(20);

fn seq_options(name: &str) -> MmfOptions {
    MmfOptions::new(name).recovery_interval(NO_RECOVERY)
}

/// The counter at `offset` of the data region.
fn counter(segment: &Mmf, offset: usize) -> u64 {
    let mut bytes = [0; 8];
    segment.read_at(offset, &mut bytes).unwrap();
    u64::from_le_bytes(bytes)
}

/// Sleeps in `wait_for_write` until the counter at `offset` reaches `value`; returns the
/// longest single wait.
fn wait_for_counter(segment: &Mmf, offset: usize, value: u64) -> Duration {
    let mut longest = Duration::ZERO;
    loop {
        // The sequence before the look: a write after it either shows in the look or ends
        // the wait at once.
        let seen = segment.write_seq();
        if counter(segment, offset) == value {
            return longest;
        }
        let t = Instant::now();
        match segment.wait_for_write(seen, Some(LOST)) {
            Ok(now) => assert_ne!(now, seen),
            Err(e) => panic!("waiting for {value} at {offset}: {e} (a lost wake-up)"),
        }
        longest = longest.max(t.elapsed());
    }
}

/// The child of the ping-pong: answers every ping `i` (offset 0) with pong `i` (offset 8).
fn seq_pong_role() {
    let segment = seq_options(&arg("name")).open().unwrap();
    let rounds = arg_u64("rounds");
    let mut longest = Duration::ZERO;
    for i in 1..=rounds {
        longest = longest.max(wait_for_counter(&segment, 0, i));
        segment.write_at(8, &i.to_le_bytes()).unwrap();
    }
    say("longest_wait_us", longest.as_micros());
}

/// Two processes take turns through one segment, each sleeping in `wait_for_write` until the
/// other's write: no turn locks, no polling. Every round has a window between a side's look
/// and its sleep in which the other side's write may land; a wake-up lost there would leave
/// both asleep until `LOST`, since the recovery interval is far longer.
#[test]
fn wait_for_write_ping_pong_between_processes_loses_no_wake_up() {
    let rounds: u64 = if cfg!(windows) { 300 } else { 2000 };
    let name = common::unique_name("seq-pingpong");
    let segment = seq_options(&name).create(4096).unwrap();
    let child = common::child("seq_pong")
        .arg("name", &name)
        .arg("rounds", rounds)
        .spawn();
    let t = Instant::now();
    let mut longest = Duration::ZERO;
    for i in 1..=rounds {
        segment.write_at(0, &i.to_le_bytes()).unwrap();
        longest = longest.max(wait_for_counter(&segment, 8, i));
    }
    let elapsed = t.elapsed();
    let out = child.finish(CHILD_TIMEOUT);
    let child_longest = Duration::from_micros(out.value("longest_wait_us"));
    println!(
        "{rounds} round trips in {elapsed:?} ({:?} each); longest wait: parent {longest:?}, child {child_longest:?}",
        elapsed / rounds as u32
    );
    assert_eq!(counter(&segment, 8), rounds);
    // Generous for a loaded machine, far below the lost-wake-up timeout.
    for (who, wait) in [("parent", longest), ("child", child_longest)] {
        assert!(wait < Duration::from_secs(5), "{who} waited {wait:?} once");
    }
}

/// Waits once in `wait_for_write` (read-only or read-write handle, as `access` says), then
/// reports how long and at what CPU cost.
#[cfg(any(target_os = "linux", windows))]
fn seq_waiter_role() {
    let name = arg("name");
    let segment = match arg("access").as_str() {
        "ro" => seq_options(&name).open_read_only().unwrap(),
        "rw" => seq_options(&name).open().unwrap(),
        other => panic!("unknown access {other}"),
    };
    check_cpu_clock();
    let seen = segment.write_seq();
    let before = cpu_time();
    say("waiting", seen);
    let t = Instant::now();
    let now = segment.wait_for_write(seen, Some(LOST)).unwrap();
    let waited = t.elapsed();
    let cpu = cpu_time() - before;
    assert_eq!(now, seen.wrapping_add(2), "woken by the one write");
    say("waited_us", waited.as_micros());
    say("cpu_us", cpu.as_micros());
}

/// A process asleep in `wait_for_write` wakes when another process writes, within a bound,
/// and burns (almost) no CPU meanwhile. A read-write handle sleeps in the kernel; a
/// read-only one polls at most every millisecond, which costs little more.
#[cfg(any(target_os = "linux", windows))]
fn write_waiter_wakes_on_a_write(access: &str) {
    let name = common::unique_name("seq-waiter");
    let segment = seq_options(&name).create(4096).unwrap();
    let mut child = common::child("seq_waiter")
        .arg("name", &name)
        .arg("access", access)
        .spawn();
    child.expect("waiting", CHILD_TIMEOUT);
    std::thread::sleep(Duration::from_millis(500));
    segment.write_at(0, b"wake up").unwrap();
    let written = Instant::now();
    let out = child.finish(CHILD_TIMEOUT);
    // From the write to the child's report arriving through its pipe: an upper bound on the
    // wake-up.
    let woken_within = written.elapsed();
    let waited = Duration::from_micros(out.value("waited_us"));
    let cpu = Duration::from_micros(out.value("cpu_us"));
    println!("{access} waiter: waited {waited:?}, woken within {woken_within:?}, {cpu:?} of CPU");
    assert!(
        waited >= Duration::from_millis(400),
        "returned before the write: {waited:?}"
    );
    assert!(
        woken_within < Duration::from_secs(5),
        "woken {woken_within:?} after the write"
    );
    assert!(
        cpu < Duration::from_millis(100),
        "a {access} waiter burnt {cpu:?} of CPU in {waited:?}"
    );
}

#[cfg(any(target_os = "linux", windows))]
#[test]
fn write_waiter_with_a_read_write_handle_sleeps_until_the_write() {
    write_waiter_wakes_on_a_write("rw");
}

#[cfg(any(target_os = "linux", windows))]
#[test]
fn write_waiter_with_a_read_only_handle_wakes_on_the_write() {
    write_waiter_wakes_on_a_write("ro");
}
