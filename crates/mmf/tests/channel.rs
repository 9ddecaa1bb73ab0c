//! Frame channel across real processes: never torn, writer never blocks, dead readers are
//! reclaimed, wait_next sleeps and wakes, bad input is a typed error, and the camera demo runs.

mod common;

#[path = "../examples/camera.rs"]
#[allow(dead_code)]
mod camera;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{arg, arg_u64, say, unique_name, Rng, CHILD_TIMEOUT};
use mmf::{Error, FrameMeta, FrameReader, FrameSpec, FrameWriter, Mmf};

#[test]
#[ignore = "not a test: the entry point of this file's child processes, which run it with --include-ignored"]
fn child() {
    common::child_main(|role| match role {
        "verify" => verify_role(),
        "hold" => hold_role(),
        "waiter" => waiter_role(),
        "writer" => writer_role(),
        "gone-waiter" => gone_waiter_role(),
        "camera-consumer" => {
            let report = camera::consumer(&arg("name"), arg_u64("seconds") as f64);
            say("report", report.to_line());
        }
        other => panic!("unknown role {other}"),
    });
}

/// Frame `seq`: its length and every byte follow from `seq` alone, so a reader can check
/// each byte without any other channel to the writer. The tag carries an FNV checksum.
const MAX_FRAME: usize = 64 * 1024;

fn frame_len(seq: u64) -> usize {
    64 + (Rng::new(seq ^ 0xa5a5).next_u64() % (MAX_FRAME as u64 - 64)) as usize
}

fn fill_frame(seq: u64, buf: &mut [u8]) -> usize {
    let len = frame_len(seq);
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    Rng::new(seq).fill(&mut buf[8..len]);
    len
}

/// Checks a frame completely; panics (failing the child) on any torn or foreign byte.
fn verify_frame(seq: u64, tag: u64, bytes: &[u8]) {
    assert_eq!(bytes.len(), frame_len(seq), "length of frame {seq}");
    assert_eq!(
        u64::from_le_bytes(bytes[..8].try_into().unwrap()),
        seq,
        "header of frame {seq}"
    );
    assert_eq!(common::fnv1a(bytes), tag, "checksum of frame {seq}");
    let mut expected = vec![0u8; bytes.len() - 8];
    Rng::new(seq).fill(&mut expected);
    assert!(expected == bytes[8..], "frame {seq} is torn");
}

fn publish_checked(writer: &mut FrameWriter, scratch: &mut [u8]) -> u64 {
    let seq = writer.seq() + 1;
    let len = fill_frame(seq, scratch);
    writer.set_meta(FrameMeta {
        tag: common::fnv1a(&scratch[..len]),
        ..FrameMeta::default()
    });
    assert_eq!(writer.publish(&scratch[..len]).unwrap(), seq);
    seq
}

/// Reader child: verifies every frame it gets until it has checked `bytes` bytes.
fn verify_role() {
    let mut reader = FrameReader::open(&arg("name")).unwrap();
    say("ready", 1);
    let target = arg_u64("bytes");
    let (mut frames, mut bytes, mut first) = (0u64, 0u64, None);
    while bytes < target {
        let frame = reader.wait_next(Duration::from_secs(10)).unwrap();
        verify_frame(frame.seq(), frame.tag(), &frame);
        // Hold it a little while the writer keeps going: a torn read would show on re-check.
        if frames % 16 == 0 {
            thread::sleep(Duration::from_micros(200));
            verify_frame(frame.seq(), frame.tag(), &frame);
        }
        first.get_or_insert(frame.seq());
        frames += 1;
        bytes += frame.len() as u64;
    }
    let (first, last) = (first.unwrap(), reader.last_seq().unwrap());
    assert_eq!(reader.received(), frames);
    assert_eq!(
        reader.received() + reader.skipped(),
        last - first + 1,
        "received + skipped must cover every sequence number from the first to the last"
    );
    say("frames", frames);
    say("bytes", bytes);
    say("skipped", reader.skipped());
    say("span", last - first + 1);
}

#[test]
fn frames_are_never_torn_while_the_writer_runs_flat_out() {
    // The fewest slots three readers allow: every free slot is reused as soon as possible.
    never_torn(FrameSpec::new(MAX_FRAME).max_readers(3).slots(5));
}

#[test]
fn frames_are_never_torn_with_the_default_slot_count() {
    // 16 slots (small frames): the writer goes many publishes between scans of the pins.
    let spec = FrameSpec::new(MAX_FRAME).max_readers(3);
    never_torn(spec);
}

