//! The public segment API in one process: bad inputs and their typed errors, handles and
//! lifetime, `open_or_create`, read-only handles, and the portable scenarios of issue 3.

mod common;

use std::time::{Duration, Instant};

use common::{lock_error, pattern, unique_name};
use mmf::header::HEADER_LEN;
use mmf::{Error, Mmf, MmfOptions, MAX_NAME_LEN};

// ---------------------------------------------------------------------------------------
// Bad inputs, each with its typed error
// ---------------------------------------------------------------------------------------

fn bad_names() -> Vec<(String, &'static str)> {
    vec![
        (String::new(), "empty"),
        ("x".repeat(MAX_NAME_LEN + 1), "too long"),
        ("a/b".into(), "slash"),
        ("/leading-slash".into(), "leading slash"),
        ("a\\b".into(), "backslash"),
        ("Global\\cam".into(), "namespace prefix"),
        (".hidden".into(), "leading dot"),
        (".".into(), "dot"),
        ("..".into(), "dot-dot"),
        ("with space".into(), "space"),
        (" lead".into(), "leading space"),
        ("tab\t".into(), "tab"),
        ("nul\0byte".into(), "NUL"),
        ("caméra".into(), "non-ASCII"),
        ("名前".into(), "non-ASCII"),
        ("a:b".into(), "colon"),
    ]
}

#[track_caller]
fn assert_invalid_name<T>(result: mmf::Result<T>, name: &str, what: &str, op: &str) {
    match result {
        Err(Error::InvalidName { name: n, reason }) => {
            assert_eq!(n, name, "{op} {what}: the error names the input");
            assert!(!reason.is_empty());
        }
        other => panic!(
            "{op} of a name with {what} ({name:?}): expected InvalidName, got {:?}",
            other.err()
        ),
    }
}

#[test]
fn bad_names_are_invalid_name_for_every_entry_point() {
    for (name, what) in bad_names() {
        assert_invalid_name(Mmf::create(&name, 4096), &name, what, "create");
        assert_invalid_name(Mmf::open(&name), &name, what, "open");
        assert_invalid_name(Mmf::open_read_only(&name), &name, what, "open_read_only");
        assert_invalid_name(
            Mmf::open_or_create(&name, 4096),
            &name,
            what,
            "open_or_create",
        );
        assert_invalid_name(Mmf::remove(&name), &name, what, "remove");
        assert_invalid_name(
            MmfOptions::new(name.as_str()).persist(true).create(64),
            &name,
            what,
            "MmfOptions::create",
        );
        // The message tells the caller the rule.
        let msg = Mmf::open(&name).unwrap_err().to_string();
        assert!(msg.contains("A-Z a-z 0-9 . _ -"), "{msg}");
    }
}

