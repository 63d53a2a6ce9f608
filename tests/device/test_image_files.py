"""Hostile photograph files (issue 16 items 3, 4, 11): FIFOs, devices, huge files, decompression bombs, other
formats, RGBA margins, unreadable paths. Each gets one sentence, quickly, and never stops the other files."""

from __future__ import annotations

import errno
import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import device.imageio as imageio
from device.camera import draw_fundus
from device.cli import cli
from device.errors import ImageReadError, ImageTooSmallError
from device.imageio import MAX_IMAGE_PIXELS, load_image
from device.preprocess import preprocess
from tests.helpers import finishes


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A small, valid PNG header of a huge grey image (all-zero rows compress to almost nothing)."""
    rows = zlib.compress(b"\0" * (width + 1) * 16, 9)  # only 16 rows are stored: it is refused before decoding
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b""))



def test_a_fifo_named_jpg_is_refused_at_once(tmp_path):
    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)
    exc = finishes(lambda: load_image(fifo))
    assert isinstance(exc, ImageReadError)
    assert str(exc) == "camera.jpg is a named pipe (FIFO), not a photograph file; give the path of a JPEG or PNG file."


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_symlink_to_a_device_is_refused(tmp_path, device):
    link = tmp_path / "photo.png"
    link.symlink_to(device)
    exc = finishes(lambda: load_image(link))
    assert isinstance(exc, ImageReadError) and str(exc) == ("photo.png is a device, not a photograph file; give the "
                                                            "path of a JPEG or PNG file.")


def test_a_file_above_the_byte_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "MAX_IMAGE_BYTES", 1000)
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * 2000)
    with pytest.raises(ImageReadError, match=r"big\.png is larger than 0 MB, the most the unit reads"):
        load_image(big)


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    # before: a 1.3 MB PNG of 20000 x 20000 took 2.5 GB and 11 s to decode
    decoded = []
    monkeypatch.setattr(imageio.cv2, "imdecode", lambda *a: decoded.append(a) or None)
    (tmp_path / "huge.png").write_bytes(bomb_png(20000, 20000))
    with pytest.raises(ImageReadError) as err:
        load_image(tmp_path / "huge.png")
    assert str(err.value) == ("The file huge.png has 400 million pixels, more than the 40 million the unit screens; "
                              "export the photograph at a smaller size.")
    assert decoded == []  # refused before any pixel was decoded
    with pytest.raises(ImageReadError, match=r"^The image has 48 million pixels, more than the 40 million"):
        load_image(bomb_png(8000, 6000), name="the image")  # below Pillow's own limit: our budget decides


def test_the_pixel_budget_admits_a_large_camera_photograph():
    side = int(MAX_IMAGE_PIXELS ** 0.5)
    with pytest.raises(ImageReadError) as err:  # the header passes; its 16 stored rows make it a corrupt image
        load_image(bomb_png(side, side))
    assert "million" not in str(err.value)


@pytest.mark.parametrize("suffix,fmt", [(".gif", "GIF"), (".webp", "WEBP")])
def test_other_formats_are_answered_by_name(tmp_path, suffix, fmt):
    path = tmp_path / f"eye{suffix}"
    Image.fromarray(draw_fundus(1, 320, 240)).save(path, format=fmt)
    with pytest.raises(ImageReadError) as err:
        load_image(path)
    assert str(err.value) == (f"The file eye{suffix} is a {fmt} image, which the unit does not read; save it as JPEG "
                              "or PNG and try again.")


def test_a_folder_scan_answers_every_image_file(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), draw_fundus(1, 320, 240)[..., ::-1])
    Image.fromarray(draw_fundus(2, 320, 240)).save(tmp_path / "b.gif")
    Image.fromarray(draw_fundus(3, 320, 240)).save(tmp_path / "c.webp")
    (tmp_path / "d.heic").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 100)
    (tmp_path / "notes.txt").write_text("not an image")
    res = CliRunner().invoke(cli, ["screen", str(tmp_path), "--json", "--model", "fake"])
    objs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [Path(o["image"]).name for o in objs] == ["a.png", "b.gif", "c.webp", "d.heic"]  # before: only a.png
    assert "verdict" in objs[0]
    assert objs[3]["error"].endswith("d.heic is a HEIC image, which the unit does not read; save it as JPEG or PNG "
                                     "and try again.")
    assert res.exit_code == 1


def test_an_rgba_photograph_is_composited_on_black():
    rgb = draw_fundus(4, 320, 240)
    rgba = np.dstack([np.full_like(rgb, 255), np.zeros(rgb.shape[:2], np.uint8)])  # white, fully transparent
    rgba[60:180, 100:220, :3] = rgb[60:180, 100:220]
    rgba[60:180, 100:220, 3] = 255
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    got = load_image(png.tobytes())
    assert got[0, 0].tolist() == [0, 0, 0]  # before: the white of the transparent margin
    assert np.array_equal(got[60:180, 100:220], rgb[60:180, 100:220])


def test_one_bad_path_never_stops_the_others(tmp_path, monkeypatch):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), draw_fundus(1, 320, 240)[..., ::-1])
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    too_long = tmp_path / ("x" * 300 + ".jpg")  # ENAMETOOLONG: Path.is_dir() raised it before
    locked = tmp_path / "locked"
    locked.mkdir()
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    res = CliRunner().invoke(cli, ["screen", str(too_long), str(locked), str(fifo), str(good), "--json", "--model",
                                   "fake"])
    objs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(objs) == 4 and "verdict" in objs[3], res.output
    assert "cannot be read (File name too long)" in objs[0]["error"]
    assert objs[1]["error"] == (f"The folder {locked} cannot be read (Permission denied); check its permissions "
                                "and try again.")
    assert "is a named pipe (FIFO)" in objs[2]["error"]


def test_messages_keep_the_case_of_file_names():
    with pytest.raises(ImageTooSmallError) as err:
        preprocess(draw_fundus(1, 100, 80), label="Tiny32.jpg")
    assert str(err.value).startswith("The photograph Tiny32.jpg is only 100x80 pixels")
    with pytest.raises(ImageTooSmallError, match=r"^The photograph is only"):
        preprocess(draw_fundus(1, 100, 80))
