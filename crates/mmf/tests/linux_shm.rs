//! Linux-only checks that need to see or forge the object behind a segment: `/dev/shm/<name>`.
//!
//! Forged objects stand in for a creator that is still initialising (or crashed half-way), a
//! foreign program, or another layout version; building their headers by hand from the byte
//! table in `header.rs` doubles as a check of that documented layout. Permissions are
//! checked with a child process running as another user.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{arg, pattern, say, unique_name, CHILD_TIMEOUT};
use mmf::header::{HEADER_LEN, KIND_FRAME_CHANNEL, KIND_PLAIN, LAYOUT_VERSION, MAGIC, STATE_READY};
use mmf::{Error, Mmf, MmfOptions, RawRwLock, SharedRwLock};

#[test]
#[ignore = "not a test: the entry point of this file's child processes, which run it with --include-ignored"]
fn child() {
    common::child_main(|role| match role {
        "probe" => say("alive", 1),
        "other_user" => other_user_role(),
        other => panic!("unknown child role {other:?}"),
    });
}

fn shm_path(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name)
}

/// A POSIX shm object written directly through `/dev/shm`, removed on drop.
struct RawObject {
    name: String,
    path: PathBuf,
}

impl RawObject {
    fn new(tag: &str, bytes: &[u8]) -> Self {
        let name = unique_name(tag);
        let path = shm_path(&name);
        fs::write(&path, bytes).unwrap();
        RawObject { name, path }
    }
}

impl Drop for RawObject {
    fn drop(&mut self) {
        // Ignored: a test that already removed it, or a failed write, leaves nothing to do.
        let _ = fs::remove_file(&self.path);
    }
}

/// A version-1 header written by hand, field by field, from the byte table in `header.rs`.
fn header_bytes(data_len: u64) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN];
    let mut put = |offset: usize, value: u32| {
        h[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    };
    put(8, 0x5245_4459); // state: ready
    put(12, 1); // layout_version
    put(16, 4096); // header_len
    put(20, SharedRwLock::KIND); // lock_kind of the default lock
    put(24, data_len as u32); // data_len_lo
    put(28, (data_len >> 32) as u32); // data_len_hi
    put(32, 0); // flags: a plain segment
    put(36, 1); // creator_pid
                // 40 write_seq, 44 os_waiters, 48.. reserved, 64.. lock area (0 = unlocked): all zero.
    h[0..8].copy_from_slice(b"mmf\0seg\x01");
    h
}

fn set_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
}

