"""EyePACS/Kaggle reader and patient-level split: layouts, labels, messages, stratification, determinism."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from trainer.data.eyepacs import DatasetError, EyePACSDataset, EyePACSImage, read_labels, split_by_patient
from trainer.data.prepare import choose_subset


def _touch_images(folder: Path, ids: list[str], suffix: str = ".jpeg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        (folder / f"{image_id}{suffix}").write_bytes(b"x")  # the reader never decodes; prepare does


def _labels(path: Path, rows: list[tuple[str, int]], usage: bool = False) -> None:
    header = "image,level,Usage" if usage else "image,level"
    lines = [header] + [f"{i},{lv},Public" if usage else f"{i},{lv}" for i, lv in rows]
    path.write_text("\n".join(lines) + "\n")


def _images(n_patients: int, referable_every: int = 3) -> list[EyePACSImage]:
    images = []
    for p in range(n_patients):
        for eye in ("left", "right"):
            level = 3 if (p % referable_every == 0 and eye == "left") else 0
            images.append(EyePACSImage(f"{p}_{eye}", Path(f"{p}_{eye}.jpeg"), str(p), eye, level, int(level >= 2)))
    return images


def test_kaggle_layout_reads_train_and_test_with_fixed_test_split(tmp_path: Path) -> None:
    _touch_images(tmp_path / "train", ["10_left", "10_right", "13_left", "13_right", "99_left"])
    _labels(tmp_path / "trainLabels.csv",
            [("10_left", 0), ("10_right", 2), ("13_left", 1), ("13_right", 4), ("77_left", 3)])
    _touch_images(tmp_path / "test", ["1_left", "1_right"])
    _labels(tmp_path / "retinopathy_solution.csv", [("1_left", 2), ("1_right", 0)], usage=True)

    data = EyePACSDataset.read(tmp_path)

    assert data.layout == "kaggle"
    assert [i.image_id for i in data.images] == ["10_left", "10_right", "13_left", "13_right", "1_left", "1_right"]
    by_id = {i.image_id: i for i in data.images}
    assert (by_id["10_right"].patient, by_id["10_right"].eye, by_id["10_right"].label) == ("10", "right", 1)
    assert by_id["13_left"].label == 0 and by_id["13_right"].label == 1  # level 1 is not referable
    assert by_id["1_left"].split == "test" and by_id["10_left"].split is None
    assert data.labels_without_image == 1  # 77_left has a label but no file
    assert data.images_without_label == ("99_left",)
    assert data.summary()["patients"] == 3 and data.summary()["referable"] == 3


def test_referable_level_is_configurable(tmp_path: Path) -> None:
    _touch_images(tmp_path / "images", ["5_left", "5_right"])
    _labels(tmp_path / "labels.csv", [("5_left", 1), ("5_right", 2)])
    assert [i.label for i in EyePACSDataset.read(tmp_path, referable_level=1).images] == [1, 1]
    assert [i.label for i in EyePACSDataset.read(tmp_path, referable_level=3).images] == [0, 0]


def test_flat_layout_and_explicit_images_folder(tmp_path: Path) -> None:
    _touch_images(tmp_path / "images", ["20_left", "20_right"])
    _labels(tmp_path / "labels.csv", [("20_left.jpeg", 2), ("20_right", 0)])  # suffix in the csv is tolerated
    flat = EyePACSDataset.read(tmp_path)
    assert flat.layout == "flat" and [i.level for i in flat.images] == [2, 0]

    _touch_images(tmp_path / "sample", ["30_left"], suffix=".png")
    _labels(tmp_path / "trainLabels.csv", [("30_left", 4), ("31_left", 0)])
    explicit = EyePACSDataset.read(tmp_path, images_dir="sample")
    assert explicit.layout == "explicit" and explicit.label_files == (tmp_path / "trainLabels.csv",)
    assert [(i.image_id, i.level) for i in explicit.images] == [("30_left", 4)] and explicit.labels_without_image == 1


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("name,grade\n20_left,2\n", "needs the columns image and level"),
        ("image,level\n20_left,7\n", "Line 2 of"),
        ("image,level\n20_left,2\n20_left,3\n", "is listed twice"),
    ],
)
def test_bad_label_files_give_one_sentence(tmp_path: Path, csv_text: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(csv_text)
    with pytest.raises(DatasetError, match=message) as info:
        read_labels(path)
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")


def test_label_files_that_are_not_utf8_text_or_not_files_give_one_sentence(tmp_path: Path) -> None:
    # issue 16 item 11: `trainer prepare --labels` with a non-UTF-8 CSV gave a UnicodeDecodeError traceback
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("image,level\nGöteborg_1_left,0\n".encode("latin-1"))
    with pytest.raises(DatasetError) as err:
        read_labels(latin)
    assert str(err.value) == (f"The label file {latin} is not UTF-8 text (byte 13); save it as 'CSV UTF-8' and try "
                              "again.")
    utf16 = tmp_path / "utf16.csv"
    utf16.write_bytes("image,level\n1_left,0\n".encode("utf-16-le"))
    with pytest.raises(DatasetError, match="contains NUL bytes"):
        read_labels(utf16)
    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)
    with pytest.raises(DatasetError) as err:
        read_labels(fifo)  # before: reported as missing (is_file), or hung when opened
    assert str(err.value) == (f"The label file {fifo} is a named pipe (FIFO), not a CSV file; pass the right --labels "
                              "file.")


def test_missing_or_unrecognised_folders_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist; check the path"):
        EyePACSDataset.read(tmp_path / "absent")
    with pytest.raises(DatasetError, match=r"pass --images-dir and --labels"):
        EyePACSDataset.read(tmp_path)
    _labels(tmp_path / "labels.csv", [("1_left", 0)])
    _touch_images(tmp_path / "images", ["2_left"])
    with pytest.raises(DatasetError, match=r"No labelled images were found"):
        EyePACSDataset.read(tmp_path)
    with pytest.raises(DatasetError, match=r"The images folder .* does not exist"):
        EyePACSDataset.read(tmp_path, images_dir="nowhere")


def test_split_keeps_both_eyes_together_and_is_stratified() -> None:
    images = _images(200)
    split = split_by_patient(images, val_fraction=0.2, seed=3)

    by_patient: dict[str, set[str]] = {}
    for image in images:
        by_patient.setdefault(image.patient, set()).add(split[image.image_id])
    assert all(len(s) == 1 for s in by_patient.values())
    referable = {i.patient for i in images if i.label}
    val = {p for p, s in by_patient.items() if s == {"val"}}
    assert len(val) == 40  # 20 % of 200 patients
    assert len(val & referable) == round(len(referable) * 0.2)  # 67 referable patients -> 13 in validation
    assert Counter(split.values()) == {"train": 320, "val": 80}


def test_split_of_tiny_sets_still_has_a_validation_patient() -> None:
    images = [i for i in _images(2, referable_every=2)]  # patient 0 referable, patient 1 not
    split = split_by_patient(images, val_fraction=0.5, seed=0)
    assert split["0_left"] == split["0_right"] == "val"  # total 1, tie -> the referable stratum
    assert split["1_left"] == split["1_right"] == "train"


def test_split_is_seeded_and_leaves_test_images_alone() -> None:
    images = [*_images(50), EyePACSImage("900_left", Path("x"), "900", "left", 0, 0, split="test")]
    first = split_by_patient(images, seed=1)
    assert first == split_by_patient(list(reversed(images)), seed=1)  # order of the input does not matter
    assert first != split_by_patient(images, seed=2)
    assert first["900_left"] == "test"
    assert set(split_by_patient(images, val_fraction=0.0).values()) == {"train", "test"}
    with pytest.raises(DatasetError, match=r"at least 0 and below 1"):
        split_by_patient(images, val_fraction=1.0)


def test_limit_takes_whole_patients_deterministically() -> None:
    images = tuple(_images(30))
    chosen = choose_subset(images, limit=11, seed=0)
    assert len(chosen) == 10 and chosen == choose_subset(images, limit=11, seed=0)
    assert all(n == 2 for n in Counter(i.patient for i in chosen).values())
    assert choose_subset(images, limit=None, seed=0) == images


@pytest.mark.real_data
def test_real_kaggle_sample_with_the_full_label_file(kaggle_sample_root: Path) -> None:
    data = EyePACSDataset.read(kaggle_sample_root, images_dir="sample")
    assert len(data.images) == 10 and data.labels_without_image == 35_126 - 10
    grades = {i.image_id: i.level for i in data.images}
    # the grades PROVENANCE.md lists
    assert (grades["15_left"], grades["15_right"], grades["16_left"], grades["17_right"]) == (1, 2, 4, 1)


@pytest.mark.real_data
def test_real_eyepacs_256_counts(eyepacs_256_root: Path) -> None:
    summary = EyePACSDataset.read(eyepacs_256_root).summary()
    assert (summary["images"], summary["patients"], summary["referable"]) == (1800, 900, 645)  # DESIGN.md §3
    assert summary["levels"] == {"0": 1030, "1": 125, "2": 494, "3": 91, "4": 60}
