//! The on-region layout: the header every segment starts with.
//!
//! Other processes — other builds, other versions, 32-bit and 64-bit, possibly buggy or
//! hostile — read and write these same bytes, so the layout is fixed to the byte, versioned,
//! and every field is read as untrusted input.
//!
//! # Layout version 1
//!
//! All integers are native-endian (every process sharing a segment runs on one machine).
//! Every field is a 32-bit word accessed atomically: 64-bit atomics are avoided because on
//! 32-bit x86 a 64-bit atomic load may be implemented with a locked compare-exchange, which
//! faults on a read-only mapping.
//!
//! | offset | size | field            | meaning                                                          |
//! |-------:|-----:|------------------|------------------------------------------------------------------|
//! |      0 |    8 | `magic`          | `b"mmf\0seg\x01"`: this is an mmf segment                         |
//! |      8 |    4 | `state`          | 0 while the creator initialises, [`STATE_READY`] once published   |
//! |     12 |    4 | `layout_version` | [`LAYOUT_VERSION`]                                               |
//! |     16 |    4 | `header_len`     | offset of the data region; [`HEADER_LEN`] in version 1           |
//! |     20 |    4 | `lock_kind`      | [`RawRwLock::KIND`](crate::RawRwLock::KIND) of the lock in use    |
//! |     24 |    4 | `data_len_lo`    | data region length, low 32 bits                                   |
//! |     28 |    4 | `data_len_hi`    | data region length, high 32 bits                                  |
//! |     32 |    4 | `flags`          | segment kind: [`KIND_PLAIN`] (0) or [`KIND_FRAME_CHANNEL`]        |
//! |     36 |    4 | `creator_pid`    | process id of the creator (diagnostics only)                      |
//! |     40 |    4 | `write_seq`      | odd while a write guard is held; lets read-only handles copy consistently |
//! |     44 |    4 | `os_waiters`     | processes sleeping in a kernel wait (used where wake-ups must be counted, e.g. Windows) |
//! |     48 |   16 | reserved         | zero                                                              |
//! |     64 | 2048 | lock area        | owned by the lock type (see [`LockArea`]); starts on its own cache line |
//! |   2112 | 1984 | reserved         | zero; room to grow without moving the data                        |
//! |   4096 |    … | data             | `data_len` bytes, page aligned                                    |
//!
//! The lock area of the default lock ([`SharedRwLock`](crate::SharedRwLock), kind `"RWL3"`),
//! as offsets from the start of the header (all 32-bit words; details in [`crate::lock`]):
//!
//! | offset | size | field        | meaning                                                          |
//! |-------:|-----:|--------------|------------------------------------------------------------------|
//! |     64 |    4 | lock word    | `WRITER`, `PARKED`, `POISONED` bits and the writer's owner slot     |
//! |     68 |    4 | drain        | 1 while a writer sleeps waiting for readers to leave              |
//! |     72 |    4 | slots used   | high-water mark of claimed handle slots                           |
//! |     76 |    4 | overflow     | read locks held through untracked handles                         |
//! |     80 |   48 | reserved     | zero                                                              |
//! |    128 | 1984 | handle slots | 124 × 16 bytes: tag (state, generation, read locks), pid, start time lo, hi |
//!
//! A reader accepts a header only if: the magic matches, the layout version is one it knows,
//! the state is ready, `header_len` is exactly [`HEADER_LEN`], the data length is non-zero,
//! and `header_len + data_len` fits in the mapping it really has. Anything else is a typed
//! error ([`Error::NotMmf`], [`Error::IncompatibleVersion`], [`Error::Corrupt`]).

use std::mem::{offset_of, size_of};
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::error::{Error, Result};
use crate::lock::LockArea;

/// The 8 magic bytes at offset 0.
pub const MAGIC: [u8; 8] = *b"mmf\0seg\x01";
/// The layout version this build writes and reads.
pub const LAYOUT_VERSION: u32 = 1;
/// Length of the header; the data region starts here (page aligned).
pub const HEADER_LEN: usize = 4096;
/// Value of `state` once the creator has finished initialising.
pub const STATE_READY: u32 = 0x5245_4459; // "READ" + "Y": unlikely to be left by anything else
/// Byte offset of the lock area in the header.
pub const LOCK_AREA_OFFSET: usize = 64;
/// `flags` value of a plain segment ([`Mmf`](crate::Mmf)).
pub const KIND_PLAIN: u32 = 0;
/// `flags` value of a frame channel ([`FrameWriter`](crate::FrameWriter)): its data region
/// starts with the channel control block, so it is opened with
/// [`FrameReader::open`](crate::FrameReader::open), and [`Mmf::open`](crate::Mmf::open)
/// refuses it with [`Error::WrongKind`].
pub const KIND_FRAME_CHANNEL: u32 = 1;

