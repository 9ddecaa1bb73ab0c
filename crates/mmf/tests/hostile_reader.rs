//! A frame reader that attacks the channel (issue 11, "untrusted channel readers"): what a
//! process that may only *read* the frames can do to the writer and to the other readers.
//!
//! - **The attack**: a writer child (the test's user, root in CI) publishes checked frames
//!   flat out into a channel of mode 0644; two honest reader children read them, check every
//!   byte and call `Frame::verify`; a hostile child running as `nobody` (through `setpriv`)
//!   opens the channel as a reader and then, in a first phase, clears every pin in the reader
//!   table and scribbles on claim words, read-locks the writer's liveness byte, and tries to
//!   open, truncate, write and unlink the channel and the table (all of which must be
//!   refused); in a second phase it truncates the reader table to 0 and regrows it, and fills
//!   it with garbage, header included. The writer must never die and its longest publish
//!   must stay below a generous bound (printed against the same run without the attack);
//!   honest readers never accept a frame whose bytes are wrong unless `verify` said so, and
//!   every error they get is a typed `mmf::Error`. Without root or `setpriv` the attack is
//!   skipped with a printed reason; the run without it still runs.
//! - **Liveness read locks**: a process that may only read the channel read-locks the
//!   writer's liveness byte; a killed writer must still be reported gone.
//! - **Read-only frames**: a reader's mapping of the channel is read-only.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::thread;
use std::time::{Duration, Instant};

use common::{arg, arg_u64, command, say, unique_name, Rng, CHILD_TIMEOUT};
use mmf::channel::reader_table_name;
use mmf::header::HEADER_LEN;
use mmf::{Error, FrameMeta, FrameReader, FrameReaderOptions, FrameSpec, FrameWriter, Mmf};

