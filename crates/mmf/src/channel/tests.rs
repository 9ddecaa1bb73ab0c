//! The channel's unit tests: torn-frame races forced with a hook, geometry, slots.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::header::KIND_FRAME_CHANNEL;
use crate::segment::MmfOptions;

use super::common::*;
use super::layout::*;
use super::reader::*;
use super::writer::*;

thread_local! {
    /// Run once by the next `pin` on this thread between its look at `latest` and its pin
    /// store. A hook rather than a race: a reader preempted in that window (a few
    /// instructions) is too rare to catch its bugs in a run of any sensible length.
    static BETWEEN_LOOK_AND_PIN: RefCell<Option<Box<dyn FnOnce()>>> =
        const { RefCell::new(None) };
}

pub(super) fn between_look_and_pin() {
    // Taken before it runs, so a hook that pins (through another reader) does not recurse.
    if let Some(hook) = BETWEEN_LOOK_AND_PIN.with(|h| h.borrow_mut().take()) {
        hook();
    }
}

fn set_between_look_and_pin(hook: impl FnOnce() + 'static) {
    BETWEEN_LOOK_AND_PIN.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
}

fn hook_has_run() -> bool {
    BETWEEN_LOOK_AND_PIN.with(|h| h.borrow().is_none())
}

/// The bytes of frame `seq`: its length and every byte follow from `seq`, so a frame
/// that changed under its pin, or metadata paired with another frame's bytes, shows.
fn frame_bytes(seq: u64) -> Vec<u8> {
    let len = 8 + (seq % 57) as usize; // 8..=64: at most FRAME_MAX
    let mut bytes = seq.to_le_bytes().to_vec();
    bytes.extend((8..len).map(|i| (seq.wrapping_mul(31) as usize ^ i.wrapping_mul(7)) as u8));
    bytes
}
const FRAME_MAX: usize = 64;

fn publish_next(writer: &mut FrameWriter) -> u64 {
    let seq = writer.seq() + 1;
    assert_eq!(writer.publish(&frame_bytes(seq)).unwrap(), seq);
    seq
}

/// The race the re-check in `pin` closes, forced through the hook: between the reader's
/// look at `latest` (frame 1, slot 0) and its pin, the writer publishes `k` frames: it
/// moves on from slot 0, and for `k >= 3` its scan finds slot 0 unpinned and puts frame 4
/// there. The reader must notice, retry, and return the newest frame, complete, which
/// then stays unchanged while the writer runs on. (Without the re-check the reader here
/// pairs slot 0 with a newer frame's metadata and fails with `Corrupt`; in a real race
/// it can also return half-rewritten metadata or, where loads may pass its pin store, a
/// frame being rewritten.)
#[test]
fn frames_are_never_torn_when_the_writer_publishes_between_a_readers_look_and_its_pin() {
    for k in 1..=4 {
        let name = name("overtaken");
        // The fewest slots one reader allows: the looked-at slot is reused soonest.
        let spec = FrameSpec::new(FRAME_MAX).max_readers(1).slots(3);
        let writer = Rc::new(RefCell::new(FrameWriter::create(&name, spec).unwrap()));
        publish_next(&mut writer.borrow_mut()); // frame 1, in slot 0
        let mut reader = FrameReader::open(&name).unwrap();
        let in_hook = writer.clone();
        set_between_look_and_pin(move || {
            for _ in 0..k {
                publish_next(&mut in_hook.borrow_mut());
            }
        });
        let newest = 1 + k as u64;
        let frame = reader
            .latest()
            .unwrap_or_else(|e| panic!("{k} publishes in the window: {e}"))
            .expect("a frame");
        assert!(hook_has_run(), "the hook must have run inside pin");
        assert_eq!(frame.seq(), newest, "{k} publishes in the window");
        assert_eq!(
            &frame[..],
            frame_bytes(newest),
            "{k} publishes in the window"
        );
        // Held: the writer keeps off its slot however far it runs on.
        for _ in 0..10 {
            publish_next(&mut writer.borrow_mut());
        }
        assert_eq!(
            &frame[..],
            frame_bytes(newest),
            "frame changed under its pin"
        );
    }
}

