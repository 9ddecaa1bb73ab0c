//! What a frame carries besides its bytes: the writer's user fields ([`FrameMeta`]) and the
//! metadata a reader gets with it ([`FrameInfo`]).

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