const AS_NOBODY: &[&str] = &[
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

/// Frames of this channel: up to 4 KiB, four readers (two honest, the hostile one, one
/// spare), the fewest slots four readers allow, so slots are reused as soon as they may be.
const MAX_FRAME: usize = 4096;
fn spec() -> FrameSpec {
    FrameSpec::new(MAX_FRAME)
        .max_readers(4)
        .slots(6)
        .mode(0o644)
}

/// Byte of the channel object on which the writer holds its liveness lock (control block
/// offset 40, after the segment header; channel module docs).
const WRITER_BYTE: u64 = HEADER_LEN as u64 + 40;

/// How long the writer publishes, and readers and attacker run.
const RUN: Duration = Duration::from_millis(2000);

/// The longest a publish may take, attack or not: generous, because the writer is one of
/// four busy processes on a machine that may have two cores, and a preempted publish counts.
const LONGEST_PUBLISH: Duration = Duration::from_millis(500);

#[test]
#[ignore = "not a test: the entry point of this file's child processes, which run it with --include-ignored"]
fn child() {
    common::child_main(|role| match role {
        "probe" => say("alive", 1),
        "writer" => writer_role(),
        "honest" => honest_role(),
        "hostile" => hostile_role(),
        "read-locker" => read_locker_role(),
        other => panic!("unknown child role {other:?}"),
    });
}

// ---------------------------------------------------------------------------------------
// Frames whose every byte follows from their sequence number
// ---------------------------------------------------------------------------------------

fn frame_len(seq: u64) -> usize {
    16 + (Rng::new(seq ^ 0x5a5a).next_u64() % (MAX_FRAME as u64 - 15)) as usize
}

fn fill_frame(seq: u64, buf: &mut [u8]) -> usize {
    let len = frame_len(seq);
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    Rng::new(seq).fill(&mut buf[8..len]);
    len
}

/// Whether `bytes` are exactly frame `seq` with checksum `tag`: no panic, the caller counts.
fn frame_is_intact(seq: u64, tag: u64, bytes: &[u8]) -> bool {
    if bytes.len() != frame_len(seq) || bytes[..8] != seq.to_le_bytes() {
        return false;
    }
    let mut expected = vec![0u8; bytes.len() - 8];
    Rng::new(seq).fill(&mut expected);
    expected == bytes[8..] && common::fnv1a(bytes) == tag
}

// ---------------------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------------------

/// Creates the channel and publishes checked frames flat out for `ms` milliseconds; reports
/// the count, the longest publish and whether the reader table was lost, then keeps the
/// channel until stdin closes.
fn writer_role() {
    let mut writer = FrameWriter::create(&arg("name"), spec()).unwrap();
    say("created", 1);
    let run = Duration::from_millis(arg_u64("ms"));
    let mut scratch = vec![0u8; MAX_FRAME];
    let (start, mut longest) = (Instant::now(), Duration::ZERO);
    while start.elapsed() < run {
        let seq = writer.seq() + 1;
        let len = fill_frame(seq, &mut scratch);
        writer.set_meta(FrameMeta {
            tag: common::fnv1a(&scratch[..len]),
            ..FrameMeta::default()
        });
        let before = Instant::now();
        assert_eq!(writer.publish(&scratch[..len]).unwrap(), seq);
        longest = longest.max(before.elapsed());
    }
    say("frames", writer.seq());
    say("longest_publish_us", longest.as_micros());
    say("table_lost", u8::from(writer.reader_table_lost()));
    while command().is_some() {}
}

/// An honest reader: for `ms` milliseconds takes frames, holds some of them a little, checks
/// every byte and calls `verify`; reopens after errors that end a reader. Counts what it saw.
fn honest_role() {
    let name = arg("name");
    let run = Duration::from_millis(arg_u64("ms"));
    let start = Instant::now();
    let mut reader: Option<FrameReader> = None;
    let (mut complete, mut verify_failures, mut accepted_bad) = (0u64, 0u64, 0u64);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut count = |e: &Error| {
        // The variant's name: every error here is a typed mmf::Error by construction, and
        // the child exits normally after; a crash would fail the parent's `finish`.
        let debug = format!("{e:?}");
        let variant = debug
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or("?")
            .to_owned();
        *errors.entry(variant).or_default() += 1;
    };
    while start.elapsed() < run {
        let r = match reader.as_mut() {
            Some(r) => r,
            None => {
                match FrameReaderOptions::new(&name)
                    .open_timeout(Duration::from_millis(50))
                    .open()
                {
                    Ok(r) => reader = Some(r),
                    Err(e) => {
                        count(&e);
                        thread::sleep(Duration::from_millis(1));
                    }
                }
                continue;
            }
        };
        let drop_reader = match r.wait_next(Duration::from_millis(100)) {
            Ok(frame) => {
                let mut intact = frame_is_intact(frame.seq(), frame.tag(), &frame);
                if frame.seq() % 4 == 0 {
                    // Held while the writer runs on: the window in which a cleared pin
                    // lets the writer reuse the slot.
                    thread::sleep(Duration::from_micros(300));
                    intact &= frame_is_intact(frame.seq(), frame.tag(), &frame);
                }
                match frame.verify() {
                    Ok(()) if intact => complete += 1,
                    Ok(()) => accepted_bad += 1,
                    Err(Error::FrameOverwritten { seq }) => {
                        assert_eq!(seq, frame.seq());
                        verify_failures += 1;
                    }
                    Err(other) => panic!("verify: {other:?}"),
                }
                false
            }
            Err(e) => {
                count(&e);
                // Errors after which this reader is of no more use: open again.
                !matches!(e, Error::Timeout { .. } | Error::WouldBlock)
            }
        };
        if drop_reader {
            reader = None;
        }
    }
    say("complete", complete);
    say("verify_failures", verify_failures);
    say("accepted_bad", accepted_bad);
    let errors: Vec<String> = errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
    say("errors", format!("[{}]", errors.join(",")));
}

/// `F_OFD_SETLK` with a read lock on byte `offset` of `file` (a read-only descriptor is
/// enough for a read lock): whether the kernel granted it.
fn read_lock(file: &fs::File, offset: u64) -> bool {
    // SAFETY: flock is plain integers; all-zero is valid (l_pid must be 0 for OFD locks).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_RDLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = offset as libc::off_t;
    lock.l_len = 1;
    // SAFETY: the descriptor is open for the call; `lock` is a valid flock that outlives it.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) == 0 }
}

/// The hostile reader, as another user: see the module docs. Reports what it did and any
/// operation that should have been refused but was not (`unexpected`).
fn hostile_role() {
    let name = arg("name");
    let run = Duration::from_millis(arg_u64("ms"));
    let channel_path = format!("/dev/shm/{name}");
    let table_path = format!("/dev/shm/{}", reader_table_name(&name));
    // A reader like any other, first: the channel's owner (the test's user) is trusted
    // explicitly, as a reader in another account would do.
    let owner = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&channel_path).unwrap().uid()
    };
    let mut reader =
        FrameReader::open_trusting(&name, mmf::TrustedOwners::new().user(owner)).unwrap();
    let channel = fs::File::open(&channel_path).unwrap();
    let table = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&table_path)
        .unwrap();
    let table_len = table.metadata().unwrap().len();
    // Refused while the writer lives (it write-locks that byte); granted the moment it dies,
    // which is when a read lock that liveness probes mistook for a holder would do harm
    // (see `a_killed_writer_is_gone_even_while_a_reader_read_locks_its_byte`).
    let mut read_lock_attempts = 0u64;
    say("ready", 1);
    let (mut denied, mut unexpected) = (0u64, Vec::<&str>::new());
    let mut refused = |what: &'static str, result: std::io::Result<()>| match result {
        Err(_) => denied += 1,
        Ok(()) => unexpected.push(what),
    };
    let (mut pins_cleared, mut claims_scribbled, mut truncations, mut garbage) = (0, 0, 0, 0);
    let mut rng = Rng::new(u64::from(std::process::id()));
    let start = Instant::now();
    let mut last_denials = None::<Instant>;
    while start.elapsed() < run {
        if last_denials.map_or(true, |t| t.elapsed() >= Duration::from_millis(50)) {
            last_denials = Some(Instant::now());
            refused(
                "open the channel read-write",
                fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&channel_path)
                    .map(drop),
            );
            refused("truncate the channel", channel.set_len(0));
            refused(
                "write into the channel",
                channel.write_all_at(&[0xff; 64], HEADER_LEN as u64 + 64),
            );
            refused("unlink the channel", fs::remove_file(&channel_path));
            refused("unlink the reader table", fs::remove_file(&table_path));
            refused(
                "open the channel as a read-write segment",
                mmf::MmfOptions::new(&name)
                    .trusted_owners(mmf::TrustedOwners::new().user(owner))
                    .open()
                    .map(drop)
                    .map_err(std::io::Error::from),
            );
        }
        read_lock_attempts += 1;
        refused(
            "read-lock the byte of a live writer",
            if read_lock(&channel, WRITER_BYTE) {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            },
        );
        // Our own reader keeps reading, whatever state the table is in.
        let _ = reader.try_next().map(|f| f.map(|f| f.len()));
        if start.elapsed() < run / 2 {
            // Phase 1: unpin everybody, often; take over claim words now and then.
            for entry in 0..4u64 {
                let at = HEADER_LEN as u64 + 64 + 64 * entry;
                let _ = table.write_all_at(&0u32.to_ne_bytes(), at + 16);
                pins_cleared += 1;
                if rng.below(20) == 0 {
                    let _ = table.write_all_at(&(rng.next_u64() as u32).to_ne_bytes(), at);
                    claims_scribbled += 1;
                }
            }
            thread::sleep(Duration::from_micros(200));
        } else {
            // Phase 2: truncate to nothing and regrow, then garbage in every word.
            table.set_len(0).unwrap();
            thread::sleep(Duration::from_millis(1));
            table.set_len(table_len).unwrap();
            truncations += 1;
            let mut bytes = vec![0u8; table_len as usize];
            match rng.below(3) {
                0 => rng.fill(&mut bytes),
                1 => bytes.fill(0xff),
                _ => {}
            }
            table.write_all_at(&bytes, 0).unwrap();
            garbage += 1;
            thread::sleep(Duration::from_millis(20));
        }
    }
    say("read_lock_attempts", read_lock_attempts);
    say("pins_cleared", pins_cleared);
    say("claims_scribbled", claims_scribbled);
    say("truncations", truncations);
    say("garbage", garbage);
    say("denied", denied);
    say("unexpected", format!("{unexpected:?}"));
}