fn object(header: Vec<u8>, data: &[u8]) -> Vec<u8> {
    let mut bytes = header;
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn documented_constants_match_the_byte_table() {
    assert_eq!(&MAGIC, b"mmf\0seg\x01");
    assert_eq!(STATE_READY, 0x5245_4459);
    assert_eq!(LAYOUT_VERSION, 1);
    assert_eq!(HEADER_LEN, 4096);
    assert_eq!(KIND_PLAIN, 0);
}

#[test]
fn hand_written_header_opens_and_the_data_starts_at_4096() {
    let data = pattern(5, 8192);
    let raw = RawObject::new("handmade", &object(header_bytes(8192), &data));
    let segment = Mmf::open(&raw.name).unwrap();
    assert_eq!(segment.len(), 8192);
    assert!(segment.read_to_vec(0, 8192).unwrap() == data);
    segment.write_at(0, b"through mmf").unwrap();
    let on_disk = fs::read(&raw.path).unwrap();
    assert_eq!(
        &on_disk[4096..4107],
        b"through mmf",
        "data region at offset 4096"
    );
    // write_seq (offset 40) went odd and back to even around that write.
    let seq = u32::from_ne_bytes(on_disk[40..44].try_into().unwrap());
    assert!(seq != 0 && seq % 2 == 0, "write_seq {seq}");
    assert!(
        Mmf::open_read_only(&raw.name)
            .unwrap()
            .read_to_vec(0, 11)
            .unwrap()
            == b"through mmf"
    );
}

#[track_caller]
fn assert_not_ready(name: &str) {
    let wait = Duration::from_millis(200);
    let t = Instant::now();
    let result = MmfOptions::new(name).open_timeout(wait).open();
    let elapsed = t.elapsed();
    match result {
        Err(Error::NotReady { name: n, waited }) => {
            assert_eq!(n, name);
            assert!(waited >= wait, "reported {waited:?}");
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert!(
        elapsed >= wait,
        "gave up after {elapsed:?}, before the open timeout"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "waited {elapsed:?}, far past the open timeout"
    );
}

#[test]
fn never_initialised_object_is_not_ready_after_the_open_timeout() {
    // Created and sized, header never written (a creator that stopped before initialising).
    let zeros = RawObject::new("zeros", &vec![0; HEADER_LEN + 4096]);
    assert_not_ready(&zeros.name);
    // Created but not even sized yet.
    let empty = RawObject::new("unsized", &[]);
    assert_not_ready(&empty.name);
    // Magic written, state not yet ready: the creator is half-way through.
    let mut half = header_bytes(4096);
    set_u32(&mut half, 8, 0);
    let half = RawObject::new("half", &object(half, &[0; 4096]));
    assert_not_ready(&half.name);
}

#[test]
fn open_waits_for_a_creator_that_finishes_initialising() {
    let zeros = RawObject::new("slow", &vec![0; HEADER_LEN + 4096]);
    let path = zeros.path.clone();
    let finisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        let file = fs::OpenOptions::new().write(true).open(path).unwrap();
        let mut header = header_bytes(4096);
        // Everything but the state word first, then the state: the creator's publish order.
        set_u32(&mut header, 8, 0);
        file.write_all_at(&header, 0).unwrap();
        file.write_all_at(&STATE_READY.to_ne_bytes(), 8).unwrap();
    });
    let t = Instant::now();
    let segment = Mmf::open(&zeros.name).expect("open waits up to 1 s by default");
    let waited = t.elapsed();
    finisher.join().unwrap();
    assert!(
        waited >= Duration::from_millis(100),
        "opened after {waited:?}, before the header was there"
    );
    assert_eq!(segment.len(), 4096);
}

#[test]
fn foreign_object_is_not_mmf() {
    let random = RawObject::new("random", &pattern(99, HEADER_LEN + 4096));
    assert!(matches!(Mmf::open(&random.name), Err(Error::NotMmf { .. })));
    let text = RawObject::new("text", &[b'x'; HEADER_LEN * 2]);
    assert!(matches!(
        Mmf::open_read_only(&text.name),
        Err(Error::NotMmf { .. })
    ));
}

#[test]
fn truncated_object_is_not_mmf() {
    let full = header_bytes(4096);
    for len in [1, 100, 64, HEADER_LEN - 1] {
        let raw = RawObject::new("short", &full[..len]);
        match Mmf::open(&raw.name) {
            Err(Error::NotMmf { .. }) => {}
            other => panic!("a {len}-byte object: expected NotMmf, got {other:?}"),
        }
    }
}

#[test]
fn other_layout_version_is_incompatible() {
    for version in [0, 2, u32::MAX] {
        let mut header = header_bytes(4096);
        set_u32(&mut header, 12, version);
        let raw = RawObject::new("version", &object(header, &[0; 4096]));
        match Mmf::open(&raw.name) {
            Err(Error::IncompatibleVersion { found, supported }) => {
                assert_eq!((found, supported), (version, LAYOUT_VERSION))
            }
            other => panic!("version {version}: expected IncompatibleVersion, got {other:?}"),
        }
    }
}

#[test]
fn inconsistent_headers_are_corrupt() {
    type Edit = fn(&mut Vec<u8>);
    let cases: &[(&str, Edit)] = &[
        ("data_len 0", |h| set_u32(h, 24, 0)),
        ("header_len 64", |h| set_u32(h, 16, 64)),
        ("header_len 8192", |h| set_u32(h, 16, 8192)),
        ("unknown state", |h| set_u32(h, 8, 0x1234_5678)),
    ];
    for (what, edit) in cases {
        let mut header = header_bytes(4096);
        edit(&mut header);
        let raw = RawObject::new("corrupt", &object(header, &[0; 4096]));
        match Mmf::open(&raw.name) {
            Err(Error::Corrupt { reason }) => assert!(!reason.is_empty()),
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }
}

/// A header that is consistent except for claiming more data than the object holds is
/// `Corrupt` (issue 2: `open` validates against the real mapping length), and the object is
/// left exactly as it was: not grown to the claimed size, not a byte written.
#[test]
fn header_claiming_more_data_than_the_object_holds_is_corrupt() {
    for data_len in [4097u64, 8192, 1 << 20, 1 << 32, u64::MAX] {
        let mut header = header_bytes(4096);
        set_u32(&mut header, 24, data_len as u32);
        set_u32(&mut header, 28, (data_len >> 32) as u32);
        let bytes = object(header, &pattern(data_len, 4096));
        let raw = RawObject::new("claims", &bytes);
        for read_only in [false, true] {
            let opened = if read_only {
                Mmf::open_read_only(&raw.name)
            } else {
                Mmf::open(&raw.name)
            };
            match opened {
                Err(Error::Corrupt { reason }) => assert!(
                    reason.contains("claims"),
                    "data_len {data_len}: the reason names the claim: {reason}"
                ),
                other => panic!(
                    "data_len {data_len} in an 8 KiB object (read-only {read_only}): expected Corrupt, got {other:?}"
                ),
            }
            assert!(
                fs::read(&raw.path).unwrap() == bytes,
                "data_len {data_len} (read-only {read_only}): the refused open changed the object"
            );
        }
    }
}

#[test]
fn other_lock_kind_is_lock_mismatch() {
    let mut header = header_bytes(4096);
    set_u32(&mut header, 20, u32::from_be_bytes(*b"XXXX"));
    let raw = RawObject::new("lockkind", &object(header, &[0; 4096]));
    match Mmf::open(&raw.name) {
        Err(Error::LockMismatch { expected, found }) => {
            assert_eq!(
                (expected, found),
                (SharedRwLock::KIND, u32::from_be_bytes(*b"XXXX"))
            )
        }
        other => panic!("expected LockMismatch, got {other:?}"),
    }
}

#[test]
fn other_segment_kind_is_wrong_kind() {
    let mut header = header_bytes(4096);
    set_u32(&mut header, 32, KIND_FRAME_CHANNEL);
    let raw = RawObject::new("kind", &object(header, &[0; 4096]));
    match Mmf::open(&raw.name) {
        Err(Error::WrongKind { name, .. }) => assert_eq!(name, raw.name),
        other => panic!("a frame channel opened as a plain segment: got {other:?}"),
    }
}

#[test]
fn create_over_a_foreign_object_leaves_it_untouched() {
    let bytes = pattern(1234, 3 * 4096);
    let raw = RawObject::new("foreign", &bytes);
    // Not a mode mmf would choose: a failed create must not set its own.
    fs::set_permissions(&raw.path, fs::Permissions::from_mode(0o604)).unwrap();
    let untouched = |after: &str| {
        let meta = fs::metadata(&raw.path)
            .unwrap_or_else(|e| panic!("after {after}: the foreign object is gone: {e}"));
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o604,
            "after {after}: mode changed"
        );
        assert_eq!(
            meta.len(),
            bytes.len() as u64,
            "after {after}: size changed"
        );
        assert!(
            fs::read(&raw.path).unwrap() == bytes,
            "after {after}: the foreign object's bytes changed"
        );
    };
    for size in [4096, 3 * 4096 - HEADER_LEN, 1 << 20] {
        assert!(matches!(
            Mmf::create(&raw.name, size),
            Err(Error::AlreadyExists { .. })
        ));
        untouched(&format!("create({size})"));
    }
    assert!(matches!(
        MmfOptions::new(&raw.name)
            .mode(0o600)
            .prefault(true)
            .persist(true)
            .create(4096),
        Err(Error::AlreadyExists { .. })
    ));
    untouched("create with options");
    assert!(matches!(
        Mmf::open_or_create(&raw.name, 4096),
        Err(Error::NotMmf { .. })
    ));
    untouched("open_or_create");
}

// ---------------------------------------------------------------------------------------
// Permissions
// ---------------------------------------------------------------------------------------

fn mode_of(name: &str) -> u32 {
    fs::metadata(shm_path(name)).unwrap().permissions().mode() & 0o777
}

#[test]
fn default_mode_is_owner_only_and_mode_is_applied_exactly() {
    let name = unique_name("mode");
    let default = Mmf::create(&name, 64).unwrap();
    assert_eq!(mode_of(&name), 0o600);
    drop(default);
    let name = unique_name("mode");
    // 0o666 would be cut by a typical umask of 022; the builder's mode is applied exactly.
    let _shared = MmfOptions::new(&name).mode(0o666).create(64).unwrap();
    assert_eq!(mode_of(&name), 0o666);
    let name = unique_name("mode");
    let _group = MmfOptions::new(&name).mode(0o640).create(64).unwrap();
    assert_eq!(mode_of(&name), 0o640);
}

/// Runs as `nobody`: may read the 0644 segment but not write it, and not open the 0600 one.
fn other_user_role() {
    let (readable, private) = (arg("readable"), arg("private"));
    assert!(
        !rustix::process::geteuid().is_root(),
        "the child must not run as root"
    );
    match Mmf::open(&readable) {
        Err(Error::PermissionDenied { name, .. }) => assert_eq!(name, readable),
        other => panic!("read-write open without write permission: {other:?}"),
    }
    assert!(matches!(
        Mmf::open_or_create(&readable, 4096),
        Err(Error::PermissionDenied { .. })
    ));
    let ro = Mmf::open_read_only(&readable).expect("read permission is enough for read-only");
    assert!(ro.read_to_vec(0, 4096).unwrap() == pattern(77, 4096));
    assert!(matches!(ro.write_at(0, b"x"), Err(Error::ReadOnly { .. })));
    // Not the owner of the name in a sticky /dev/shm: may not remove it.
    assert!(matches!(
        Mmf::remove(&readable),
        Err(Error::PermissionDenied { .. })
    ));
    match Mmf::open_read_only(&private) {
        Err(Error::PermissionDenied { .. }) => {}
        other => panic!("read-only open of a 0600 segment of another user: {other:?}"),
    }
    say("other_user_ok", 1);
}

#[test]
fn another_user_with_read_permission_can_open_read_only() {
    const NOBODY: &[&str] = &[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    if !rustix::process::geteuid().is_root() {
        println!("SKIPPED: needs root to run a child as another user");
        return;
    }
    let mut probe = common::child("probe").wrapper(NOBODY).spawn();
    let out = probe.wait(CHILD_TIMEOUT);
    if !out.status.success() || out.get("alive").is_none() {
        println!(
            "SKIPPED: cannot run the test binary as nobody through setpriv ({}): {}",
            out.status,
            out.stderr.trim()
        );
        return;
    }
    let readable = unique_name("perm-r");
    let private = unique_name("perm-p");
    let shared = MmfOptions::new(&readable).mode(0o644).create(4096).unwrap();
    shared.write_at(0, &pattern(77, 4096)).unwrap();
    let _private = Mmf::create(&private, 4096).unwrap();
    let out = common::child("other_user")
        .wrapper(NOBODY)
        .arg("readable", &readable)
        .arg("private", &private)
        .spawn()
        .finish(CHILD_TIMEOUT);
    assert_eq!(out.value("other_user_ok"), 1);
    assert!(shared.read_to_vec(0, 4096).unwrap() == pattern(77, 4096));
}
