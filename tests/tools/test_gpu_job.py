"""tools/gpu_job: the staged-wheel format, the size check, packing and unpacking results, and (slow) the dry run of
the whole job with TensorFlow hidden."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO_ROOT, shared_data

sys.path.insert(0, str(REPO_ROOT / "tools" / "gpu_job"))
import jobtool
import stage


def _wheel(path: Path, name: str, version: str, tag: str, files: dict[str, bytes]) -> Path:
    """A minimal real wheel (what pip needs: METADATA, WHEEL, RECORD)."""
    dist_info = f"{name}-{version}.dist-info"
    whl = path / f"{name}-{version}-{tag}.whl"
    entries = {**files, f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
               f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: " +
               tag.encode() + b"\n"}
    with zipfile.ZipFile(whl, "w") as zf:
        for n, data in entries.items():
            zf.writestr(n, data)
        zf.writestr(f"{dist_info}/RECORD", "")
    return whl


def test_wheel_tags_pick_the_build_for_this_python():
    fits = jobtool.wheel_fits
    assert fits("h5py-3.14.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", (3, 11))
    assert not fits("h5py-3.14.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", (3, 12))
    assert fits("opencv_python_headless-4.11.0.86-cp37-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", (3, 12))
    assert fits("keras-3.15.1-py3-none-any.whl", (3, 10))
    assert not fits("pillow-12.2.0-cp311-cp311-macosx_11_0_arm64.whl", (3, 11))
    assert not fits("pillow-12.2.0-cp311-cp311-manylinux2014_aarch64.whl", (3, 11))
    with pytest.raises(jobtool.JobError, match="is not a wheel file name"):
        jobtool.parse_wheel_name("README.md")


def test_container_stores_shared_files_once_and_rebuilds_installable_wheels(tmp_path):
    pure = b"VALUE = 42\n"
    w311 = _wheel(tmp_path, "demo_pkg", "1.0", "cp311-cp311-manylinux2014_x86_64",
                  {"demo_pkg/__init__.py": pure, "demo_pkg/_native.txt": b"built for 3.11"})
    w312 = _wheel(tmp_path, "demo_pkg", "1.0", "cp312-cp312-manylinux2014_x86_64",
                  {"demo_pkg/__init__.py": pure, "demo_pkg/_native.txt": b"built for 3.12"})
    wheels, dropped = {}, {}
    for w in (w311, w312):
        wheels[w.name], dropped[w.name] = stage.read_wheel(w)
    assert all(name.endswith("RECORD") for names in dropped.values() for name in names)
    container = tmp_path / "wheels.tar.xz"
    jobtool.write_wheel_container(container, wheels, {}, fast=True)
    sets_container = tmp_path / "sets.tar.xz"
    jobtool.write_wheel_container(sets_container, wheels, {}, fast=True, sets={"3.11": [w311.name]})
    with pytest.raises(jobtool.JobError, match=r"staged for Python 3\.11, not 3\.12, which this machine runs; run "
                                               r"tools/gpu_job/stage.py --python 3\.12"):
        jobtool.rebuild_wheels(sets_container, tmp_path / "w312", (3, 12))
    assert [w.name for w in jobtool.rebuild_wheels(sets_container, tmp_path / "w311", (3, 11))] == [w311.name]
    import lzma
    import tarfile

    with lzma.open(container) as xz, tarfile.open(fileobj=xz) as tar:
        blobs = [m for m in tar.getmembers() if m.name.startswith("blobs/")]
    assert len(blobs) == 6  # __init__.py and METADATA once each; the native file and WHEEL (tags) per version
    with pytest.raises(jobtool.JobError, match=r"No staged wheel of demo-pkg fits Python 3\.10; .*--python 3\.10"):
        jobtool.rebuild_wheels(container, tmp_path / "w310", (3, 10))
    if sys.version_info[:2] not in {(3, 11), (3, 12)}:
        pytest.skip("the fake wheels are tagged cp311/cp312")
    (rebuilt,) = jobtool.rebuild_wheels(container, tmp_path / "w")
    assert rebuilt.name == {(3, 11): w311, (3, 12): w312}[sys.version_info[:2]].name
    with zipfile.ZipFile(rebuilt) as zf:
        record = zf.read("demo_pkg-1.0.dist-info/RECORD").decode()
        assert zf.read("demo_pkg/__init__.py") == pure
    assert "demo_pkg/__init__.py,sha256=" in record
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                    str(rebuilt)], check=True)
    out = subprocess.run([sys.executable, "-c", "import demo_pkg, importlib.metadata as m; "
                          "print(demo_pkg.VALUE, m.version('demo_pkg'))"], env={"PYTHONPATH": str(site)},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["42", "1.0"]


def test_strip_rules_drop_tests_stubs_and_cascades_only():
    assert stage.stripped("sklearn/metrics/tests/test_ranking.py")
    assert stage.stripped("cv2/__init__.pyi")
    assert stage.stripped("cv2/data/haarcascade_eye.xml")
    assert stage.stripped("matplotlib/mpl-data/sample_data/grace_hopper.jpg")
    assert not stage.stripped("sklearn/metrics/_ranking.py")
    assert not stage.stripped("sklearn/utils/_testing.py")
    assert stage.stripped("matplotlib/mpl-data/fonts/ttf/STIXGeneral.ttf")
    assert stage.stripped("matplotlib/mpl-data/fonts/ttf/cmr10.ttf")
    assert stage.stripped("pillow.libs/libavif-0b1c2ae7.so.16.4.1")
    assert not stage.stripped("matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf")
    assert not stage.stripped("matplotlib/mpl-data/fonts/ttf/DejaVuSans-Bold.ttf")
    assert not stage.stripped("PIL/_imaging.cpython-311-x86_64-linux-gnu.so")
    assert not stage.stripped("keras/src/testing/test_case.py")


def test_requirements_stay_within_pyproject_ranges():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for req in project["dependencies"] + project["optional-dependencies"]["train"]:
        name = req.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip()
        declared[jobtool.normalise(name)] = req.split(name, 1)[1].split(";")[0].strip()
    from packaging.specifiers import SpecifierSet

    for req in stage.REQUIREMENTS:
        name = req.split(">")[0].split("<")[0].split("=")[0]
        spec = req[len(name):]
        assert jobtool.normalise(name) in declared, f"{name} is staged but not a project dependency"
        pinned = [s.version for s in SpecifierSet(spec) if s.operator == "=="]
        for version in pinned:
            assert version in SpecifierSet(declared[jobtool.normalise(name)]), (name, version)
        if not pinned:
            assert SpecifierSet(spec) == SpecifierSet(declared[jobtool.normalise(name)]), name


def _eyepacs_folder(root: Path, n_patients: int = 6) -> Path:
    from PIL import Image

    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["image,level"]
    for p in range(n_patients):
        for eye in ("left", "right"):
            pixels = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)  # noise: JPEG size follows quality
            Image.fromarray(pixels).save(images / f"{100 + p}_{eye}.jpeg", quality=97)
            rows.append(f"{100 + p}_{eye},{p % 5}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_data_is_reencoded_at_the_highest_quality_that_fits_and_recorded(tmp_path):
    folder = _eyepacs_folder(tmp_path / "eyepacs")
    out = tmp_path / "stage"
    out.mkdir()
    sizes = {q: len(stage.data_tar(stage.read_labels(folder), q, folder)[0]) for q in (90, 85)}
    budget = (sizes[90] + sizes[85]) // 2
    info = stage.stage_data(folder, out, budget, None, 0, "auto", 60)
    assert info["jpeg_quality"] == 85 and info["images"] == 12 and info["bytes"] <= budget
    data = json.loads((out / "DATA.json").read_text())
    assert {r["image"] for r in data["rows"]} == {f"{100 + p}_{e}" for p in range(6) for e in ("left", "right")}
    assert all(len(r["sha256_original"]) == 64 for r in data["rows"])
    dest = tmp_path / "unpacked"
    jobtool.extract_data(out, dest)
    assert (dest / "labels.csv").read_text().splitlines()[1:] == (folder / "labels.csv").read_text().splitlines()[1:]
    assert len(list((dest / "images").glob("*.jpeg"))) == 12
    half = stage.choose(stage.read_labels(folder), 5, 0)
    assert len(half) == 6 and len({r[0].split("_")[0] for r in half}) == 3  # whole patients
    with pytest.raises(jobtool.JobError, match=r"12 images need .* MiB at JPEG quality 60 but only 0\.0 MiB is left "
                                               r"under the limit; stage fewer \(--images N\)"):
        stage.stage_data(folder, out, 1000, None, 0, "auto", 60)


def test_stage_fails_with_one_sentence_when_the_wheels_do_not_fit(tmp_path, monkeypatch):
    big = _wheel(tmp_path, "big_pkg", "1.0", "py3-none-any", {"big_pkg/blob.bin": np.random.default_rng(0).bytes(
        3 * 2**20)})
    monkeypatch.setattr(stage, "download_wheels", lambda *a, **k: [big])
    with pytest.raises(jobtool.JobError, match=r"needs Python >= 3\.11 .* staging for 3\.10 cannot work"):
        stage.stage(tmp_path / "s", ["3.10", "3.11"], [], None, None, cache=tmp_path / "cache", fast=True)
    with pytest.raises(jobtool.JobError, match=r"The checkout \(.* MiB\) and the wheels for Python 3\.11 \(3\.0 MiB\) "
                                               r"already exceed the 2 MiB a device call carries"):
        stage.stage(tmp_path / "s", ["3.11"], [], None, None, limit_mib=2, cache=tmp_path / "cache", fast=True)
    checkout, _ = stage.travelling_bytes(REPO_ROOT)
    meta = stage.stage(tmp_path / "s", ["3.11"], [], None, None, limit_mib=64, cache=tmp_path / "cache", fast=True)
    assert meta["checkout"]["bytes"] == checkout > 0
    assert meta["total_bytes"] == checkout + sum(p.stat().st_size for p in (tmp_path / "s").iterdir())
    assert meta["wheels"]["wheels"] == [big.name] and "jax" in meta["present"]


def _fake_work(tmp_path: Path, weight_bytes: int) -> Path:
    work = tmp_path / "work"
    (work / "run").mkdir(parents=True)
    (work / "smoke").mkdir()
    (work / "site").mkdir()
    (work / "run" / "summary.json").write_text('{"best_val_auc": 0.8}')
    (work / "run" / "best.weights.h5").write_bytes(np.random.default_rng(1).bytes(weight_bytes))
    (work / "run" / "checkpoint.npz").write_bytes(b"x" * 1000)
    (work / "smoke" / "summary.json").write_text("{}")
    (work / "site" / "big.so").write_bytes(b"y" * 1000)
    (work / "bench.txt").write_text("| 512 | model-only |")
    return work


def test_pack_splits_the_weights_and_unpack_reassembles_them(tmp_path):
    work = _fake_work(tmp_path, 40_000)
    out = tmp_path / "out"
    written = jobtool.pack(work, out, part_bytes=16_000)
    names = sorted(p.name for p in written)
    assert names == ["MANIFEST.sha256", "best.weights.h5.part00", "best.weights.h5.part01", "best.weights.h5.part02",
                     "results.tar.gz"]
    import tarfile

    with tarfile.open(out / "results.tar.gz") as tar:
        packed = set(tar.getnames())
    assert {"run/summary.json", "smoke/summary.json", "bench.txt"} <= packed
    assert not {"run/checkpoint.npz", "run/best.weights.h5", "site/big.so"} & packed
    run_dir = jobtool.unpack(out, tmp_path / "runs" / "gpu")
    assert (run_dir / "best.weights.h5").read_bytes() == (work / "run" / "best.weights.h5").read_bytes()
    assert (run_dir / "gpu_job" / "bench.txt").is_file() and (run_dir / "summary.json").is_file()
    with pytest.raises(jobtool.JobError, match="already exists and is not empty"):
        jobtool.unpack(out, run_dir)
    part = out / "best.weights.h5.part01"
    part.write_bytes(b"\0" + part.read_bytes()[1:])
    with pytest.raises(jobtool.JobError, match=r"part01 does not match its sha256 in MANIFEST\.sha256; fetch the "
                                               r"call's files again\."):
        jobtool.unpack(out, tmp_path / "runs" / "again")


def test_pack_refuses_more_than_the_device_tool_returns(tmp_path):
    work = _fake_work(tmp_path, 9 * 16_000)  # 9 parts + tarball + manifest > 8 files
    with pytest.raises(jobtool.JobError, match=r"exceed what the device tool returns \(8 files of 16 MiB"):
        jobtool.pack(work, tmp_path / "out", part_bytes=16_000)


def _online() -> bool:
    result = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                             "-d", "/tmp/pip-online-probe", "namex"], capture_output=True, timeout=120)
    return result.returncode == 0


@pytest.mark.slow
@pytest.mark.real_data
def test_dry_run_stages_and_runs_the_whole_job_with_tensorflow_hidden(tmp_path):
    eyepacs = shared_data("eyepacs_256")
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed here (pip install -e .[jax])")
    if not _online():
        pytest.skip("no package index reachable: pip download cannot fetch the wheels")
    import dry_run

    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    # fast compression and no size limit: this proves the path; the 64 MiB check is the test above and docs/training.md
    meta = stage.stage(tmp_path / "stage", [python], [], eyepacs, 24, cache=tmp_path / "cache", fast=True,
                       limit_mib=1024)
    assert meta["data"]["images"] >= 24 and meta["data"]["jpeg_quality"] == 90
    summary = dry_run.dry_run(tmp_path / "stage", tmp_path / "dry", job_seconds=400)
    log = Path(summary["log"]).read_text()
    assert summary["returncode"] == 0, log[-4000:]
    assert '"KERAS_BACKEND": "jax"' in log and '"tensorflow_importable": false' in log
    assert "model-only" in log and "bench stopped" not in log  # the bench table came out
    assert re.search(r"training dry_run: \d+ train / \d+ val images at 64 px, .*backend jax", log)
    assert summary["weights"] and summary["summary"]["backend"] == "jax" and summary["summary"]["epochs_done"] == 2
    assert len(summary["returned_files"]) <= jobtool.RETURN_FILES
    run_dir = Path(summary["unpacked"])
    for name in ("curves.png", "roc.png", "history.csv", "data.json", "gpu_job/versions.json", "gpu_job/bench.txt",
                 "gpu_job/STAGE.json", "gpu_job/smoke/summary.json"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "gpu_job" / "STAGE.json").read_text())["commit"] == meta["commit"]
    # the unpacked run loads here (TensorFlow or JAX, whichever this process runs) for export and evaluation
    from trainer.training.train import load_run_model

    model = load_run_model(run_dir)
    assert np.asarray(model(np.zeros((1, 64, 64, 3), np.float32))["probs"]).shape == (1, 2)
