//! What a frame carries besides its bytes: the writer's user fields ([`FrameMeta`]), the
//! metadata a reader gets with it ([`FrameInfo`]), and the reader's running counts
//! ([`ReaderStats`]).

/// User fields published with a frame; the channel does not interpret them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// Width in pixels (or anything).
    pub width: u32,
    /// Height in pixels (or anything).
    pub height: u32,
    /// Pixel format, e.g. a FourCC code.
    pub pixel_format: u32,
    /// Free for the application (a capture timestamp, an exposure id, ...).
    pub tag: u64,
}

/// Metadata of a frame, as the writer published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Sequence number: 1 for the first frame, +1 per publish.
    pub seq: u64,
    /// Publish time on [`monotonic_ns`](super::monotonic_ns)'s clock (comparable across processes).
    pub timestamp_ns: u64,
    /// Length in bytes.
    pub len: usize,
    /// Frames published between the previous frame this reader saw and this one.
    pub skipped: u64,
    /// The writer's user fields.
    pub meta: FrameMeta,
}

/// A reader's running counts, as [`FrameReader::stats`](super::FrameReader::stats) and
/// [`Frame::reader_stats`](super::Frame::reader_stats) give them (the latter while the frame
/// is held, when the frame's mutable borrow of its reader keeps the reader's own methods out
/// of reach). They include the frame being held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Frames taken with a newer sequence number than the one before
    /// ([`FrameReader::received`](super::FrameReader::received)).
    pub received: u64,
    /// Frames published but never taken, between the first and the last taken
    /// ([`FrameReader::skipped`](super::FrameReader::skipped)).
    pub skipped: u64,
    /// Sequence number of the newest frame taken ([`FrameReader::last_seq`](super::FrameReader::last_seq)).
    pub last_seq: Option<u64>,
}
