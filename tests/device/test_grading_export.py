"""``python -m device export``: screened photographs packaged for grading — exact copies checked against their
records, nothing the unit does not record, private permissions, an audited export, and no partial package."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import stat

import pytest
from click.testing import CliRunner

from device.cli import cli
from device.errors import ConfigError, HardwareError, ScreeningError
from device.grading_export import export_for_grading, parse_when
from device.grading_package import (
    GRADES_TEMPLATE,
    MANIFEST_FILE,
    PACKAGE_COLUMNS,
    SCREENINGS_CSV,
    SCREENINGS_JSON,
    read_manifest,
)
from device.records import RecordStore
from tests.helpers import screened_unit

OPERATOR = "nurse-unique-name"


@pytest.fixture
def unit(tmp_path):
    """A unit that screened two patients (4 photographs) with the fake model."""
    return screened_unit(tmp_path, patients=2, operator=OPERATOR, unit_name="clinic-a unit 1")


def test_the_package_holds_exact_photographs_screens_and_the_records_rows(unit, tmp_path):
    out = tmp_path / "usb" / "grading"
    result = export_for_grading(unit, parse_when("2020-01-01"), out)
    assert result.images == 4 and result.left_out == {} and result.permissions_kept
    manifest = read_manifest(out)
    assert manifest.unit == "clinic-a unit 1" and manifest.images == 4
    for rel, sha in manifest.files.items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == sha
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        sorted([*manifest.files, MANIFEST_FILE])
    rows = list(csv.DictReader((out / SCREENINGS_CSV).open()))
    assert tuple(rows[0]) == PACKAGE_COLUMNS and len(rows) == 4
    store = RecordStore(unit.records.folder, fsync=False)
    records = {r["photo_sha256"]: r for r in store.screenings()}
    store.close()
    for row in rows:
        record = records[row["photo_sha256"]]
        assert (out / row["photo"]).read_bytes() == (tmp_path / "records" / record["photo_path"]).read_bytes()
        assert row["image"] == f"{record['session_id']}_{record['patient_id']}_{record['eye']}_{record['attempt']}"
    template = list(csv.DictReader((out / GRADES_TEMPLATE).open()))
    assert [t["level"] for t in template] == [""] * 4 and {t["image"] for t in template} == {r["image"] for r in rows}
    everything = b"".join(p.read_bytes() for p in out.rglob("*") if p.suffix in (".csv", ".json", ".txt"))
    assert OPERATOR.encode() not in everything  # staff names and camera paths stay on the unit


def test_the_package_is_readable_by_its_owner_only(unit, tmp_path):
    out = export_for_grading(unit, parse_when("2020-01-01"), tmp_path / "pkg").folder
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_the_export_is_audited(unit, tmp_path):
    export_for_grading(unit, parse_when("2020-01-01"), tmp_path / "pkg", who="it-admin")
    store = RecordStore(unit.records.folder, fsync=False)
    entry = store.audit_trail()[-1]
    store.close()
    assert (entry["action"], entry["who"]) == ("grading_export", "it-admin")
    assert json.loads(entry["detail"])["images"] == 4


def test_a_damaged_record_is_left_out_and_named(unit, tmp_path):
    store = RecordStore(unit.records.folder, fsync=False)
    first = store.screenings()[0]
    store.close()
    photo = tmp_path / "records" / first["photo_path"]
    photo.write_bytes(photo.read_bytes()[:-10] + b"0123456789")
    result = export_for_grading(unit, parse_when("2020-01-01"), tmp_path / "pkg")
    assert result.images == 3
    assert result.left_out == {first["id"]: "the photograph does not match the sha256 in its record"}


def test_the_period_and_the_destination_are_checked(unit, tmp_path):
    with pytest.raises(ScreeningError, match="No photographs were recorded on this unit since 2999-01-01"):
        export_for_grading(unit, parse_when("2999-01-01"), tmp_path / "pkg")
    with pytest.raises(ConfigError, match="'last week' is not a date; write it as YYYY-MM-DD"):
        parse_when("last week")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ScreeningError, match="already exists and is not an empty folder"):
        export_for_grading(unit, parse_when("2020-01-01"), tmp_path / "full")
    with pytest.raises(ScreeningError, match="No photographs were recorded on this unit since 2020-01-01"):
        export_for_grading(unit, parse_when("2020-01-01"), tmp_path / "pkg", until=parse_when("2020-01-02"))
    assert not (tmp_path / "pkg").exists()


def test_a_full_disk_leaves_no_partial_package(unit, tmp_path, monkeypatch):
    import device.grading_export as module

    calls = {"n": 0}
    real = module._private_write

    def fill_up(path, data):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(module, "_private_write", fill_up)
    with pytest.raises(HardwareError) as err:
        export_for_grading(unit, parse_when("2020-01-01"), tmp_path / "pkg")
    assert str(err.value) == (f"The grading package could not be written to {tmp_path / 'pkg'} (the disk is full); "
                              "nothing was left there: free space or use a larger stick and try again.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records"]


def test_the_export_command(unit, tmp_path):
    config = tmp_path / "unit.toml"
    config.write_text(f'[records]\nfolder = "{tmp_path / "records"}"\nfsync = false\n')
    res = CliRunner().invoke(cli, ["export", "--since", "2020-01-01", "--to", str(tmp_path / "pkg"), "--config",
                                   str(config)])
    assert res.exit_code == 0, res.output
    assert f"4 photographs written to {tmp_path / 'pkg'} (patient data: keep it private)." in res.output
    assert json.loads((tmp_path / "pkg" / SCREENINGS_JSON).read_text())["images"][0]["eye"] == "right"


def test_the_package_csv_neutralises_formulas(tmp_path):
    # issue 16 item 9: a unit name (or patient id) starting with = + - @ went into the CSV as is
    evil = screened_unit(tmp_path / "u", patients=1, operator=OPERATOR, unit_name='=HYPERLINK("http://x","y")')
    out = tmp_path / "pkg"
    export_for_grading(evil, parse_when("2020-01-01"), out)
    rows = list(csv.DictReader((out / SCREENINGS_CSV).open()))
    assert {r["unit"] for r in rows} == {"'=HYPERLINK(\"http://x\",\"y\")"}
    manifest = read_manifest(out)
    assert manifest.unit == '=HYPERLINK("http://x","y")'  # the JSON keeps the exact text
