"""The Rust camera demo (another process) to a Python reader, and Python frames written in
place to the demo's Rust consumer: frames checked in place on both sides."""

import os
import subprocess
import time

import numpy as np
import pytest

import mmf

CAMERA = os.environ.get("MMF_CAMERA_EXE")


@pytest.mark.skipif(
    not CAMERA and not os.environ.get("MMF_REQUIRE_CAMERA"),
    reason="MMF_CAMERA_EXE not set (cargo xtask test --only python sets it)",
)
def test_rust_camera_to_python_reader(name):
    assert CAMERA, "MMF_REQUIRE_CAMERA is set but MMF_CAMERA_EXE is not"
    width, height, frames = 320, 240, 40
    # The camera alone (no Rust consumers of its own): it runs `--seconds` and keeps reader
    # places for outside readers, one of which is this test.
    camera = subprocess.Popen(
        [CAMERA, "--consumers", "0", "--seconds", "3", "--name", name,
         "--width", str(width), "--height", str(height), "--fps", "100"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with mmf.FrameReader.open_wait(name, 20.0) as reader:
            start, end = reader._mapping_range()
            last = 0
            for _ in range(frames):
                with reader.wait_next(10.0) as frame:
                    arr = frame.array
                    assert arr.shape == (height, width, 3)
                    assert frame.pixel_format == mmf.RGB24
                    ptr = arr.__array_interface__["data"][0]
                    assert start <= ptr < end
                    stamp = int.from_bytes(bytes(frame.data[:8]), "little")
                    assert stamp == frame.tag == frame.seq, "the camera's counter, stamped"
                    assert frame.seq > last
                    last = frame.seq
                    # The test pattern: bars of 16/235 and a white square, nothing else.
                    assert np.isin(arr.reshape(-1)[8:], (16, 235, 255)).all()
                    del arr
        assert camera.wait(timeout=60) == 0
    finally:
        camera.kill()


@pytest.mark.skipif(
    not CAMERA and not os.environ.get("MMF_REQUIRE_CAMERA"),
    reason="MMF_CAMERA_EXE not set (cargo xtask test --only python sets it)",
)
def test_python_in_place_writer_to_rust_consumer(name):
    assert CAMERA, "MMF_REQUIRE_CAMERA is set but MMF_CAMERA_EXE is not"
    # The demo's Rust consumer (waits for the channel, reads every new frame for `--seconds`,
    # asserts each frame's first 8 bytes equal its tag, and reports on stdout).
    consumer = subprocess.Popen(
        [CAMERA, "--consumer", name, "--seconds", "1.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    published = 0
    try:
        with mmf.FrameWriter.create(name, 64 * 48 * 3) as w:
            deadline = time.monotonic() + 30
            while consumer.poll() is None and time.monotonic() < deadline:
                with w.begin(shape=(48, 64, 3)) as frame:
                    arr = frame.array
                    arr[...] = 16
                    arr.reshape(-1)[:8] = np.frombuffer(frame.seq.to_bytes(8, "little"), np.uint8)
                    del arr
                    frame.set_meta(pixel_format=mmf.RGB24, tag=frame.seq)
                    published = frame.commit()
                time.sleep(0.002)
        out, err = consumer.communicate(timeout=30)
    finally:
        consumer.kill()
    assert consumer.returncode == 0, err
    report = dict(kv.split("=") for kv in out.split("report", 1)[1].split())
    assert int(report["frames"]) >= 30, (report, published)  # ~500 unloaded
    assert int(report["frames"]) <= published