/// Typed views: what one writes through a `ViewMut` another handle reads through a `View`
/// (and as bytes); a type that does not fit is a typed error naming it, with nothing locked.
#[test]
fn typed_views_read_and_write_the_data_region_and_refuse_types_that_do_not_fit() {
    let name = unique_name("api-view");
    let segment = Mmf::create(&name, 100).unwrap();
    let other = Mmf::open(&name).unwrap();
    *segment.view_mut::<u64>().unwrap() = 0x0102_0304_0506_0708;
    assert_eq!(*other.view::<u64>().unwrap(), 0x0102_0304_0506_0708);
    assert_eq!(
        other.read_to_vec(0, 8).unwrap(),
        0x0102_0304_0506_0708u64.to_ne_bytes()
    );
    {
        let mut words = segment.view_slice_mut::<u32>(25).unwrap();
        assert_eq!(words.len(), 25);
        words[24] = 99;
        // The exclusive lock is held while the view lives.
        assert!(matches!(
            common::lock_error(other.try_read()),
            Some(Error::WouldBlock)
        ));
    }
    assert_eq!(other.view_slice::<u32>(25).unwrap()[24], 99);
    assert_eq!(other.read_to_vec(96, 4).unwrap(), 99u32.to_ne_bytes());
    // The region is 4096-aligned (documented on Mmf): the most demanding alignment fits.
    #[derive(Clone, Copy)]
    #[repr(C, align(4096))]
    struct PageAligned([u8; 4096]);
    // SAFETY: repr(C), one u8 array filling the alignment: no padding, every bit pattern valid.
    unsafe impl mmf::bytemuck::Zeroable for PageAligned {}
    // SAFETY: as above.
    unsafe impl mmf::bytemuck::Pod for PageAligned {}
    let big = Mmf::create(&unique_name("api-view-big"), 4096).unwrap();
    assert_eq!(big.view::<PageAligned>().unwrap().0[0], 0);
    let refused = |result: Option<Error>, count: u64, reason: &str| match result {
        Some(Error::TypeMismatch {
            type_name,
            len: 100,
            count: c,
            reason: r,
            ..
        }) => {
            assert_eq!((c, r), (count, reason), "{type_name}");
        }
        other => panic!("expected TypeMismatch ({reason}), got {other:?}"),
    };
    refused(
        common::lock_error(segment.view::<[u8; 101]>()),
        1,
        "larger than the bytes",
    );
    refused(
        common::lock_error(segment.view_mut::<PageAligned>()),
        1,
        "larger than the bytes",
    );
    refused(
        common::lock_error(segment.view_slice::<u64>(13)),
        13,
        "larger than the bytes",
    );
    refused(
        common::lock_error(segment.view_slice_mut::<u8>(usize::MAX)),
        usize::MAX as u64,
        "larger than the bytes",
    );
    refused(
        common::lock_error(segment.view_slice::<()>(1)),
        1,
        "a slice of zero-sized elements",
    );
    let message = common::lock_error(segment.view::<[u64; 13]>())
        .unwrap()
        .to_string();
    assert!(message.contains("[u64; 13]"), "{message}");
    // Refused before locking: the lock is free for a writer.
    drop(segment.try_write().unwrap());
}

#[test]
fn longest_valid_name_works() {
    let tag = unique_name("long");
    let name = format!("{tag}{}", "n".repeat(MAX_NAME_LEN - tag.len()));
    assert_eq!(name.len(), MAX_NAME_LEN);
    let segment = Mmf::create(&name, 64).unwrap();
    segment.write_at(0, b"long").unwrap();
    assert_eq!(
        Mmf::open(&name).unwrap().read_to_vec(0, 4).unwrap(),
        b"long"
    );
}

#[test]
fn bad_sizes_are_invalid_size_and_leave_nothing_behind() {
    let name = unique_name("size");
    let sizes = [
        0,
        usize::MAX,
        isize::MAX as usize,
        // The smallest size whose header + data no longer fits in an isize.
        isize::MAX as usize - HEADER_LEN + 1,
    ];
    for size in sizes {
        match Mmf::create(&name, size) {
            Err(Error::InvalidSize { size: s, reason }) => {
                assert_eq!(s, size as u64, "the error reports the size asked for");
                assert!(!reason.is_empty());
            }
            other => panic!(
                "create of {size} bytes: expected InvalidSize, got {:?}",
                other.err()
            ),
        }
        assert!(
            matches!(
                Mmf::open_or_create(&name, size),
                Err(Error::InvalidSize { .. })
            ),
            "open_or_create of {size} bytes"
        );
        assert!(
            matches!(Mmf::open(&name), Err(Error::NotFound { .. })),
            "a failed create of {size} bytes left the name behind"
        );
    }
}

