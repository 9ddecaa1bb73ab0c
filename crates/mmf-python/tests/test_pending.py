"""Frames written in place (``FrameWriter.begin`` -> ``PendingFrame``) and user headers: read
in another process, abandoned without a trace, and the same export rules as frames."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

import mmf


def stamp(arr: np.ndarray, seq: int) -> None:
    """Fills `arr` (uint8) with `seq % 251`, its first 8 bytes with `seq`."""
    flat = arr.reshape(-1)
    flat[:] = seq % 251
    flat[:8] = np.frombuffer(seq.to_bytes(8, "little"), dtype=np.uint8)


IN_PLACE_CHILD = r"""
import json, sys
import mmf
name, count = sys.argv[1], int(sys.argv[2])
r = mmf.FrameReader.open_wait(name, 10.0)
print("ready", flush=True)
seen, bad, last = 0, [], 0
while last < count:
    with r.wait_next(10.0) as f:
        a = f.array
        seq = f.seq
        ok = (
            int.from_bytes(bytes(f.data[:8]), "little") == seq
            and bytes(f.user_header[:8]) == seq.to_bytes(8, "little")
            and bytes(f.user_header[8:16]) == b"\0" * 8
            and f.tag == seq * 10
            and a.shape == (f.height, f.width, 3) == (48, 64, 3)
            and f.pixel_format == mmf.RGB24
            and (a.reshape(-1)[8:] == seq % 251).all()
            and seq > last
        )
        if not ok:
            bad.append(seq)
        last = seq
        seen += 1
        del a
