"""EyePACS / Kaggle 2015 reader and the patient-level train/validation split (DESIGN.md §2.2, §3).

Two layouts are read:

- Kaggle: ``train/<patient>_<left|right>.jpeg`` + ``trainLabels.csv`` (``image,level``), optionally ``test/`` +
  ``retinopathy_solution.csv`` (``image,level,Usage``); test images get the split ``"test"``.
- Flat: ``images/`` (or the folder itself) + ``labels.csv`` (``image,level``), like ``../shared/data/eyepacs_256``.

Any other layout is read with an explicit images folder and labels file (e.g. the Kaggle sample's ``sample/``).
A label without an image file is counted, not an error (the real ``trainLabels.csv`` lists 35,126 images and a
sample folder holds a few of them); an image without a label is listed and left out.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.atomic import FileTooLargeError, SpecialFileError, read_regular
from device.errors import ConfigError

REFERABLE_LEVEL = 2  # referable DR = grade >= 2 (moderate NPDR or worse), DESIGN.md §2.2
MAX_LEVEL = 4  # Kaggle grades 0..4
VAL_FRACTION = 0.2  # 80 % train / 20 % validation by patient, DESIGN.md §2.2
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".tif", ".tiff")
KAGGLE_TRAIN = ("train", "trainLabels.csv")
KAGGLE_TEST = ("test", "retinopathy_solution.csv")
FLAT_LABELS = "labels.csv"
MAX_LABELS_BYTES = 256 << 20  # the full Kaggle trainLabels.csv is 0.5 MB
FLAT_IMAGES = "images"
EYE_PATTERN = re.compile(r"^(?P<patient>.+)_(?P<eye>left|right)$")
SPLITS = ("train", "val", "test")


class DatasetError(ConfigError):
    """A dataset folder or its label file is missing or malformed."""


@dataclass(frozen=True)
class EyePACSImage:
    """One labelled photograph.

    Attributes:
        image_id: file name without suffix, e.g. ``10_left``.
        path: the image file.
        patient: patient id (``10`` for ``10_left``); the image id itself when the name has no ``_left/_right``.
        eye: ``"left"``, ``"right"`` or ``None``.
        level: Kaggle grade 0..4.
        label: 1 when ``level >= referable_level`` (referable), else 0.
        split: ``"test"`` for the Kaggle test folder, otherwise ``None`` until :func:`split_by_patient` assigns one.
    """

    image_id: str
    path: Path
    patient: str
    eye: str | None
    level: int
    label: int
    split: str | None = None


@dataclass(frozen=True)
class EyePACSDataset:
    """The labelled images found in one EyePACS folder, sorted by image id.

    Attributes:
        root: the dataset folder.
        layout: ``"kaggle"``, ``"flat"`` or ``"explicit"``.
        images: the labelled images that exist on disk.
        label_files: the label CSV files read.
        referable_level: grade from which an image is referable.
        labels_without_image: number of label rows whose image file is absent.
        images_without_label: ids of image files that have no label row (left out).
    """

    root: Path
    layout: str
    images: tuple[EyePACSImage, ...]
    label_files: tuple[Path, ...]
    referable_level: int = REFERABLE_LEVEL
    labels_without_image: int = 0
    images_without_label: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def read(
        cls,
        root: str | Path,
        labels: str | Path | None = None,
        images_dir: str | Path | None = None,
        referable_level: int = REFERABLE_LEVEL,
    ) -> EyePACSDataset:
        """Find the images and labels of an EyePACS folder.

        Args:
            root: dataset folder (Kaggle layout, flat layout, or any folder with ``images_dir``/``labels``).
            labels: label CSV (``image,level``); relative paths are taken relative to ``root``. Default: the
                layout's own file (``trainLabels.csv`` or ``labels.csv``).
            images_dir: folder of the photographs; relative paths are taken relative to ``root``.
            referable_level: grade from which an image counts as referable (1..4).

        Returns:
            The dataset, images sorted by id.

        Raises:
            DatasetError: the folder, the images folder or the label file is missing or malformed.
        """
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"The dataset folder {root} does not exist; check the path and try again.")
        if not 1 <= referable_level <= MAX_LEVEL:
            raise DatasetError(f"The referable level must be between 1 and {MAX_LEVEL}, not {referable_level}; pass "
                               "e.g. 2.")
        parts = _find_parts(root, labels, images_dir)
        layout = "explicit" if images_dir is not None else parts[0]
        found: list[EyePACSImage] = []
        unlabelled: list[str] = []
        label_files: list[Path] = []
        missing = 0
        for folder, label_file, split in parts[1]:
            levels = read_labels(label_file)
            label_files.append(label_file)
            files = _image_files(folder)
            for image_id, path in files.items():
                if image_id not in levels:
                    unlabelled.append(image_id)
                    continue
                level = levels[image_id]
                match = EYE_PATTERN.match(image_id)
                found.append(EyePACSImage(
                    image_id=image_id, path=path,
                    patient=match["patient"] if match else image_id, eye=match["eye"] if match else None,
                    level=level, label=int(level >= referable_level), split=split,
                ))
            missing += sum(1 for image_id in levels if image_id not in files)
        ids = Counter(image.image_id for image in found)
        duplicates = sorted(image_id for image_id, n in ids.items() if n > 1)
        if duplicates:
            raise DatasetError(f"The image {duplicates[0]} appears in more than one folder of {root}; keep one copy.")
        if not found:
            raise DatasetError(
                f"No labelled images were found in {root} (checked {', '.join(str(p[0]) for p in parts[1])}); "
                "check that the image names match the label file's image column."
            )
        return cls(
            root=root, layout=layout, images=tuple(sorted(found, key=lambda image: image.image_id)),
            label_files=tuple(label_files), referable_level=referable_level,
            labels_without_image=missing, images_without_label=tuple(sorted(unlabelled)),
        )

    def summary(self) -> dict:
        """Counts for logs and model cards: images, patients, grades, referable, labels without image (JSON-able)."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "images": len(self.images),
            "patients": len({image.patient for image in self.images}),
            "levels": {str(level): n for level, n in sorted(Counter(i.level for i in self.images).items())},
            "referable": sum(image.label for image in self.images),
            "referable_level": self.referable_level,
            "labels_without_image": self.labels_without_image,
            "images_without_label": len(self.images_without_label),
        }


