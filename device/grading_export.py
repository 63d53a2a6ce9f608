"""``python -m device export --since DATE --to PATH``: the unit's photographs packaged for a specialist to grade.

The package format is :mod:`device.grading_package`. Only what the unit records goes out (no operator names, no
camera paths); each photograph is checked against the sha256 in its record before it is copied (one that does not
match is left out and named). The package is built in a hidden sibling folder and renamed into place, so a
half-written package never looks complete; the export is written to the audit trail.

    result = export_for_grading(cfg, since=parse_when("2026-12-01"), to="/media/usb/grading-2026-12")
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from device.atomic import write_private
from device.config import UnitConfig
from device.errors import ConfigError, HardwareError, ScreeningError
from device.grading_package import (
    FILE_MODE,
    FOLDER_MODE,
    GRADE_COLUMNS,
    GRADES_TEMPLATE,
    MANIFEST_FILE,
    PACKAGE_COLUMNS,
    PHOTOS_DIR,
    README_FILE,
    SCREENINGS_CSV,
    SCREENINGS_JSON,
    SCREENS_DIR,
    PackageImage,
    PackageManifest,
    image_name,
)
from device.notice import RESEARCH_NOTICE
from device.records import RecordStore, csv_cell

README = f"""Grading package from a diabetic-retinopathy screening unit ({RESEARCH_NOTICE}).

It holds patients' photographs: keep it on encrypted storage, readable by you only, and delete it when the grades
are back. photos/ holds the photographs as taken; screens/ holds the unit's result screens, which show the unit's
own verdict: grade from photos/ first, so the unit's verdict does not sway you.

