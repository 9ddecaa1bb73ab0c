//! Runs the real `mmf` binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn mmf(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmf"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mmf");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_errors_exit_2_and_explain() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["create", "x"],
        &["create", "x", "12Q"],
        &["read", "x", "--bogus"],
    ] {
        let out = mmf(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("usage: mmf"), "{args:?}");
    }
}

#[test]
fn library_errors_exit_1_with_the_typed_message() {
    let out = mmf(&["info", "bad/name"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("invalid segment name"),
        "{}",
        stderr(&out)
    );

    let missing = format!("mmf-cli-missing-{}", std::process::id());
    let out = mmf(&["read", &missing], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no shared memory segment"),
        "{}",
        stderr(&out)
    );
}

/// Linux only: on Windows a segment dies with the `create` process that made it.
#[cfg(target_os = "linux")]
#[test]
fn create_write_read_list_remove_round_trip() {
    let name = format!("mmf-cli-{}", std::process::id());
    let out = mmf(&["create", &name, "4K", "--mode", "640"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = std::fs::metadata(format!("/dev/shm/{name}")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);

    let out = mmf(&["write", &name, "--offset", "10"], b"hello, segment");
    assert!(out.status.success(), "{}", stderr(&out));

    let out = mmf(&["read", &name, "--offset", "10", "--len", "14"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"hello, segment");

    let out = mmf(&["read", &name, "--len", "32", "--hex"], b"");
    let hex = String::from_utf8(out.stdout).unwrap();
    assert!(hex.contains("68 65 6c 6c 6f"), "{hex}");

    let out = mmf(&["info", &name], b"");
    assert!(String::from_utf8_lossy(&out.stdout).contains("data bytes:     4096"));

    let out = mmf(&["list"], b"");
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == name));

    // Out of bounds is the library's typed error, and nothing is written.
    let out = mmf(
        &["write", &name, "--offset", "4090"],
        b"too long for the end",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("out of bounds"), "{}", stderr(&out));

    let out = mmf(&["remove", &name], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = mmf(&["info", &name], b"");
    assert_eq!(out.status.code(), Some(1));
}

/// A frame channel is two objects, the channel and its reader table (`<name>+readers`):
/// `list` shows the channel only, and `remove` removes both, so a new writer can create the
/// channel again after one that crashed.
#[cfg(target_os = "linux")]
#[test]
fn list_and_remove_treat_a_channel_and_its_reader_table_as_one() {
    let name = format!("mmf-cli-chan-{}", std::process::id());
    let table = mmf::channel::reader_table_name(&name);
    let writer = mmf::FrameWriter::create(&name, mmf::FrameSpec::new(64)).unwrap();
    assert!(std::path::Path::new(&format!("/dev/shm/{table}")).exists());

    let out = mmf(&["list"], b"");
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listed.lines().any(|l| l == name), "{listed}");
    assert!(
        !listed.contains('+'),
        "the reader table is listed: {listed}"
    );

    let out = mmf(&["remove", &name], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    for gone in [&name, &table] {
        assert!(
            !std::path::Path::new(&format!("/dev/shm/{gone}")).exists(),
            "{gone} is still there"
        );
    }
    drop(writer);
    let _again = mmf::FrameWriter::create(&name, mmf::FrameSpec::new(64)).unwrap();
}