/// Opens the channel object read-only (as any reader's process may) and tries to read-lock
/// the writer's liveness byte until it gets it: refused while the writer holds its write
/// lock, granted as soon as the writer dies. Holds it until stdin closes.
fn read_locker_role() {
    let channel = fs::File::open(format!("/dev/shm/{}", arg("name"))).unwrap();
    say("trying", 1);
    let start = Instant::now();
    while !read_lock(&channel, WRITER_BYTE) {
        assert!(start.elapsed() < CHILD_TIMEOUT, "never got the read lock");
        thread::sleep(Duration::from_micros(200));
    }
    say("locked", 1);
    while command().is_some() {}
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Why children cannot run as `nobody` here, if they cannot.
fn cannot_run_as_nobody() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root to run a child as another user".into());
    }
    let mut probe = common::child("probe").wrapper(AS_NOBODY).spawn();
    let out = probe.wait(CHILD_TIMEOUT);
    if !out.status.success() || out.get("alive").is_none() {
        return Some(format!(
            "cannot run the test binary as nobody through setpriv ({}): {}",
            out.status,
            out.stderr.trim()
        ));
    }
    None
}

/// What one run saw.
struct Run {
    frames: u64,
    longest_publish: Duration,
    table_lost: bool,
    complete: u64,
    verify_failures: u64,
}