print(json.dumps({"seen": seen, "bad": bad, "last": last}), flush=True)
"""


def test_in_place_frames_to_a_reader_in_another_process(name):
    count, shape = 200, (48, 64, 3)
    with mmf.FrameWriter.create(name, 64 * 48 * 3, user_header_len=16) as w:
        child = subprocess.Popen(
            [sys.executable, "-c", IN_PLACE_CHILD, name, str(count)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout.readline().strip() == "ready"
            for seq in range(1, count + 1):
                with w.begin(shape=shape) as f:
                    assert f.seq == seq
                    arr = f.array
                    assert arr.shape == shape and arr.flags.writeable
                    stamp(arr, seq)
                    header = f.user_header
                    header[:8] = seq.to_bytes(8, "little")
                    del arr, header
                    f.set_meta(pixel_format=mmf.RGB24, tag=seq * 10)
                    assert f.commit() == seq
                time.sleep(0.002)  # the child checks each frame slowly; let it see most
            out, _ = child.communicate(timeout=30)
        finally:
            child.kill()
    assert child.returncode == 0
    result = json.loads(out)
    assert result["bad"] == [] and result["last"] == count
    assert result["seen"] >= count // 4, result


def test_shape_sets_width_and_height_and_commit_length(name):
    with mmf.FrameWriter.create(name, 1000) as w, mmf.FrameReader.open(name) as r:
        with w.begin(shape=(2, 5, 3)) as f:
            f.array[:] = 9
            assert f.commit() == 1  # the shape's 30 bytes
        with r.latest() as got:
            assert (got.width, got.height, got.len) == (5, 2, 30)
            assert (got.array == 9).all()
        with w.begin() as f:  # no shape: 1-D over the whole slot, 0x0
            assert f.array.shape == (1000,) and len(f) == 1000
            f.data[:3] = b"abc"
            f.set_meta(width=3)
            assert f.commit(3) == 2
        with r.latest() as got:
            assert (got.width, got.height, bytes(got.data)) == (3, 0, b"abc")
        with w.begin() as f:
            f.data[:7] = b"x" * 7
            assert f.commit() == 3  # None without a shape: max_frame_len
        with r.latest() as got:
            assert got.len == 1000
        f = w.begin()
        f.array.reshape(10, 100)[0, :2] = (1, 2)  # reshape is a view too
        f.commit(2)
        with r.latest() as got:
            assert bytes(got.data) == b"\x01\x02"


def test_pending_array_is_a_view_of_the_slot(name):
    with mmf.FrameWriter.create(name, 256) as w, mmf.FrameReader.open(name) as r:
        with w.begin() as f:
            arr, mv = f.array, f.data
            assert arr.__array_interface__["data"][0] == np.frombuffer(mv, np.uint8).ctypes.data
            arr[:4] = (5, 6, 7, 8)
            assert bytes(mv[:4]) == b"\x05\x06\x07\x08", "one memory, two views"
            del arr, mv
            f.commit(4)
        assert bytes(r.latest().data) == b"\x05\x06\x07\x08"


def test_abandon_leaves_nothing_published(name):
    with mmf.FrameWriter.create(name, 64, max_readers=1) as w, mmf.FrameReader.open(name) as r:
        f = w.begin()
        f.data[:4] = b"gone"
        f.abandon()
        f.abandon()  # idempotent
        assert not f.pending
        with w.begin() as f:
            f.data[:4] = b"lost"  # the block ends without commit
        with pytest.raises(KeyError):
            with w.begin() as f:
                f.data[:4] = b"oops"
                raise KeyError("exception in the block")
        w.begin().data[:4] = b"drop"  # the object dies at once
        assert w.seq == 0
        assert r.latest() is None and r.try_next() is None
        with pytest.raises(mmf.Timeout):
            r.wait_next(0.05)
        # The slots came back: many more frames than slots still go through.
        for seq in range(1, 20):
            with w.begin() as f:
                f.data[:1] = bytes([seq])
                assert f.commit(1) == seq
        with r.latest() as got:
            assert (got.seq, bytes(got.data)) == (19, b"\x13")


def test_pending_frame_export_rules(name):
    with mmf.FrameWriter.create(name, 64, user_header_len=8) as w, mmf.FrameReader.open(name) as r:
        f = w.begin()
        for view in (f.array, f.data, f.user_header, np.asarray(f), np.frombuffer(f, np.uint8)):
            with pytest.raises(BufferError, match=r"del.*copy"):
                f.commit(1)
            with pytest.raises(BufferError):
                f.abandon()
            with pytest.raises(BufferError):
                w.close()
            assert f.pending
            del view
        assert r.latest() is None
        assert f.commit(1) == 1
        for attr in ("seq", "data", "array", "user_header"):
            with pytest.raises(mmf.ReleasedError):
                getattr(f, attr)
        for call in (lambda: f.commit(), lambda: f.set_meta(width=1), lambda: len(f),
                     lambda: memoryview(f)):
            with pytest.raises(mmf.ReleasedError):
                call()
        f.abandon()  # nothing to do after a commit
        g = w.begin()
        arr = g.array
        with pytest.raises(BufferError):
            with g:
                pass
        del arr
        g.__exit__(None, None, None)
        with pytest.raises(mmf.ReleasedError):
            g.array
        assert r.latest().seq == 1


def test_publish_or_begin_while_pending_raises(name):
    with mmf.FrameWriter.create(name, 64) as w, mmf.FrameReader.open(name) as r:
        f = w.begin()
        with pytest.raises(mmf.WouldBlock):
            w.publish(b"x")
        with pytest.raises(mmf.WouldBlock):
            w.begin()
        assert w.seq == 0 and w.name == name and w.max_frame_len == 64
        f.data[:2] = b"ok"
        f.commit(2)
        assert w.publish(b"next") == 2
        assert [bytes(r.try_next().data)] == [b"next"]
        g = w.begin()
        w.close()  # abandons the pending frame
        with pytest.raises(mmf.ReleasedError):
            g.data
        with pytest.raises(mmf.ReleasedError):
            w.begin()


def test_too_long_commit_raises_too_large_and_stays_pending(name):
    with mmf.FrameWriter.create(name, 32) as w, mmf.FrameReader.open(name) as r:
        with pytest.raises(mmf.TooLarge):
            w.begin(shape=(4, 3, 3))  # 36 bytes
        with pytest.raises(mmf.InvalidArgument):
            w.begin(shape=())
        with w.begin() as f:
            with pytest.raises(mmf.TooLarge):
                f.commit(33)
            assert f.pending and r.latest() is None
            assert f.commit(32) == 1


def test_header_travels_with_its_frame(name):
    with mmf.FrameWriter.create(name, 16, user_header_len=12, max_readers=1) as w, \
            mmf.FrameReader.open(name) as r:
        assert w.user_header_len == 12
        w.publish(b"one", header=b"first")
        with r.latest() as f:
            assert bytes(f.user_header) == b"first" + b"\0" * 7
            assert f.user_header.readonly
        w.publish(b"two")  # no header: all zero, not the slot's old bytes
        with r.latest() as f:
            assert bytes(f.user_header) == b"\0" * 12
        with pytest.raises(mmf.InvalidArgument):
            w.publish(b"x", header=bytes(13))
        # A pinned frame keeps its header while the writer publishes on into other slots.
        w.publish(b"pinned", header=b"mine")
        held = r.latest()
        header = held.user_header
        for seq in range(10):
            w.publish(b"later", header=b"h%d" % seq)
        assert bytes(header[:4]) == b"mine" and bytes(held.data) == b"pinned"
        with pytest.raises(BufferError):
            held.release()  # the header's view counts
        del header
        held.release()
        with r.latest() as f:
            assert bytes(f.user_header[:2]) == b"h9" and bytes(f.data) == b"later"
        # A header view alone keeps its frame (object and pin) alive, in any GC order.
        header = r.latest().user_header
        w.publish(b"newer", header=b"new")
        for seq in range(10):
            w.publish(b"more")
        assert bytes(header[:2]) == b"h9"
        with pytest.raises(BufferError):
            r.latest()  # taking another frame would release the one the header views
        del header
        with r.latest() as f:
            assert bytes(f.data) == b"more"
    with mmf.FrameWriter.create(name + "-none", 16) as w, mmf.FrameReader.open(name + "-none") as r:
        w.publish(b"x")
        with w.begin() as f:
            assert f.user_header is None
        with r.latest() as f:
            assert f.user_header is None


def test_numpy_asarray_and_frombuffer_count_but_ndarray_buffer_does_not(name):
    with mmf.FrameWriter.create(name, 64) as w, mmf.FrameReader.open(name) as r:
        w.publish(b"abcdefgh")
        f = r.latest()
        for view in (np.asarray(f), np.frombuffer(f, np.uint8)):
            assert bytes(view) == b"abcdefgh"
            with pytest.raises(BufferError):
                f.release()
            del view
        # The caveat the docs state: numpy.ndarray(shape, buffer=...) gives its buffer back
        # at once, so the frame does not know about it and releases under it.
        unguarded = np.ndarray((8,), np.uint8, buffer=f)
        f.release()
        assert not f.pinned
        del unguarded


def test_publishing_a_pending_frames_own_view_is_refused_not_deadlocked(name):
    with mmf.FrameWriter.create(name, 16) as w, mmf.FrameWriter.create(name + "-b", 16) as other:
        f = w.begin()
        with pytest.raises(mmf.WouldBlock):
            w.publish(f.data)  # its own writer is busy with it
        assert other.publish(f.data[:4]) == 1  # another channel may copy it
        with pytest.raises(mmf.InvalidArgument):
            w.publish(b"x", header=f)  # 16 bytes of header for a channel without one
        f.commit(0)
        assert w.seq == 1
