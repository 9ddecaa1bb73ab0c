//! Hostile neighbours in `/dev/shm` (issue 11): what other users and other programs can put
//! under a name before, or after, we use it.
//!
//! - **Squatting**: another user (`nobody`, through `setpriv`, as root) creates the name first,
//!   mode 0666 so that we could open it. `open`, `open_read_only`, `open_or_create` and
//!   `FrameReader::open` must refuse it with `UntrustedOwner`, before mapping anything; with
//!   the trusted-owner option they accept it. Needs root; without it (or without `setpriv`)
//!   each such test prints `SKIPPED: <why>` and passes, since there is nothing it can check.
//! - **FIFO, symbolic link, directory under the name**: every open returns `NotRegularFile`
//!   at once. Each call runs on a thread with a deadline, so a regression (an open that
//!   blocks on a FIFO forever) fails the test instead of hanging the suite.
//! - **Sparse growth**: another process raises the object's size to 1 GiB with `ftruncate`;
//!   an opener must map exactly header + the data length of the header, and prefaulting must
//!   not allocate the rest of the object in tmpfs.
#![cfg(target_os = "linux")]

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{arg, command, pattern, say, unique_name, CHILD_TIMEOUT};
use mmf::header::HEADER_LEN;
use mmf::{Error, FrameReader, FrameSpec, FrameWriter, Mmf, MmfOptions, TrustedOwners};

/// `nobody`, the stranger of these tests.
const NOBODY: u32 = 65534;
const AS_NOBODY: &[&str] = &[
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

/// How long any refused open may take. The checks are a few system calls; a FIFO opened
/// without `O_NONBLOCK` blocks forever, an object waited on as "not ready yet" ends at the
/// open timeout (1 s by default), so 5 s tells those apart even on a loaded machine.
const PROMPT: Duration = Duration::from_secs(5);

#[test]
#[ignore = "not a test: the entry point of this file's child processes, which run it with --include-ignored"]
fn child() {
    common::child_main(|role| match role {
        "probe" => say("alive", 1),
        "squat_segment" => squat_segment_role(),
        "squat_empty" => squat_empty_role(),
        "squat_channel" => squat_channel_role(),
        other => panic!("unknown child role {other:?}"),
    });
}

fn shm_path(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name)
}

/// Removes a path (file, FIFO, link or directory) on drop, whoever owns it (we are root when
/// another user made it).
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        // Ignored: already gone is fine.
        let _ = fs::remove_file(&self.0);
        let _ = fs::remove_dir(&self.0);
    }
}

/// Runs `f` on a thread and returns its result, failing the test if it takes longer than
/// [`PROMPT`] (the thread is left blocked; the test process ends soon after).
fn promptly<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(PROMPT) {
        Ok(value) => value,
        Err(_) => panic!(
            "{what} did not return within {PROMPT:?} (blocked after {:?})",
            start.elapsed()
        ),
    }
}

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

macro_rules! skip_unless_nobody_can_run {
    () => {
        if let Some(why) = cannot_run_as_nobody() {
            println!("SKIPPED: {why}");
            return;
        }
    };
}