/// A writer and two honest readers for [`RUN`], and the hostile reader if `attack`.
fn run(attack: bool) -> Run {
    let name = unique_name(if attack { "attacked" } else { "calm" });
    let ms = RUN.as_millis();
    let mut writer = common::child("writer")
        .arg("name", &name)
        .arg("ms", ms + 300)
        .spawn();
    writer.expect("created", CHILD_TIMEOUT);
    let honest: Vec<_> = (0..2)
        .map(|_| {
            common::child("honest")
                .arg("name", &name)
                .arg("ms", ms)
                .spawn()
        })
        .collect();
    let hostile = attack.then(|| {
        let mut hostile = common::child("hostile")
            .wrapper(AS_NOBODY)
            .arg("name", &name)
            .arg("ms", ms)
            .spawn();
        hostile.expect("ready", CHILD_TIMEOUT);
        hostile
    });
    let label = if attack { "attacked" } else { "calm" };
    let mut result = Run {
        frames: 0,
        longest_publish: Duration::ZERO,
        table_lost: false,
        complete: 0,
        verify_failures: 0,
    };
    for reader in honest {
        let out = reader.finish(CHILD_TIMEOUT);
        eprintln!(
            "{label}: honest reader: {} complete, {} verify failures, {} accepted bad, errors {}",
            out.value("complete"),
            out.value("verify_failures"),
            out.value("accepted_bad"),
            out.get("errors").unwrap_or("?"),
        );
        assert_eq!(
            out.value("accepted_bad"),
            0,
            "{label}: an honest reader accepted a wrong frame that verify passed"
        );
        result.complete += out.value("complete");
        result.verify_failures += out.value("verify_failures");
    }
    if let Some(hostile) = hostile {
        let out = hostile.finish(CHILD_TIMEOUT);
        eprintln!(
            "attacker: {} read-lock attempts on the writer's byte, {} pins cleared, {} claims scribbled, \
             {} truncations, {} garbage fills, {} operations refused",
            out.value("read_lock_attempts"),
            out.value("pins_cleared"),
            out.value("claims_scribbled"),
            out.value("truncations"),
            out.value("garbage"),
            out.value("denied"),
        );
        assert_eq!(
            out.get("unexpected"),
            Some("[]"),
            "the attacker did something it may not"
        );
        assert!(out.value("truncations") > 0 && out.value("denied") > 0);
    }
    let frames: u64 = writer.expect("frames", CHILD_TIMEOUT).parse().unwrap();
    let longest: u64 = writer
        .expect("longest_publish_us", CHILD_TIMEOUT)
        .parse()
        .unwrap();
    let lost = writer.expect("table_lost", CHILD_TIMEOUT) == "1";
    // The writer is alive, and exits cleanly: it never died of a SIGBUS.
    writer.finish(CHILD_TIMEOUT);
    result.frames = frames;
    result.longest_publish = Duration::from_micros(longest);
    result.table_lost = lost;
    eprintln!(
        "{label}: writer published {frames} frames, longest publish {:?}, reader table lost: {lost}",
        result.longest_publish
    );
    result
}