def read_labels(path: Path) -> dict[str, int]:
    """Read a Kaggle label CSV (``image,level`` and optionally ``Usage``).

    Args:
        path: the CSV file.

    Returns:
        Image id (suffix removed) -> grade 0..4.

    Raises:
        DatasetError: the file is missing, lacks the ``image``/``level`` columns, or has a bad or repeated row.
    """
    try:
        data = read_regular(path, MAX_LABELS_BYTES)
    except FileNotFoundError:
        raise DatasetError(f"The label file {path} does not exist; pass the right --labels file.") from None
    except SpecialFileError as exc:
        raise DatasetError(f"The label file {path} is {exc.kind}, not a CSV file; pass the right --labels "
                           "file.") from None
    except FileTooLargeError:
        raise DatasetError(f"The label file {path} is larger than {MAX_LABELS_BYTES >> 20} MiB, so it is not a "
                           "label CSV; pass the right --labels file.") from None
    except OSError as exc:
        raise DatasetError(f"The label file {path} cannot be read ({exc.strerror}); check its permissions.") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"The label file {path} is not UTF-8 text (byte {exc.start}); save it as 'CSV UTF-8' and "
                           "try again.") from None
    if "\x00" in text:  # UTF-16 decodes as UTF-8 with a NUL after every letter
        raise DatasetError(f"The label file {path} contains NUL bytes (UTF-16 or binary, not UTF-8 text); save it as "
                           "'CSV UTF-8' and try again.")
    levels: dict[str, int] = {}
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        if "image" not in columns or "level" not in columns:
            raise DatasetError(f"The label file {path} needs the columns image and level (Kaggle layout); fix its "
                               "header.")
        for line, row in enumerate(reader, start=2):
            image_id = _strip_suffix((row[columns["image"]] or "").strip())
            text = (row[columns["level"]] or "").strip()
            if not image_id or not text.isdigit() or int(text) > MAX_LEVEL:
                raise DatasetError(f"Line {line} of {path} is not an image name with a grade 0-{MAX_LEVEL}; fix or "
                                   "delete that row.")
            if image_id in levels:
                raise DatasetError(f"The image {image_id} is listed twice in {path} (line {line}); keep one row.")
            levels[image_id] = int(text)
    return levels


