"""Type stubs of the native module ``mmf._mmf`` (import ``mmf`` instead)."""

from types import TracebackType
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias, final

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer, Self

# What `publish` and `write` read in place. numpy arrays are named too: numpy's stubs give
# `ndarray.__buffer__` (and so make it a `Buffer`) only when type-checking for Python 3.12+.
_Bytes: TypeAlias = Buffer | npt.NDArray[Any]

__all__ = [
    "Error",
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ReadOnly",
    "Timeout",
    "WouldBlock",
    "Poisoned",
    "WriterGone",
    "TooLarge",
    "ReleasedError",
    "Segment",
    "SegmentLock",
    "FrameWriter",
    "PendingFrame",
    "FrameReader",
    "Frame",
]

class Error(Exception):
    """Base class of every error mmf raises."""

class InvalidArgument(Error, ValueError):
    """A bad name, size, offset or length (also a ValueError)."""

class NotFound(Error, FileNotFoundError):
    """No segment or frame channel of this name exists (also a FileNotFoundError)."""

class AlreadyExists(Error, FileExistsError):
    """A segment or frame channel of this name exists already (also a FileExistsError)."""

class PermissionDenied(Error, PermissionError):
    """The OS refused access, or the segment's owner is not trusted (also a PermissionError)."""

class ReadOnly(Error):
    """A write through a handle opened read-only."""

class Timeout(Error, TimeoutError):
    """A timed wait ran out (also a TimeoutError)."""

class WouldBlock(Error):
    """The operation would have to wait (a frame stays mid-publish)."""

class Poisoned(Error):
    """A process died holding the segment's write lock: repair the data, then clear_poison()."""

class WriterGone(Error):
    """The frame channel's writer closed it or exited; no new frames will come."""

class TooLarge(Error, ValueError):
    """A frame longer than the channel's max_frame_len (also a ValueError)."""

class ReleasedError(Error, ValueError):
    """A frame, lock buffer, reader, writer or segment used after release()/close()."""

@final
class Segment:
    """A named shared memory segment with a reader/writer lock inside it.

    ``read``/``write`` copy under the lock; ``write_lock()``/``read_lock()`` hand out the
    data region in place, as a memoryview, inside a ``with`` block.
    """

    @staticmethod
    def create(name: str, size: int) -> Segment:
        """Creates the segment ``name`` with ``size`` zeroed data bytes (``AlreadyExists``)."""
    @staticmethod
    def open(name: str) -> Segment:
        """Opens the existing segment ``name`` for reading and writing (``NotFound``)."""
    @staticmethod
    def open_read_only(name: str) -> Segment:
        """Opens the existing segment ``name`` for reading only."""
    @staticmethod
    def remove(name: str) -> None:
        """Removes the name ``name``; open handles keep their mapping."""
    @property
    def name(self) -> str:
        """The segment's name."""
    @property
    def read_only(self) -> bool:
        """Whether this handle was opened read-only."""
    def __len__(self) -> int:
        """Length of the data region in bytes."""
    def read(self, offset: int, length: int) -> bytes:
        """Copies ``length`` bytes at ``offset`` out of the data region under the shared lock."""
    def write(self, offset: int, data: _Bytes) -> None:
        """Copies ``data`` into the data region at ``offset`` under the write lock."""
    @property
    def write_seq(self) -> int:
        """The write sequence: changes with every write (see ``wait_for_write``)."""
    def wait_for_write(self, seen: int, timeout: float | None = None) -> int:
        """Waits (GIL released) until the write sequence differs from ``seen``; returns it."""
    @property
    def is_poisoned(self) -> bool:
        """Whether a process died holding the write lock."""
    def clear_poison(self) -> None:
        """Declares the data repaired after a poisoning."""
    def write_lock(self, timeout: float | None = None) -> SegmentLock:
        """The write lock for a ``with`` block, which gets a writable memoryview."""
    def read_lock(self, timeout: float | None = None) -> SegmentLock:
        """The shared lock for a ``with`` block, which gets a read-only memoryview."""
    def close(self) -> None:
        """Closes the handle (a creator's close removes the name on Linux). Idempotent."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...

@final
class SegmentLock:
    """A held segment lock exporting the data region (buffer protocol)."""

    def __buffer__(self, flags: int, /) -> memoryview: ...
    def release(self) -> None:
        """Releases the lock; ``BufferError`` while a view of the region is alive."""
    @property
    def held(self) -> bool:
        """Whether the lock is still held."""
    def __len__(self) -> int:
        """Length of the data region in bytes."""
    def __enter__(self) -> memoryview:
        """A memoryview of the data region, valid until the ``with`` block ends."""
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...

@final
class FrameWriter:
    """The writing end of a frame channel: ``publish`` (one copy) or ``begin``/``commit``
    (written in place)."""

    @staticmethod
    def create(
        name: str,
        max_frame_len: int,
        max_readers: int = 4,
        slots: int | None = None,
        user_header_len: int = 0,
    ) -> FrameWriter:
        """Creates the frame channel ``name`` (``AlreadyExists`` if a live one has it)."""
    def publish(
        self,
        data: _Bytes,
        width: int = 0,
        height: int = 0,
        pixel_format: int = 0,
        tag: int = 0,
        header: _Bytes | None = None,
    ) -> int:
        """Publishes any C-contiguous buffer as the next frame; returns its sequence number."""
    def begin(self, shape: Sequence[int] | None = None) -> PendingFrame:
        """Takes a free slot for a frame written in place (``WouldBlock`` while one is pending)."""
    @property
    def name(self) -> str:
        """The channel's name."""
    @property
    def max_frame_len(self) -> int:
        """The largest frame in bytes."""
    @property
    def user_header_len(self) -> int:
        """Bytes of user header each frame carries (0: none)."""
    @property
    def seq(self) -> int:
        """Sequence number of the last frame published (0 before the first)."""
    def close(self) -> None:
        """Closes the channel (abandoning a pending frame): readers get ``WriterGone``."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...

@final
class PendingFrame:
    """A frame being written in place; ``commit()`` publishes it, else it is abandoned.

    ``array``, ``data`` and ``user_header`` are writable views of shared memory; commit or
    abandon while one is alive raises ``BufferError``; afterwards every accessor raises
    ``ReleasedError``. ``numpy.asarray(f)``/``numpy.frombuffer(f, numpy.uint8)`` count as
    views, ``numpy.ndarray(shape, buffer=f)`` does not (it drops its buffer at once): avoid it.
    """

    @property
    def seq(self) -> int:
        """The sequence number the frame gets if committed."""
    @property
    def pending(self) -> bool:
        """Whether the frame is still pending (neither committed nor abandoned)."""
    def __len__(self) -> int:
        """Bytes in the slot (``max_frame_len``)."""
    @property
    def data(self) -> memoryview:
        """Writable memoryview of the slot's ``max_frame_len`` bytes."""
    @property
    def array(self) -> npt.NDArray[np.uint8]:
        """Writable numpy view of the slot, shaped as ``begin(shape=...)`` asked."""
    @property
    def user_header(self) -> memoryview | None:
        """Writable memoryview of the frame's user header (``None`` without one)."""
    def set_meta(
        self,
        width: int | None = None,
        height: int | None = None,
        pixel_format: int | None = None,
        tag: int | None = None,
    ) -> None:
        """Sets the metadata published with the frame; ``None`` keeps a field."""
    def commit(self, length: int | None = None) -> int:
        """Publishes the first ``length`` bytes; returns the sequence number."""
    def abandon(self) -> None:
        """Abandons the frame (nothing published). Idempotent."""
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...