fn never_torn(spec: FrameSpec) {
    let name = unique_name("chan-torn");
    let mut writer = FrameWriter::create(&name, spec).unwrap();
    let target: u64 = if cfg!(windows) { 3_000_000 } else { 8_000_000 };
    let mut children: Vec<_> = (0..3)
        .map(|_| {
            common::child("verify")
                .arg("name", &name)
                .arg("bytes", target)
                .spawn()
        })
        .collect();
    for c in &mut children {
        c.expect("ready", CHILD_TIMEOUT);
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Stops the publisher even if an assertion below fails, so its writer drops and removes
    // the segment.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Relaxed);
        }
    }
    let _stop_guard = StopOnDrop(stop.clone());
    let publisher = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut scratch = vec![0u8; MAX_FRAME];
            while !stop.load(Relaxed) {
                publish_checked(&mut writer, &mut scratch);
            }
            writer
        })
    };
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.finish(CHILD_TIMEOUT * 3))
        .collect();
    stop.store(true, Relaxed);
    let writer = publisher.join().unwrap();
    let mut total = 0;
    for out in &outputs {
        let (frames, bytes, skipped, span) = (
            out.value("frames"),
            out.value("bytes"),
            out.value("skipped"),
            out.value("span"),
        );
        assert!(bytes >= target && frames > 0);
        assert_eq!(frames + skipped, span);
        assert!(span <= writer.seq());
        total += bytes;
    }
    eprintln!(
        "verified {total} bytes in {} frame reads; writer published {}",
        outputs.iter().map(|o| o.value("frames")).sum::<u64>(),
        writer.seq()
    );
}

/// Reader child that pins the newest frame and holds it until told to check it again.
fn hold_role() {
    let mut reader = FrameReader::open(&arg("name")).unwrap();
    let frame = reader.wait_next(Duration::from_secs(10)).unwrap();
    verify_frame(frame.seq(), frame.tag(), &frame);
    say("pinned", frame.seq());
    while let Some(cmd) = common::command() {
        if cmd == "check" {
            verify_frame(frame.seq(), frame.tag(), &frame);
            say("intact", frame.seq());
        }
    }
}

#[test]
fn writer_never_blocks_on_a_stuck_or_killed_reader_and_dead_entries_are_reclaimed() {
    let name = unique_name("chan-stuck");
    let spec = FrameSpec::new(MAX_FRAME).max_readers(2).slots(4);
    let mut writer = FrameWriter::create(&name, spec).unwrap();
    let mut scratch = vec![0u8; MAX_FRAME];
    publish_checked(&mut writer, &mut scratch);
    let mut stuck = common::child("hold").arg("name", &name).spawn();
    let stuck_seq: u64 = stuck.expect("pinned", CHILD_TIMEOUT).parse().unwrap();
    publish_checked(&mut writer, &mut scratch);
    let mut doomed = common::child("hold").arg("name", &name).spawn();
    doomed.expect("pinned", CHILD_TIMEOUT);
    // Both entries are taken by live readers: a third reader is refused, with a typed error.
    assert!(matches!(
        FrameReader::open(&name),
        Err(Error::ChannelFull { max_readers: 2, .. })
    ));
    drop(doomed); // kills the process while it holds a frame (SIGKILL / TerminateProcess)

    // Four slots, two pinned (one by a dead process): the writer keeps publishing at speed.
    let start = Instant::now();
    let (mut count, mut slowest) = (0u64, Duration::ZERO);
    while start.elapsed() < Duration::from_millis(300) {
        let t = Instant::now();
        publish_checked(&mut writer, &mut scratch);
        slowest = slowest.max(t.elapsed());
        count += 1;
    }
    // A writer that waited for a reader would stall for good here (the stuck reader never
    // lets go; the dead one cannot): bounds generous enough for a loaded machine and wine.
    assert!(
        count >= 20,
        "only {count} publishes in 300 ms with a stuck reader"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a publish took {slowest:?}"
    );
    // The writer's periodic sweep (every 100 ms of publishing) has freed the dead entry.
    assert_eq!(
        writer.reclaim_dead_readers(),
        0,
        "sweep missed the dead reader"
    );
    let mut newcomer = FrameReader::open(&name).expect("the dead reader's entry is free again");
    assert_eq!(newcomer.latest().unwrap().unwrap().seq(), writer.seq());
    // The stuck reader's frame is untouched after all that publishing.
    stuck.send("check");
    assert_eq!(
        stuck
            .expect("intact", CHILD_TIMEOUT)
            .parse::<u64>()
            .unwrap(),
        stuck_seq
    );
    stuck.finish(CHILD_TIMEOUT);
    // The stuck reader exited normally and released its entry: room for one more.
    let _another = FrameReader::open(&name).unwrap();
}

