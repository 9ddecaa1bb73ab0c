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
//! |     32 |    4 | `flags`          | segment kind: [`KIND_PLAIN`] (0), [`KIND_FRAME_CHANNEL`] (1) or [`KIND_FRAME_READERS`] (2) |
//! |     36 |    4 | `creator_pid`    | process id of the creator (diagnostics only)                      |
//! |     40 |    4 | `write_seq`      | odd while a write guard is held; lets read-only handles copy consistently |
//! |     44 |    4 | `os_waiters`     | processes sleeping in a kernel wait (used where wake-ups must be counted, e.g. Windows) |
//! |     48 |   16 | reserved         | zero                                                              |
//! |     64 | 2048 | lock area        | owned by the lock type (see [`LockArea`]); starts on its own cache line |
//! |   2112 | 1984 | reserved         | zero; room to grow without moving the data                        |
//! |   4096 |    … | data             | `data_len` bytes, page aligned                                    |
//!
//! The lock area of the default lock ([`SharedRwLock`](crate::SharedRwLock), kind `"RWL4"`),
//! as offsets from the start of the header (all 32-bit words; details in [`crate::lock`]):
//!
//! | offset | size | field        | meaning                                                          |
//! |-------:|-----:|--------------|------------------------------------------------------------------|
//! |     64 |    4 | lock word    | `WRITER`, `PARKED`, `POISONED` bits and the writer's owner slot     |
//! |     68 |    4 | drain        | 1 while a writer sleeps waiting for readers to leave              |
//! |     72 |    4 | slots used   | high-water mark of claimed handle slots                           |
//! |     76 |    4 | overflow     | read locks held through untracked handles                         |
//! |     80 |   48 | reserved     | zero                                                              |
//! |    128 | 1984 | handle slots | 124 × 16 bytes: tag (state, generation, held, read locks), pid, start time lo, hi; on Linux the live owner of slot `i` holds an open-file-description lock on byte `128 + 16i` of the object (the first byte of its tag) |
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
// The OS layer maps and patches this many bytes as the header without knowing its fields.
const _: () = assert!(HEADER_LEN == crate::sys::HEADER_LEN);
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
/// `flags` value of a frame channel's reader table (`<name>+readers`, see
/// [`channel`](crate::channel)): opened only by the channel's writer and readers.
pub const KIND_FRAME_READERS: u32 = 2;

/// Human name of a segment kind, for error messages.
pub(crate) fn kind_name(kind: u32) -> &'static str {
    match kind {
        KIND_PLAIN => "plain segment",
        KIND_FRAME_CHANNEL => "frame channel",
        KIND_FRAME_READERS => "frame channel reader table",
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
    #[inline]
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

/// The header's words as they are in the region, unvalidated: what `mmf info` shows
/// ([`crate::inspect`]), including for a header that [`Header::validate`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawHeader {
    pub magic_ok: bool,
    pub state: u32,
    pub layout_version: u32,
    pub header_len: u32,
    pub lock_kind: u32,
    pub data_len: u64,
    pub flags: u32,
    pub creator_pid: u32,
    pub write_seq: u32,
    pub os_waiters: u32,
}

impl Header {
    /// Reads every field once, for a report (see [`RawHeader`]).
    pub(crate) fn raw(&self) -> RawHeader {
        // Relaxed everywhere: a diagnostic snapshot that synchronises with nothing; the
        // Acquire on `state` pairs with the Release in `initialise` so that a ready header's
        // fields are its creator's.
        let state = self.state.load(Acquire);
        RawHeader {
            magic_ok: [self.magic[0].load(Relaxed), self.magic[1].load(Relaxed)] == magic_words(),
            state,
            layout_version: self.layout_version.load(Relaxed),
            header_len: self.header_len.load(Relaxed),
            lock_kind: self.lock_kind.load(Relaxed),
            data_len: u64::from(self.data_len_lo.load(Relaxed))
                | (u64::from(self.data_len_hi.load(Relaxed)) << 32),
            flags: self.flags.load(Relaxed),
            creator_pid: self.creator_pid.load(Relaxed),
            write_seq: self.write_seq.load(Relaxed),
            os_waiters: self.os_waiters.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
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

    /// Which check of `validate` decided a header's fate.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Path {
        HalfWrittenMagic,
        ForeignMagic,
        StateZero,
        OtherVersion,
        UnknownState,
        HeaderLen,
        ZeroData,
        PastMapping,
        Accepted,
    }

    const EVERY_PATH: [Path; 9] = [
        Path::HalfWrittenMagic,
        Path::ForeignMagic,
        Path::StateZero,
        Path::OtherVersion,
        Path::UnknownState,
        Path::HeaderLen,
        Path::ZeroData,
        Path::PastMapping,
        Path::Accepted,
    ];

    /// What a caller of `validate` can observe.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Verdict {
        NotReady,
        NotMmf,
        Incompatible {
            found: u32,
        },
        /// `Corrupt`, told apart by the check that refused (its reason text).
        Corrupt(Path),
        Accepted(Layout),
        /// Anything else: never expected.
        Other(String),
    }

