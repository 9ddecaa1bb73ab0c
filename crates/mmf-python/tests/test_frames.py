"""Frame channels in one process and between Python processes: zero-copy views, the
no-use-after-release rule, the GIL released while waiting, typed errors."""

import gc
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import mmf


def frame_of(seq: int, width: int = 8, height: int = 4) -> np.ndarray:
    """A frame whose first 8 bytes are `seq` and whose other bytes are `seq % 251`."""
    arr = np.full((height, width, 3), seq % 251, dtype=np.uint8)
    arr.reshape(-1)[:8] = np.frombuffer(seq.to_bytes(8, "little"), dtype=np.uint8)
    return arr


def test_frame_metadata_and_shaped_array(name):
    with mmf.FrameWriter.create(name, 1024) as w, mmf.FrameReader.open(name) as r:
        assert r.latest() is None and r.try_next() is None
        seq = w.publish(frame_of(7), width=8, height=4, pixel_format=mmf.RGB24, tag=99)
        assert seq == 1 == w.seq
        with r.wait_next(1.0) as f:
            assert (f.seq, f.width, f.height, f.tag, f.len, len(f)) == (1, 8, 4, 99, 96, 96)
            assert f.pixel_format == mmf.fourcc("RGB3") == int.from_bytes(b"RGB3", "little")
            assert f.timestamp_ns > 0
            arr = f.array
            assert arr.shape == (4, 8, 3) and arr.dtype == np.uint8
            assert not arr.flags.writeable
            with pytest.raises(ValueError):
                arr.flags.writeable = True  # the base (a read-only memoryview) forbids it
            assert (arr == frame_of(7)).all()
            assert bytes(f.data[:8]) == (7).to_bytes(8, "little")
            del arr
        w.publish(b"\x01\x02\x03", width=2, height=2)  # 4 pixels do not divide 3 bytes
        with r.wait_next(1.0) as f:
            a = f.array
            assert a.shape == (3,) and a.tolist() == [1, 2, 3]
            del a


def test_array_is_a_view_of_the_mapping_and_stays_unchanged_while_pinned(name):
    with mmf.FrameWriter.create(name, 4096, max_readers=1) as w, mmf.FrameReader.open(name) as r:
        start, end = r._mapping_range()
        w.publish(frame_of(1, 32, 32), width=32, height=32)
        f = r.wait_next(1.0)
        arr = f.array
        ptr = arr.__array_interface__["data"][0]
        assert start <= ptr and ptr + arr.nbytes <= end, "the array points into shared memory"
        mv = f.data
        assert np.frombuffer(mv, np.uint8).__array_interface__["data"][0] == ptr
        before = arr.copy()
        # Many more publishes than the channel has slots: none may touch the pinned frame.
        for seq in range(2, 50):
            w.publish(frame_of(seq, 32, 32), width=32, height=32)
        assert (arr == before).all()
        del arr, mv
        f.release()
        newest = r.latest()
        assert newest.seq == 49 and (newest.array == frame_of(49, 32, 32)).all()


def test_accessors_raise_released_after_release(name):
    with mmf.FrameWriter.create(name, 64) as w, mmf.FrameReader.open(name) as r:
        w.publish(b"abcd")
        f = r.wait_next(1.0)
        f.release()
        f.release()  # idempotent, as memoryview.release()
        assert not f.pinned
        for attr in ("seq", "timestamp_ns", "width", "height", "pixel_format", "tag", "len",
                     "data", "array", "skipped", "user_header"):
            with pytest.raises(mmf.ReleasedError):
                getattr(f, attr)
        with pytest.raises(mmf.ReleasedError):
            memoryview(f)
        with pytest.raises(ValueError):  # ReleasedError is a ValueError, as for memoryview
            len(f)


def test_release_while_exported_raises_buffererror_and_keeps_frame(name):
    with mmf.FrameWriter.create(name, 64) as w, mmf.FrameReader.open(name) as r:
        w.publish(b"abcdefgh")
        f = r.wait_next(1.0)
        arr = f.array
        with pytest.raises(BufferError, match=r"del.*copy"):
            f.release()
        assert f.pinned and f.seq == 1
        with pytest.raises(BufferError):
            with f:
                pass
        w.publish(b"12345678")
        with pytest.raises(BufferError):
            r.wait_next(1.0)  # the next take would release the exported frame
        with pytest.raises(BufferError):
            r.close()
        assert bytes(arr) == b"abcdefgh"
        view = f.data
        del arr
        with pytest.raises(BufferError):
            f.release()  # the memoryview still exports it
        view.release()
        f.release()
        assert r.wait_next(1.0).seq == 2


