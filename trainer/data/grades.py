"""``trainer import-grades PACKAGE GRADES.csv --out DATASET``: a graded package from a unit -> a training dataset.

The package is what ``python -m device export`` wrote (:mod:`device.grading_package`); the grades file is its
``grades_template.csv`` with the specialist's ``level`` (0-4) filled in. The dataset is the flat EyePACS layout that
``trainer prepare`` and ``trainer train`` read (``trainer.data.eyepacs``): ``images/<id>.jpeg`` + ``labels.csv``
(``image,level``), with ``PROVENANCE.md`` and ``import.json`` saying where it came from.

An image id is ``<unit>-<session>-<patient>_<eye>``, so the patient-level split keeps both eyes of one visit
together. One photograph per eye and visit is kept, as in EyePACS: when several photographs of an eye are graded
(retakes), the last one taken. Every graded photograph is checked against the package's sha256 first; a bad grades
file (not UTF-8, missing column, unknown image, duplicate, grade outside 0-4) is refused with one sentence naming
the line, and nothing is written.

    result = import_grades("grading-2026-12", "grades.csv", "datasets/clinic-a-2026-12")
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from device.atomic import write_private
from device.grading_package import (
    FILE_MODE,
    FOLDER_MODE,
    GRADES,
    SCREENINGS_JSON,
    PackageError,
    PackageImage,
    checked_file,
    read_manifest,
)
from trainer.data.eyepacs import FLAT_IMAGES, FLAT_LABELS, DatasetError

MAX_GRADES_BYTES = 50 << 20
IMPORT_FILE = "import.json"
PROVENANCE_FILE = "PROVENANCE.md"
IMAGE_SUFFIX = ".jpeg"  # the package holds the unit's JPEG photographs unchanged
SUFFIXES = (".jpg", ".jpeg", ".png")
UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
GRADE_PATTERN = re.compile(r"^[0-9]+$")


class _Images(BaseModel):
    images: list[PackageImage]


@dataclass(frozen=True)
class GradesImport:
    """What an import wrote."""

    folder: Path
    images: int
    levels: dict[int, int]
    ungraded: int
    retakes_left_out: int
    ids: dict[str, str] = field(default_factory=dict)  # package image -> dataset image id


def _decode(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        raise DatasetError(f"The grades file {path} does not exist; check the path.") from None
    if not path.is_file() or size > MAX_GRADES_BYTES:
        raise DatasetError(f"The grades file {path} is not a CSV file of at most {MAX_GRADES_BYTES >> 20} MiB; give "
                           "the filled-in grades_template.csv.")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"The grades file {path} is not UTF-8 text (byte {exc.start}); save it as 'CSV UTF-8' "
                           "and try again.") from None
    if "\x00" in text:  # UTF-16 ("Unicode text") decodes as UTF-8 with a NUL after every letter
        raise DatasetError(f"The grades file {path} contains NUL bytes (UTF-16 or binary, not UTF-8 text); save it as "
                           "'CSV UTF-8' and try again.")
    return text


def _strip(name: str) -> str:
    lower = name.lower()
    return next((name[: -len(s)] for s in SUFFIXES if lower.endswith(s)), name)


def read_grades(path: str | Path, known: set[str]) -> dict[str, int | None]:
    """Read a grades CSV (``image,level``; extra columns are ignored; ``,`` or ``;`` separated).

    Args:
        path: the grades file.
        known: the package's image names.

    Returns:
        Image -> grade 0..4, or None where the level was left empty (not gradable).

    Raises:
        DatasetError: not UTF-8, not CSV, a missing column, an unknown or repeated image, a grade outside 0-4, or
            nothing graded (one sentence naming the line).
    """
    path = Path(path)
    text = _decode(path)
    first = text.split("\n", 1)[0]
    delimiter = ";" if ";" in first and "," not in first else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    grades: dict[str, int | None] = {}
    lines: dict[str, int] = {}
    try:
        columns = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
        if "image" not in columns or "level" not in columns:
            found = ", ".join(c for c in columns if c) or "none"
            raise DatasetError(f"The grades file {path} needs the columns image and level (it has: {found}); start "
                               "from the package's grades_template.csv.")
        for row in reader:
            line = reader.line_num
            image = _strip((row.get(columns["image"]) or "").strip())
            level = (row.get(columns["level"]) or "").strip()
            if not image and not level:
                continue
            if image not in known:
                raise DatasetError(f"Line {line} of {path} names the image {image!r}, which is not in the package; fix "
                                   "the name or delete the row.")
            if image in grades:
                raise DatasetError(f"The image {image} is graded twice in {path} (lines {lines[image]} and {line}); "
                                   "keep one row.")
            if level and (not GRADE_PATTERN.match(level) or int(level) not in GRADES):
                raise DatasetError(f"Line {line} of {path} gives {image} the grade {level!r}; grades are whole "
                                   f"numbers {GRADES[0]} to {GRADES[-1]} (leave it empty when a photograph cannot be "
                                   "graded).")
            grades[image], lines[image] = (int(level) if level else None), line
    except csv.Error as exc:
        raise DatasetError(f"The grades file {path} is not a valid CSV (line {reader.line_num}: {exc}); save it "
                           "again as CSV.") from None
    if not any(level is not None for level in grades.values()):
        raise DatasetError(f"The grades file {path} grades no photograph; fill in the level column (0-4).")
    return grades


def dataset_id(image: PackageImage) -> str:
    """The dataset's id of a package photograph: ``<unit>-<session>-<patient>_<eye>`` (EyePACS-style)."""
    visit = "-".join(UNSAFE.sub("-", part).strip("-") or "x" for part in (image.unit, image.session_id,
                                                                           image.patient_id))
    return f"{visit}_{image.eye}"


