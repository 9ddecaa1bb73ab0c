//! The C ABI from C: `tests/c/frames.c`, compiled against the staticlib and the checked-in
//! header, in real processes talking to Rust readers and writers and to each other.
//!
//! On Linux the test compiles the program with the system `cc`. Elsewhere it takes a program
//! built beforehand from `MMF_FFI_C_PROGRAM`, which `cargo xtask test --only ffi` sets for
//! this test built for Windows and run under wine (it compiles the program with mingw
//! against the Windows staticlib); the variable overrides the compile on Linux too.
#![cfg(any(target_os = "linux", windows))]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use mmf::{FrameMeta, FrameReader, FrameSpec, FrameWriter, Mmf};

/// The C program: `MMF_FFI_C_PROGRAM`, or compiled once per test binary (Linux).
fn program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        if let Some(built) = std::env::var_os("MMF_FFI_C_PROGRAM") {
            return built.into();
        }
        if !cfg!(target_os = "linux") {
            panic!(
                "set MMF_FFI_C_PROGRAM to tests/c/frames.c built for this target \
                 (`cargo xtask test --only ffi` does for Windows)"
            );
        }
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        // Cargo builds every crate-type of the library beside this test binary, in deps/.
        let exe = std::env::current_exe().unwrap();
        let staticlib = exe.parent().unwrap().join("libmmf_ffi.a");
        assert!(
            staticlib.exists(),
            "no staticlib at {}",
            staticlib.display()
        );
        // The temporary directory is shared by every target: one program per architecture.
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("mmf-ffi-frames-{}", std::env::consts::ARCH));
        let mut cc = Command::new("cc");
        // A 32-bit test binary links the 32-bit staticlib: compile the program to match (this
        // also checks mmf.h's promise that MmfFrame's offsets hold where uint64_t is 4-aligned).
        if cfg!(target_arch = "x86") {
            cc.arg("-m32");
        }
        let status = cc
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

    /// Waits for the program; kills it first if it has not exited within a minute (a
    /// program waiting for a line that never comes would hang the test).
    fn wait_status(mut self) -> std::process::ExitStatus {
        drop(self.stdin);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the C program did not exit within a minute");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_success(self) {
        let status = self.wait_status();
        assert!(status.success(), "the C program failed: {status}");
    }
}

fn frame_bytes(k: u64) -> Vec<u8> {
    (0..100 + k as usize)
        .map(|i| (k.wrapping_mul(31) as usize + i) as u8)
        .collect()
}

/// The user header of frame k, as `header_byte` in frames.c.
fn header_bytes(k: u64) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    let tag = if k % 2 == 1 { b"hdr" } else { b"inp" };
    header[..3].copy_from_slice(tag);
    header[3] = k as u8;
    header
}
const HEADER_LEN: usize = 16;

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
        assert_eq!(frame.user_header(), header_bytes(k));
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
    let spec = FrameSpec::new(4096).user_header_len(HEADER_LEN);
    let mut writer = FrameWriter::create(&name, spec).unwrap();
    let mut peer = Peer::spawn(&["read", &name, &FRAMES.to_string()]);
    for k in 1..=FRAMES {
        peer.expect_line("want");
        writer.set_meta(FrameMeta {
            width: k as u32,
            height: 480,
            pixel_format: 0,
            tag: k * 1000,
        });
        let bytes = frame_bytes(k);
        // Both ways to write a frame, as the C writer does.
        let seq = if k % 2 == 1 {
            writer.publish_with_header(|header, frame| {
                header.copy_from_slice(&header_bytes(k));
                frame[..bytes.len()].copy_from_slice(&bytes);
                bytes.len()
            })
        } else {
            let mut pending = writer.begin().unwrap();
            pending.user_header_mut().copy_from_slice(&header_bytes(k));
            pending[..bytes.len()].copy_from_slice(&bytes);
            pending.commit(bytes.len())
        };
        assert_eq!(seq.unwrap(), k);
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

/// A C writer and a C reader, each in its own process, relayed line by line: what runs under
/// wine with no Rust peer at all.
#[test]
fn c_writer_to_c_reader() {
    let name = unique("c-to-c");
    let n = FRAMES.to_string();
    let mut writer = Peer::spawn(&["write", &name, &n]);
    writer.expect_line("ready");
    let mut reader = Peer::spawn(&["read", &name, &n]);
    for _ in 1..=FRAMES {
        reader.expect_line("want");
        writer.send_line();
    }
    reader.expect_line("done");
    // The writer closes on this line; the reader then sees it gone and exits.
    writer.send_line();
    writer.wait_success();
    reader.wait_success();
}

/// A segment made by one C process and opened by another.
#[test]
fn c_segment_round_trip() {
    let name = unique("c-segment");
    let mut maker = Peer::spawn(&["segmaker", &name]);
    maker.expect_line("ready");
    Peer::spawn(&["segment", &name]).wait_success();
    maker.send_line();
    maker.wait_success();
}

/// A failing C check is a failed exit, so the tests above can fail: a reader that
/// expects frames from a writer that publishes none times out and exits non-zero.
#[test]
fn the_c_program_fails_when_a_check_fails() {
    let name = unique("c-fails");
    let writer = FrameWriter::create(&name, FrameSpec::new(4096)).unwrap();
    let mut reader = Peer::spawn(&["read", &name, "1"]);
    reader.expect_line("want");
    drop(writer);
    assert!(!reader.wait_status().success());
}
