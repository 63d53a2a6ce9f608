"""Reading fundus photographs into RGB uint8 arrays, with one-sentence errors for bad files; listing image files.

Pixels are decoded with OpenCV (8/16-bit, grey, RGB, RGBA; JPEG, PNG, TIFF, BMP); the header (format, size, EXIF
orientation) is read first with Pillow, which decodes no pixels, so a file that is not a regular file, is above
:data:`MAX_IMAGE_BYTES`, is in another format (GIF, WebP, HEIC) or has more than :data:`MAX_IMAGE_PIXELS` pixels
is refused with one sentence before anything large is allocated. OpenCV's ``IMREAD_UNCHANGED`` ignores the EXIF
orientation, so it is applied here.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from device.atomic import FileTooLargeError, SpecialFileError, read_regular
from device.errors import ImageReadError, subject

EXIF_ORIENTATION_TAG = 0x0112  # EXIF 2.3 §4.6.4 "Orientation"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
# Some cameras append a few kB of maker data after the end-of-image marker; look for it this far from the end.
JPEG_EOI_SEARCH_BYTES = 65536
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND"
# Extensions a folder of photographs is searched for (what OpenCV/Pillow read on every platform).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
# Image files the unit does not read: a folder scan lists them too, so each gets its own answer.
OTHER_IMAGE_EXTENSIONS = {".gif": "GIF", ".webp": "WebP", ".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF",
                          ".jp2": "JPEG 2000", ".jxl": "JPEG XL", ".dng": "raw (DNG)", ".cr2": "raw (CR2)",
                          ".nef": "raw (NEF)", ".arw": "raw (ARW)"}
# Pillow's names of the formats the unit decodes (MPO: a JPEG with a second frame, as some cameras write).
READ_FORMATS = frozenset({"JPEG", "MPO", "PNG", "TIFF", "BMP", "DIB"})
# The largest photograph file and pixel count accepted. 40 megapixels covers every fundus camera (their sensors
# are 5-24 MP); the decoded 8-bit photograph is then at most 120 MB, and the measured peak memory of screening one
# (bench/bench_memory.py, docs/unit.md "When things go wrong") stays well inside a 2 GB unit. A PNG of 20000 x 20000
# pixels can be 1.3 MB yet decode to 1.2 GB: the budget is checked from the header, before decoding.
MAX_IMAGE_BYTES = 64 * 2 ** 20
MAX_IMAGE_PIXELS = 40_000_000


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # unreadable parent, name too long, NUL byte: reading the path will say why
        return False


def iter_images(paths: Sequence[str | Path]) -> Iterator[tuple[Path, str | None]]:
    """Expand files and folders into image paths, with a sentence for each folder that cannot be listed.

    Args:
        paths: image files and/or folders (folders are not searched recursively).

    Yields:
        ``(path, None)`` per image: each folder's files with an image extension (including the formats the unit
        does not read, so each gets an answer), sorted by name, in argument order; files are kept as given even
        when their extension is unusual (reading them decides). ``(folder, sentence)`` for a folder that cannot
        be listed; the others are still listed.
    """
    wanted = IMAGE_EXTENSIONS + tuple(OTHER_IMAGE_EXTENSIONS)
    for p in map(Path, paths):
        if not _is_dir(p):
            yield p, None
            continue
        try:
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in wanted and not _is_dir(q))
        except OSError as exc:
            yield p, (f"The folder {p} cannot be read ({exc.strerror or exc}); check its permissions and try "
                      "again.")
            continue
        for q in found:
            yield q, None


def list_images(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted list of image files (:func:`iter_images`, unreadable folders
    left out)."""
    return [p for p, problem in iter_images(paths) if problem is None]


