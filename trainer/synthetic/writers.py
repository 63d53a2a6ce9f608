"""Write synthetic photographs as a Kaggle/EyePACS-layout folder or a DiaretDB1-v1.1-layout folder.

Both layouts copy the real ones (DESIGN.md §2.2, §3) so that the real readers are tested on them:

- Kaggle: ``out/train/<patient>_<left|right>.jpeg`` and ``out/trainLabels.csv`` (``image,level``), both eyes of each
  patient, frames of several camera formats (some with the FOV clipped at top and bottom);
- DiaretDB1 v1.1: ``out/diaretdb1_v_1_1/resources/images/ddb1_fundusimages/imageNNN.png``, fused expert maps in
  ``.../ddb1_groundtruth/{hardexudates,softexudates,hemorrhages,redsmalldots}/imageNNN.png`` (0..252 encoding),
  ``.../ddb1_fundusmask/fmask.tif`` (one FOV shared by all images) and the split lists
  ``resources/{traindatasets/trainset.txt,testdatasets/testset.txt}`` (one ``imageNNN.png`` per line, unsorted).

Every file is written atomically (temporary file, fsync, rename), so an interrupted run leaves no partial file.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from trainer.data import diaretdb1_layout as ddb
from trainer.synthetic.experts import fuse_expert_map
from trainer.synthetic.fundus import REFERENCE_RADIUS, SyntheticFundus, generate_fundus

JPEG_QUALITY = 90
# Kaggle-like frames as (width / height, probability); 1.0 = square. Real Kaggle photographs are 4:3 and 3:2.
KAGGLE_FRAMES = ((1.0, 0.4), (4 / 3, 0.35), (3 / 2, 0.25))
KAGGLE_GRADE_PROBABILITIES = (0.4, 0.15, 0.25, 0.1, 0.1)
SAME_GRADE_BOTH_EYES = 0.7  # probability that the second eye has the first eye's grade
# DiaretDB1: 28 of 89 images are in the train list. Grades follow the generator's default mix (40 % without
# lesions; the real database has 38 of 89 without lesions at 75 % confidence, DESIGN.md §2.4).
DIARETDB1_TRAIN_FRACTION = 28 / 89
# The real FOV measured on fmask.tif (1500 x 1152 frame): centre (742.5, 575.5), radius 705 px.
DIARETDB1_FOV = (742.5, 575.5, 705.0)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _encode(ext: str, image: np.ndarray, params: list[int] | None = None) -> bytes:
    """Encode an RGB or grey uint8 image with OpenCV (RGB is swapped to OpenCV's BGR)."""
    if image.ndim == 3:
        image = image[..., ::-1]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(image), params or [])
    if not ok:
        raise OSError(f"OpenCV could not encode a {ext} image")
    return buf.tobytes()


def _image_seed(seed: int, index: int) -> int:
    """Independent per-image seed derived from the folder seed."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_kaggle_folder(
    out_dir: str | Path,
    n_patients: int,
    size: int = 512,
    seed: int = 0,
    grade_probabilities: tuple[float, ...] = KAGGLE_GRADE_PROBABILITIES,
    progress: bool = False,
) -> list[tuple[str, int]]:
    """Write a Kaggle/EyePACS-layout folder of synthetic photographs, both eyes per patient.

    Args:
        out_dir: output folder (created); gets ``train/`` and ``trainLabels.csv``.
        n_patients: number of patients; two images each.
        size: photograph height in pixels (width is ``size`` x 1, 4/3 or 3/2 per patient, like several cameras).
        seed: folder seed; the same arguments give the same files.
        grade_probabilities: probability of grades 0..4 for the first eye.
        progress: show a progress bar.

    Returns:
        The ``(image, level)`` rows of ``trainLabels.csv`` (image names without extension, e.g. ``"13_left"``).
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be at least 1, got {n_patients}")
    out = Path(out_dir)
    rng = np.random.default_rng([seed, 0xCA661E])
    rows: list[tuple[str, int]] = []
    patient = 10
    ratios, weights = zip(*KAGGLE_FRAMES)
    for p in tqdm(range(n_patients), desc="synthetic Kaggle", unit="patient", disable=not progress):
        patient += int(rng.integers(1, 6))
        ratio = float(rng.choice(ratios, p=np.array(weights) / sum(weights)))
        clipped = bool(rng.random() < 0.5)
        first = int(rng.choice(5, p=grade_probabilities))
        second = first if rng.random() < SAME_GRADE_BOTH_EYES else int(np.clip(first + rng.choice([-1, 1]), 0, 4))
        for k, (eye, grade) in enumerate((("left", first), ("right", second))):
            f = generate_fundus(_image_seed(seed, 2 * p + k), width=int(round(size * ratio)), height=size,
                                grade=grade, eye=eye, clipped=clipped)
            name = f"{patient}_{eye}"
            jpeg = _encode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            write_atomic(out / "train" / f"{name}.jpeg", jpeg)
            rows.append((name, f.grade))
    csv = "image,level\n" + "".join(f"{name},{level}\n" for name, level in rows)
    write_atomic(out / "trainLabels.csv", csv.encode())
    return rows


