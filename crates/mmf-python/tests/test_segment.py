"""Segments: copies, lock buffers (memoryview/numpy in place), typed errors."""

import threading
import time

import numpy as np
import pytest

import mmf


def test_round_trip_between_handles(name):
    with mmf.Segment.create(name, 4096) as seg:
        assert len(seg) == 4096
        assert seg.name == name
        seq = seg.write_seq
        seg.write(10, b"hello")
        assert seg.write_seq != seq
        other = mmf.Segment.open(name)
        assert other.read(10, 5) == b"hello"
        assert other.read(0, 10) == bytes(10), "created zeroed"
        seg.write(20, bytearray(b"xy"))
        seg.write(22, np.array([1, 2], dtype=np.uint16))
        assert other.read(20, 6) == b"xy\x01\x00\x02\x00"
        other.close()


def test_write_lock_gives_writable_view_that_numpy_shares(name):
    with mmf.Segment.create(name, 64) as seg:
        with seg.write_lock() as buf:
            assert isinstance(buf, memoryview)
            assert not buf.readonly and len(buf) == 64
            buf[0:3] = b"abc"
            arr = np.frombuffer(buf, dtype=np.uint8)
            arr[3] = 100  # numpy writes the shared memory itself
            del arr
        assert seg.read(0, 4) == b"abcd"
        with seg.read_lock() as buf:
            assert buf.readonly
            assert bytes(buf[:4]) == b"abcd"
            with pytest.raises(TypeError):
                buf[0] = 1
        # After the block the view is released, like memoryview.release().
        with pytest.raises(ValueError):
            buf[0]


def test_lock_is_held_inside_the_block_and_gone_after(name):
    with mmf.Segment.create(name, 64) as seg:
        other = mmf.Segment.open(name)
        with seg.write_lock():
            with pytest.raises(mmf.Timeout):
                other.write_lock(timeout=0.05)
            with pytest.raises(TimeoutError):
                other.read_lock(timeout=0.05)
        with other.write_lock(timeout=1.0) as buf:
            buf[0] = 9
        assert seg.read(0, 1) == b"\x09"


def test_exit_with_live_array_raises_and_keeps_lock_until_array_dies(name):
    with mmf.Segment.create(name, 64) as seg:
        other = mmf.Segment.open(name)
        with pytest.raises(BufferError, match="del"):
            with seg.write_lock() as buf:
                arr = np.frombuffer(buf, dtype=np.uint8)
        # The array still sees the locked memory, so nobody else may lock it.
        with pytest.raises(mmf.Timeout):
            other.write_lock(timeout=0.05)
        arr[0] = 5
        del arr, buf
        with other.write_lock(timeout=1.0) as buf2:
            assert buf2[0] == 5


def test_wait_for_write_releases_gil_and_sees_the_write(name):
    with mmf.Segment.create(name, 64) as seg:
        seen = seg.write_seq
        result = {}

        def waiter():
            result["seq"] = seg.wait_for_write(seen, timeout=5.0)

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.05)
        seg.write(0, b"x")  # needs the GIL: would hang if the waiter kept it
        t.join(5.0)
        assert not t.is_alive()
        assert result["seq"] == seg.write_seq != seen
        with pytest.raises(mmf.Timeout):
            seg.wait_for_write(seg.write_seq, timeout=0.02)


def test_read_only_handle(name):
    with mmf.Segment.create(name, 64) as seg:
        ro = mmf.Segment.open_read_only(name)
        assert ro.read_only and not seg.read_only
        with pytest.raises(mmf.ReadOnly):
            ro.write(0, b"x")
        seg.write(0, b"y")
        assert ro.read(0, 1) == b"y"


def test_typed_errors(name):
    with pytest.raises(mmf.NotFound):
        mmf.Segment.open(name)
    with pytest.raises(FileNotFoundError):
        mmf.Segment.open_read_only(name)
    with pytest.raises(mmf.InvalidArgument):
        mmf.Segment.create("bad/name", 64)
    with pytest.raises(ValueError):
        mmf.Segment.create("", 64)
    with pytest.raises(mmf.InvalidArgument):
        mmf.Segment.create(name, 0)
    with mmf.Segment.create(name, 64) as seg:
        with pytest.raises(mmf.AlreadyExists):
            mmf.Segment.create(name, 64)
        with pytest.raises(mmf.InvalidArgument):
            seg.read(60, 8)
        with pytest.raises(mmf.InvalidArgument):
            seg.write(63, b"ab")
        with pytest.raises(mmf.InvalidArgument):
            seg.wait_for_write(0, timeout=-1.0)
        assert not seg.is_poisoned
    for cls in (mmf.NotFound, mmf.Timeout, mmf.ReleasedError, mmf.TooLarge):
        assert issubclass(cls, mmf.Error)


def test_closed_segment_raises_released(name):
    seg = mmf.Segment.create(name, 64)
    seg.close()
    seg.close()  # idempotent
    with pytest.raises(mmf.ReleasedError):
        seg.read(0, 1)
    with pytest.raises(mmf.ReleasedError):
        len(seg)


def test_lock_buffer_outlives_closed_segment(name):
    seg = mmf.Segment.create(name, 64)
    lk = seg.write_lock()
    view = memoryview(lk)
    seg.close()
    view[0] = 1  # the mapping stays while the lock buffer lives
    assert view[0] == 1
    with pytest.raises(BufferError):
        lk.release()
    view.release()
    lk.release()
    assert not lk.held
    with pytest.raises(mmf.ReleasedError):
        memoryview(lk)


def test_lock_calls_of_the_holding_thread_fail_instead_of_hanging(name):
    with mmf.Segment.create(name, 64) as seg:
        with seg.write_lock() as buf:
            for call in (lambda: seg.write(0, b"x"), lambda: seg.read(0, 1),
                         lambda: seg.read_lock(), lambda: seg.write_lock(timeout=None),
                         lambda: seg.wait_for_write(0, timeout=None)):
                with pytest.raises(mmf.InvalidArgument, match="holds a lock"):
                    call()
            buf[0] = 1
            # Another thread waits for the lock instead: it is a different holder.
            got = {}
            t = threading.Thread(target=lambda: got.setdefault("v", seg.read(0, 1)))
            t.start()
            time.sleep(0.05)
            assert t.is_alive(), "the other thread waits for the write lock"
        t.join(5.0)
        assert got["v"] == b"\x01"
        assert seg.read(0, 1) == b"\x01", "released: this thread may lock again"


def test_writer_process_dying_in_the_lock_poisons_until_cleared(name):
    import subprocess
    import sys

    with mmf.Segment.create(name, 64) as seg:
        ro = mmf.Segment.open_read_only(name)
        with pytest.raises(mmf.ReadOnly):
            ro.write_lock(timeout=0.1)
        child = "import mmf, os, sys\nlk = mmf.Segment.open(sys.argv[1]).write_lock()\nos._exit(3)"
        assert subprocess.run([sys.executable, "-c", child, name], timeout=30).returncode == 3
        with pytest.raises(mmf.Poisoned):
            seg.write_lock(timeout=5.0)
        with pytest.raises(mmf.Poisoned):
            seg.read(0, 1)
        assert seg.is_poisoned
        seg.clear_poison()
        assert not seg.is_poisoned
        with seg.write_lock(timeout=5.0) as buf:
            buf[0] = 7
        assert seg.read(0, 1) == b"\x07"