    fn verdict(result: Result<Option<Layout>>) -> Verdict {
        match result {
            Ok(None) => Verdict::NotReady,
            Ok(Some(layout)) => Verdict::Accepted(layout),
            Err(Error::NotMmf { .. }) => Verdict::NotMmf,
            Err(Error::IncompatibleVersion {
                found,
                supported: LAYOUT_VERSION,
            }) => Verdict::Incompatible { found },
            Err(Error::Corrupt { reason }) => {
                let path = if reason.starts_with("unknown state") {
                    Path::UnknownState
                } else if reason.starts_with("header length") {
                    Path::HeaderLen
                } else if reason == "data length 0" {
                    Path::ZeroData
                } else if reason.contains("holds only") {
                    Path::PastMapping
                } else {
                    return Verdict::Other(reason);
                };
                Verdict::Corrupt(path)
            }
            Err(other) => Verdict::Other(format!("{other:?}")),
        }
    }

    fn word_at(bytes: &[u8], offset: usize) -> u32 {
        u32::from_ne_bytes(bytes[offset..offset + 4].try_into().unwrap())
    }

    /// The documented rules (module docs), written out independently of `validate` and read
    /// from the raw bytes: the check that decides `bytes` against a mapping of `mapping_len`
    /// bytes, and what the caller must see.
    fn model(bytes: &[u8], mapping_len: usize) -> (Path, Verdict) {
        let magic = [word_at(bytes, 0), word_at(bytes, 4)];
        let expected = magic_words();
        let state = word_at(bytes, 8);
        let version = word_at(bytes, 12);
        let data_len = u64::from(word_at(bytes, 24)) | u64::from(word_at(bytes, 28)) << 32;
        if magic != expected {
            // A word still zero is one the creator has not stored yet.
            return if magic.iter().zip(expected).all(|(&w, e)| w == 0 || w == e) {
                (Path::HalfWrittenMagic, Verdict::NotReady)
            } else {
                (Path::ForeignMagic, Verdict::NotMmf)
            };
        }
        // Checked before the version: a creator still initialising has written no version.
        if state == 0 {
            return (Path::StateZero, Verdict::NotReady);
        }
        if version != LAYOUT_VERSION {
            let verdict = Verdict::Incompatible { found: version };
            return (Path::OtherVersion, verdict);
        }
        let refused = if state != STATE_READY {
            Path::UnknownState
        } else if word_at(bytes, 16) as usize != HEADER_LEN {
            Path::HeaderLen
        } else if data_len == 0 {
            Path::ZeroData
        } else if mapping_len < HEADER_LEN || data_len > (mapping_len - HEADER_LEN) as u64 {
            Path::PastMapping
        } else {
            let layout = Layout {
                data_len: data_len as usize,
                lock_kind: word_at(bytes, 20),
                flags: word_at(bytes, 32),
            };
            return (Path::Accepted, Verdict::Accepted(layout));
        };
        (refused, Verdict::Corrupt(refused))
    }

    /// The data length a generated header claims, relative to the mapping it is checked
    /// against (so that "just fits" and "one byte too many" both occur often).
    #[derive(Debug, Clone, Copy)]
    enum DataLen {
        Exact,
        Below(u64),
        Above(u64),
        Zero,
        /// High word set: more than a 32-bit `usize` can hold.
        HighWord(u32, u32),
        Max,
        Small(u64),
        Any(u64),
    }