/// Human name of a segment kind, for error messages.
pub(crate) fn kind_name(kind: u32) -> &'static str {
    match kind {
        KIND_PLAIN => "plain segment",
        KIND_FRAME_CHANNEL => "frame channel",
        _ => "unknown kind",
    }
}

/// The header at the start of every segment (see the module docs for the byte table).
#[repr(C)]
pub(crate) struct Header {
    magic: [AtomicU32; 2],
    state: AtomicU32,
    layout_version: AtomicU32,
    header_len: AtomicU32,
    lock_kind: AtomicU32,
    data_len_lo: AtomicU32,
    data_len_hi: AtomicU32,
    flags: AtomicU32,
    creator_pid: AtomicU32,
    pub(crate) write_seq: AtomicU32,
    pub(crate) os_waiters: AtomicU32,
    _reserved0: [AtomicU32; 4],
    pub(crate) lock: LockArea,
    _reserved1: [AtomicU32; (HEADER_LEN - LOCK_AREA_OFFSET - size_of::<LockArea>()) / 4],
}

// The layout is a contract with other binaries: pin every offset.
const _: () = {
    assert!(size_of::<Header>() == HEADER_LEN);
    assert!(offset_of!(Header, state) == 8);
    assert!(offset_of!(Header, layout_version) == 12);
    assert!(offset_of!(Header, header_len) == 16);
    assert!(offset_of!(Header, lock_kind) == 20);
    assert!(offset_of!(Header, data_len_lo) == 24);
    assert!(offset_of!(Header, data_len_hi) == 28);
    assert!(offset_of!(Header, flags) == 32);
    assert!(offset_of!(Header, creator_pid) == 36);
    assert!(offset_of!(Header, write_seq) == 40);
    assert!(offset_of!(Header, os_waiters) == 44);
    assert!(offset_of!(Header, lock) == LOCK_AREA_OFFSET);
    assert!(size_of::<LockArea>() == 2048);
    assert!(HEADER_LEN % 64 == 0);
};

fn magic_words() -> [u32; 2] {
    let [a, b, c, d, e, f, g, h] = MAGIC;
    [
        u32::from_ne_bytes([a, b, c, d]),
        u32::from_ne_bytes([e, f, g, h]),
    ]
}

/// What a validated header says about its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub data_len: usize,
    pub lock_kind: u32,
    pub flags: u32,
}

impl Header {
    /// Views the first [`HEADER_LEN`] bytes at `base` as a header.
    ///
    /// # Safety
    /// `base` must be 64-byte aligned (a mapping is page aligned) and valid for reads of
    /// [`HEADER_LEN`] bytes for `'a`; if any method that stores is called, also for writes.
    /// Every field is an atomic, so concurrent writes by other processes are not data races,
    /// and every bit pattern is a valid value.
    pub(crate) unsafe fn from_ptr<'a>(base: *const u8) -> &'a Header {
        debug_assert_eq!(base as usize % 64, 0);
        // SAFETY: the caller guarantees alignment and HEADER_LEN readable bytes for 'a;
        // Header is repr(C), made only of atomics (valid for any bytes, shared mutation allowed).
        unsafe { &*base.cast::<Header>() }
    }

    /// Fills in a freshly created, zeroed header and publishes it.
    ///
    /// `init_lock` runs after every other field is written and before the segment is marked
    /// ready, so no opener can see the lock uninitialised.
    #[cfg(test)]
    pub(crate) fn initialise(
        &self,
        data_len: u64,
        lock_kind: u32,
        init_lock: impl FnOnce(&LockArea),
    ) {
        self.initialise_with_kind(data_len, lock_kind, KIND_PLAIN, init_lock);
    }