#[test]
fn out_of_range_accesses_are_out_of_bounds() {
    const LEN: usize = 5000; // not a page multiple: the mapping is longer than the data
    let name = unique_name("bounds");
    let segment = Mmf::create(&name, LEN).unwrap();
    let fill = pattern(7, LEN);
    segment.write_at(0, &fill).unwrap();

    let cases: &[(usize, usize)] = &[
        (LEN, 1),            // offset = len
        (LEN - 1, 2),        // one byte past the end
        (1, LEN),            // whole length from a non-zero offset
        (0, LEN + 1),        // longer than the region
        (LEN + 4096, 1),     // inside the mapping's page padding, outside the data
        (usize::MAX, 1),     // offset + len overflows
        (usize::MAX, 0),     // empty, but starting far beyond the end
        (2, usize::MAX - 1), // overflows by one
        (usize::MAX / 2 + 1, usize::MAX / 2 + 1),
    ];
    // Where a refused access would have copied from, the data region holds `fill` and the
    // mapping's page padding zeros; a refused read must leave this marker in the buffer.
    const UNTOUCHED: u8 = 0x5a;
    let read_only = Mmf::open_read_only(&name).unwrap();
    for &(offset, len) in cases {
        let check = |result: mmf::Result<()>, op: &str| match result {
            Err(Error::OutOfBounds {
                offset: o,
                len: l,
                data_len,
            }) => {
                assert_eq!(
                    (o, l, data_len),
                    (offset as u64, len as u64, LEN as u64),
                    "{op}"
                );
            }
            other => panic!("{op}({offset}, {len}): expected OutOfBounds, got {other:?}"),
        };
        // read_to_vec must refuse before allocating usize::MAX bytes.
        check(segment.read_to_vec(offset, len).map(drop), "read_to_vec");
        check(
            read_only.read_to_vec(offset, len).map(drop),
            "read_to_vec (read-only)",
        );
        // Buffers as long as asked where that is possible; the overflow comes from the offset.
        if len <= LEN + 1 {
            for (handle, how) in [(&segment, "read_at"), (&read_only, "read_at (read-only)")] {
                let mut buf = vec![UNTOUCHED; len];
                check(handle.read_at(offset, &mut buf), how);
                assert!(
                    buf.iter().all(|&b| b == UNTOUCHED),
                    "{how}({offset}, {len}) was refused but copied into the buffer"
                );
            }
            check(segment.write_at(offset, &vec![0xee; len]), "write_at");
            assert!(
                segment.read_to_vec(0, LEN).unwrap() == fill,
                "write_at({offset}, {len}) was refused but changed the data"
            );
        }
    }
    // The edges themselves are fine.
    assert_eq!(segment.read_to_vec(LEN - 1, 1).unwrap(), [fill[LEN - 1]]);
    assert_eq!(segment.read_to_vec(LEN, 0).unwrap(), b"");
    segment.write_at(LEN - 3, b"end").unwrap();
    assert_eq!(segment.read().unwrap().len(), LEN);
    assert_eq!(segment.len(), LEN);
}

/// A copy of `segment`'s header: layout fields, write sequence and lock area, as bytes.
fn header_of(segment: &Mmf) -> Vec<u8> {
    // SAFETY: every mapping starts with the HEADER_LEN-byte header, mapped (readable) while
    // `segment` lives; callers read it only while no handle of the segment is in use, so these
    // plain reads of the header's atomic words race with no write.
    let header = unsafe { std::slice::from_raw_parts(segment.mapping_ptr_for_tests(), HEADER_LEN) };
    header.to_vec()
}

#[test]
fn failed_create_of_an_existing_name_leaves_its_data_intact() {
    let name = unique_name("exists");
    let original = Mmf::create(&name, 8192).unwrap();
    let fill = pattern(42, 8192);
    original.write_at(0, &fill).unwrap();
    let header = header_of(&original);
    type Create = fn(&str) -> mmf::Result<Mmf>;
    let attempts: [(&str, Create); 4] = [
        ("the same size", |name| Mmf::create(name, 8192)),
        ("a smaller size", |name| Mmf::create(name, 4096)),
        ("a larger size", |name| Mmf::create(name, 1 << 20)),
        ("other options", |name| {
            MmfOptions::new(name).mode(0o644).prefault(true).create(100)
        }),
    ];
    for (what, attempt) in attempts {
        match attempt(&name) {
            Err(Error::AlreadyExists { name: n }) => assert_eq!(n, name),
            other => panic!(
                "create of an existing name with {what}: expected AlreadyExists, got {other:?}"
            ),
        }
        // Byte for byte: neither the data nor the header (size, lock, write sequence).
        let data = original.read_to_vec(0, 8192).unwrap_or_else(|e| {
            panic!("after a failed create with {what}, the data cannot be read back: {e}")
        });
        assert!(data == fill, "a failed create with {what} changed the data");
        assert!(
            header_of(&original) == header,
            "a failed create with {what} changed the header"
        );
    }
    let again = Mmf::open(&name).unwrap();
    assert_eq!(again.len(), 8192, "size unchanged");
    assert!(
        again.read_to_vec(0, 8192).unwrap() == fill,
        "data unchanged"
    );
    // The failed creates did not take the name away either.
    drop(again);
    assert!(Mmf::open(&name).is_ok());
}