#[test]
fn a_hostile_reader_cannot_crash_block_or_corrupt_the_writer_or_the_other_readers() {
    let calm = run(false);
    assert!(calm.frames > 1000, "the writer barely ran: {}", calm.frames);
    assert!(
        calm.complete > 100,
        "honest readers barely read: {}",
        calm.complete
    );
    assert_eq!(
        calm.verify_failures, 0,
        "without an attacker no pinned frame is ever overwritten"
    );
    assert!(!calm.table_lost);
    assert!(
        calm.longest_publish < LONGEST_PUBLISH,
        "calm: longest publish {:?}",
        calm.longest_publish
    );
    if let Some(why) = cannot_run_as_nobody() {
        println!("SKIPPED (the attack): {why}");
        return;
    }
    let attacked = run(true);
    eprintln!(
        "longest publish: {:?} under attack, {:?} without",
        attacked.longest_publish, calm.longest_publish
    );
    assert!(
        attacked.frames > 1000,
        "the writer barely ran: {}",
        attacked.frames
    );
    assert!(
        attacked.longest_publish < LONGEST_PUBLISH,
        "attacked: longest publish {:?}",
        attacked.longest_publish
    );
    assert!(
        attacked.table_lost,
        "the attacker's truncation never reached the writer: the SIGBUS patch was not exercised"
    );
}

/// The writer's liveness byte read-locked by a process that may only read the channel: a
/// killed writer is still reported gone (liveness probes conflict only with write locks,
/// which need write access).
#[test]
fn a_killed_writer_is_gone_even_while_a_reader_read_locks_its_byte() {
    let name = unique_name("rdlock");
    let mut writer = common::child("writer")
        .arg("name", &name)
        .arg("ms", 50)
        .spawn();
    writer.expect("created", CHILD_TIMEOUT);
    let mut locker = common::child("read-locker").arg("name", &name).spawn();
    locker.expect("trying", CHILD_TIMEOUT);
    let mut reader = FrameReader::open(&name).unwrap();
    writer.expect("table_lost", CHILD_TIMEOUT);
    assert!(reader.writer_alive());
    drop(writer); // SIGKILL: its FrameWriter never drops
                  // The kernel released the writer's lock, and the locker took its read lock at once.
    locker.expect("locked", CHILD_TIMEOUT);
    assert!(
        !reader.writer_alive(),
        "a read lock on the writer's byte made a dead writer look alive"
    );
    // Drained of what was published, then WriterGone at the timeout rather than Timeout.
    let start = Instant::now();
    loop {
        match reader.wait_next(Duration::from_millis(100)) {
            Ok(_) => assert!(start.elapsed() < Duration::from_secs(10)),
            Err(Error::WriterGone { .. }) => break,
            Err(other) => panic!("expected WriterGone, got {other:?}"),
        }
    }
    locker.finish(CHILD_TIMEOUT);
    let _ = Mmf::remove(&name);
}

/// A reader's mapping of the channel's frames and control block is read-only: the pages
/// are mapped without write permission (`/proc/self/maps`), so the reader cannot change
/// them even by mistake; the reader table is its only writable mapping of the channel.
#[test]
fn a_readers_mapping_of_the_frames_is_read_only() {
    let name = unique_name("ro");
    let mut writer = FrameWriter::create(&name, spec()).unwrap();
    writer.publish(b"frame").unwrap();
    let mut reader = FrameReader::open(&name).unwrap();
    let frame = reader.latest().unwrap().unwrap();
    let address = frame.as_ptr() as usize;
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|line| {
            let range = line.split(' ').next().unwrap();
            let (lo, hi) = range.split_once('-').unwrap();
            let lo = usize::from_str_radix(lo, 16).unwrap();
            let hi = usize::from_str_radix(hi, 16).unwrap();
            (lo..hi).contains(&address)
        })
        .expect("the frame lies in a mapping");
    let perms = line.split(' ').nth(1).unwrap();
    assert!(
        perms.starts_with("r-") && perms.ends_with('s'),
        "a reader's frame mapping must be shared read-only: {line}"
    );
    assert!(line.ends_with(&format!("/dev/shm/{name}")), "{line}");
}