/// What a reader's pinned slot holds now (a copy; the pin is the caller's to hold).
fn slot_bytes(channel: &Channel, slot: u32, len: usize) -> Vec<u8> {
    assert!(slot < channel.geometry.slots && len <= channel.geometry.max_frame_len);
    // SAFETY: slot < slots and len <= max_frame_len (asserted): inside the mapping, which
    // `channel` keeps alive. Single-threaded test: no publish runs during the copy.
    unsafe { std::slice::from_raw_parts(channel.slot_ptr(slot), len) }.to_vec()
}

/// The writer never hands `fill` the latest slot or a pinned one, and never writes a
/// slot while it is pinned, over a random schedule of publishes, pins, unpins and pins
/// taken while the writer fills (after its scan, the case the `latest` exclusion in the
/// scan is for): every fill checks its slot, and every held frame is compared byte for
/// byte with what it held when pinned, after every step.
#[test]
fn the_writer_never_writes_the_latest_or_a_pinned_slot() {
    const READERS: usize = 3;
    for slots in [READERS + 2, READERS + 3, 16] {
        let name = name("pins");
        let spec = FrameSpec::new(FRAME_MAX).max_readers(READERS).slots(slots);
        let mut writer = FrameWriter::create(&name, spec).unwrap();
        let mut readers: Vec<FrameReader> = (0..READERS)
            .map(|_| FrameReader::open(&name).unwrap())
            .collect();
        // Per reader: the slot it pins and the frame it read there.
        let mut held: Vec<Option<(u32, u64)>> = vec![None; READERS];
        let base = writer.channel.slot_ptr(0) as usize;
        let stride = writer.channel.geometry.stride;
        let mut state = slots as u64;
        let mut next = move |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        let (mut fills, mut pins_while_filling) = (0, 0);
        let steps = if cfg!(miri) { 50 } else { 5000 };
        for _ in 0..steps {
            let who = next(READERS as u64) as usize;
            match next(4) {
                0 | 1 => {
                    let latest = writer.latest;
                    let seq = writer.seq() + 1;
                    let pin_now = next(2) == 0 && held[who].is_none();
                    let (readers, held) = (&mut readers, &mut held);
                    let pins_while_filling = &mut pins_while_filling;
                    writer
                        .publish_with(|buf| {
                            let slot = ((buf.as_ptr() as usize - base) / stride) as u32;
                            assert_ne!(slot, latest, "frame {seq} written over the latest");
                            for (r, pin) in held.iter().enumerate() {
                                assert_ne!(
                                    pin.map(|(s, _)| s),
                                    Some(slot),
                                    "frame {seq} written over reader {r}'s pin"
                                );
                            }
                            if pin_now {
                                // A reader pins the current latest after the scan.
                                if let Some(p) = readers[who].pin().unwrap() {
                                    held[who] = Some((p.slot, p.info.seq));
                                    *pins_while_filling += 1;
                                }
                            }
                            let bytes = frame_bytes(seq);
                            buf[..bytes.len()].copy_from_slice(&bytes);
                            bytes.len()
                        })
                        .unwrap();
                    fills += 1;
                }
                2 if held[who].is_none() => {
                    if let Some(p) = readers[who].pin().unwrap() {
                        held[who] = Some((p.slot, p.info.seq));
                    }
                }
                _ => {
                    readers[who].unpin();
                    held[who] = None;
                }
            }
            for (r, pin) in held.iter().enumerate() {
                if let Some((slot, seq)) = *pin {
                    let expected = frame_bytes(seq);
                    assert!(
                        slot_bytes(&readers[r].channel, slot, expected.len()) == expected,
                        "frame {seq} pinned by reader {r} in slot {slot} changed \
                         ({slots} slots, writer at {})",
                        writer.seq()
                    );
                }
            }
        }
        eprintln!("{slots} slots: {fills} publishes, {pins_while_filling} pins while filling");
        assert!(fills > steps / 4 && pins_while_filling > steps / 20);
    }
}

