"""Reading fundus photographs into RGB uint8 arrays, with one-sentence errors for bad files; listing image files.

Pixels are decoded with OpenCV (8/16-bit, grey, RGB, RGBA; JPEG, PNG, TIFF); the EXIF orientation tag is read
with Pillow (header only) and applied here, because OpenCV's ``IMREAD_UNCHANGED`` ignores it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from device.errors import ImageReadError

EXIF_ORIENTATION_TAG = 0x0112  # EXIF 2.3 §4.6.4 "Orientation"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
# Some cameras append a few kB of maker data after the end-of-image marker; look for it this far from the end.
JPEG_EOI_SEARCH_BYTES = 65536
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND"
# Extensions a folder of photographs is searched for (what OpenCV/Pillow read on every platform).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def list_images(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted list of image files.

    Args:
        paths: image files and/or folders (folders are not searched recursively).

    Returns:
        Image paths: each folder's images sorted by name, in argument order; files are kept as given even when
        their extension is unusual (reading them decides).
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file()))
        else:
            out.append(p)
    return out


def load_image(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """Decode a photograph into an RGB ``uint8`` array with its EXIF orientation applied.

    Args:
        source: a file path, or the encoded bytes of a JPEG/PNG/TIFF file.
        name: how to call the image in error messages (defaults to the file name).

    Returns:
        ``uint8`` array of shape (H, W, 3), RGB. 16-bit images are scaled to 8 bits; grey images are
        replicated to three channels; an alpha channel is dropped.

    Raises:
        ImageReadError: the file is missing, empty, truncated, corrupt or not an image.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "the image"
    else:
        path = Path(source)
        label = name or path.name
        if not path.exists():
            raise ImageReadError(f"The file {label} does not exist; check the path and try again.")
        if path.is_dir():
            raise ImageReadError(f"{label} is a folder, not an image file; give the path of a JPEG or PNG photograph.")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageReadError(f"The file {label} cannot be read ({exc.strerror}); check its permissions and try "
                                 "again.") from exc
    if not data:
        raise ImageReadError(f"The file {label} is empty (0 bytes); retake or copy the photograph again.")
    _check_complete(data, label)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ImageReadError(
            f"The file {label} is not a readable image (corrupt, or not a JPEG/PNG); retake or re-export the "
            "photograph."
        )
    rgb = _to_rgb_uint8(decoded, label)
    return _apply_exif_orientation(rgb, data)


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
    if channels == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGB)
    raise ImageReadError(f"The file {label} has {channels} colour channels; export it as an RGB or grey JPEG or PNG.")


def _apply_exif_orientation(rgb: np.ndarray, data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            orientation = im.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - no readable EXIF means no rotation; the pixels decoded fine
        return rgb
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