def split_by_patient(
    images: tuple[EyePACSImage, ...] | list[EyePACSImage], val_fraction: float = VAL_FRACTION, seed: int = 0
) -> dict[str, str]:
    """Assign ``"train"``/``"val"`` by patient, stratified by patient-level referable status.

    Both eyes of a patient always land in the same split. A patient is referable when any eye is.
    ``round(patients * val_fraction)`` patients go to validation, shared between the referable and non-referable
    strata in proportion (largest remainder, ties to the referable stratum so that validation has positives);
    within each stratum the patients are shuffled with ``seed``. Images that already carry a split (the Kaggle
    test folder) keep it.

    Args:
        images: the dataset's images.
        val_fraction: share of patients for validation, 0 <= f < 1.
        seed: random seed; the same images and seed always give the same split.

    Returns:
        Image id -> ``"train"``, ``"val"`` or ``"test"``.

    Raises:
        DatasetError: ``val_fraction`` is outside [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"The validation fraction must be at least 0 and below 1, not {val_fraction}; pass e.g. "
                           "0.2.")
    split = {image.image_id: image.split for image in images if image.split is not None}
    patient_label: dict[str, int] = {}
    for image in images:
        if image.split is None:
            patient_label[image.patient] = max(patient_label.get(image.patient, 0), image.label)
    strata = {label: sorted(p for p, lab in patient_label.items() if lab == label) for label in (1, 0)}
    rng = np.random.default_rng(seed)
    val_patients: set[str] = set()
    for label, n_val in _allocate(strata, val_fraction).items():
        order = rng.permutation(len(strata[label]))
        val_patients.update(strata[label][i] for i in order[:n_val])
    for image in images:
        if image.split is None:
            split[image.image_id] = "val" if image.patient in val_patients else "train"
    return split


def _allocate(strata: dict[int, list[str]], fraction: float) -> dict[int, int]:
    """Validation patients per stratum: proportional shares of the rounded total (largest remainder method)."""
    total = int(np.floor(sum(len(p) for p in strata.values()) * fraction + 0.5))
    quotas = {label: len(patients) * fraction for label, patients in strata.items()}
    counts = {label: int(np.floor(q)) for label, q in quotas.items()}
    by_remainder = sorted(strata, key=lambda label: -(quotas[label] - counts[label]))  # stable: referable first on ties
    for label in by_remainder[: total - sum(counts.values())]:
        counts[label] += 1
    return counts


def _find_parts(
    root: Path, labels: str | Path | None, images_dir: str | Path | None
) -> tuple[str, list[tuple[Path, Path, str | None]]]:
    """The layout name and its (images folder, label file, fixed split) parts."""
    label_path = _under(root, labels) if labels is not None else None
    if images_dir is not None:
        folder = _under(root, images_dir)
        if not folder.is_dir():
            raise DatasetError(f"The images folder {folder} does not exist; check --images-dir.")
        if label_path is None:
            candidates = [root / KAGGLE_TRAIN[1], root / FLAT_LABELS, folder / FLAT_LABELS]
            label_path = next((p for p in candidates if p.is_file()), None)
            if label_path is None:
                raise DatasetError(f"No trainLabels.csv or labels.csv was found in {root}; pass the label file with "
                                   "--labels.")
        return "explicit", [(folder, label_path, None)]
    if (root / KAGGLE_TRAIN[0]).is_dir():
        parts: list[tuple[Path, Path, str | None]] = [
            (root / KAGGLE_TRAIN[0], label_path or root / KAGGLE_TRAIN[1], None)]
        if (root / KAGGLE_TEST[0]).is_dir() and (root / KAGGLE_TEST[1]).is_file():
            parts.append((root / KAGGLE_TEST[0], root / KAGGLE_TEST[1], "test"))
        return "kaggle", parts
    if (root / FLAT_LABELS).is_file() or label_path is not None:
        folder = root / FLAT_IMAGES if (root / FLAT_IMAGES).is_dir() else root
        return "flat", [(folder, label_path or root / FLAT_LABELS, None)]
    raise DatasetError(
        f"No EyePACS dataset was found in {root} (expected train/ + trainLabels.csv or images/ + labels.csv); "
        "pass --images-dir and --labels for another layout."
    )


def _under(root: Path, path: str | Path) -> Path:
    """``path`` itself when absolute; otherwise under ``root`` when it exists there, else relative to the cwd."""
    path = Path(path)
    if path.is_absolute() or not (root / path).exists():
        return path
    return root / path


def _strip_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _image_files(folder: Path) -> dict[str, Path]:
    """Image id -> path for the image files directly inside ``folder`` (hidden files ignored)."""
    files: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.suffix.lower() not in IMAGE_SUFFIXES or not entry.is_file():
            continue
        files.setdefault(entry.stem, entry)
    return files
