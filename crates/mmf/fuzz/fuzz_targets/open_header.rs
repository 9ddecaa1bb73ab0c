//! Arbitrary bytes as the header of a real POSIX shm object, then every way of opening and
//! using it: nothing may panic, crash or wait past the timeouts; only typed errors.
//!
//! Input: byte 0 picks the object length, byte 1 the mode, the rest is the header:
//! - mode bit 0 clear: the rest *is* the header (zero-padded to 4096 bytes), except that
//!   - unless mode bit 2 is set, its first 8 bytes are replaced by the right magic, so that
//!     most inputs get past the magic check to the version, state, length and size checks
//!     (random bytes almost never carry the magic);
//!   - if mode bit 3 is set, the state, layout version, header length and lock kind (bytes 8
//!     to 23) are those of a valid header too, so the fuzzer's bytes decide the data length,
//!     the kind and the lock area;
//! - mode bit 0 set: the rest is `(offset_lo, offset_hi, byte)` patches applied to a valid
//!   header made by `Mmf::create`, so the fuzzer starts past the magic and reaches the lock;
//! - mode bit 1 set: the object is shorter than a header (`byte 0 * 16` bytes).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mmf::header::{HEADER_LEN, MAGIC};
use mmf::{Mmf, MmfOptions};

/// One object name per fuzzing process, rewritten for every input.
fn name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| format!("mmf-fuzz-{}", std::process::id()))
}

/// The header of a freshly created 8 KiB segment.
fn template() -> &'static [u8] {
    static TEMPLATE: OnceLock<Vec<u8>> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let name = format!("mmf-fuzz-template-{}", std::process::id());
        let segment = Mmf::create(&name, 8192).expect("create the template segment");
        let bytes = std::fs::read(format!("/dev/shm/{name}")).expect("read the template");
        drop(segment);
        bytes[..HEADER_LEN].to_vec()
    })
}

fn exercise(segment: &Mmf) {
    let len = segment.len();
    assert!(len > 0);
    let mut buf = vec![0u8; len.min(256)];
    let _ = segment.read_at(len - buf.len(), &mut buf);
    let _ = segment.read_to_vec(0, buf.len());
    if !segment.is_read_only() {
        let _ = segment.write_at(0, &buf);
        if let Ok(guard) = segment.try_read() {
            assert_eq!(guard.len(), len);
        }
        if let Ok(mut guard) = segment.try_write() {
            assert_eq!(guard.len(), len);
            guard[len - 1] = 1;
        }
        drop(segment.read_timeout(Duration::from_millis(1)));
        drop(segment.write_timeout(Duration::from_millis(1)));
    }
}

fuzz_target!(|data: &[u8]| {
    let [size, mode, body @ ..] = data else {
        return;
    };
    let mut header = if mode & 1 == 1 {
        let mut header = template().to_vec();
        for patch in body.chunks_exact(3) {
            let offset = usize::from(u16::from_le_bytes([patch[0], patch[1]])) % HEADER_LEN;
            header[offset] = patch[2];
        }
        header
    } else {
        let mut header = vec![0u8; HEADER_LEN];
        let n = body.len().min(HEADER_LEN);
        header[..n].copy_from_slice(&body[..n]);
        if mode & 4 == 0 {
            header[..MAGIC.len()].copy_from_slice(&MAGIC);
        }
        if mode & 8 == 8 {
            // state (8), layout version (12), header length (16), lock kind (20).
            header[8..24].copy_from_slice(&template()[8..24]);
        }
        header
    };
    let total = if mode & 2 == 2 {
        usize::from(*size) * 16
    } else {
        HEADER_LEN + usize::from(*size) * 512
    };
    header.resize(total.max(HEADER_LEN), 0);
    header.truncate(total);
    std::fs::write(format!("/dev/shm/{}", name()), &header).expect("write the shm object");

    let options = MmfOptions::new(name())
        .open_timeout(Duration::ZERO)
        .lock_timeout(Some(Duration::from_millis(1)));
    if let Ok(segment) = options.open() {
        assert!(
            HEADER_LEN + segment.len() <= total,
            "accepted a size past the object"
        );
        exercise(&segment);
    }
    if let Ok(segment) = options.open_read_only() {
        exercise(&segment);
    }
    // Leave nothing in /dev/shm when the fuzzer stops (it exits without unwinding).
    let _ = std::fs::remove_file(format!("/dev/shm/{}", name()));
});