def test_deleting_the_frame_object_unpins(name):
    with mmf.FrameWriter.create(name, 64) as w, mmf.FrameReader.open(name) as r:
        w.publish(b"one")
        f = r.wait_next(1.0)
        first = f
        del f
        assert first.pinned, "another reference keeps it"
        del first
        w.publish(b"two")
        assert bytes(r.wait_next(1.0).data) == b"two"


def test_array_outlives_reader_and_frame_objects(name):
    w = mmf.FrameWriter.create(name, 64)
    r = mmf.FrameReader.open(name)
    w.publish(b"keep me!")
    arr = r.wait_next(1.0).array  # the Frame object lives only through the array
    del r
    gc.collect()
    w.publish(b"overwrite")
    w.close()
    gc.collect()
    assert bytes(arr) == b"keep me!"
    del arr
    gc.collect()


def test_closed_reader_releases_its_frames(name):
    with mmf.FrameWriter.create(name, 64) as w:
        r = mmf.FrameReader.open(name)
        w.publish(b"x")
        f = r.wait_next(1.0)
        r.close()
        r.close()
        with pytest.raises(mmf.ReleasedError):
            f.data
        with pytest.raises(mmf.ReleasedError):
            r.latest()


def test_wait_next_releases_the_gil(name):
    with mmf.FrameWriter.create(name, 64) as w, mmf.FrameReader.open(name) as r:
        got = {}

        def wait():
            t0 = time.monotonic()
            with r.wait_next(5.0) as f:
                got["data"] = bytes(f.data)
            got["waited"] = time.monotonic() - t0

        t = threading.Thread(target=wait)
        t.start()
        # Python work on this thread while the other waits: impossible if it held the GIL.
        spins = 0
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            spins += 1
        w.publish(b"wake")
        t.join(5.0)
        assert not t.is_alive()
        assert got["data"] == b"wake"
        assert got["waited"] < 4.0
        assert spins > 1000


def test_typed_frame_errors(name):
    with pytest.raises(mmf.NotFound):
        mmf.FrameReader.open(name)
    with pytest.raises(mmf.Timeout):
        mmf.FrameReader.open_wait(name, 0.05)
    with pytest.raises(mmf.InvalidArgument):
        mmf.FrameWriter.create("no/slash", 64)
    with pytest.raises(mmf.InvalidArgument):
        mmf.FrameWriter.create(name, 0)
    w = mmf.FrameWriter.create(name, 16)
    with pytest.raises(mmf.AlreadyExists):
        mmf.FrameWriter.create(name, 16)
    r = mmf.FrameReader.open(name)
    with pytest.raises(mmf.TooLarge):
        w.publish(bytes(17))
    with pytest.raises((BufferError, ValueError)):  # numpy says ValueError
        w.publish(np.zeros((4, 4), np.uint8)[:, ::2])  # not contiguous: no hidden copy
    with pytest.raises(TypeError):
        w.publish(12)
    with pytest.raises(TimeoutError):
        r.wait_next(0.02)
    assert r.writer_alive
    w.publish(b"last")
    w.close()
    with pytest.raises(mmf.ReleasedError):
        w.publish(b"x")
    assert bytes(r.wait_next(1.0).data) == b"last", "the last frame still arrives"
    with pytest.raises(mmf.WriterGone):
        r.wait_next(1.0)
    assert not r.writer_alive


READER_CHILD = r"""
import json, sys
import numpy as np
import mmf
name, count = sys.argv[1], int(sys.argv[2])
r = mmf.FrameReader.open_wait(name, 10.0)
print("ready", flush=True)
seen, bad, last = 0, [], 0
while last < count:
    with r.wait_next(10.0) as f:
        a = f.array
        stamp = int.from_bytes(bytes(f.data[:8]), "little")
        if stamp != f.seq or f.seq <= last or a.shape != (f.height, f.width, 3):
            bad.append(f.seq)
        elif not (a.reshape(-1)[8:] == f.seq % 251).all():
            bad.append(f.seq)
        last = f.seq
        seen += 1
        del a
print(json.dumps({"seen": seen, "bad": bad, "last": last}), flush=True)
"""


def test_python_writer_to_python_reader_in_another_process(name):
    count = 200
    with mmf.FrameWriter.create(name, 64 * 48 * 3) as w:
        child = subprocess.Popen(
            [sys.executable, "-c", READER_CHILD, name, str(count)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout.readline().strip() == "ready"
            for seq in range(1, count + 1):
                w.publish(frame_of(seq, 64, 48), width=64, height=48, pixel_format=mmf.RGB24)
                time.sleep(0.0005)
            out, _ = child.communicate(timeout=30)
        finally:
            child.kill()
    assert child.returncode == 0
    result = json.loads(out)
    assert result["bad"] == [] and result["last"] == count
    assert result["seen"] >= count // 4, result