    /// [`initialise`](Self::initialise) for a segment of kind `kind` (the `flags` word).
    pub(crate) fn initialise_with_kind(
        &self,
        data_len: u64,
        lock_kind: u32,
        kind: u32,
        init_lock: impl FnOnce(&LockArea),
    ) {
        let [m0, m1] = magic_words();
        self.magic[0].store(m0, Relaxed);
        self.magic[1].store(m1, Relaxed);
        self.layout_version.store(LAYOUT_VERSION, Relaxed);
        self.header_len.store(HEADER_LEN as u32, Relaxed);
        self.lock_kind.store(lock_kind, Relaxed);
        self.data_len_lo.store(data_len as u32, Relaxed);
        self.data_len_hi.store((data_len >> 32) as u32, Relaxed);
        self.flags.store(kind, Relaxed);
        self.creator_pid.store(std::process::id(), Relaxed);
        init_lock(&self.lock);
        // Release: publishes every store above; pairs with the Acquire load of `state` in
        // `validate`, after which an opener may read the fields.
        self.state.store(STATE_READY, Release);
    }

    /// Checks the header against the length of the mapping that really backs it.
    ///
    /// Returns `Ok(None)` while the creator is still initialising (all-zero magic or state),
    /// `Ok(Some(layout))` for a valid header, and a typed error for anything else.
    pub(crate) fn validate(&self, mapping_len: usize, name: &str) -> Result<Option<Layout>> {
        let magic = [self.magic[0].load(Relaxed), self.magic[1].load(Relaxed)];
        let expected = magic_words();
        // The creator stores the two magic words one at a time, so an opener racing it can
        // see one of them still zero: that is a header being written, not a foreign object.
        if magic != expected && magic.iter().zip(expected).all(|(&w, e)| w == 0 || w == e) {
            return Ok(None);
        }
        if magic != expected {
            return Err(Error::NotMmf {
                name: name.to_owned(),
            });
        }
        // Acquire: pairs with the Release store of STATE_READY in `initialise`, so once we
        // see READY every other field written before it is visible.
        let state = self.state.load(Acquire);
        if state == 0 {
            return Ok(None);
        }
        let version = self.layout_version.load(Relaxed);
        if version != LAYOUT_VERSION {
            return Err(Error::IncompatibleVersion {
                found: version,
                supported: LAYOUT_VERSION,
            });
        }
        if state != STATE_READY {
            return Err(Error::corrupt(format!("unknown state word {state:#010x}")));
        }
        let header_len = self.header_len.load(Relaxed);
        if header_len as usize != HEADER_LEN {
            return Err(Error::corrupt(format!(
                "header length {header_len} (layout version 1 requires {HEADER_LEN})"
            )));
        }
        let data_len = u64::from(self.data_len_lo.load(Relaxed))
            | (u64::from(self.data_len_hi.load(Relaxed)) << 32);
        if data_len == 0 {
            return Err(Error::corrupt("data length 0"));
        }
        let available = (mapping_len - HEADER_LEN.min(mapping_len)) as u64;
        if data_len > available {
            return Err(Error::corrupt(format!(
                "header claims {data_len} data bytes but the segment holds only {available}"
            )));
        }
        Ok(Some(Layout {
            // Cannot truncate: data_len <= available, which came from a usize.
            data_len: data_len as usize,
            lock_kind: self.lock_kind.load(Relaxed),
            flags: self.flags.load(Relaxed),
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Line([u8; 64]);

    /// A heap buffer aligned like a mapping, for tests that need a header without an OS.
    pub(crate) struct FakeRegion {
        lines: Vec<Line>,
    }

    impl FakeRegion {
        pub(crate) fn zeroed(len: usize) -> Self {
            FakeRegion {
                lines: vec![Line([0; 64]); len.div_ceil(64)],
            }
        }
        pub(crate) fn from_bytes(bytes: &[u8]) -> Self {
            let mut region = Self::zeroed(bytes.len().max(HEADER_LEN));
            region.bytes_mut()[..bytes.len()].copy_from_slice(bytes);
            region
        }
        pub(crate) fn len(&self) -> usize {
            self.lines.len() * 64
        }
        pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
            let len = self.len();
            // SAFETY: the Vec owns len initialised bytes; u8 has no alignment or validity needs.
            unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<u8>(), len) }
        }
        pub(crate) fn header(&self) -> &Header {
            assert!(self.len() >= HEADER_LEN);
            // SAFETY: the buffer is 64-aligned (Vec<Line>) and at least HEADER_LEN bytes long;
            // the returned borrow keeps it alive.
            unsafe { Header::from_ptr(self.lines.as_ptr().cast::<u8>()) }
        }
    }

    fn initialised(data_len: u64) -> FakeRegion {
        let region = FakeRegion::zeroed(HEADER_LEN + data_len as usize);
        region.header().initialise(data_len, 7, |_| {});
        region
    }

    #[test]
    fn initialised_header_validates() {
        let region = initialised(100);
        let layout = region
            .header()
            .validate(region.len(), "t")
            .unwrap()
            .unwrap();
        assert_eq!(layout.data_len, 100);
        assert_eq!(layout.lock_kind, 7);
        assert_eq!(layout.flags, 0);
    }

    #[test]
    fn zeroed_header_is_not_ready() {
        let region = FakeRegion::zeroed(HEADER_LEN + 64);
        assert!(region
            .header()
            .validate(region.len(), "t")
            .unwrap()
            .is_none());
    }

    #[test]
    fn magic_without_state_is_not_ready() {
        let region = FakeRegion::zeroed(HEADER_LEN + 64);
        let [m0, m1] = magic_words();
        region.header().magic[0].store(m0, Relaxed);
        region.header().magic[1].store(m1, Relaxed);
        assert!(region
            .header()
            .validate(region.len(), "t")
            .unwrap()
            .is_none());
    }

    /// Regression: an opener that saw only one of the two magic words stored by a racing
    /// creator reported NotMmf instead of waiting.
    #[test]
    fn half_written_magic_is_not_ready() {
        let [m0, m1] = magic_words();
        for (w0, w1) in [(m0, 0), (0, m1)] {
            let region = FakeRegion::zeroed(HEADER_LEN + 64);
            region.header().magic[0].store(w0, Relaxed);
            region.header().magic[1].store(w1, Relaxed);
            assert!(region
                .header()
                .validate(region.len(), "t")
                .unwrap()
                .is_none());
        }
    }

    #[test]
    fn foreign_magic_is_not_mmf() {
        let region = initialised(64);
        region.header().magic[0].store(0xdead_beef, Relaxed);
        assert!(matches!(
            region.header().validate(region.len(), "t"),
            Err(Error::NotMmf { .. })
        ));
    }

    #[test]
    fn other_version_is_incompatible() {
        let region = initialised(64);
        region.header().layout_version.store(2, Relaxed);
        assert!(matches!(
            region.header().validate(region.len(), "t"),
            Err(Error::IncompatibleVersion {
                found: 2,
                supported: 1
            })
        ));
    }

    #[test]
    fn data_len_beyond_mapping_is_corrupt() {
        let region = initialised(64);
        region.header().data_len_hi.store(1, Relaxed);
        assert!(matches!(
            region.header().validate(region.len(), "t"),
            Err(Error::Corrupt { .. })
        ));
        // The same header against a mapping shorter than it claims.
        let region = initialised(4096);
        assert!(matches!(
            region.header().validate(HEADER_LEN + 100, "t"),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn bad_header_len_zero_data_and_garbage_state_are_corrupt() {
        for mutate in [
            (|h: &Header| h.header_len.store(64, Relaxed)) as fn(&Header),
            |h| h.data_len_lo.store(0, Relaxed),
            |h| h.state.store(12345, Relaxed),
        ] {
            let region = initialised(64);
            mutate(region.header());
            assert!(matches!(
                region.header().validate(region.len(), "t"),
                Err(Error::Corrupt { .. })
            ));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 8 } else { 2048 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever bytes are there, and whatever the mapping length claims, validation
        /// returns a value or a typed error and never panics or reads out of bounds.
        #[test]
        fn random_headers_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..HEADER_LEN + 256),
            mapping_len in HEADER_LEN..HEADER_LEN * 4,
        ) {
            let region = FakeRegion::from_bytes(&bytes);
            let len = mapping_len.min(region.len());
            if let Ok(Some(layout)) = region.header().validate(len, "p") {
                prop_assert!(layout.data_len > 0);
                prop_assert!(HEADER_LEN + layout.data_len <= len);
            }
        }

        /// A valid header with one word overwritten by a random value: validation still
        /// never panics, and whatever it accepts fits the mapping.
        #[test]
        fn hostile_word_in_valid_header_never_panics(
            word in 0usize..16,
            value in any::<u32>(),
            data_len in 1u64..8192,
        ) {
            let region = initialised(data_len);
            let offset = word * 4;
            let base: *const Header = region.header();
            let word_ptr = base.cast::<u8>().wrapping_add(offset).cast::<AtomicU32>();
            // SAFETY: offset < 64 lies inside the header, which is made only of AtomicU32s;
            // the pointer is 4-aligned because the header is 64-aligned and offset is a multiple of 4.
            let target = unsafe { &*word_ptr };
            target.store(value, Relaxed);
            if let Ok(Some(layout)) = region.header().validate(region.len(), "p") {
                prop_assert!(HEADER_LEN + layout.data_len <= region.len());
            }
        }
    }
}