// ---------------------------------------------------------------------------------------
// open_or_create
// ---------------------------------------------------------------------------------------

#[test]
fn open_or_create_creates_opens_and_checks_the_size() {
    let name = unique_name("ooc");
    assert!(matches!(Mmf::open(&name), Err(Error::NotFound { .. })));
    let first = Mmf::open_or_create(&name, 3000).unwrap();
    assert_eq!(first.len(), 3000);
    assert!(
        first.read_to_vec(0, 3000).unwrap().iter().all(|&b| b == 0),
        "created zeroed"
    );
    first.write_at(10, b"first").unwrap();

    let second = Mmf::open_or_create(&name, 3000).unwrap();
    assert_eq!(
        second.read_to_vec(10, 5).unwrap(),
        b"first",
        "opened, not re-created"
    );
    second.write_at(20, b"second").unwrap();
    assert_eq!(first.read_to_vec(20, 6).unwrap(), b"second");

    match Mmf::open_or_create(&name, 4096) {
        Err(Error::SizeMismatch {
            name: n,
            expected,
            found,
        }) => assert_eq!((n.as_str(), expected, found), (name.as_str(), 4096, 3000)),
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
    assert_eq!(
        first.read_to_vec(10, 5).unwrap(),
        b"first",
        "mismatch touched nothing"
    );
    drop((first, second));
    assert!(
        matches!(Mmf::open(&name), Err(Error::NotFound { .. })),
        "the segment open_or_create made goes away like one made by create"
    );
}

// ---------------------------------------------------------------------------------------
// Read-only handles
// ---------------------------------------------------------------------------------------

#[test]
fn read_only_handle_reads_and_refuses_every_write() {
    let name = unique_name("ro");
    let owner = Mmf::create(&name, 4096).unwrap();
    let fill = pattern(3, 4096);
    owner.write_at(0, &fill).unwrap();

    // With a lock timeout, so that a copy that never sees the write sequence even again
    // fails the test instead of hanging it.
    let ro = MmfOptions::new(&name)
        .lock_timeout(Some(Duration::from_secs(5)))
        .open_read_only()
        .unwrap();
    assert!(ro.is_read_only() && !owner.is_read_only());
    assert_eq!(ro.len(), 4096);
    assert!(ro.read_to_vec(0, 4096).unwrap() == fill);
    let mut buf = [0; 16];
    ro.read_at(100, &mut buf).unwrap();
    assert_eq!(buf[..], fill[100..116]);

    // Each refusal names the operation, and leaves the data exactly as it was.
    let refused = |result: Option<Error>, call: &str, named: &str| {
        match result {
            Some(e @ Error::ReadOnly { op }) => {
                assert_eq!(op, named, "{call}: the error names the refused operation");
                let io: std::io::Error = e.into();
                assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied, "{call}");
            }
            other => panic!("{call} on a read-only handle: expected ReadOnly, got {other:?}"),
        }
        assert!(
            owner.read_to_vec(0, 4096).unwrap() == fill,
            "{call} on a read-only handle was refused but changed the data"
        );
    };
    refused(ro.write_at(0, b"no").err(), "write_at", "write_at");
    refused(ro.write_at(4000, &[0xee; 96]).err(), "write_at", "write_at");
    refused(lock_error(ro.write()), "write", "write lock");
    refused(lock_error(ro.try_write()), "try_write", "write lock");
    refused(
        lock_error(ro.write_timeout(Duration::from_millis(10))),
        "write_timeout",
        "write lock",
    );
    refused(ro.clear_poison().err(), "clear_poison", "clear_poison");
    // Guards take the lock, which lives in memory a read-only mapping may not write.
    refused(lock_error(ro.read()), "read", "read lock");
    refused(lock_error(ro.try_read()), "try_read", "read lock");
    refused(
        lock_error(ro.read_timeout(Duration::from_millis(10))),
        "read_timeout",
        "read lock",
    );
    // Bounds are still checked first, before anything is copied.
    assert!(matches!(
        ro.read_to_vec(4096, 1),
        Err(Error::OutOfBounds { .. })
    ));
    let mut buf = [0x5a; 16];
    assert!(matches!(
        ro.read_at(4090, &mut buf),
        Err(Error::OutOfBounds { .. })
    ));
    assert_eq!(buf, [0x5a; 16], "a refused read copied into the buffer");

    // A read-only copy sees later writes, and waits while a write is in progress.
    owner.write_at(0, b"later").unwrap();
    assert_eq!(ro.read_to_vec(0, 5).unwrap(), b"later");
    let timed = MmfOptions::new(&name)
        .lock_timeout(Some(Duration::from_millis(200)))
        .open_read_only()
        .unwrap();
    let guard = owner.write().unwrap();
    let t = Instant::now();
    assert!(
        matches!(timed.read_to_vec(0, 5), Err(Error::Timeout { .. })),
        "a read-only copy must not return while a writer holds the lock"
    );
    assert!(t.elapsed() >= Duration::from_millis(200));
    drop(guard);
    assert_eq!(timed.read_to_vec(0, 5).unwrap(), b"later");
}