    impl DataLen {
        fn resolve(self, mapping_len: usize) -> u64 {
            let available = mapping_len.saturating_sub(HEADER_LEN) as u64;
            match self {
                DataLen::Exact => available,
                DataLen::Below(k) => available.saturating_sub(k),
                DataLen::Above(k) => available + k,
                DataLen::Zero => 0,
                DataLen::HighWord(hi, lo) => u64::from(hi) << 32 | u64::from(lo),
                DataLen::Max => u64::MAX,
                DataLen::Small(n) => n,
                DataLen::Any(n) => n,
            }
        }
    }

    /// A header generated field by field: mostly the value a valid header has (so that most
    /// headers get past the magic and on to the later checks), otherwise a value near a
    /// limit or a random one; every other byte random.
    #[derive(Debug, Clone)]
    struct Generated {
        background: Vec<u8>,
        magic: [u32; 2],
        state: u32,
        version: u32,
        header_len: u32,
        data_len: DataLen,
        mapping_len: usize,
    }

    impl Generated {
        /// The header bytes (HEADER_LEN of them).
        fn bytes(&self) -> Vec<u8> {
            let mut bytes = self.background.clone();
            let mut put = |offset: usize, word: u32| {
                bytes[offset..offset + 4].copy_from_slice(&word.to_ne_bytes());
            };
            let data_len = self.data_len.resolve(self.mapping_len);
            put(0, self.magic[0]);
            put(4, self.magic[1]);
            put(8, self.state);
            put(12, self.version);
            put(16, self.header_len);
            put(24, data_len as u32);
            put(28, (data_len >> 32) as u32);
            bytes
        }
    }

