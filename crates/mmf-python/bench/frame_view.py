"""What a Python consumer pays to see a 1080p frame: ``latest()`` + ``frame.array`` (a numpy
view of shared memory) next to ``numpy.copy`` of the same frame. Not a test: a timed loop.

    python bench/frame_view.py [--camera PATH] [--runs 5] [--frames 200] [--python-writer]

The writer is the Rust camera demo (``cargo build --release --example camera -p mmf``;
``--camera`` or ``MMF_CAMERA_EXE``, default ``target/release/examples/camera``) at
1920x1080 rgb24, or with ``--python-writer`` a Python process publishing the same size.
Four measurements, each the median of several runs: the timed loops (``latest()`` +
``frame.array`` + release back to back, then ``numpy.copy`` of one frame back to back), and
per frame as a sleeping consumer sees it (timed right after ``wait_next`` wakes, on caches
the camera and its other consumer just flushed, where any small numpy call costs tens of
microseconds: ``numpy.empty(3)`` is timed beside it for reference), and the writer's side:
a frame written in place (``begin``/``commit``) next to ``publish`` of a copy; and
``wait_next()`` + ``frame.array`` in a loop against a Python writer that always has a newer
frame ready (publishing in place flat out), so that the wait never sleeps. Issue 15's goal,
view under 1% of the copy, is about the first and the last.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import mmf

WIDTH, HEIGHT = 1920, 1080

PY_WRITER = r"""
import sys, time
import numpy as np
import mmf
name, seconds = sys.argv[1], float(sys.argv[2])
frame = np.zeros((1080, 1920, 3), np.uint8)
with mmf.FrameWriter.create(name, frame.nbytes, max_readers=2) as w:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        frame.reshape(-1)[:8] = np.frombuffer(n.to_bytes(8, "little"), np.uint8)
        w.publish(frame, width=1920, height=1080, pixel_format=mmf.RGB24, tag=n)
        time.sleep(1 / 60)
"""


# A writer that always has a newer frame ready: it publishes 1080p frames in place as fast
# as it can (begin + a stamp + commit, no rendering), so a reader's wait_next never sleeps.
FLAT_OUT_WRITER = r"""
import sys, time
import mmf
name, seconds = sys.argv[1], float(sys.argv[2])
with mmf.FrameWriter.create(name, 1080 * 1920 * 3, max_readers=2) as w:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        with w.begin(shape=(1080, 1920, 3)) as f:
            f.data[:8] = n.to_bytes(8, "little")
            f.set_meta(pixel_format=mmf.RGB24, tag=n)
            f.commit()
"""


def start_writer(args, name, seconds):
    if args.python_writer:
        return subprocess.Popen([sys.executable, "-c", PY_WRITER, name, str(seconds)])
    camera = args.camera or os.environ.get("MMF_CAMERA_EXE")
    if not camera:
        root = Path(__file__).resolve().parents[3]
        camera = str(root / "target/release/examples/camera")
    # The demo wants one consumer of its own; the reader place it keeps spare is ours.
    return subprocess.Popen(
        [camera, "--consumers", "1", "--seconds", str(seconds), "--name", name,
         "--width", str(WIDTH), "--height", str(HEIGHT), "--fps", "60"],
        # Its own consumer reports to it on a pipe; once it is killed, that report fails.
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def loop_run(reader, iterations):
    """The timed loops: ``latest()`` + ``frame.array`` + release, then ``numpy.copy`` of a
    frame's array, each ``iterations`` times back to back; ns per iteration of each."""
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(iterations):
        frame = reader.latest()
        arr = frame.array
        del arr
        frame.release()
    t1 = clock()
    with reader.latest() as frame:
        arr = frame.array
        assert arr.shape == (HEIGHT, WIDTH, 3)
        t2 = clock()
        for _ in range(iterations):
            copy = np.copy(arr)
        t3 = clock()
        del arr, copy
    return (t1 - t0) / iterations, (t3 - t2) / iterations


def cold_run(reader, frames):
    """Per frame, as a consumer that sleeps until the frame comes: wake in ``wait_next``,
    then time ``latest()`` + ``frame.array``, ``numpy.copy`` of it, and for reference
    ``numpy.empty(3)`` (the cost of any small numpy object on caches the other processes
    just flushed); the median of each, in ns."""
    views, copies, empties = [], [], []
    clock = time.perf_counter_ns
    for _ in range(frames):
        with reader.wait_next(5.0):
            pass
        t0 = clock()
        frame = reader.latest()
        arr = frame.array
        t1 = clock()
        copy = np.copy(arr)
        t2 = clock()
        np.empty(3)
        t3 = clock()
        del arr, copy
        frame.release()
        views.append(t1 - t0)
        copies.append(t2 - t1)
        empties.append(t3 - t2)
    return tuple(statistics.median(x) for x in (views, copies, empties))