// ---------------------------------------------------------------------------------------
// Handles and lifetime
// ---------------------------------------------------------------------------------------

#[test]
fn second_handle_keeps_working_after_the_creator_drops() {
    let name = unique_name("outlive");
    let creator = Mmf::create(&name, 4096).unwrap();
    creator.write_at(0, b"abc").unwrap();
    let other = Mmf::open(&name).unwrap();
    drop(creator);
    assert_eq!(other.read_to_vec(0, 3).unwrap(), b"abc");
    other.write_at(3, b"def").unwrap();
    assert_eq!(&other.read().unwrap()[..6], b"abcdef");
    drop(other.write().unwrap());
    #[cfg(unix)]
    assert!(
        matches!(Mmf::open(&name), Err(Error::NotFound { .. })),
        "the creator removes the name when it drops"
    );
    #[cfg(windows)]
    assert_eq!(
        Mmf::open(&name).unwrap().read_to_vec(0, 6).unwrap(),
        b"abcdef",
        "a section lives while any handle is open"
    );
}

#[test]
fn persist_keeps_the_name_until_removed() {
    let name = unique_name("persist");
    let creator = MmfOptions::new(&name).persist(true).create(4096).unwrap();
    creator.write_at(0, b"kept").unwrap();
    let other = Mmf::open(&name).unwrap();
    drop(creator);
    // The name is still there while a handle is open, on every platform.
    let reopened = Mmf::open(&name).unwrap();
    assert_eq!(reopened.read_to_vec(0, 4).unwrap(), b"kept");
    drop((other, reopened));
    #[cfg(unix)]
    {
        // POSIX: the data outlives every handle until someone removes the name.
        assert_eq!(
            Mmf::open(&name).unwrap().read_to_vec(0, 4).unwrap(),
            b"kept"
        );
        let last = Mmf::open(&name).unwrap();
        Mmf::remove(&name).unwrap();
        assert_eq!(
            last.read_to_vec(0, 4).unwrap(),
            b"kept",
            "mapping survives remove"
        );
        assert!(matches!(Mmf::open(&name), Err(Error::NotFound { .. })));
        assert!(matches!(Mmf::remove(&name), Err(Error::NotFound { .. })));
    }
    #[cfg(windows)]
    {
        // Windows: a section lives exactly as long as its handles, persist or not.
        assert!(matches!(Mmf::open(&name), Err(Error::NotFound { .. })));
        assert!(matches!(Mmf::remove(&name), Err(Error::NotFound { .. })));
    }
}

