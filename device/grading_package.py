"""The grading package: screened photographs that leave the unit for a specialist to grade (one home of its format).

``python -m device export --since DATE --to PATH`` writes it (:mod:`device.grading_export`);
``python -m trainer import-grades PACKAGE GRADES.csv --out DATASET`` reads it back with the specialist's grades.
Folders are mode 0700 and files 0600: it holds patients' photographs::

    PATH/manifest.json         format, unit, period, counts, and the sha256 of every other file
    PATH/screenings.csv        one row per photograph (PACKAGE_COLUMNS): what the unit recorded, no more
    PATH/screenings.json       the same rows, with the unit's regions and quality reasons as lists
    PATH/grades_template.csv   image,level with every image and an empty level: the grader fills it in
    PATH/README.txt            instructions for the grader
    PATH/photos/<image>.jpg    the photographs exactly as recorded (sha256 as in the records)
    PATH/screens/<image>.png   the unit's result screens (they show the unit's verdict: grade from photos/ first)

An image name is ``<session>_<patient>_<eye>_<attempt>``, e.g. ``20261201T101500Z-3fa2c1_P0001_right_1``.
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.config import first_error_sentence
from device.errors import ScreeningError

PACKAGE_FORMAT = "dr-cam-grading-package"
MANIFEST_FILE = "manifest.json"
SCREENINGS_CSV = "screenings.csv"
SCREENINGS_JSON = "screenings.json"
GRADES_TEMPLATE = "grades_template.csv"
README_FILE = "README.txt"
PHOTOS_DIR = "photos"
SCREENS_DIR = "screens"
FOLDER_MODE, FILE_MODE = 0o700, 0o600  # patient data: readable by the unit's (or the grader's) user only
GRADE_COLUMNS = ("image", "level")  # the EyePACS/Kaggle label columns (trainer.data.eyepacs)
GRADES = range(0, 5)  # ICDR / Kaggle DR grades 0 (none) .. 4 (proliferative)
PACKAGE_COLUMNS = ("image", "photo", "screen", "photo_sha256", "unit", "session_id", "patient_id", "eye", "attempt",
                   "captured_at", "model_id", "verdict", "final", "probability", "gradable", "reasons")
MAX_MANIFEST_BYTES = 64 << 20


class PackageError(ScreeningError):
    """A grading package is missing, damaged or altered."""


class PackageImage(BaseModel):
    """One photograph of the package (a row of ``screenings.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    image: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
    photo: str
    screen: str
    photo_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    unit: str
    session_id: str
    patient_id: str
    eye: Literal["right", "left"]
    attempt: int = Field(ge=1)
    captured_at: str
    model_id: str
    verdict: str
    final: bool
    probability: float | None
    gradable: bool
    reasons: list[str]
    regions: list[dict] = Field(default_factory=list)


class PackageManifest(BaseModel):
    """``manifest.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["dr-cam-grading-package"] = PACKAGE_FORMAT
    version: Literal[1] = 1
    created: str
    unit: str
    since: str
    until: str | None
    notice: str
    images: int = Field(ge=1)
    files: dict[str, str] = Field(description="relative path -> sha256 of every file except manifest.json")


def image_name(session_id: str, patient_id: str, eye: str, attempt: int) -> str:
    """The package's name for one photograph (no patient data beyond the unit's own record keys)."""
    return f"{session_id}_{patient_id}_{eye}_{attempt}"


def read_manifest(package: str | Path) -> PackageManifest:
    """Parse a package's ``manifest.json``.

    Raises:
        PackageError: not a package folder, or the manifest is damaged (one sentence).
    """
    path = Path(package) / MANIFEST_FILE
    if not Path(package).is_dir() or not path.is_file():
        raise PackageError(f"{package} is not a grading package (no {MANIFEST_FILE}); give the folder that "
                           "`python -m device export` wrote.")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError("too large")
        return PackageManifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise PackageError(first_error_sentence(exc, f"The package manifest {path}", "copy the package again from "
                                                "the unit", whole="(file)")) from None
    except (OSError, ValueError) as exc:
        raise PackageError(f"The package manifest {path} cannot be read ({exc}); copy the package again.") from None


def checked_file(package: str | Path, relative: str, manifest: PackageManifest) -> Path:
    """A package file whose sha256 matches the manifest.

    Raises:
        PackageError: not listed, missing, not a plain file, or altered (naming the file).
    """
    path = Path(package) / relative
    want = manifest.files.get(relative)
    if want is None or ".." in Path(relative).parts or Path(relative).is_absolute():
        raise PackageError(f"The file {relative} is not listed in the manifest of {package}; copy the package again "
                           "from the unit.")
    try:
        mode = path.lstat().st_mode
    except OSError:
        raise PackageError(f"The file {path} of the grading package is missing; copy the package again from the "
                           "unit.") from None
    if not stat.S_ISREG(mode) or hashlib.sha256(path.read_bytes()).hexdigest() != want:
        raise PackageError(f"The file {path} does not match the sha256 in the package manifest (damaged or altered); "
                           "copy the package again from the unit.")
    return path