def ready_run(iterations):
    """``wait_next()`` + ``frame.array`` + release, as the issue words it, with a writer that
    always has a newer frame ready (so the wait never sleeps and the time is the take and
    the view), then ``numpy.copy`` of such a frame; ns per iteration of each, and how many
    of the waits returned a frame newer than the one before (all, unless the writer
    stalled)."""
    name = f"bench-ready-{os.getpid()}"
    writer = subprocess.Popen(
        [sys.executable, "-c", FLAT_OUT_WRITER, name, str(10 + iterations / 1000)]
    )
    clock = time.perf_counter_ns
    try:
        with mmf.FrameReader.open_wait(name, 30.0) as reader:
            for _ in range(100):  # warm-up
                reader.wait_next(5.0).release()
            last, newer = 0, 0
            t0 = clock()
            for _ in range(iterations):
                frame = reader.wait_next(5.0)
                arr = frame.array
                newer += frame.seq > last
                last = frame.seq
                del arr
                frame.release()
            t1 = clock()
            with reader.wait_next(5.0) as frame:
                arr = frame.array
                assert arr.shape == (HEIGHT, WIDTH, 3)
                t2 = clock()
                for _ in range(iterations):
                    copy = np.copy(arr)
                t3 = clock()
                del arr, copy
    finally:
        writer.kill()
        writer.wait()
    return (t1 - t0) / iterations, (t3 - t2) / iterations, newer


def writer_run(iterations):
    """The writer's side, in a channel of its own: ``begin()`` + ``commit()`` alone (the
    cost of writing in place, without the writing), ``begin()`` + filling ``frame.array`` +
    ``commit()``, and ``publish`` of a numpy frame (one copy); ns per frame of each."""
    clock = time.perf_counter_ns
    img = np.full((HEIGHT, WIDTH, 3), 7, np.uint8)
    with mmf.FrameWriter.create(f"bench-writer-{os.getpid()}", img.nbytes) as w:
        t0 = clock()
        for _ in range(iterations):
            with w.begin(shape=img.shape) as frame:
                frame.commit()
        t1 = clock()
        for _ in range(iterations):
            with w.begin(shape=img.shape) as frame:
                arr = frame.array
                arr[...] = 7
                del arr
                frame.commit()
        t2 = clock()
        for _ in range(iterations):
            w.publish(img, width=WIDTH, height=HEIGHT, pixel_format=mmf.RGB24)
        t3 = clock()
    return (t1 - t0) / iterations, (t2 - t1) / iterations, (t3 - t2) / iterations


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camera")
    parser.add_argument("--python-writer", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()
    name = f"bench-frame-view-{os.getpid()}"
    seconds = 10 + args.runs * args.frames / 25
    writer = start_writer(args, name, seconds)
    us = 1e3
    try:
        with mmf.FrameReader.open_wait(name, 30.0) as reader:
            cold_run(reader, 10)  # warm-up
            loops, colds = [], []
            for run in range(args.runs):
                loops.append(loop_run(reader, args.frames))
                colds.append(cold_run(reader, args.frames))
                (lv, lc), (cv, cc, ce) = loops[-1], colds[-1]
                print(f"run {run + 1}: loop: view {lv / us:6.2f} us, copy {lc / us:7.1f} us | "
                      f"per frame after wait_next: view {cv / us:6.2f} us, copy {cc / us:7.1f} us, "
                      f"numpy.empty(3) {ce / us:5.2f} us")
        med = lambda rows, i: statistics.median(r[i] for r in rows)  # noqa: E731
        lv, lc = med(loops, 0), med(loops, 1)
        cv, cc, ce = med(colds, 0), med(colds, 1), med(colds, 2)
        who = "Python writer" if args.python_writer else "Rust camera"
        print(f"\n{who}, {WIDTH}x{HEIGHT} rgb24 ({WIDTH * HEIGHT * 3} bytes), median of "
              f"{args.runs} runs of {args.frames}:")
        print(f"  timed loop:  latest()+array {lv / us:.2f} us   numpy.copy {lc / us:.1f} us"
              f"   view/copy = {100 * lv / lc:.3f} %  (goal < 1 %)")
        print(f"  per frame, right after wait_next wakes: latest()+array {cv / us:.2f} us   "
              f"numpy.copy {cc / us:.1f} us   view/copy = {100 * cv / cc:.3f} %")
        print(f"  (cold reference: numpy.empty(3) right after those {ce / us:.2f} us)")
        readies = [ready_run(args.frames) for _ in range(args.runs)]
        rv, rc = med(readies, 0), med(readies, 1)
        fresh = min(r[2] for r in readies)
        print(f"  wait_next loop, a newer frame always ready: wait_next()+array {rv / us:.2f} us"
              f"   numpy.copy {rc / us:.1f} us   view/copy = {100 * rv / rc:.3f} %  "
              f"(goal < 1 %; at least {fresh} of {args.frames} waits took a newer frame)")
        writes = [writer_run(args.frames) for _ in range(args.runs)]
        wb, wf, wp = med(writes, 0), med(writes, 1), med(writes, 2)
        print(f"  writer: begin()+commit() {wb / us:.2f} us   begin()+fill array+commit() "
              f"{wf / us:.1f} us   publish(numpy frame) {wp / us:.1f} us")
    finally:
        writer.kill()
        writer.wait()


if __name__ == "__main__":
    main()