    /// HEADER_LEN random bytes: the first 64 (every field `validate` reads, and then some)
    /// drawn byte by byte so that proptest can shrink them; the rest from a random seed
    /// (drawing 4096 bytes one by one would make the run ten times slower).
    fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
        (proptest::collection::vec(any::<u8>(), 64), any::<u64>()).prop_map(|(first, seed)| {
            let mut bytes = first;
            let mut x = seed;
            while bytes.len() < HEADER_LEN {
                // splitmix64
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                bytes.extend_from_slice(&(z ^ (z >> 31)).to_ne_bytes());
            }
            bytes
        })
    }

    /// `valid` 8 times in 10, else one of `near` or any value.
    fn mostly(valid: u32, near: Vec<u32>) -> impl Strategy<Value = u32> {
        prop_oneof![
            8 => Just(valid),
            1 => proptest::sample::select(near),
            1 => any::<u32>(),
        ]
    }

    fn generated() -> impl Strategy<Value = Generated> {
        let [m0, m1] = magic_words();
        let magic = prop_oneof![
            16 => Just([m0, m1]),
            1 => Just([m0, 0]),
            1 => Just([0, m1]),
            1 => Just([0, 0]),
            1 => any::<u32>().prop_map(move |w| [w, m1]),
            1 => any::<[u32; 2]>(),
        ];
        let state = prop_oneof![
            8 => Just(STATE_READY),
            1 => Just(0u32),
            1 => proptest::sample::select(vec![STATE_READY ^ 1, STATE_READY + 1, 1, u32::MAX]),
            1 => any::<u32>(),
        ];
        let version = mostly(LAYOUT_VERSION, vec![0, LAYOUT_VERSION + 1, u32::MAX]);
        let header_len = mostly(
            HEADER_LEN as u32,
            vec![
                0,
                64,
                HEADER_LEN as u32 - 1,
                HEADER_LEN as u32 + 1,
                2 * HEADER_LEN as u32,
            ],
        );
        let data_len = prop_oneof![
            Just(DataLen::Exact),
            (1u64..64).prop_map(DataLen::Below),
            (1u64..64).prop_map(DataLen::Above),
            Just(DataLen::Zero),
            (1u32.., any::<u32>()).prop_map(|(hi, lo)| DataLen::HighWord(hi, lo)),
            Just(DataLen::Max),
            (1u64..4 * HEADER_LEN as u64).prop_map(DataLen::Small),
            any::<u64>().prop_map(DataLen::Any),
        ];
        // Mappings are at least a header long in practice (open checks that first), but
        // `validate` must stay in bounds for any length.
        let mapping_len = prop_oneof![
            6 => HEADER_LEN..=HEADER_LEN * 4,
            1 => Just(HEADER_LEN),
            1 => 0..HEADER_LEN,
        ];
        (
            header_bytes(),
            magic,
            state,
            version,
            header_len,
            data_len,
            mapping_len,
        )
            .prop_map(
                |(background, magic, state, version, header_len, data_len, mapping_len)| {
                    Generated {
                        background,
                        magic,
                        state,
                        version,
                        header_len,
                        data_len,
                        mapping_len,
                    }
                },
            )
    }

    /// Validates `bytes` as the header of a mapping of `mapping_len` bytes and checks the
    /// outcome against the model; returns the path the model says was taken.
    fn check_against_model(
        bytes: &[u8],
        mapping_len: usize,
    ) -> std::result::Result<Path, TestCaseError> {
        // The buffer is exactly as long as the mapping claims (at least a header, as
        // `Header::from_ptr` needs): whatever `validate` accepts must fit inside it.
        let mut padded = bytes.to_vec();
        padded.resize(mapping_len.max(HEADER_LEN), 0);
        let region = FakeRegion::from_bytes(&padded);
        let got = verdict(region.header().validate(mapping_len, "p"));
        let (path, expected) = model(bytes, mapping_len);
        prop_assert_eq!(&got, &expected, "mapping_len {}", mapping_len);
        if let Verdict::Accepted(layout) = got {
            prop_assert!(layout.data_len > 0);
            prop_assert!(HEADER_LEN + layout.data_len <= mapping_len);
        }
        Ok(path)
    }

    /// Headers that mostly carry the right magic, version, state and header length, with
    /// the other fields random or near their limits: every check of `validate` is reached,
    /// each gives the verdict the documented rules give (so a check that is missing, or lets
    /// through what it should refuse, fails here), and nothing panics or reads out of
    /// bounds. The run counts which check decided each header and fails if one was never
    /// (or hardly ever) reached.
    #[test]
    fn random_headers_never_panic_and_reach_every_check() {
        let cases: u32 = if cfg!(miri) { 8 } else { 2048 };
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let reached = std::cell::RefCell::new(std::collections::BTreeMap::<Path, u32>::new());
        let outcome = runner.run(&generated(), |header| {
            let path = check_against_model(&header.bytes(), header.mapping_len)?;
            *reached.borrow_mut().entry(path).or_default() += 1;
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("{e}");
        }
        let reached = reached.into_inner();
        println!("paths reached in {cases} headers: {reached:?}");
        if cfg!(miri) {
            return; // too few cases to reach every path
        }
        // Each path is expected in about 6% (zero data, accepted) to 21% (past the mapping) of
        // the cases, i.e. 120 to 440 times; a floor of 1% (20) lies about 9 standard
        // deviations below the rarest, so chance never trips it, while a generator that stops
        // reaching a check (or a check that swallows the next one's cases) does.
        for path in EVERY_PATH {
            let n = reached.get(&path).copied().unwrap_or(0);
            assert!(
                n >= cases / 100,
                "{path:?} reached only {n} times in {cases}: {reached:?}"
            );
        }
        assert_eq!(reached.values().sum::<u32>(), cases, "{reached:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 8 } else { 2048 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Entirely random bytes (nearly always a foreign magic) and a random mapping
        /// length: the verdict is the model's, and nothing panics.
        #[test]
        fn random_bytes_get_the_models_verdict(
            bytes in header_bytes(),
            mapping_len in 0..HEADER_LEN * 4,
        ) {
            check_against_model(&bytes, mapping_len)?;
        }

        /// A valid header with one word overwritten by a random value: validation still
        /// never panics, and its verdict is the model's (whatever it accepts fits the mapping).
        #[test]
        fn hostile_word_in_valid_header_never_panics(
            word in 0usize..16,
            value in any::<u32>(),
            data_len in 1u64..8192,
        ) {
            let mut region = initialised(data_len);
            let offset = word * 4;
            let base: *const Header = region.header();
            let word_ptr = base.cast::<u8>().wrapping_add(offset).cast::<AtomicU32>();
            // SAFETY: offset < 64 lies inside the header, which is made only of AtomicU32s;
            // the pointer is 4-aligned because the header is 64-aligned and offset is a multiple of 4.
            let target = unsafe { &*word_ptr };
            target.store(value, Relaxed);
            let bytes = region.bytes_mut()[..HEADER_LEN].to_vec();
            check_against_model(&bytes, region.len())?;
        }
    }
}
