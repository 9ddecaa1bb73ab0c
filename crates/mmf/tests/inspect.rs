//! `mmf::inspect` (what `mmf list` and `mmf info` print) against live objects and forged
//! bytes: it reports what is in the region, never changes it, and meets garbage with typed
//! errors or a `problem`, never a panic. Linux only: the forgeries write `/dev/shm` files.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::os::unix::fs::FileExt;

use mmf::inspect::{self, Kind, LockState};
use mmf::lock::Liveness;
use mmf::{Error, FrameMeta, FrameReader, FrameSpec, FrameWriter, Mmf, MmfOptions};

fn path(name: &str) -> String {
    format!("/dev/shm/{name}")
}

/// Overwrites bytes of `name`'s object at `offset`, as a hostile peer could.
fn patch(name: &str, offset: u64, bytes: &[u8]) {
    let file = fs::OpenOptions::new().write(true).open(path(name)).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

#[test]
fn a_live_segment_shows_its_lock_as_it_changes_and_inspection_changes_nothing() {
    let name = common::unique_name("insp-live");
    let segment = Mmf::create(&name, 4096).unwrap();
    let me = std::process::id();

    let info = inspect::segment(&name).unwrap();
    assert_eq!(info.kind, Kind::Plain);
    assert!(info.problem.is_none(), "{:?}", info.problem);
    assert_eq!(info.header.data_len, 4096);
    assert_eq!(info.header.layout_version, mmf::header::LAYOUT_VERSION);
    assert_eq!(info.mode, Some(0o600));
    assert_eq!(
        (info.creator.pid, info.creator.alive),
        (me, Liveness::Alive)
    );
    assert!(info.in_use());
    assert_eq!(info.lock.as_ref().unwrap().state(), LockState::Free);

    let read = segment.read().map_err(|e| e.into_error()).unwrap();
    assert_eq!(
        inspect::segment(&name).unwrap().lock.unwrap().state(),
        LockState::ReadLocked(1)
    );
    drop(read);

    let write = segment.write().map_err(|e| e.into_error()).unwrap();
    let before = fs::read(path(&name)).unwrap();
    let info = inspect::segment(&name).unwrap();
    let after = fs::read(path(&name)).unwrap();
    assert!(before == after, "inspection changed the region");
    let lock = info.lock.unwrap();
    assert_eq!(lock.state(), LockState::WriteLocked(Some(me)));
    let owner = lock.owner_slot.expect("an owner slot while write-locked");
    let slot = lock.slots.iter().find(|s| s.index == owner).unwrap();
    assert_eq!(
        (slot.process.pid, slot.process.alive),
        (me, Liveness::Alive)
    );
    drop(write);
}

#[test]
fn foreign_short_and_empty_objects_are_typed_errors() {
    let name = common::unique_name("insp-junk");
    fs::write(path(&name), vec![0x5a; 8192]).unwrap();
    assert!(matches!(inspect::segment(&name), Err(Error::NotMmf { .. })));

    // The magic, but too short to hold a header.
    let mut short = mmf::header::MAGIC.to_vec();
    short.resize(100, 0);
    fs::write(path(&name), short).unwrap();
    assert!(matches!(inspect::segment(&name), Err(Error::NotMmf { .. })));

    // Created but never sized: waited for briefly, then reported.
    fs::write(path(&name), b"").unwrap();
    assert!(matches!(
        inspect::segment(&name),
        Err(Error::NotReady { .. })
    ));
    fs::remove_file(path(&name)).unwrap();

    assert!(matches!(
        inspect::segment("no/such"),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        inspect::segment(&common::unique_name("insp-none")),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn a_header_openers_refuse_is_shown_as_it_is_with_the_reason() {
    let name = common::unique_name("insp-ver");
    let _segment = MmfOptions::new(&name).create(4096).unwrap();
    patch(&name, 12, &99u32.to_ne_bytes()); // layout_version
    let info = inspect::segment(&name).unwrap();
    assert_eq!(info.header.layout_version, 99);
    assert!(matches!(
        info.problem,
        Some(Error::IncompatibleVersion { found: 99, .. })
    ));
    assert!(
        info.lock.is_none(),
        "a refused header's lock is not decoded"
    );

    patch(&name, 12, &mmf::header::LAYOUT_VERSION.to_ne_bytes());
    patch(&name, 24, &u32::MAX.to_ne_bytes()); // data_len_lo: more than the object holds
    let info = inspect::segment(&name).unwrap();
    assert!(
        matches!(info.problem, Some(Error::Corrupt { .. })),
        "{:?}",
        info.problem
    );
}

#[test]
fn garbage_in_the_lock_area_is_decoded_without_panicking() {
    let name = common::unique_name("insp-lock");
    let _segment = MmfOptions::new(&name).create(4096).unwrap();
    let area = mmf::header::LOCK_AREA_OFFSET as u64;
    // slots used far past the table, every slot tag and pid all ones.
    patch(&name, area + 8, &u32::MAX.to_ne_bytes());
    patch(&name, area + 64, &vec![0xff; 2048 - 64]);
    let lock = inspect::segment(&name).unwrap().lock.unwrap();
    assert!(lock.slots.len() <= mmf::lock::SLOTS);
    assert_eq!(lock.slots_used as usize, mmf::lock::SLOTS);
    // Whatever the words say, the state is one of the four.
    let _ = lock.state();
}

#[test]
fn a_channel_shows_its_geometry_writer_readers_and_newest_frame() {
    let name = common::unique_name("insp-chan");
    let mut writer = FrameWriter::create(&name, FrameSpec::new(1024).max_readers(2)).unwrap();
    let me = std::process::id();
    let info = inspect::segment(&name).unwrap();
    let channel = info.channel.unwrap();
    assert_eq!(info.kind, Kind::FrameChannel);
    assert_eq!(channel.max_readers, 2);
    assert_eq!(channel.max_frame_len, 1024);
    assert!(channel.newest.is_none());
    assert_eq!(
        (channel.writer.pid, channel.writer.alive),
        (me, Liveness::Alive)
    );

    writer.set_meta(FrameMeta {
        width: 16,
        height: 16,
        pixel_format: mmf::channel::PixelFormat::Gray.code(),
        tag: 7,
    });
    writer.publish(&[1; 256]).unwrap();
    let reader = FrameReader::open(&name).unwrap();
    let channel = inspect::segment(&name).unwrap().channel.unwrap();
    let newest = channel.newest.unwrap();
    assert_eq!((newest.seq, newest.len, newest.width), (1, 256, 16));
    assert_eq!(newest.pixel_format, mmf::channel::PixelFormat::Gray.code());
    assert!(newest.age_ns.is_some());
    assert_eq!(channel.readers.len(), 1);
    assert_eq!(channel.readers[0].process.pid, me);
    assert!(channel.reader_table_error.is_none());
    drop(reader);
    assert!(inspect::segment(&name)
        .unwrap()
        .channel
        .unwrap()
        .readers
        .is_empty());
}

#[test]
fn a_forged_channel_geometry_is_reported_not_trusted() {
    let name = common::unique_name("insp-geom");
    let _writer = FrameWriter::create(&name, FrameSpec::new(1024)).unwrap();
    let data = mmf::header::HEADER_LEN as u64;
    patch(&name, data + 16, &0u32.to_ne_bytes()); // max_readers 0
    let info = inspect::segment(&name).unwrap();
    assert!(info.channel.is_none());
    assert!(
        matches!(info.channel_error, Some(Error::Corrupt { .. })),
        "{:?}",
        info.channel_error
    );
}
