"""Capture sources: fake, folder, OpenCV (against a real video file), picamera2 absent."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.camera import FakeCamera, FolderCamera, OpenCVCamera, OpenCVCameraConfig, PiCamera, draw_fundus, open_camera
from device.errors import HardwareError, ImageReadError
from device.imageio import list_images


def _write(path, rgb):
    cv2.imwrite(str(path), rgb[..., ::-1])
    return path


def test_fake_camera_records_captures_and_survives_unplug():
    cam = FakeCamera(width=320, height=240)
    first = cam.capture()
    assert first.rgb.shape == (240, 320, 3) and first.rgb.dtype == np.uint8
    cam.unplug()
    with pytest.raises(HardwareError, match=r"plug it in|check its cable"):
        cam.capture()
    assert not cam.is_open  # a failed capture closes the device ...
    cam.plug()
    second = cam.capture()  # ... and the next capture reopens it
    assert cam.captures == ["fake:0", "fake:1"] and cam.failures == 1 and cam.opens == 2
    assert not np.array_equal(first.rgb, second.rgb)  # each capture draws a new photograph


def test_fake_camera_serves_given_frames_in_turn():
    frames = [np.full((240, 320, 3), v, np.uint8) for v in (10, 20)]
    cam = FakeCamera(frames=frames)
    values = [int(cam.capture().rgb[0, 0, 0]) for _ in range(3)]
    assert values == [10, 20, 10]


def test_folder_camera_serves_sorted_files_and_loops(tmp_path):
    _write(tmp_path / "b.png", draw_fundus(2, 320, 240))
    _write(tmp_path / "a.jpg", draw_fundus(1, 320, 240))
    (tmp_path / "notes.txt").write_text("not an image")
    cam = FolderCamera([tmp_path], loop=True)
    sources = [cam.capture().source for _ in range(3)]
    assert [s.rsplit("/", 1)[1] for s in sources] == ["a.jpg", "b.png", "a.jpg"]
    assert cam.served == sources


def test_folder_camera_without_loop_says_it_ran_out(tmp_path):
    _write(tmp_path / "a.png", draw_fundus(1, 320, 240))
    cam = FolderCamera([tmp_path], loop=False)
    cam.capture()
    with pytest.raises(HardwareError, match=r"no more photographs"):
        cam.capture()


def test_folder_camera_empty_folder_message(tmp_path):
    with pytest.raises(HardwareError, match=r"No images found in .*: put JPEG or PNG"):
        FolderCamera([tmp_path]).capture()


def test_folder_camera_bad_file_raises_and_moves_on(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    _write(tmp_path / "b.png", draw_fundus(1, 320, 240))
    cam = FolderCamera([tmp_path])
    with pytest.raises(ImageReadError):
        cam.capture()
    assert cam.capture().source.endswith("b.png")


def test_list_images_keeps_explicit_files_in_order(tmp_path):
    a = _write(tmp_path / "z.png", draw_fundus(1, 320, 240))
    sub = tmp_path / "sub"
    sub.mkdir()
    b = _write(sub / "y.png", draw_fundus(2, 320, 240))
    assert list_images([a, sub]) == [a, b]


def test_opencv_camera_reads_a_real_video_stream(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    assert writer.isOpened()
    for i in range(6):
        writer.write(np.full((240, 320, 3), (0, 0, 40 * i), np.uint8))  # BGR: red rises per frame
    writer.release()
    cam = OpenCVCamera(OpenCVCameraConfig(device=str(path), width=320, height=240, stale_frames=2))
    frame = cam.capture()
    assert frame.rgb.shape == (240, 320, 3)
    # two stale frames skipped -> frame 2, and OpenCV's BGR became RGB (red channel carries the value)
    assert abs(int(frame.rgb[120, 160, 0]) - 80) <= 8 and int(frame.rgb[120, 160, 2]) <= 8
    cam.close()


def test_opencv_camera_absent_device_is_one_sentence(tmp_path):
    cam = OpenCVCamera(OpenCVCameraConfig(device=str(tmp_path / "no-such-device")))
    with pytest.raises(HardwareError, match=r"is not connected: plug it in and press the button again\.$"):
        cam.capture()
    assert not cam.is_open


@pytest.mark.parametrize("url", ["rtsp://10.0.0.5/stream", "http://camera.local/video.mjpg", "udp://@:1234"])
def test_opencv_camera_refuses_network_streams(url):
    # issue 16 item 11, same class as socket:// links: no unit code path may open a network connection
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="is a network stream and the unit never opens network connections"):
        OpenCVCameraConfig(device=url)


def test_picamera_without_picamera2_says_how_to_install():
    try:
        import picamera2  # noqa: F401 - only whether it imports matters
        pytest.skip("picamera2 is installed here")
    except ImportError:
        pass
    with pytest.raises(HardwareError, match=r"apt install python3-picamera2"):
        PiCamera().capture()


def test_open_camera_picks_by_type(tmp_path):
    assert isinstance(open_camera({"type": "fake", "width": 320, "height": 240}), FakeCamera)
    cam = open_camera({"type": "folder", "path": "imgs"}, base_dir=tmp_path)
    assert isinstance(cam, FolderCamera) and cam._paths_arg == [tmp_path / "imgs"]
    assert isinstance(open_camera({"type": "opencv", "device": 3}), OpenCVCamera)
    with pytest.raises(ValueError):
        open_camera({"type": "webcam"})


@pytest.mark.hardware
@pytest.mark.parametrize("kind", ["picamera2", "opencv"])
def test_real_camera_captures_a_still(kind):
    """On a unit: pytest --hardware tests/device/test_camera.py -k <kind>; fails when that camera is absent."""
    cam = open_camera({"type": kind})
    try:
        frame = cam.capture()
    except HardwareError as exc:
        pytest.fail(f"--hardware was given but the {kind} camera does not work: {exc}")
    assert frame.rgb.ndim == 3 and frame.rgb.shape[2] == 3 and frame.rgb.dtype == np.uint8
    cam.close()