def read_image_file(path: str | Path, label: str | None = None) -> bytes:
    """The bytes of a photograph file: a regular file of at most :data:`MAX_IMAGE_BYTES`.

    Raises:
        ImageReadError: missing, a folder, a FIFO or device, too large, or unreadable (one sentence).
    """
    path = Path(path)
    label = label or path.name
    try:
        return read_regular(path, MAX_IMAGE_BYTES)
    except FileNotFoundError:
        raise ImageReadError(f"The file {label} does not exist; check the path and try again.") from None
    except SpecialFileError as exc:
        if exc.kind == "a folder":
            raise ImageReadError(f"{label} is a folder, not an image file; give the path of a JPEG or PNG "
                                 "photograph.") from None
        raise ImageReadError(f"{label} is {exc.kind}, not a photograph file; give the path of a JPEG or PNG "
                             "file.") from None
    except FileTooLargeError as exc:
        raise ImageReadError(f"The file {label} is larger than {MAX_IMAGE_BYTES // 2 ** 20} MB, the most the unit "
                             f"reads for one photograph; export it as a JPEG or a smaller PNG.") from exc
    except (OSError, ValueError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        raise ImageReadError(f"The file {label} cannot be read ({detail}); check the path and its permissions, "
                             "then try again.") from None


def load_image(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """Decode a photograph into an RGB ``uint8`` array with its EXIF orientation applied.

    Args:
        source: a file path, or the encoded bytes of a JPEG/PNG/TIFF file.
        name: how to call the image in error messages (defaults to the file name).

    Returns:
        ``uint8`` array of shape (H, W, 3), RGB. 16-bit images are scaled to 8 bits; grey images are
        replicated to three channels; an alpha channel is composited on black.

    Raises:
        ImageReadError: the file is missing, not a regular file (FIFO, device), above :data:`MAX_IMAGE_BYTES`,
            empty, truncated, corrupt, in a format the unit does not read, or above :data:`MAX_IMAGE_PIXELS`.
    """
    suffix = ""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "the image"
        if len(data) > MAX_IMAGE_BYTES:
            raise ImageReadError(f"{subject(label)} is larger than {MAX_IMAGE_BYTES // 2 ** 20} MB, "
                                 "the most the unit reads for one photograph; export it as a JPEG or a smaller PNG.")
    else:
        label = name or Path(source).name
        suffix = Path(source).suffix.lower()
        data = read_image_file(source, label)
    if not data:
        raise ImageReadError(f"The file {label} is empty (0 bytes); retake or copy the photograph again.")
    orientation = _check_header(data, label, suffix)
    _check_complete(data, label)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ImageReadError(
            f"The file {label} is not a readable image (corrupt, or not a JPEG/PNG); retake or re-export the "
            "photograph."
        )
    rgb = _to_rgb_uint8(decoded, label)
    return _apply_exif_orientation(rgb, orientation)


def _check_header(data: bytes, label: str, suffix: str = "") -> int:
    """Read the header only: refuse formats the unit does not read and photographs above the pixel budget.

    Returns:
        The EXIF orientation (1 = upright).
    """
    not_image = (f"The file {label} is not a readable image (corrupt, or not a JPEG/PNG); retake or re-export the "
                 "photograph.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt, (width, height) = im.format, im.size
                try:
                    orientation = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1))
                except Exception:  # noqa: BLE001 - damaged EXIF means no rotation; the pixels decide the rest
                    orientation = 1
    except Image.DecompressionBombError as exc:  # above twice Pillow's own limit: its message has the count
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise ImageReadError(_too_many(label, int(found.group(1)) if found else None)) from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for a damaged or unknown file
        other = OTHER_IMAGE_EXTENSIONS.get(suffix)
        if other:
            raise ImageReadError(f"{_the_file(label)} is a {other} image, which the unit does not read; save it as "
                                 "JPEG or PNG and try again.") from None
        raise ImageReadError(not_image) from None
    if fmt not in READ_FORMATS:
        raise ImageReadError(f"{_the_file(label)} is a {fmt} image, which the unit does not read; save it as JPEG or "
                             "PNG and try again.")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageReadError(_too_many(label, width * height))
    return orientation


def _the_file(label: str) -> str:
    """'The file x.png', or 'The image' for a label that is already a phrase (bytes given without a name)."""
    return subject(label) if label.lower().startswith("the ") else f"The file {label}"


def _too_many(label: str, pixels: int | None) -> str:
    count = f"{pixels / 1e6:.0f} million" if pixels else "far too many"
    return (f"{_the_file(label)} has {count} pixels, more than the {MAX_IMAGE_PIXELS // 1_000_000} million the unit "
            "screens; export the photograph at a smaller size.")


def _check_complete(data: bytes, label: str) -> None:
    """Refuse JPEG and PNG files that stop before their end marker (a copy or upload cut short)."""
    if data.startswith(JPEG_SOI) and JPEG_EOI not in data[-JPEG_EOI_SEARCH_BYTES:]:
        raise ImageReadError(f"The file {label} is a truncated JPEG (its end is missing); copy or retake the "
                             "photograph again.")
    if data.startswith(PNG_SIGNATURE) and PNG_IEND not in data[-64:]:
        raise ImageReadError(f"The file {label} is a truncated PNG (its end is missing); copy or re-export the "
                             "photograph again.")


def _to_rgb_uint8(decoded: np.ndarray, label: str) -> np.ndarray:
    if decoded.dtype == np.uint16:
        decoded = (decoded >> 8).astype(np.uint8)
    elif decoded.dtype != np.uint8:
        raise ImageReadError(
            f"The file {label} has {decoded.dtype} pixels, which the unit does not read; export it as an 8- or 16-bit "
            "JPEG or PNG."
        )
    if decoded.ndim == 2:
        return cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB)
    channels = decoded.shape[2]
    if channels == 1:
        return cv2.cvtColor(decoded[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    if channels == 4:  # composite on black, the fundus background: a transparent margin stays dark
        alpha = decoded[:, :, 3:4].astype(np.uint16)
        over = ((decoded[:, :, :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
        return cv2.cvtColor(over, cv2.COLOR_BGR2RGB)
    raise ImageReadError(f"The file {label} has {channels} colour channels; export it as an RGB or grey JPEG or PNG.")


def _apply_exif_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    # EXIF orientation values 1..8 (TIFF 6.0): how to turn the stored pixels upright.
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
        8: lambda a: np.rot90(a, k=1),
    }
    transform = transforms.get(int(orientation))
    return rgb if transform is None else np.ascontiguousarray(transform(rgb))