@final
class FrameReader:
    """A reading end of a frame channel; holds at most one frame at a time."""

    @staticmethod
    def open(name: str) -> FrameReader:
        """Opens a reader on ``name`` (``NotFound`` if there is no such channel)."""
    @staticmethod
    def open_wait(name: str, timeout: float) -> FrameReader:
        """Opens a reader, waiting up to ``timeout`` s for a writer (``Timeout``)."""
    def wait_next(self, timeout: float) -> Frame:
        """Waits (GIL released) for a newer frame; ``Timeout``, ``WriterGone``."""
    def try_next(self) -> Frame | None:
        """The next frame if there is a newer one, else ``None``."""
    def latest(self) -> Frame | None:
        """The newest frame, or ``None`` before the first publish."""
    @property
    def writer_alive(self) -> bool:
        """Whether the channel's writer is still there."""
    @property
    def name(self) -> str:
        """The channel's name."""
    def _mapping_range(self) -> tuple[int, int]:
        """Not API: the channel mapping's ``(start, end)`` addresses, for tests."""
    def close(self) -> None:
        """Closes the reader (``BufferError`` while a view of its frame is alive)."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...

@final
class Frame:
    """One pinned frame; ``data`` and ``array`` view shared memory without a copy.

    ``numpy.asarray(frame)`` and ``numpy.frombuffer(frame, numpy.uint8)`` count as views (a
    release raises ``BufferError`` while they live); ``numpy.ndarray(shape, buffer=frame)``
    does not (it drops its buffer export at once, old buffer semantics), so nothing stops a
    release under it: use ``frame.array`` or ``numpy.asarray(frame)``.
    """

    @property
    def seq(self) -> int:
        """Sequence number (1 for the first frame)."""
    @property
    def timestamp_ns(self) -> int:
        """Publish time in ns on a monotonic clock shared by the processes."""
    @property
    def skipped(self) -> int:
        """Frames skipped between this reader's previous frame and this one."""
    @property
    def width(self) -> int:
        """Width the writer published."""
    @property
    def height(self) -> int:
        """Height the writer published."""
    @property
    def pixel_format(self) -> int:
        """Pixel format (FourCC) the writer published."""
    @property
    def tag(self) -> int:
        """Free tag the writer published."""
    @property
    def len(self) -> int:
        """Length in bytes."""
    def __len__(self) -> int:
        """Length in bytes."""
    @property
    def pinned(self) -> bool:
        """Whether the frame is still pinned (not released)."""
    @property
    def data(self) -> memoryview:
        """Read-only memoryview of the frame in shared memory."""
    @property
    def array(self) -> npt.NDArray[np.uint8]:
        """Read-only numpy view, shaped ``(height, width, channels)`` when possible."""
    @property
    def user_header(self) -> memoryview | None:
        """Read-only memoryview of the frame's user header (``None`` without one)."""
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def release(self) -> None:
        """Releases the frame; ``BufferError`` while a view of it is alive."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...