/// A pin cleared behind the reader's back (any reader may write the table) lets the
/// writer reuse the slot of a frame the reader still holds: `verify` says so, with the
/// frame's sequence number, while it said nothing before the writer got there.
#[test]
fn verify_reports_a_frame_overwritten_after_its_pin_was_cleared() {
    let name = name("verify");
    let spec = FrameSpec::new(FRAME_MAX).max_readers(1).slots(3);
    let mut writer = FrameWriter::create(&name, spec).unwrap();
    let first = publish_next(&mut writer);
    let mut reader = FrameReader::open(&name).unwrap();
    let frame = reader.latest().unwrap().unwrap();
    assert_eq!(frame.seq(), first);
    // Held: the writer keeps off it however far it runs.
    for _ in 0..6 {
        publish_next(&mut writer);
    }
    assert_eq!(&frame[..], frame_bytes(first));
    assert!(
        frame.verify().is_ok(),
        "a pinned frame is never overwritten"
    );
    // Another process clears the pin; the writer rescans and reuses the slot.
    let entry = &writer.channel.readers()[frame.reader.entry];
    entry.pin.store(NO_SLOT, Relaxed);
    for _ in 0..6 {
        publish_next(&mut writer);
    }
    assert_ne!(&frame[..], frame_bytes(first), "the slot was reused");
    assert!(matches!(
        frame.verify(),
        Err(Error::FrameOverwritten { seq }) if seq == first
    ));
}

/// An evicted reader waiting for a frame that does not come is told at once, not when
/// its wait runs out (nor never, were it to sleep on).
#[test]
fn an_evicted_reader_waiting_for_frames_is_told_at_once() {
    let name = name("evicted");
    let mut writer = FrameWriter::create(&name, FrameSpec::new(64).max_readers(1)).unwrap();
    publish_next(&mut writer);
    let mut reader = FrameReader::open(&name).unwrap();
    drop(reader.wait_next(Duration::from_secs(10)).unwrap());
    // Another process frees the entry behind the reader's back.
    writer.channel.readers()[reader.entry]
        .claim
        .store(0, Relaxed);
    let start = Instant::now();
    assert!(matches!(
        reader.wait_next(Duration::from_secs(10)),
        Err(Error::ReaderEvicted { .. })
    ));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn types_have_the_thread_bounds_we_document() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<FrameWriter>();
    send_sync::<FrameReader>();
    send_sync::<Frame<'static>>();
}

fn name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "mmfu-chan-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Relaxed)
    )
}

