"""Display sinks: a file-backed framebuffer (RGB565, XRGB8888, padded stride), PNG files, the fake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.display import (
    FakeDisplay,
    FileDisplay,
    FileDisplayConfig,
    FramebufferDisplay,
    FramebufferDisplayConfig,
    encode_pixels,
    letterbox,
    open_display,
)
from device.errors import HardwareError
from tests.helpers import REPO_ROOT

W, H = 64, 40


def fake_fb(tmp_path, bpp: int, stride: int | None = None):
    """A framebuffer made of a plain file plus its sysfs attributes."""
    sysfs = tmp_path / "sys"
    sysfs.mkdir()
    stride = stride or W * bpp // 8
    (sysfs / "virtual_size").write_text(f"{W},{H}\n")
    (sysfs / "bits_per_pixel").write_text(f"{bpp}\n")
    (sysfs / "stride").write_text(f"{stride}\n")
    dev = tmp_path / "fb0"
    dev.write_bytes(b"\x00" * stride * H)
    return FramebufferDisplayConfig(device=str(dev), sysfs_dir=str(sysfs)), dev, stride


def quadrants() -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[: H // 2, : W // 2] = (255, 0, 0)
    img[: H // 2, W // 2:] = (0, 255, 0)
    img[H // 2:, : W // 2] = (0, 0, 255)
    img[H // 2:, W // 2:] = (200, 100, 50)
    return img


def test_framebuffer_rgb565(tmp_path):
    cfg, dev, stride = fake_fb(tmp_path, 16)
    fb = FramebufferDisplay(cfg)
    assert fb.size == (W, H) and fb.pixel_format == "RGB565"
    fb.show(quadrants())
    fb.close()
    words = np.frombuffer(dev.read_bytes(), "<u2").reshape(H, W)
    assert words[0, 0] == 0xF800 and words[0, W - 1] == 0x07E0 and words[H - 1, 0] == 0x001F
    r, g, b = words[H - 1, W - 1] >> 11, (words[H - 1, W - 1] >> 5) & 0x3F, words[H - 1, W - 1] & 0x1F
    assert (r, g, b) == (200 >> 3, 100 >> 2, 50 >> 3)


def test_framebuffer_xrgb8888_with_padded_stride(tmp_path):
    cfg, dev, stride = fake_fb(tmp_path, 32, stride=W * 4 + 64)
    fb = FramebufferDisplay(cfg)
    assert fb.pixel_format == "XRGB8888"
    fb.show(quadrants())
    raw = np.frombuffer(dev.read_bytes(), np.uint8).reshape(H, stride)
    px = raw[:, : W * 4].reshape(H, W, 4)
    assert tuple(px[0, 0]) == (0, 0, 255, 255)  # B, G, R, X in memory for red
    assert tuple(px[H - 1, W - 1][:3]) == (50, 100, 200)
    assert not raw[:, W * 4:].any()  # the padding after each row stays untouched (zero)
    assert fb.frames == 1


def test_framebuffer_letterboxes_other_sizes(tmp_path):
    cfg, dev, _ = fake_fb(tmp_path, 32)
    fb = FramebufferDisplay(cfg)
    fb.show(np.full((10, 10, 3), 255, np.uint8))  # square image on a 64x40 screen: black bars left/right
    px = np.frombuffer(dev.read_bytes(), np.uint8).reshape(H, W, 4)
    assert px[20, 32, 0] == 255 and px[20, 2, 0] == 0


def test_framebuffer_unsupported_depth_and_missing_device(tmp_path):
    cfg, _, _ = fake_fb(tmp_path, 24)
    with pytest.raises(HardwareError, match=r"24 bits per pixel.*fbset -depth 16"):
        FramebufferDisplay(cfg)
    with pytest.raises(HardwareError, match=r"is not available: check the display connection"):
        FramebufferDisplay(FramebufferDisplayConfig(device=str(tmp_path / "fb9"), sysfs_dir=str(tmp_path / "x")))


def test_encode_xbgr8888_and_unknown_format():
    px = encode_pixels(np.array([[[1, 2, 3]]], np.uint8), "XBGR8888")
    assert tuple(px[0, 0]) == (1, 2, 3, 255)
    with pytest.raises(ValueError, match=r"Unknown pixel format"):
        encode_pixels(np.zeros((1, 1, 3), np.uint8), "YUV")


def test_file_display_writes_numbered_pngs(tmp_path):
    d = FileDisplay(FileDisplayConfig(folder=str(tmp_path / "s")))
    d.show(quadrants(), "P0001 right/1")
    d.show(quadrants(), "")
    names = [p.name for p in d.written]
    assert names == ["0001_P0001_right_1.png", "0002_screen.png"]
    back = cv2.imread(str(d.written[0]))[..., ::-1]
    assert np.array_equal(back, quadrants())
    assert not list((tmp_path / "s").glob("*.tmp"))


def test_file_display_overwrite_mode(tmp_path):
    d = FileDisplay(FileDisplayConfig(folder=str(tmp_path), keep_all=False))
    d.show(quadrants(), "a")
    d.show(np.zeros((H, W, 3), np.uint8), "b")
    assert [p.name for p in tmp_path.iterdir()] == ["screen.png"]
    assert cv2.imread(str(tmp_path / "screen.png")).max() == 0


def test_fake_display_records_and_bounds_memory():
    d = open_display({"type": "fake", "width": 320, "height": 240})
    assert isinstance(d, FakeDisplay) and d.size == (320, 240)
    for i in range(20):
        d.show(np.full((4, 4, 3), i, np.uint8), f"s{i}")
    assert d.shown == [f"s{i}" for i in range(20)] and len(d.images) == 8 and d.last[0, 0, 0] == 19
    with pytest.raises(ValueError, match=r"RGB uint8"):
        d.show(np.zeros((4, 4), np.uint8))


def test_letterbox_keeps_aspect():
    out = letterbox(np.full((100, 50, 3), 9, np.uint8), 200, 100)
    assert out.shape == (100, 200, 3) and out[:, 75:125].min() == 9 and out[:, :70].max() == 0


@pytest.mark.hardware
def test_real_framebuffer_shows_a_screen():
    """On a unit: pytest --hardware tests/device/test_display.py (needs /dev/fb0 and the 'video' group); fails
    when the framebuffer is absent."""
    from device.screen_render import render_message

    fb = FramebufferDisplay(FramebufferDisplayConfig())
    fb.show(render_message("DISPLAY TEST", "If you can read this, the framebuffer sink works.", "info", fb.size))
    assert fb.frames == 1
    fb.close()


@pytest.mark.skipif(Path("/dev/fb0").exists(), reason="this machine has a framebuffer: the hardware test passes here")
def test_hardware_tests_fail_rather_than_skip_when_the_hardware_is_absent():
    """``--hardware`` means "this unit has the hardware": a missing framebuffer must be a failure, never a skip."""
    test = f"{Path(__file__).relative_to(REPO_ROOT)}::test_real_framebuffer_shows_a_screen"
    asked = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hardware", test],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert asked.returncode == 1 and "1 failed" in asked.stdout, asked.stdout[-2000:]
    assert "HardwareError" in asked.stdout
    plain = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and "1 skipped" in plain.stdout, plain.stdout[-2000:]