How to grade: copy grades_template.csv, fill in the level column for each image with the international (ICDR /
Kaggle) grade, a whole number 0-4 (0 none, 1 mild, 2 moderate, 3 severe non-proliferative, 4 proliferative DR), and
leave it empty for a photograph you cannot grade. Keep the image names as they are and save the file as UTF-8 CSV.
Then: python -m trainer import-grades <this folder> <your grades.csv> --out <dataset folder>
"""


@dataclass(frozen=True)
class GradingExport:
    """What an export wrote."""

    folder: Path
    images: int
    left_out: dict[str, str] = field(default_factory=dict)  # record id -> why
    permissions_kept: bool = True


def parse_when(text: str) -> datetime:
    """``YYYY-MM-DD`` or an ISO date-time (UTC when no zone is given) -> aware datetime.

    Raises:
        ConfigError: not a date.
    """
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{text!r} is not a date; write it as YYYY-MM-DD or YYYY-MM-DDTHH:MM.") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _private_write(path: Path, data: bytes) -> None:
    write_private(path, data, FILE_MODE)


def _chmod(path: Path, mode: int) -> bool:
    """chmod, tolerating file systems without permissions (a FAT USB stick): returns whether it held."""
    try:
        os.chmod(path, mode)
    except OSError:
        return False
    return (os.stat(path).st_mode & 0o777) == mode


def _rows(store: RecordStore, since: datetime, until: datetime | None) -> list[dict]:
    units = {sid: unit for sid, unit in store.db.execute("SELECT id, unit FROM sessions")}
    out = []
    for row in store.screenings():
        when = datetime.fromisoformat(row["captured_at"])
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        if when >= since and (until is None or when < until):
            out.append({**row, "unit": units.get(row["session_id"], "")})
    return out


def _csv(rows: list[dict], columns: tuple[str, ...]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell("; ".join(row[c]) if isinstance(row[c], list) else row[c]) for c in columns])
    return buf.getvalue().encode("utf-8")


def _build(store: RecordStore, rows: list[dict], staging: Path, unit: str, since: datetime,
           until: datetime | None) -> tuple[int, dict[str, str], bool]:
    kept = True
    for sub in (PHOTOS_DIR, SCREENS_DIR):
        (staging / sub).mkdir(mode=FOLDER_MODE)
        kept &= _chmod(staging / sub, FOLDER_MODE)
    files: dict[str, str] = {}
    images: list[PackageImage] = []
    left_out: dict[str, str] = {}
    for row in rows:
        name = image_name(row["session_id"], row["patient_id"], row["eye"], row["attempt"])
        try:
            photo = (store.folder / row["photo_path"]).read_bytes()
            screen = (store.folder / row["screen_path"]).read_bytes()
        except FileNotFoundError:
            left_out[row["id"]] = "the photograph or screen file of the record is missing"
            continue
        if hashlib.sha256(photo).hexdigest() != row["photo_sha256"]:
            left_out[row["id"]] = "the photograph does not match the sha256 in its record"
            continue
        for rel, data in ((f"{PHOTOS_DIR}/{name}.jpg", photo), (f"{SCREENS_DIR}/{name}.png", screen)):
            _private_write(staging / rel, data)
            files[rel] = hashlib.sha256(data).hexdigest()
        images.append(PackageImage(
            image=name, photo=f"{PHOTOS_DIR}/{name}.jpg", screen=f"{SCREENS_DIR}/{name}.png",
            photo_sha256=row["photo_sha256"], unit=row["unit"], session_id=row["session_id"],
            patient_id=row["patient_id"], eye=row["eye"], attempt=row["attempt"], captured_at=row["captured_at"],
            model_id=row["model_id"], verdict=row["verdict"], final=bool(row["final"]),
            probability=row["probability"], gradable=bool(row["gradable"]), reasons=row["reasons"],
            regions=row["regions"]))
    if not images:
        raise ScreeningError("None of the selected photographs matches its record's sha256; the records are "
                             "damaged: check the unit's storage card.")
    dumped = [i.model_dump(mode="json") for i in images]
    texts = {
        SCREENINGS_JSON: json.dumps({"images": dumped}, indent=1).encode("utf-8"),
        SCREENINGS_CSV: _csv(dumped, PACKAGE_COLUMNS),
        GRADES_TEMPLATE: _csv([{"image": i.image, "level": ""} for i in images], GRADE_COLUMNS),
        README_FILE: README.encode("utf-8"),
    }
    for rel, data in texts.items():
        _private_write(staging / rel, data)
        files[rel] = hashlib.sha256(data).hexdigest()
    manifest = PackageManifest(created=datetime.now(UTC).isoformat(timespec="seconds"), unit=unit,
                               since=since.isoformat(), until=until.isoformat() if until else None,
                               notice=RESEARCH_NOTICE, images=len(images), files=files)
    _private_write(staging / MANIFEST_FILE, (manifest.model_dump_json(indent=1) + "\n").encode("utf-8"))
    for path in staging.rglob("*"):
        kept &= _chmod(path, FOLDER_MODE if path.is_dir() else FILE_MODE)
    return len(images), left_out, kept


def export_for_grading(cfg: UnitConfig, since: datetime, to: str | Path, until: datetime | None = None,
                       who: str = "admin") -> GradingExport:
    """Write the photographs screened in ``[since, until)`` as a grading package at ``to``.

    Args:
        cfg: the unit config (its records folder and unit name).
        since, until: the capture-time period (aware datetimes; ``until`` None = up to now).
        to: the package folder to create (must not exist, or be empty), e.g. on a USB stick.
        who: for the audit trail.

    Returns:
        :class:`GradingExport`.

    Raises:
        ScreeningError: nothing to export, destination not empty, records damaged, or the disk is full (one
            sentence; no partial package is left).
    """
    to = Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise ScreeningError(f"{to} already exists and is not an empty folder; give a new folder for the package.")
    store = RecordStore.from_config(cfg.records, recover=False)  # beside a running kiosk: never its recovery
    try:
        rows = _rows(store, since, until)
        if not rows:
            before = f" and before {until.isoformat()}" if until else ""
            raise ScreeningError(f"No photographs were recorded on this unit since {since.isoformat()}{before}; "
                                 "choose other dates (--since, --until).")
        staging = to.with_name(f".{to.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir(mode=FOLDER_MODE, parents=True)
            n, left_out, kept = _build(store, rows, staging, cfg.kiosk.unit_name, since, until)
            kept &= _chmod(staging, FOLDER_MODE)
            if to.exists():
                to.rmdir()
            os.rename(staging, to)
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise HardwareError(f"The grading package could not be written to {to} ("
                                f"{'the disk is full' if full else exc.strerror}); nothing was left there: "
                                f"{'free space or use a larger stick' if full else 'check the destination'} and "
                                "try again.") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        store.audit(who, "grading_export", {"to": str(to), "since": since.isoformat(),
                                            "until": until.isoformat() if until else None, "images": n,
                                            "left_out": left_out, "permissions_kept": kept})
        return GradingExport(to, n, left_out, kept)
    finally:
        store.close()