#[test]
fn garbage_in_the_control_block_is_a_typed_error() {
    let name = name("garbage");
    let mut writer =
        FrameWriter::create(&name, FrameSpec::new(100).max_readers(2).slots(4)).unwrap();
    writer.publish(&[1; 10]).unwrap();
    let mut reader = FrameReader::open(&name).unwrap();
    // A third mapping of the same segment to scribble on, as another process of the
    // writer's user would (readers map it read-only).
    let view = MmfOptions::new(&name)
        .kind(KIND_FRAME_CHANNEL)
        .open()
        .unwrap();
    let control = control_of(&view);
    let good = control.latest.load(Relaxed);
    control.latest.store(latest_word(7, 1), Relaxed);
    assert!(matches!(reader.latest(), Err(Error::Corrupt { .. })));
    control.latest.store(good, Relaxed);
    store64(&control.desc.len, 101);
    assert!(matches!(reader.latest(), Err(Error::Corrupt { .. })));
    store64(&control.desc.len, 10);
    store64(&control.desc.seq, 5);
    assert!(matches!(reader.latest(), Err(Error::Corrupt { .. })));
    store64(&control.desc.seq, 1);
    assert_eq!(reader.latest().unwrap().unwrap().len(), 10);
    // A writer killed between marking the metadata busy and publishing: readers give up
    // instead of spinning forever.
    control.latest.store(latest_word(LATEST_BUSY, 1), Relaxed);
    assert!(matches!(reader.latest(), Err(Error::WouldBlock)));
    assert!(matches!(
        reader.wait_next(Duration::from_millis(30)),
        Err(Error::Timeout { .. })
    ));
    control.latest.store(good, Relaxed);
    assert_eq!(reader.latest().unwrap().unwrap().len(), 10);
    assert_eq!(
        reader.entry().pin.load(Relaxed),
        NO_SLOT,
        "errors and dropped frames leave no pin behind"
    );

    // Pins naming every slot at once cannot stop the writer: it reads only max_readers
    // entries, and each names at most one slot. (The reader table is writable by every
    // reader; its own tests are in `a_scribbled_reader_table_...` below.)
    for (i, entry) in writer.channel.table().readers.iter().enumerate() {
        entry.pin.store(i as u32 % 4 + 1, Relaxed);
    }
    for _ in 0..10 {
        writer.publish(&[2; 10]).unwrap();
    }
    // A claim word changed under the reader (another reader freed its entry): the
    // reader is evicted, as a typed error, and its later calls say so too.
    writer.channel.readers()[reader.entry]
        .claim
        .store(0, Relaxed);
    assert!(matches!(reader.latest(), Err(Error::ReaderEvicted { .. })));
    assert!(matches!(
        reader.try_next(),
        Err(Error::ReaderEvicted { .. })
    ));

    // An opener checks the geometry against the real mapping.
    control.slot_count.store(99, Relaxed);
    assert!(matches!(
        FrameReader::open(&name),
        Err(Error::Corrupt { .. })
    ));
    control.slot_count.store(4, Relaxed);
    store64(&control.max_frame_len, 1 << 40);
    assert!(matches!(
        FrameReader::open(&name),
        Err(Error::Corrupt { .. })
    ));
    // A hostile user header length: past the bound, or not matching the stride, so that a
    // reader would read past its slot (or the mapping) if it believed it.
    store64(&control.max_frame_len, 100);
    assert!(FrameReader::open(&name).is_ok(), "restored");
    for bad in [u32::MAX, MAX_USER_HEADER_LEN as u32 + 1, 1] {
        control.user_header_len.store(bad, Relaxed);
        assert!(
            matches!(FrameReader::open(&name), Err(Error::Corrupt { .. })),
            "user header of {bad} bytes"
        );
    }
}

/// Random words anywhere in the control block and the reader table: reader and writer
/// return values or typed errors, never panic, never read outside the mapping. An
/// evicted reader opens again (when the scribbled table lets it).
#[test]
fn random_control_and_table_words_never_panic() {
    let name = name("random");
    let mut writer = FrameWriter::create(&name, FrameSpec::new(256).max_readers(2)).unwrap();
    let mut reader = Some(FrameReader::open(&name).unwrap());
    // Globals, the latest line and the stamps; the table's count and two live entries.
    let control_words = (256 + 8 * writer.channel.geometry.slots as usize) / 4;
    let table_words = (64 + 64 * 2) / 4;
    let mut state = 0x1234_5678_9abc_def0_u64;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u32
    };
    let iterations = if cfg!(miri) { 20 } else { 3000 };
    let (mut evictions, mut frames) = (0, 0);
    for _ in 0..iterations {
        let in_table = next() % 2 == 0;
        let value = match next() % 4 {
            0 => 0,
            1 => u32::MAX,
            2 => next() % 64,
            _ => next(),
        };
        let (base, index) = if in_table {
            let base: *const ReaderTable = writer.channel.table();
            (base.cast::<AtomicU32>(), next() as usize % table_words)
        } else {
            let base: *const Control = writer.channel.control();
            (base.cast::<AtomicU32>(), next() as usize % control_words)
        };
        // Skip the magic and geometry: they are checked at open (test above), and
        // changing them afterwards is outside what a running reader re-reads.
        if !in_table && index < 16 {
            continue;
        }
        // wrapping_add: computing the address needs no unsafe; the index bounds above
        // keep it inside the control block (4096 bytes) or the table (2112 bytes).
        let word = base.wrapping_add(index);
        // SAFETY: both blocks are made only of AtomicU32s, so every 4-aligned word inside
        // them is a valid AtomicU32, alive as long as the writer.
        let word = unsafe { &*word };
        word.store(value, Relaxed);
        let _ = writer.publish(&[3; 200]);
        let Some(r) = reader.as_mut() else {
            reader = FrameReader::open(&name).ok();
            continue;
        };
        let evicted = match r.try_next() {
            Ok(Some(frame)) => {
                assert!(frame.len() <= 256);
                frames += 1;
                false
            }
            Err(Error::ReaderEvicted { .. }) => true,
            _ => false,
        };
        if evicted {
            evictions += 1;
            reader = None;
            continue;
        }
        if let Ok(Some(frame)) = r.latest() {
            assert!(frame.len() <= 256);
        }
        let _ = r.wait_next(Duration::ZERO);
    }
    eprintln!("{frames} frames, {evictions} evictions");
    if !cfg!(miri) {
        assert!(
            frames > 100 && evictions > 10,
            "{frames} frames, {evictions} evictions"
        );
    }
}

