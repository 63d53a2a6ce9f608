"""``trainer import-grades``: a graded package -> an EyePACS-layout dataset that ``prepare`` reads; every bad grades
file and every altered photograph refused with one sentence, and nothing written then."""

from __future__ import annotations

import csv
import json
import stat

import pytest
from click.testing import CliRunner

from device.grading_export import export_for_grading, parse_when
from device.grading_package import GRADES_TEMPLATE, SCREENINGS_JSON, PackageError
from tests.helpers import screened_unit
from trainer.cli import cli
from trainer.data.eyepacs import DatasetError, EyePACSDataset
from trainer.data.grades import import_grades


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("unit")
    cfg = screened_unit(root, patients=3, unit_name="clinic a")
    return export_for_grading(cfg, parse_when("2020-01-01"), root / "package").folder


def _images(package) -> list[str]:
    return [row["image"] for row in csv.DictReader((package / GRADES_TEMPLATE).open())]


def _grades(tmp_path, text: str | bytes):
    path = tmp_path / "grades.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _good(package, tmp_path):
    lines = ["image,level,notes"] + [f"{name},{i % 5},fine" for i, name in enumerate(_images(package))]
    return _grades(tmp_path, "\n".join(lines) + "\n")


def test_a_graded_package_becomes_a_dataset_prepare_reads(package, tmp_path):
    out = tmp_path / "dataset"
    result = import_grades(package, _good(package, tmp_path), out)
    assert result.images == 6 and result.ungraded == 0 and result.levels == {0: 2, 1: 1, 2: 1, 3: 1, 4: 1}
    dataset = EyePACSDataset.read(out)
    assert dataset.layout == "flat" and len(dataset.images) == 6
    assert len({i.patient for i in dataset.images}) == 3 and {i.eye for i in dataset.images} == {"left", "right"}
    first = dataset.images[0]
    assert first.image_id.startswith("clinic-a-") and first.image_id.endswith(("_left", "_right"))
    original = package / "photos" / f"{next(k for k, v in result.ids.items() if v == first.image_id)}.jpg"
    assert first.path.read_bytes() == original.read_bytes()
    assert (out / "PROVENANCE.md").read_text().startswith("# Graded photographs from screening unit 'clinic a'")
    for path in [out, *out.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600)
    assert json.loads((out / "import.json").read_text())["images"] == 6


def test_empty_levels_are_not_graded_and_semicolons_are_read(package, tmp_path):
    names = _images(package)
    text = "Image;Level\n" + "".join(f"{n};{'' if i % 2 else 2}\n" for i, n in enumerate(names))
    result = import_grades(package, _grades(tmp_path, text), tmp_path / "dataset")
    assert result.images == 3 and result.ungraded == 3 and result.levels == {2: 3}


def test_retakes_of_a_graded_eye_keep_the_last_photograph(tmp_path):
    cfg = screened_unit(tmp_path, patients=1)
    pkg = export_for_grading(cfg, parse_when("2020-01-01"), tmp_path / "pkg").folder
    doc = json.loads((pkg / SCREENINGS_JSON).read_text())
    assert [i["eye"] for i in doc["images"]] == ["right", "left"]
    names = _images(pkg)
    result = import_grades(pkg, _grades(tmp_path, f"image,level\n{names[0]},1\n{names[1]},3\n"), tmp_path / "d")
    assert result.retakes_left_out == 0 and sorted(result.levels.items()) == [(1, 1), (3, 1)]


@pytest.mark.parametrize(("text", "expected"), [
    ("name,grade\nx,1\n", "The grades file {p} needs the columns image and level (it has: name, grade); start "
                          "from the package's grades_template.csv."),
    ("image,level\nnot-an-image,1\n", "Line 2 of {p} names the image 'not-an-image', which is not in the package; "
                                      "fix the name or delete the row."),
    ("image,level\n{0},5\n", "Line 2 of {p} gives {0} the grade '5'; grades are whole numbers 0 to 4 (leave it empty "
                             "when a photograph cannot be graded)."),
    ("image,level\n{0},2.5\n", "Line 2 of {p} gives {0} the grade '2.5'"),
    ("image,level\n{0},-1\n", "Line 2 of {p} gives {0} the grade '-1'"),
    ("image,level\n{0},moderate\n", "Line 2 of {p} gives {0} the grade 'moderate'"),
    ("image,level\n{0},1\n{1},2\n{0},1\n", "The image {0} is graded twice in {p} (lines 2 and 4); keep one row."),
    ("image,level\n{0},\n", "The grades file {p} grades no photograph; fill in the level column (0-4)."),
    (b"image,level\n\xe9t\xe9,1\n", "The grades file {p} is not UTF-8 text (byte 12); save it as 'CSV UTF-8' and try "
                                    "again."),
    ("image,level\n{0},1\x00\n", "The grades file {p} contains NUL bytes (UTF-16 or binary, not UTF-8 text); save "
                                 "it as 'CSV UTF-8' and try again."),
    ("image,level\n{0},1\n".encode("utf-16"), "The grades file {p} is not UTF-8 text (byte 0)"),
    ("image,level\n\"{0},1\n" + "x" * 200_000, "The grades file {p} is not a valid CSV (line "),
])
def test_a_bad_grades_file_is_refused_with_one_sentence(package, tmp_path, text, expected):
    names = _images(package)
    if isinstance(text, str):
        text = text.replace("{0}", names[0]).replace("{1}", names[1])
    path = _grades(tmp_path, text)
    with pytest.raises(DatasetError) as err:
        import_grades(package, path, tmp_path / "dataset")
    message = expected.format(*names, p=path)
    assert str(err.value) == message or str(err.value).startswith(message), str(err.value)
    assert not (tmp_path / "dataset").exists()


def test_a_photograph_whose_hash_does_not_match_is_refused(package, tmp_path):
    import shutil

    copy = shutil.copytree(package, tmp_path / "copy")
    photo = next((copy / "photos").iterdir())
    photo.write_bytes(photo.read_bytes() + b"\0")
    with pytest.raises(PackageError) as err:
        import_grades(copy, _good(copy, tmp_path), tmp_path / "dataset")
    assert str(err.value) == (f"The file {photo} does not match the sha256 in the package manifest (damaged or "
                              "altered); copy the package again from the unit.")
    assert not (tmp_path / "dataset").exists()
    with pytest.raises(PackageError, match="is not a grading package"):
        import_grades(tmp_path, _good(package, tmp_path), tmp_path / "dataset")


def test_the_cli_and_prepare_read_the_dataset(package, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["import-grades", str(package), str(_good(package, tmp_path)), "--out",
                              str(tmp_path / "dataset")])
    assert res.exit_code == 0, res.output
    assert "6 images (grades 0: 2, 1: 1, 2: 1, 3: 1, 4: 1)" in res.output
    res = runner.invoke(cli, ["prepare", str(tmp_path / "dataset"), "--out", str(tmp_path / "cache"), "--size", "64",
                              "--workers", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text())
    res = runner.invoke(cli, ["import-grades", str(package), str(tmp_path / "missing.csv"), "--out",
                              str(tmp_path / "d2")])
    assert res.exit_code == 1 and "The grades file" in res.output and "does not exist; check the path." in res.output
