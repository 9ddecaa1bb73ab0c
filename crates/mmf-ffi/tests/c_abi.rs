//! The C ABI from C: `tests/c/frames.c`, compiled with the system `cc` against the staticlib
//! and the checked-in header, in real processes talking to Rust readers and writers.
//!
//! Linux only: elsewhere the C toolchain is not part of the checks' setup.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use mmf::{FrameMeta, FrameReader, FrameSpec, FrameWriter, Mmf};

/// Compiles the C program once per test binary.
fn program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        // Cargo builds every crate-type of the library beside this test binary, in deps/.
        let exe = std::env::current_exe().unwrap();
        let staticlib = exe.parent().unwrap().join("libmmf_ffi.a");
        assert!(
            staticlib.exists(),
            "no staticlib at {}",
            staticlib.display()
        );
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mmf-ffi-frames");
        let status = Command::new("cc")
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-I"])
            .arg(crate_dir.join("include"))
            .arg(crate_dir.join("tests/c/frames.c"))
            .arg(&staticlib)
            .args(["-lpthread", "-ldl", "-lm", "-lrt", "-o"])
            .arg(&out)
            .status()
            .expect("run cc");
        assert!(status.success(), "compiling tests/c/frames.c failed");
        out
    })
}

fn unique(test: &str) -> String {
    format!("mmf-ffi-c-{test}-{}", std::process::id())
}

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn spawn(args: &[&str]) -> Peer {
        let mut child = Command::new(program())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the C program");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Peer {
            child,
            stdin,
            stdout,
        }
    }

    fn expect_line(&mut self, want: &str) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim_end(),
            want,
            "the C program said something else (or exited)"
        );
    }

    fn send_line(&mut self) {
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    fn wait_success(mut self) {
        drop(self.stdin);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the C program failed: {status}");
    }
}

fn frame_bytes(k: u64) -> Vec<u8> {
    (0..100 + k as usize)
        .map(|i| (k.wrapping_mul(31) as usize + i) as u8)
        .collect()
}

const FRAMES: u64 = 50;

#[test]
fn c_writer_to_rust_reader() {
    let name = unique("c-writer");
    let mut peer = Peer::spawn(&["write", &name, &FRAMES.to_string()]);
    peer.expect_line("ready");
    let mut reader = FrameReader::open(&name).unwrap();
    for k in 1..=FRAMES {
        peer.send_line();
        let frame = reader.wait_next(Duration::from_secs(5)).unwrap();
        assert_eq!(frame.seq(), k);
        assert_eq!(&*frame, &frame_bytes(k)[..]);
        assert_eq!(
            frame.meta(),
            FrameMeta {
                width: k as u32,
                height: 480,
                pixel_format: 0x5659_5559,
                tag: k * 1000
            }
        );
    }
    peer.send_line();
    peer.wait_success();
}

#[test]
fn rust_writer_to_c_reader() {
    let name = unique("c-reader");
    let mut writer = FrameWriter::create(&name, FrameSpec::new(4096).max_readers(4)).unwrap();
    let mut peer = Peer::spawn(&["read", &name, &FRAMES.to_string()]);
    for k in 1..=FRAMES {
        peer.expect_line("want");
        writer.set_meta(FrameMeta {
            width: k as u32,
            height: 480,
            pixel_format: 0,
            tag: k * 1000,
        });
        assert_eq!(writer.publish(&frame_bytes(k)).unwrap(), k);
    }
    peer.expect_line("done");
    drop(writer);
    peer.wait_success();
}

#[test]
fn segment_round_trip_with_c() {
    let name = unique("segment");
    let seg = Mmf::create(&name, 8192).unwrap();
    let pattern: Vec<u8> = (0..256usize).map(|i| (i ^ 0x5a) as u8).collect();
    seg.write_at(1000, &pattern).unwrap();
    Peer::spawn(&["segment", &name]).wait_success();
    let back = seg.read_to_vec(4000, 256).unwrap();
    let want: Vec<u8> = (0..256usize).map(|i| (255 - i) as u8).collect();
    assert_eq!(back, want);
    assert_eq!(seg.read_to_vec(8192 - 8, 8).unwrap(), b"locked!\0");
}