#[test]
fn spec_validation_gives_typed_errors() {
    for spec in [
        FrameSpec::new(0),
        FrameSpec::new(64).max_readers(0),
        FrameSpec::new(64).max_readers(MAX_READERS + 1),
        FrameSpec::new(usize::MAX),
        FrameSpec::new(usize::MAX / 4),
    ] {
        assert!(
            matches!(Geometry::for_spec(&spec), Err(Error::InvalidSize { .. })),
            "{spec:?}"
        );
    }
    for spec in [
        FrameSpec::new(64).max_readers(3).slots(4),
        FrameSpec::new(64).max_readers(1).slots(MAX_SLOTS + 1),
        FrameSpec::new(64)
            .max_readers(MAX_READERS)
            .slots(MAX_READERS + 1),
    ] {
        assert!(
            matches!(Geometry::for_spec(&spec), Err(Error::InvalidSize { .. })),
            "{spec:?}"
        );
    }
    let slots_of = |spec: FrameSpec| Geometry::for_spec(&spec).unwrap().0.slots;
    // Explicit counts are kept, from max_readers + 2 up to MAX_SLOTS.
    assert_eq!(slots_of(FrameSpec::new(5000).max_readers(3).slots(5)), 5);
    assert_eq!(slots_of(FrameSpec::new(64).max_readers(1).slots(62)), 62);
    // The default: as many slots as fit in 64 KiB of strides, at most 16, at least R + 2.
    assert_eq!(slots_of(FrameSpec::new(64).max_readers(1)), 16);
    assert_eq!(slots_of(FrameSpec::new(4096).max_readers(1)), 16);
    assert_eq!(slots_of(FrameSpec::new(4097).max_readers(1)), 8);
    assert_eq!(slots_of(FrameSpec::new(8192).max_readers(3)), 8);
    assert_eq!(slots_of(FrameSpec::new(16 * 1024).max_readers(1)), 4);
    assert_eq!(slots_of(FrameSpec::new(16 * 1024).max_readers(3)), 5);
    assert_eq!(slots_of(FrameSpec::new(64 * 1024).max_readers(3)), 5);
    assert_eq!(slots_of(FrameSpec::new(64).max_readers(20)), 22);
    assert_eq!(slots_of(FrameSpec::new(1920 * 1080 * 3).max_readers(3)), 5);
    let (g, total) = Geometry::for_spec(&FrameSpec::new(5000).max_readers(3)).unwrap();
    assert_eq!((g.slots, g.stride), (8, 8192));
    assert_eq!(total, CONTROL_LEN + 8 * 8192);
}
