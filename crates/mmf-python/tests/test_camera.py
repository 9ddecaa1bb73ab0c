"""The Rust camera demo (another process) to a Python reader: frames checked in place."""

import os
import subprocess

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
