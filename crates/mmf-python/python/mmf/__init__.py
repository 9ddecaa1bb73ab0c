"""Named shared memory with a reader/writer lock inside the region, and frame channels that
hand camera frames to many readers without a copy (``Frame.array`` is a numpy view of shared
memory).

The native part is ``mmf._mmf`` (Rust, PyO3); everything is re-exported here.
"""

from __future__ import annotations

from . import _mmf
from ._mmf import (
    AlreadyExists,
    Error,
    Frame,
    FrameReader,
    FrameWriter,
    InvalidArgument,
    NotFound,
    PendingFrame,
    PermissionDenied,
    Poisoned,
    ReadOnly,
    ReleasedError,
    Segment,
    SegmentLock,
    Timeout,
    TooLarge,
    WouldBlock,
    WriterGone,
)

__all__ = [
    "AlreadyExists",
    "Error",
    "Frame",
    "FrameReader",
    "FrameWriter",
    "InvalidArgument",
    "NotFound",
    "PendingFrame",
    "PermissionDenied",
    "Poisoned",
    "ReadOnly",
    "ReleasedError",
    "Segment",
    "SegmentLock",
    "Timeout",
    "TooLarge",
    "WouldBlock",
    "WriterGone",
    "fourcc",
    "RGB24",
]


def fourcc(code: str) -> int:
    """The FourCC ``code`` (4 ASCII characters, e.g. ``"RGB3"``) as the little-endian
    ``pixel_format`` number the Rust side uses."""
    raw = code.encode("ascii")
    if len(raw) != 4:
        raise InvalidArgument(f"a FourCC has 4 characters, not {len(raw)}: {code!r}")
    return int.from_bytes(raw, "little")


#: ``pixel_format`` of packed 8-bit RGB (FourCC ``RGB3``), as the camera demo publishes.
RGB24: int = fourcc("RGB3")

del _mmf