#[test]
fn open_reclaims_the_entry_of_a_reader_killed_while_holding_a_frame() {
    let name = unique_name("chan-reclaim");
    let mut writer = FrameWriter::create(&name, FrameSpec::new(MAX_FRAME).max_readers(1)).unwrap();
    let mut scratch = vec![0u8; MAX_FRAME];
    let seq = publish_checked(&mut writer, &mut scratch);
    let mut doomed = common::child("hold").arg("name", &name).spawn();
    assert_eq!(doomed.expect("pinned", CHILD_TIMEOUT), seq.to_string());
    assert!(matches!(
        FrameReader::open(&name),
        Err(Error::ChannelFull { .. })
    ));
    drop(doomed); // killed (and reaped) while holding its frame and its entry
                  // No publish (so no writer sweep) since: open itself finds the owner dead and takes over.
    let mut reader = FrameReader::open(&name).expect("open reclaims the dead reader's entry");
    assert_eq!(reader.latest().unwrap().unwrap().seq(), seq);
}

/// Reader child for wait_next: first a timeout with nothing published, then a real sleep.
fn waiter_role() {
    let mut reader = FrameReader::open(&arg("name")).unwrap();
    let start = Instant::now();
    match reader.wait_next(Duration::from_millis(150)) {
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    say("timeout_ms", start.elapsed().as_millis());
    say("waiting", 1);
    let frame = reader.wait_next(Duration::from_secs(30)).unwrap();
    let latency_us = mmf::channel::monotonic_ns().saturating_sub(frame.timestamp_ns()) / 1000;
    say("woke", frame.seq());
    say("latency_us", latency_us);
    say("skipped", frame.skipped());
    // Nothing newer: times out again rather than returning the same frame.
    drop(frame);
    assert!(matches!(
        reader.wait_next(Duration::from_millis(50)),
        Err(Error::Timeout { .. })
    ));
    say("done", 1);
}

#[test]
fn wait_next_times_out_then_sleeps_until_a_publish_wakes_it() {
    let name = unique_name("chan-wait");
    let mut writer = FrameWriter::create(&name, FrameSpec::new(4096)).unwrap();
    let mut child = common::child("waiter").arg("name", &name).spawn();
    let waited: u64 = child.expect("timeout_ms", CHILD_TIMEOUT).parse().unwrap();
    assert!(
        (150..5000).contains(&waited),
        "timed out after {waited} ms, asked for 150"
    );
    child.expect("waiting", CHILD_TIMEOUT);
    // Long past the 20 us spin: the child is asleep in the kernel now.
    thread::sleep(Duration::from_millis(300));
    writer.publish(b"wake up").unwrap();
    assert_eq!(child.expect("woke", Duration::from_secs(10)), "1");
    let latency_us: u64 = child.expect("latency_us", CHILD_TIMEOUT).parse().unwrap();
    // A wake-up, not a poll that happened to come by: well under the 30 s timeout (generous
    // bound for a loaded 2-core machine and wine).
    assert!(latency_us < 2_000_000, "woke {latency_us} us after publish");
    child.expect("done", CHILD_TIMEOUT);
    child.finish(CHILD_TIMEOUT);
}

#[test]
fn skipped_counts_follow_sequence_numbers() {
    let name = unique_name("chan-skip");
    let mut writer = FrameWriter::create(&name, FrameSpec::new(64)).unwrap();
    let mut reader = FrameReader::open(&name).unwrap();
    assert!(reader.latest().unwrap().is_none());
    assert!(reader.try_next().unwrap().is_none());
    writer.publish(b"one").unwrap();
    assert_eq!(reader.try_next().unwrap().unwrap().skipped(), 0);
    assert!(reader.try_next().unwrap().is_none(), "nothing newer");
    for _ in 0..4 {
        writer.publish(b"more").unwrap();
    }
    let frame = reader.try_next().unwrap().unwrap();
    assert_eq!(
        (frame.seq(), frame.skipped(), &frame[..]),
        (5, 3, &b"more"[..])
    );
    drop(frame);
    assert_eq!((reader.received(), reader.skipped()), (2, 3));
    // latest() of the same frame counts nothing new.
    assert_eq!(reader.latest().unwrap().unwrap().seq(), 5);
    assert_eq!((reader.received(), reader.skipped()), (2, 3));
}

#[test]
fn metadata_travels_with_the_frame() {
    let name = unique_name("chan-meta");
    let mut writer = FrameWriter::create(&name, FrameSpec::new(64)).unwrap();
    let meta = FrameMeta {
        width: 1920,
        height: 1080,
        pixel_format: u32::from_le_bytes(*b"RGB3"),
        tag: u64::MAX - 1,
    };
    writer.set_meta(meta);
    let before = mmf::channel::monotonic_ns();
    writer
        .publish_with(|buf| {
            buf[..3].copy_from_slice(b"abc");
            3
        })
        .unwrap();
    let mut reader = FrameReader::open(&name).unwrap();
    let frame = reader.latest().unwrap().unwrap();
    assert_eq!(frame.meta(), meta);
    assert_eq!(&frame[..], b"abc");
    assert!(frame.timestamp_ns() >= before && frame.timestamp_ns() <= mmf::channel::monotonic_ns());
}

#[test]
fn bad_inputs_are_typed_errors() {
    let name = unique_name("chan-bad");
    for spec in [
        FrameSpec::new(0),
        FrameSpec::new(usize::MAX),
        FrameSpec::new(usize::MAX / 3),
        FrameSpec::new(64).max_readers(0),
        FrameSpec::new(64).max_readers(mmf::channel::MAX_READERS + 1),
    ] {
        assert!(
            matches!(
                FrameWriter::create(&name, spec),
                Err(Error::InvalidSize { .. })
            ),
            "{spec:?}"
        );
    }
    assert!(matches!(
        FrameWriter::create("bad/name", FrameSpec::new(64)),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        FrameReader::open(&name),
        Err(Error::NotFound { .. })
    ));

    let mut writer = FrameWriter::create(&name, FrameSpec::new(100)).unwrap();
    assert!(matches!(
        FrameWriter::create(&name, FrameSpec::new(100)),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        writer.publish(&[0; 101]),
        Err(Error::FrameTooLarge { len: 101, max: 100 })
    ));
    assert!(matches!(
        writer.publish_with(|buf| buf.len() + 1),
        Err(Error::FrameTooLarge { len: 101, max: 100 })
    ));
    let mut reader = FrameReader::open(&name).unwrap();
    assert!(
        reader.latest().unwrap().is_none(),
        "failed publishes publish nothing"
    );
    assert_eq!(writer.seq(), 0);
    writer.publish(&[1; 100]).unwrap();
    assert_eq!(reader.latest().unwrap().unwrap().len(), 100);

    // A channel is not a plain segment, and the other way round.
    assert!(matches!(
        Mmf::open(&name),
        Err(Error::WrongKind {
            expected: "plain segment",
            found: "frame channel",
            ..
        })
    ));
    let plain_name = unique_name("chan-plain");
    let _plain = Mmf::create(&plain_name, 1 << 16).unwrap();
    assert!(matches!(
        FrameReader::open(&plain_name),
        Err(Error::WrongKind {
            expected: "frame channel",
            found: "plain segment",
            ..
        })
    ));
}

#[test]
fn camera_demo_runs_with_consumer_processes() {
    let name = unique_name("chan-camera");
    let config = camera::Config {
        width: 320,
        height: 240,
        fps: 30.0,
        consumers: 2,
        seconds: 1.0,
        name: name.clone(),
    };
    let reports = camera::run(&config, |cfg, _index| {
        let mut child = common::child("camera-consumer")
            .arg("name", &cfg.name)
            .arg("seconds", cfg.seconds.ceil() as u64)
            .spawn();
        let line = child.expect("report", CHILD_TIMEOUT);
        child.finish(CHILD_TIMEOUT);
        camera::Report::from_line(&line).expect("a parsable report")
    })
    .unwrap();
    assert_eq!(reports.consumers.len(), 2);
    for r in &reports.consumers {
        assert!(r.frames > 0, "{r:?}");
        assert!(r.frames + r.skipped <= reports.published, "{r:?}");
        assert!(r.latency_p50_us <= r.latency_p99_us, "{r:?}");
    }
}

/// Writer child: creates the channel, publishes one frame, then waits to be killed.
fn writer_role() {
    let mut writer = FrameWriter::create(&arg("name"), FrameSpec::new(64).max_readers(2)).unwrap();
    let seq = writer.publish(&[7; 64]).unwrap();
    say("published", seq);
    // Until the parent kills us (or closes our stdin, which ends the child harness).
    thread::sleep(Duration::from_secs(600));
}

/// Reader child: takes the first frame, then sleeps in wait_next until the writer drops.
fn gone_waiter_role() {
    let mut reader = FrameReader::open(&arg("name")).unwrap();
    assert_eq!(reader.wait_next(Duration::from_secs(10)).unwrap().seq(), 1);
    say("waiting", 1);
    let start = Instant::now();
    // The last frame, published just before the drop, comes first; then WriterGone.
    let last = reader.wait_next(Duration::from_secs(30)).unwrap().seq();
    say("last", last);
    match reader.wait_next(Duration::from_secs(30)) {
        Err(Error::WriterGone { .. }) => {}
        other => panic!("expected WriterGone, got {other:?}"),
    }
    say("gone_ms", start.elapsed().as_millis());
    assert!(!reader.writer_alive());
    // The frames already published stay readable.
    assert_eq!(reader.latest().unwrap().unwrap().seq(), last);
    say("done", 1);
}

#[test]
fn a_dropped_writer_wakes_sleeping_readers_with_writer_gone() {
    let name = unique_name("chan-drop");
    let mut writer = FrameWriter::create(&name, FrameSpec::new(64)).unwrap();
    writer.publish(&[1; 64]).unwrap();
    let mut child = common::child("gone-waiter").arg("name", &name).spawn();
    child.expect("waiting", CHILD_TIMEOUT);
    // Let it fall asleep in the kernel (its spin is 20 us), then publish and drop.
    thread::sleep(Duration::from_millis(200));
    writer.publish(&[2; 64]).unwrap();
    let mut poller = FrameReader::open(&name).unwrap();
    drop(writer);
    assert_eq!(child.expect("last", CHILD_TIMEOUT), "2");
    let gone_ms: u64 = child.expect("gone_ms", CHILD_TIMEOUT).parse().unwrap();
    // Woken by the drop, not by its 30 s timeout.
    assert!(gone_ms < 10_000, "learnt of the drop after {gone_ms} ms");
    child.expect("done", CHILD_TIMEOUT);
    // A poller gets the last frame first, then WriterGone.
    assert_eq!(poller.try_next().unwrap().unwrap().seq(), 2);
    assert!(matches!(poller.try_next(), Err(Error::WriterGone { .. })));
    assert!(!poller.writer_alive());
}

#[test]
fn a_killed_writer_is_reported_as_gone_when_a_wait_runs_out_and_at_open() {
    let name = unique_name("chan-killed");
    let mut child = common::child("writer").arg("name", &name).spawn();
    assert_eq!(child.expect("published", CHILD_TIMEOUT), "1");
    let mut reader = FrameReader::open(&name).unwrap();
    assert!(reader.writer_alive());
    assert_eq!(reader.wait_next(Duration::from_secs(10)).unwrap().seq(), 1);
    // Alive and silent: an ordinary timeout.
    assert!(matches!(
        reader.wait_next(Duration::from_millis(50)),
        Err(Error::Timeout { .. })
    ));
    drop(child); // SIGKILL / TerminateProcess: its FrameWriter never drops
    assert!(!reader.writer_alive());
    let start = Instant::now();
    assert!(matches!(
        reader.wait_next(Duration::from_millis(100)),
        Err(Error::WriterGone { .. })
    ));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(reader.latest().unwrap().unwrap().seq(), 1);
    // A new reader is told at open (on Windows the section lives on while `reader` holds it).
    assert!(matches!(
        FrameReader::open(&name),
        Err(Error::WriterGone { .. })
    ));
    drop(reader);
    // On Linux the killed writer could not remove the name; a new writer removes it first.
    let _ = Mmf::remove(&name);
    let mut writer = FrameWriter::create(&name, FrameSpec::new(64)).unwrap();
    writer.publish(&[3; 64]).unwrap();
    let mut reader = FrameReader::open(&name).unwrap();
    assert!(reader.writer_alive());
    assert_eq!(reader.latest().unwrap().unwrap().seq(), 1);
}