def diaretdb1_fov(width: int, height: int) -> tuple[float, float, float]:
    """The real DiaretDB1 FOV (cx, cy, radius) scaled to a ``width`` x ``height`` frame."""
    sx, sy = width / ddb.FRAME_WIDTH, height / ddb.FRAME_HEIGHT
    return DIARETDB1_FOV[0] * sx, DIARETDB1_FOV[1] * sy, DIARETDB1_FOV[2] * min(sx, sy)


def synthetic_diaretdb1_fundus(index: int, width: int = ddb.FRAME_WIDTH, height: int = ddb.FRAME_HEIGHT,
                               seed: int = 0) -> SyntheticFundus:
    """The photograph and exact masks behind image ``index`` (0-based) of :func:`write_diaretdb1_folder`.

    Tests use it to compare what a reader loads with the exact ground truth.
    """
    return generate_fundus(_image_seed(seed, index), width=width, height=height, fov=diaretdb1_fov(width, height))


def write_diaretdb1_folder(
    out_dir: str | Path,
    n_images: int = 89,
    width: int = ddb.FRAME_WIDTH,
    height: int = ddb.FRAME_HEIGHT,
    seed: int = 0,
    progress: bool = False,
) -> list[str]:
    """Write a DiaretDB1-v1.1-layout folder of synthetic photographs with simulated fused expert maps.

    All images share one FOV, the real one (measured on ``fmask.tif``) scaled to the frame. Ground-truth maps
    follow the real encoding (trainer.synthetic.experts): the exact lesion pixels are >= 189 (75 % confidence).

    Args:
        out_dir: output folder (created); gets ``diaretdb1_v_1_1/resources/...``.
        n_images: number of images (``image001`` ...); about 28/89 of them go to the train list (at least one).
        width, height: frame in pixels (1500 x 1152 like the real database; smaller for fast tests).
        seed: folder seed; the same arguments give the same files.
        progress: show a progress bar.

    Returns:
        The image ids written, sorted (``["image001", ...]``).
    """
    if n_images < 2:
        raise ValueError(f"a DiaretDB1-like folder needs at least 2 images (train and test), got {n_images}")
    root = Path(out_dir) / ddb.V11_FOLDER
    fov = diaretdb1_fov(width, height)
    rng = np.random.default_rng([seed, 0xDB1])
    ids = [f"image{i + 1:03d}" for i in range(n_images)]
    fov_mask = None
    for i, image_id in enumerate(tqdm(ids, desc="synthetic DiaretDB1", unit="image", disable=not progress)):
        f = synthetic_diaretdb1_fundus(i, width, height, seed)
        fov_mask = f.fov_mask
        png = _encode(".png", f.image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        write_atomic(root / ddb.IMAGES_DIR / f"{image_id}.png", png)
        for lesion_type, folder in ddb.GROUNDTRUTH_FOLDERS.items():
            fused = fuse_expert_map(rng, f.masks[lesion_type], f.fov_mask, fov[2] / REFERENCE_RADIUS)
            write_atomic(root / ddb.GROUNDTRUTH_DIR / folder / f"{image_id}.png",
                         _encode(".png", fused, [cv2.IMWRITE_PNG_COMPRESSION, 1]))
    buf = io.BytesIO()
    Image.fromarray(fov_mask).save(buf, format="TIFF")  # mode "1", like the real fmask.tif
    write_atomic(root / ddb.FOV_MASK_PATH, buf.getvalue())
    n_train = max(1, min(n_images - 1, int(round(n_images * DIARETDB1_TRAIN_FRACTION))))
    order = rng.permutation(n_images)
    train, test = [ids[j] for j in order[:n_train]], [ids[j] for j in order[n_train:]]
    write_atomic(root / ddb.TRAINSET_PATH, "".join(f"{x}.png\n" for x in train).encode())
    write_atomic(root / ddb.TESTSET_PATH, "".join(f"{x}.png\n" for x in test).encode())
    return ids