/// Asserts `result` is `UntrustedOwner` naming nobody, with a message that says which option
/// accepts it.
#[track_caller]
fn assert_untrusted<T: std::fmt::Debug>(what: &str, result: mmf::Result<T>) {
    match result {
        Err(Error::UntrustedOwner { name, owner }) => {
            let expected = mmf::Owner::Unix {
                user: NOBODY,
                group: NOBODY,
            };
            assert_eq!(owner, expected, "{what}");
            let e = Error::UntrustedOwner { name, owner };
            let message = e.to_string();
            assert!(
                message.contains("trust_owner(65534)"),
                "{what}: the message must name the option that accepts it: {message}"
            );
        }
        other => panic!("{what}: expected UntrustedOwner, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Squatting
// ---------------------------------------------------------------------------------------

/// As nobody: a real segment, mode 0666, that outlives this process.
fn squat_segment_role() {
    let squat = MmfOptions::new(arg("name"))
        .mode(0o666)
        .persist(true)
        .create(4096)
        .unwrap();
    squat.write_at(0, &pattern(9, 4096)).unwrap();
    say("created", 1);
}

/// As nobody: an empty object, mode 0666, as a squatter who does not bother with a header.
fn squat_empty_role() {
    let path = shm_path(&arg("name"));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(&path)
        .unwrap();
    file.set_permissions(fs::Permissions::from_mode(0o666))
        .unwrap();
    say("created", 1);
}

/// As nobody: a frame channel (mode 0666) with one frame, alive until stdin closes.
fn squat_channel_role() {
    let spec = FrameSpec {
        mode: 0o666,
        ..FrameSpec::new(64).max_readers(2)
    };
    let mut writer = FrameWriter::create(&arg("name"), spec).unwrap();
    writer.publish(&[7; 64]).unwrap();
    say("created", 1);
    while command().is_some() {}
}

fn squat(role: &str, name: &str) -> Removed {
    let removed = Removed(shm_path(name));
    common::child(role)
        .wrapper(AS_NOBODY)
        .arg("name", name)
        .spawn()
        .finish(CHILD_TIMEOUT);
    let meta = fs::metadata(shm_path(name)).unwrap();
    assert_eq!(meta.uid(), NOBODY, "the squat must belong to nobody");
    removed
}

#[test]
fn a_segment_squatted_by_another_user_is_refused_unless_its_owner_is_trusted() {
    skip_unless_nobody_can_run!();
    let name = unique_name("squat");
    let _removed = squat("squat_segment", &name);

    assert_untrusted("open", Mmf::open(&name));
    assert_untrusted("open_read_only", Mmf::open_read_only(&name));
    assert_untrusted("open_or_create", Mmf::open_or_create(&name, 4096));
    assert_untrusted(
        "open of a trusted user's name trusting someone else",
        MmfOptions::new(&name).trust_owner(NOBODY + 1).open(),
    );

    let by_owner = MmfOptions::new(&name).trust_owner(NOBODY).open().unwrap();
    assert!(by_owner.read_to_vec(0, 4096).unwrap() == pattern(9, 4096));
    let by_group = MmfOptions::new(&name)
        .trust_group(NOBODY)
        .open_read_only()
        .unwrap();
    assert!(by_group.read_to_vec(0, 4096).unwrap() == pattern(9, 4096));
    let trusted = TrustedOwners::new().user(NOBODY);
    let either = MmfOptions::new(&name)
        .trusted_owners(trusted)
        .open_or_create(4096)
        .unwrap();
    assert_eq!(either.len(), 4096);
}

#[test]
fn an_empty_squat_is_refused_at_once_not_waited_for() {
    skip_unless_nobody_can_run!();
    let name = unique_name("squat-empty");
    let _removed = squat("squat_empty", &name);
    let slow = Duration::from_secs(3);
    let n = name.clone();
    let start = Instant::now();
    let refused = promptly("open of an empty squat", move || {
        MmfOptions::new(&n).open_timeout(slow).open().map(drop)
    });
    assert_untrusted("open", refused);
    assert!(
        start.elapsed() < slow,
        "the owner is known at once; it must not wait for a creator"
    );
    // Trusted, it is an object still being created, as usual.
    let n = name.clone();
    let waited = promptly("trusted open of an empty squat", move || {
        MmfOptions::new(&n)
            .trust_owner(NOBODY)
            .open_timeout(Duration::from_millis(100))
            .open()
            .map(drop)
    });
    assert!(matches!(waited, Err(Error::NotReady { .. })), "{waited:?}");
}

#[test]
fn frame_reader_refuses_a_channel_of_another_user_unless_trusted() {
    skip_unless_nobody_can_run!();
    let name = unique_name("squat-chan");
    let _removed = Removed(shm_path(&name));
    let mut writer = common::child("squat_channel")
        .wrapper(AS_NOBODY)
        .arg("name", &name)
        .spawn();
    writer.expect("created", CHILD_TIMEOUT);

    assert_untrusted("FrameReader::open", FrameReader::open(&name));
    let mut reader = FrameReader::open_trusting(&name, TrustedOwners::new().user(NOBODY)).unwrap();
    let frame = reader.latest().unwrap().expect("the writer published one");
    assert_eq!(&frame[..], &[7; 64]);
    drop(frame);
    drop(reader);
    writer.finish(CHILD_TIMEOUT);
}

// ---------------------------------------------------------------------------------------
// Not a shared-memory object
// ---------------------------------------------------------------------------------------

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let ret = unsafe { libc::mkfifo(c.as_ptr(), 0o666) };
    assert_eq!(ret, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// Every way of opening `name`, each of which must return `NotRegularFile` of `kind`
/// promptly.
fn every_open_refuses(name: &str, kind: &str) {
    type Open = fn(&str) -> mmf::Result<()>;
    let opens: [(&str, Open); 4] = [
        ("open", |n| Mmf::open(n).map(drop)),
        ("open_read_only", |n| Mmf::open_read_only(n).map(drop)),
        ("open_or_create", |n| Mmf::open_or_create(n, 4096).map(drop)),
        ("FrameReader::open", |n| FrameReader::open(n).map(drop)),
    ];
    for (what, open) in opens {
        let n = name.to_owned();
        let result = promptly(what, move || open(&n));
        match result {
            Err(Error::NotRegularFile { kind: found, .. }) => {
                assert!(
                    found.contains(kind),
                    "{what}: found {found:?}, not {kind:?}"
                )
            }
            other => panic!("{what} of a {kind} under the name: {other:?}"),
        }
    }
}

#[test]
fn a_fifo_under_the_name_is_refused_at_once_by_every_open() {
    let name = unique_name("fifo");
    let path = shm_path(&name);
    let _removed = Removed(path.clone());
    mkfifo(&path);
    every_open_refuses(&name, "FIFO");
    assert!(
        fs::symlink_metadata(&path).unwrap().file_type().is_fifo(),
        "left as it was"
    );
}

#[test]
fn a_symlink_under_the_name_is_not_followed_to_a_segment_or_a_file() {
    use std::os::unix::fs::symlink;
    // To a real segment of ours, by absolute and by relative path.
    let target = unique_name("link-target");
    let segment = Mmf::create(&target, 4096).unwrap();
    segment.write_at(0, b"ours").unwrap();
    for link_to in [shm_path(&target), PathBuf::from(&target)] {
        let name = unique_name("link");
        let _removed = Removed(shm_path(&name));
        symlink(&link_to, shm_path(&name)).unwrap();
        every_open_refuses(&name, "symbolic link");
    }
    assert_eq!(segment.read_to_vec(0, 4).unwrap(), b"ours");

    // To a regular file elsewhere, which must stay untouched.
    let file = std::env::temp_dir().join(unique_name("link-file"));
    let _file_removed = Removed(file.clone());
    fs::write(&file, b"precious").unwrap();
    let name = unique_name("link");
    let _removed = Removed(shm_path(&name));
    symlink(&file, shm_path(&name)).unwrap();
    every_open_refuses(&name, "symbolic link");
    assert_eq!(fs::read(&file).unwrap(), b"precious");
}

#[test]
fn a_directory_under_the_name_is_refused() {
    let name = unique_name("dir");
    let _removed = Removed(shm_path(&name));
    fs::create_dir(shm_path(&name)).unwrap();
    every_open_refuses(&name, "directory");
}

#[test]
fn the_creators_drop_does_not_block_on_a_fifo_planted_after_removal() {
    let name = unique_name("drop-fifo");
    let path = shm_path(&name);
    let _removed = Removed(path.clone());
    let creator = Mmf::create(&name, 4096).unwrap();
    Mmf::remove(&name).unwrap();
    mkfifo(&path);
    // The drop looks the name up to remove it only if it is still its own object.
    promptly("the creator's drop", move || drop(creator));
    assert!(
        fs::symlink_metadata(&path).unwrap().file_type().is_fifo(),
        "someone else's object is not removed"
    );
}

// ---------------------------------------------------------------------------------------
// Sparse growth
// ---------------------------------------------------------------------------------------

/// Bytes of tmpfs the object behind `name` occupies.
fn allocated(name: &str) -> u64 {
    fs::metadata(shm_path(name)).unwrap().blocks() * 512
}

/// Grows the object behind `name` to 1 GiB without allocating anything (a sparse
/// `ftruncate`, as any process with write access can).
fn grow_sparsely(name: &str) {
    let file = fs::OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .unwrap();
    file.set_len(1 << 30).unwrap();
}

/// Allocation an open may add: nothing, really; 1 MiB leaves room for metadata blocks and
/// is still a thousandth of what prefaulting the grown object would take.
const ALLOCATION_SLACK: u64 = 1 << 20;

#[test]
fn a_sparsely_grown_segment_is_mapped_and_prefaulted_only_as_far_as_its_header_says() {
    let name = unique_name("sparse");
    let creator = Mmf::create(&name, 4096).unwrap();
    creator.write_at(0, &pattern(3, 4096)).unwrap();
    grow_sparsely(&name);
    let before = allocated(&name);
    let rw = MmfOptions::new(&name).prefault(true).open().unwrap();
    let ro = MmfOptions::new(&name)
        .prefault(true)
        .open_read_only()
        .unwrap();
    for (what, handle) in [("read-write", &rw), ("read-only", &ro)] {
        assert_eq!(handle.len(), 4096, "{what}");
        assert_eq!(
            handle.mapping_len_for_tests(),
            HEADER_LEN + 4096,
            "{what}: header and data, not the object's 1 GiB"
        );
        assert!(handle.read_to_vec(0, 4096).unwrap() == pattern(3, 4096));
    }
    let after = allocated(&name);
    assert!(
        after <= before + ALLOCATION_SLACK,
        "opening allocated {} bytes of tmpfs",
        after - before
    );
}

#[test]
fn a_sparsely_grown_channel_does_not_make_a_reader_allocate_it() {
    let name = unique_name("sparse-chan");
    let mut writer = FrameWriter::create(&name, FrameSpec::new(4096).max_readers(2)).unwrap();
    writer.publish(&[5; 100]).unwrap();
    grow_sparsely(&name);
    let before = allocated(&name);
    let mut reader = FrameReader::open(&name).unwrap();
    assert_eq!(&reader.latest().unwrap().expect("one frame")[..], &[5; 100]);
    let after = allocated(&name);
    assert!(
        after <= before + ALLOCATION_SLACK,
        "FrameReader::open allocated {} bytes of tmpfs",
        after - before
    );
}