def _provenance(manifest, grades_path: Path, grades_sha: str, n: int, levels: dict[int, int]) -> str:
    counts = ", ".join(f"grade {k}: {v}" for k, v in sorted(levels.items()))
    return (f"# Graded photographs from screening unit '{manifest.unit}'\n\n"
            f"- package: created {manifest.created}, photographs captured from {manifest.since} to "
            f"{manifest.until or manifest.created}\n"
            f"- grades: `{grades_path.name}` (sha256 {grades_sha})\n"
            f"- {n} images ({counts}); one photograph per eye and visit (the last graded one)\n\n"
            "These are patients' photographs from a screening programme: keep this folder private (mode 0700), never "
            "commit it to a repository or copy it into a model bundle, and use it only as the programme's consent "
            "and ethics approval allow. The unit that took them is a research tool, not a medical device.\n")


def import_grades(package: str | Path, grades_csv: str | Path, out: str | Path) -> GradesImport:
    """Turn a graded package into a dataset folder (see the module docstring).

    Raises:
        PackageError: the package is damaged or a graded photograph does not match its sha256.
        DatasetError: the grades file is bad, or ``out`` exists and is not empty (nothing is written).
    """
    package, grades_csv, out = Path(package), Path(grades_csv), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out} already exists and is not empty; give a new folder for the dataset.")
    manifest = read_manifest(package)
    try:
        images = _Images.model_validate_json(checked_file(package, SCREENINGS_JSON, manifest).read_bytes()).images
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise PackageError(f"{package / SCREENINGS_JSON} is not a package's screenings list ({reason}); copy the "
                           "package again from the unit.") from None
    by_name = {i.image: i for i in images}
    grades = read_grades(grades_csv, set(by_name))
    chosen: dict[str, tuple[PackageImage, int]] = {}
    graded = 0
    for name, level in grades.items():
        if level is None:
            continue
        graded += 1
        image = by_name[name]
        photo = checked_file(package, image.photo, manifest)
        if hashlib.sha256(photo.read_bytes()).hexdigest() != image.photo_sha256:
            raise PackageError(f"The photograph {photo} does not match the sha256 the unit recorded; copy the package "
                               "again from the unit.")
        key = dataset_id(image)
        kept = chosen.get(key)
        if kept is None or (image.captured_at, image.attempt) > (kept[0].captured_at, kept[0].attempt):
            chosen[key] = (image, level)  # the last photograph taken of that eye in that visit
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    levels: dict[int, int] = {}
    try:
        (staging / FLAT_IMAGES).mkdir(mode=FOLDER_MODE, parents=True)
        os.chmod(staging, FOLDER_MODE)
        rows = ["image,level"]
        for key, (image, level) in sorted(chosen.items()):
            write_private(staging / FLAT_IMAGES / f"{key}{IMAGE_SUFFIX}", (package / image.photo).read_bytes(),
                          FILE_MODE)
            rows.append(f"{key},{level}")
            levels[level] = levels.get(level, 0) + 1
        write_private(staging / FLAT_LABELS, ("\n".join(rows) + "\n").encode(), FILE_MODE)
        grades_sha = hashlib.sha256(grades_csv.read_bytes()).hexdigest()
        provenance = _provenance(manifest, grades_csv, grades_sha, len(chosen), levels)
        write_private(staging / PROVENANCE_FILE, provenance.encode(), FILE_MODE)
        ids = {image.image: key for key, (image, _) in chosen.items()}
        summary = {"package_unit": manifest.unit, "package_created": manifest.created, "grades_sha256": grades_sha,
                   "imported_at": datetime.now(UTC).isoformat(timespec="seconds"), "images": len(chosen),
                   "levels": {str(k): v for k, v in sorted(levels.items())}, "ungraded": len(images) - graded,
                   "retakes_left_out": graded - len(chosen), "ids": ids}
        write_private(staging / IMPORT_FILE, json.dumps(summary, indent=1).encode(), FILE_MODE)
        if out.exists():
            out.rmdir()
        os.rename(staging, out)
    except OSError as exc:
        raise DatasetError(f"The dataset {out} could not be written ({exc.strerror}); nothing was left there: free "
                           "space or check the folder, then try again.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return GradesImport(out, len(chosen), levels, len(images) - graded, graded - len(chosen), ids)