#[test]
fn open_of_a_missing_name_is_not_found() {
    let name = unique_name("missing");
    for result in [Mmf::open(&name), Mmf::open_read_only(&name)] {
        match result {
            Err(e @ Error::NotFound { .. }) => {
                assert!(e.to_string().contains(&name));
                let io: std::io::Error = e.into();
                assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
    assert!(matches!(Mmf::remove(&name), Err(Error::NotFound { .. })));
}

// ---------------------------------------------------------------------------------------
// The portable scenarios of issue 3 (the ones the original Windows crate tests).
// "No reads through a closed handle" is a compile-time guarantee, checked by the
// compile_fail example in `Mmf`'s "Lifetime" docs.
// ---------------------------------------------------------------------------------------

#[test]
fn scenario_write_then_read_back_in_the_same_process() {
    let name = unique_name("s-write");
    let segment = Mmf::create(&name, 10_000).unwrap();
    let fill = pattern(11, 10_000);
    segment.write_at(0, &fill).unwrap();
    assert!(segment.read_to_vec(0, 10_000).unwrap() == fill);
    {
        let mut guard = segment.write().unwrap();
        guard[9_990..].copy_from_slice(b"0123456789");
    }
    assert_eq!(&segment.read().unwrap()[9_990..], b"0123456789");
}

#[test]
fn scenario_read_from_a_second_handle() {
    let name = unique_name("s-second");
    let first = Mmf::create(&name, 4096).unwrap();
    first.write_at(0, b"from the first handle").unwrap();
    let second = Mmf::open(&name).unwrap();
    assert_eq!(second.len(), 4096);
    assert_eq!(second.read_to_vec(0, 21).unwrap(), b"from the first handle");
    // And the other way round, through the guards.
    second.write().unwrap()[..6].copy_from_slice(b"SECOND");
    assert_eq!(&first.read().unwrap()[..6], b"SECOND");
}

#[test]
fn scenario_reopen_after_a_handle_closed_reads_what_another_wrote() {
    let name = unique_name("s-reopen");
    let creator = Mmf::create(&name, 4096).unwrap();
    let writer = Mmf::open(&name).unwrap();
    writer.write_at(0, b"written by a closed handle").unwrap();
    drop(writer);
    let reopened = Mmf::open(&name).unwrap();
    assert_eq!(
        reopened.read_to_vec(0, 26).unwrap(),
        b"written by a closed handle"
    );
    creator.write_at(0, b"WRITTEN").unwrap();
    assert_eq!(reopened.read_to_vec(0, 7).unwrap(), b"WRITTEN");
}

#[test]
fn scenario_after_every_handle_closed_a_new_segment_starts_empty() {
    let name = unique_name("s-fresh");
    let creator = Mmf::create(&name, 4096).unwrap();
    creator.write_at(0, &[0xff; 4096]).unwrap();
    let other = Mmf::open(&name).unwrap();
    // Creator first (on Linux its drop removes the name), then the last handle.
    drop(creator);
    drop(other);
    let fresh = Mmf::create(&name, 4096).expect("the name is free again");
    assert!(
        fresh.read_to_vec(0, 4096).unwrap().iter().all(|&b| b == 0),
        "a new segment of the same name starts zeroed"
    );
}

// ---------------------------------------------------------------------------------------
// Options and threads
// ---------------------------------------------------------------------------------------

#[test]
fn prefaulted_segment_works_like_any_other() {
    let name = unique_name("prefault");
    let segment = MmfOptions::new(&name)
        .prefault(true)
        .create(1 << 20)
        .unwrap();
    assert!(segment.read().unwrap().iter().all(|&b| b == 0));
    segment.write_at((1 << 20) - 4, b"last").unwrap();
    let opened = MmfOptions::new(&name).prefault(true).open().unwrap();
    assert_eq!(opened.read_to_vec((1 << 20) - 4, 4).unwrap(), b"last");
}

/// `Mmf` is `Sync`: threads of one process share a handle, and the in-region lock excludes
/// them exactly as it excludes processes.
#[test]
fn threads_sharing_one_handle_never_see_a_half_write() {
    let name = unique_name("threads");
    let segment = Mmf::create(&name, 16 * 1024).unwrap();
    let deadline = Instant::now() + Duration::from_millis(300);
    let (writes, reads) = std::thread::scope(|s| {
        let writers: Vec<_> = (1..=2u8)
            .map(|id| {
                let segment = &segment;
                s.spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let mut guard = segment.write().unwrap();
                        // Byte by byte: a slow write that an unlocked reader would catch.
                        for b in guard.iter_mut() {
                            *b = id.wrapping_add(n as u8);
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let guard = segment.read().unwrap();
                        let first = guard[0];
                        assert!(guard.iter().all(|&b| b == first), "half-written region");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let w: Vec<u64> = writers.into_iter().map(|h| h.join().unwrap()).collect();
        let r: Vec<u64> = readers.into_iter().map(|h| h.join().unwrap()).collect();
        (w, r)
    });
    assert!(writes.iter().all(|&n| n > 0), "writers {writes:?}");
    assert!(reads.iter().all(|&n| n > 0), "readers {reads:?}");
}

// ---------------------------------------------------------------------------------------
// Noticing writes without a lock: write_seq and wait_for_write (issue 12)
// ---------------------------------------------------------------------------------------

#[test]
fn write_seq_counts_completed_writes_and_nothing_else() {
    let name = unique_name("seq");
    let segment = Mmf::create(&name, 4096).unwrap();
    let reader = Mmf::open_read_only(&name).unwrap();
    let start = segment.write_seq();
    assert_eq!(start % 2, 0, "never odd");
    drop(segment.read().unwrap());
    segment.read_at(0, &mut [0; 8]).unwrap();
    assert_eq!(segment.write_seq(), start, "reads are not writes");
    let guard = segment.write().unwrap();
    assert_eq!(
        segment.write_seq(),
        start,
        "a write in progress is not counted"
    );
    drop(guard);
    assert_eq!(segment.write_seq(), start.wrapping_add(2));
    segment.write_at(0, b"x").unwrap();
    drop(segment.try_write().unwrap());
    assert_eq!(
        segment.write_seq(),
        start.wrapping_add(6),
        "every kind of write"
    );
    assert_eq!(
        reader.write_seq(),
        segment.write_seq(),
        "the same on read-only handles"
    );
}

#[test]
fn wait_for_write_returns_at_once_for_a_write_it_has_not_seen() {
    let segment = Mmf::create(&unique_name("seq-stale"), 4096).unwrap();
    let seen = segment.write_seq();
    segment.write_at(0, b"x").unwrap();
    let t = Instant::now();
    assert_eq!(
        segment
            .wait_for_write(seen, Some(Duration::from_secs(30)))
            .unwrap(),
        seen.wrapping_add(2)
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "it waited {:?}",
        t.elapsed()
    );
}

#[test]
fn wait_for_write_times_out_with_a_typed_error_when_nothing_is_written() {
    let name = unique_name("seq-timeout");
    let segment = Mmf::create(&name, 4096).unwrap();
    let reader = Mmf::open_read_only(&name).unwrap();
    for handle in [&segment, &reader] {
        let timeout = Duration::from_millis(100);
        let t = Instant::now();
        match handle.wait_for_write(handle.write_seq(), Some(timeout)) {
            Err(Error::Timeout { waited }) => {
                assert!(waited >= timeout, "reported {waited:?}");
                assert!(t.elapsed() >= timeout);
            }
            other => panic!("read-only {}: {other:?}", handle.is_read_only()),
        }
        // A zero timeout only looks.
        assert!(matches!(
            handle.wait_for_write(handle.write_seq(), Some(Duration::ZERO)),
            Err(Error::Timeout { .. })
        ));
    }
    // The writer's next acquisitions still work (the sleeper's PARKED bit is cleared by
    // the release that wakes, or found by the next writer).
    segment.write_at(0, b"y").unwrap();
    drop(segment.read().unwrap());
}

#[test]
fn wait_for_write_wakes_a_thread_for_a_write_from_another_handle() {
    let name = unique_name("seq-thread");
    let segment = Mmf::create(&name, 4096).unwrap();
    let writer = Mmf::open(&name).unwrap();
    let reader = Mmf::open_read_only(&name).unwrap();
    for waiter in [&segment, &reader] {
        let seen = waiter.write_seq();
        std::thread::scope(|s| {
            let woken = s.spawn(|| {
                let t = Instant::now();
                let now = waiter.wait_for_write(seen, Some(Duration::from_secs(30)));
                (now, t.elapsed())
            });
            std::thread::sleep(Duration::from_millis(100));
            writer.write_at(0, b"z").unwrap();
            let (now, waited) = woken.join().unwrap();
            assert_eq!(now.unwrap(), seen.wrapping_add(2));
            assert!(
                waited >= Duration::from_millis(50),
                "did not wait: {waited:?}"
            );
            assert!(waited < Duration::from_secs(10), "woken late: {waited:?}");
        });
    }
}
