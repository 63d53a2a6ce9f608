"""Stage the GPU job: wheels for the GPU machine's Python, a compact copy of the data, and the size check.

    python tools/gpu_job/stage.py --out .gpu                          # Python 3.11, eyepacs_256, JPEG quality auto
    python tools/gpu_job/stage.py --out .gpu --python 3.11,3.12 --present pillow,matplotlib
    python tools/gpu_job/stage.py --out /tmp/s --images 48 --fast     # tests: tiny data, quick compression

The device call carries the checkout it is made from (tracked and untracked-not-ignored files) plus the folders
named in ``carry``, 64 MiB in all. So the project code travels as the checkout itself (the job runs in a copy of it),
and this script stages only what the checkout lacks, into ``--out`` (``.gpu`` is git-ignored: name it in ``carry``):

- ``wheels.tar.xz``: every wheel the trainer needs that the GPU machine does not have (that machine has JAX and its
  dependencies, ``--present`` adds more), for each ``--python`` version, unpacked, with test folders and other files
  the trainer never opens left out (``STRIP``), each distinct file once, xz-compressed with the x86 filter;
  ``tools/gpu_job/jobtool.py install`` rebuilds the wheels for the machine's Python there and pip-installs them.
- ``data.tar``: an EyePACS folder (``labels.csv`` + ``images/``) with the chosen photographs re-encoded as JPEG at
  the highest quality that fits, and ``DATA.json`` (every image, its grade, the sha256 of the original and of the
  staged file). Licensed data: stage it outside the repository or into the ignored ``.gpu``; never commit it.
- ``STAGE.json``: the commit, the Python versions, the wheels, the sizes, the budget.

Fails with one sentence when the checkout plus the staged files exceed ``--limit-mib``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

from jobtool import (
    DATA,
    STAGE_JSON,
    WHEELS,
    JobError,
    file_sha256,
    normalise,
    parse_wheel_name,
    write_wheel_container,
)

REPO = Path(__file__).resolve().parents[2]
# What the job imports beyond JAX, with pyproject.toml's ranges (tests/tools/test_gpu_job.py keeps them in step).
# `bench`: bench/bench_train.py (Keras, the input pipeline: pydantic config, OpenCV, Pillow). `train` adds what
# `python -m trainer train` and `synth` import at epoch ends and for the smoke run: scikit-learn (validation AUC),
# matplotlib (curves.png, roc.png), tqdm, click. OpenCV 4.11: 50 MB against 58 MB for 5.x, no NumPy-2-only pin.
REQUIREMENTS_BENCH = (
    "keras>=3.10,<4",
    "pydantic>=2.6,<3",
    "opencv-python-headless==4.11.0.86",
    "pillow>=10,<14",
)
REQUIREMENTS = (
    *REQUIREMENTS_BENCH,
    "click>=8.1,<9",
    "scikit-learn>=1.4,<2",
    "matplotlib>=3.8,<4",
    "tqdm>=4.66,<5",
)
JOBS = {"train": REQUIREMENTS, "bench": REQUIREMENTS_BENCH}
# On the GPU machine already: JAX and what JAX itself needs (never staged; `install` checks they are there).
DEFAULT_PRESENT = ("jax", "jaxlib", "numpy", "scipy", "ml-dtypes", "opt-einsum")
# Files inside wheels that training never opens: test suites, type stubs, OpenCV's face-detector cascades,
# matplotlib's sample data and the fonts its Agg PNGs never use (serif, mono, STIX, Computer Modern, PDF/PS metrics:
# the plots use DejaVu Sans), scikit-learn's bundled toy data sets, Pillow's AVIF codec (an optional plugin whose
# import Pillow guards). Bump STRIP_VERSION when this changes (it keys the compressed-container cache).
STRIP = (
    re.compile(r"(^|/)tests?/"),
    re.compile(r"\.pyi$"),
    re.compile(r"^cv2/data/"),
    re.compile(r"^matplotlib/mpl-data/sample_data/"),
    re.compile(r"^matplotlib/mpl-data/fonts/(afm|pdfcorefonts)/"),
    re.compile(r"^matplotlib/mpl-data/fonts/ttf/(DejaVuSerif|DejaVuSansMono|STIX|cm[a-z]+\d*\.ttf)"),
    re.compile(r"^sklearn/datasets/(data|descr|images)/"),
    re.compile(r"^PIL/_avif\.|^pillow\.libs/libavif-"),
    re.compile(r"\.dist-info/RECORD$"),
)
STRIP_VERSION = 2
# Distributions whose pure-Python wheel replaces the compiled one (same code, no speed-ups the trainer needs):
# fontTools is only imported by matplotlib's PDF/PS backends; its compiled wheel is 24 MiB unpacked, the pure one 5.
PREFER_PURE = ("fonttools",)
MIN_PYTHON = (3, 11)
QUALITIES = (90, 85, 80, 75, 70, 65, 60, 55, 50)
RESERVE = 256 * 1024  # STAGE.json and slack


def stripped(name: str) -> bool:
    return any(rule.search(name) for rule in STRIP)


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dr-gpu-job"


def git(args: list[str], cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        raise JobError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}; stage from a git checkout.")
    return result.stdout


def travelling_bytes(checkout: Path, exclude: Path | None = None) -> tuple[int, int]:
    """Bytes and files of the checkout that a device call carries: tracked and untracked-not-ignored files (and
    ``shared/`` inside it), without ``exclude`` (the staged folder, counted on its own)."""
    names = set(git(["ls-files", "-z", "--cached", "--others", "--exclude-standard"], checkout).split("\0")) - {""}
    paths = {checkout / n for n in names}
    shared = checkout / "shared"
    if shared.is_dir():
        paths |= {p for p in shared.rglob("*") if p.is_file()}
    total = count = 0
    for path in paths:
        if exclude is not None and (path == exclude or exclude in path.parents):
            continue
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
            count += 1
    return total, count


# ---------------------------------------------------------------------------------------------- wheels


def download_wheels(python: str, present: set[str], cache: Path, pip_python: str,
                    requirements: tuple[str, ...] = REQUIREMENTS) -> list[Path]:
    """``pip download`` the requirements and their dependencies for CPython ``python`` on manylinux2014 x86-64;
    returns the wheels not in ``present``."""
    dest = cache / "downloads" / f"cp{python.replace('.', '')}"
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [pip_python, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "--platform", "manylinux2014_x86_64",
           "-d", str(dest), *requirements]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        raise JobError(f"pip download for Python {python} failed (offline, or no wheel for it): "
                       f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.stdout[-500:]}")
    found = re.findall(r"(?:Saved|File was already downloaded) (\S+\.whl)", result.stdout)
    wheels = sorted({Path(p).resolve() for p in found})
    if not wheels:
        raise JobError(f"pip download for Python {python} named no wheels; run it by hand to see why: {' '.join(cmd)}")
    out = []
    for wheel in wheels:
        tags = parse_wheel_name(wheel.name)
        name = normalise(tags["name"])
        if name in present:
            continue
        if name in PREFER_PURE and tags["abi"] != "none":
            wheel = pure_wheel(tags["name"], tags["version"], python, cache, pip_python)
        out.append(wheel)
    return out


def pure_wheel(name: str, version: str, python: str, cache: Path, pip_python: str) -> Path:
    dest = cache / "downloads" / "pure"
    cmd = [pip_python, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:",
           "--python-version", python, "--implementation", "py", "--abi", "none", "--platform", "any", "-d", str(dest),
           f"{name}=={version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = re.findall(r"(?:Saved|File was already downloaded) (\S+\.whl)", result.stdout)
    if result.returncode or not found:
        raise JobError(f"pip found no pure-Python wheel of {name} {version}; drop it from PREFER_PURE in {__file__}.")
    return Path(found[0]).resolve()


def read_wheel(path: Path) -> tuple[list[tuple[str, bytes, bool]], list[str]]:
    kept, dropped = [], []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            if stripped(info.filename):
                dropped.append(info.filename)
                continue
            kept.append((info.filename, zf.read(info), bool((info.external_attr >> 16) & 0o111)))
    return kept, dropped


def stage_wheels(sets: dict[str, list[Path]], out: Path, cache: Path, fast: bool) -> dict:
    wheels = sorted({w for ws in sets.values() for w in ws})
    names = {python: sorted(w.name for w in ws) for python, ws in sets.items()}
    key = hashlib.sha256(json.dumps([STRIP_VERSION, fast, names, sorted((w.name, file_sha256(w)) for w in wheels)])
                         .encode()).hexdigest()[:20]
    cached = cache / "containers" / f"{key}.tar.xz"
    started = time.monotonic()
    stripped_bytes = 0
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        contents, dropped = {}, {}
        for wheel in wheels:
            contents[wheel.name], dropped[wheel.name] = read_wheel(wheel)
        stripped_bytes = sum(len(d) for rows in contents.values() for _, d, _ in rows)
        print(f"compressing {len(wheels)} wheels ({stripped_bytes / 2**20:.0f} MiB unpacked) with xz "
              f"{'fast' if fast else '-9e + x86 filter (a few minutes)'} ...", flush=True)
        write_wheel_container(cached, contents, {w: len(d) for w, d in dropped.items()}, fast=fast, sets=names)
    shutil.copyfile(cached, out / WHEELS)
    return {"file": WHEELS, "bytes": (out / WHEELS).stat().st_size, "zip_bytes": sum(w.stat().st_size for w in wheels),
            "cache": str(cached), "seconds": round(time.monotonic() - started, 1),
            "wheels": sorted(w.name for w in wheels), "sets": names}


# ---------------------------------------------------------------------------------------------- data


def read_labels(folder: Path) -> list[tuple[str, int, Path]]:
    labels = folder / "labels.csv"
    images = folder / "images"
    if not labels.is_file() or not images.is_dir():
        raise JobError(f"{folder} is not an EyePACS folder (labels.csv + images/); give --data the eyepacs_256 "
                       f"folder, or --no-data.")
    rows = []
    with open(labels, newline="") as f:
        for row in csv.DictReader(f):
            matches = sorted(images.glob(f"{row['image']}.*"))
            if matches:
                rows.append((row["image"], int(row["level"]), matches[0]))
    if not rows:
        raise JobError(f"{folder} lists no image that exists in images/; check the folder.")
    return rows


def choose(rows: list, n: int | None, seed: int) -> list:
    """All rows, or whole patients (both eyes) in a seeded random order until ``n`` images."""
    if n is None or n >= len(rows):
        return rows
    import numpy as np

    patients = sorted({r[0].split("_")[0] for r in rows})
    order = np.random.default_rng(seed).permutation(len(patients))
    chosen, out = set(), []
    for i in order:
        chosen.add(patients[i])
        out = [r for r in rows if r[0].split("_")[0] in chosen]
        if len(out) >= n:
            break
    return out


def encode(path: Path, quality: int) -> bytes:
    from PIL import Image

    with Image.open(path) as im:
        buffer = io.BytesIO()
        im.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def data_tar(rows: list, quality: int, source: Path) -> tuple[bytes, dict]:
    files, records = [], []
    for image, level, path in rows:
        original = path.read_bytes()
        data = encode(path, quality)
        if len(original) <= len(data):  # never larger than the original
            data = original
        files.append((f"images/{image}.jpeg", data))
        records.append({"image": image, "level": level, "sha256_original": hashlib.sha256(original).hexdigest(),
                        "sha256_staged": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
    labels = "image,level\n" + "".join(f"{r['image']},{r['level']}\n" for r in records)
    info = {"source": str(source), "images": len(records), "referable": sum(r["level"] >= 2 for r in records),
            "patients": len({r["image"].split("_")[0] for r in records}), "jpeg_quality": quality,
            "encoder": "Pillow JPEG, optimize=True (the original kept where it is smaller)",
            "licence": "EyePACS/Kaggle: non-commercial research only, never redistribute or commit",
            "rows": records}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in [("labels.csv", labels.encode()), ("DATA.json", json.dumps(info, indent=1).encode()),
                           *files]:
            member = tarfile.TarInfo(name)
            member.size, member.mtime, member.mode = len(data), 0, 0o644
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue(), info


def stage_data(source: Path, out: Path, budget: int, n: int | None, seed: int, quality: str, min_quality: int) -> dict:
    rows = choose(read_labels(source), n, seed)
    ladder = [int(quality)] if quality != "auto" else [q for q in QUALITIES if q >= min_quality]
    size = 0
    for q in ladder:
        data, info = data_tar(rows, q, source)
        size = len(data)
        print(f"data: {len(rows)} images at JPEG quality {q}: {size / 2**20:.1f} MiB (room: {budget / 2**20:.1f} MiB)",
              flush=True)
        if size <= budget:
            (out / DATA).write_bytes(data)
            (out / "DATA.json").write_text(json.dumps(info, indent=1) + "\n")
            return {"file": DATA, "bytes": size, **{k: v for k, v in info.items() if k != "rows"}}
    raise JobError(f"{len(rows)} images need {size / 2**20:.1f} MiB at JPEG quality {ladder[-1]} but only "
                   f"{budget / 2**20:.1f} MiB is left under the limit; stage fewer (--images N), fewer Python "
                   f"versions, or name packages the GPU machine already has (--present).")


# ---------------------------------------------------------------------------------------------- main


def stage(out: Path, pythons: list[str], present_extra: list[str], data: Path | None, images: int | None,
          seed: int = 0, quality: str = "auto", min_quality: int = 60, limit_mib: float = 64.0,
          checkout: Path = REPO, cache: Path | None = None, fast: bool = False,
          pip_python: str = sys.executable, job: str = "train") -> dict:
    """Stage the job into ``out`` and return STAGE.json's content; raises JobError when over the limit."""
    started = time.monotonic()
    cache = cache or default_cache()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in (WHEELS, DATA, STAGE_JSON, "DATA.json"):
        (out / name).unlink(missing_ok=True)
    limit = int(limit_mib * 2**20)
    commit = git(["rev-parse", "HEAD"], REPO).strip()
    dirty = bool(git(["status", "--porcelain", "--untracked-files=no"], REPO).strip())
    checkout_bytes, checkout_files = travelling_bytes(checkout.resolve(), exclude=out)
    present = sorted({normalise(p) for p in (*DEFAULT_PRESENT, *present_extra) if p})
    too_old = [p for p in pythons if tuple(int(x) for x in p.split(".")[:2]) < MIN_PYTHON]
    if too_old or not pythons:
        raise JobError(f"The project needs Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} (pyproject.toml requires-python), "
                       f"so staging for {', '.join(too_old) or 'no version'} cannot work; give --python 3.11 or later.")
    sets = {python: download_wheels(python, set(present), cache, pip_python, JOBS[job]) for python in pythons}
    wheels = sorted({w for ws in sets.values() for w in ws})
    wheel_info = stage_wheels(sets, out, cache, fast)
    used = checkout_bytes + wheel_info["bytes"] + RESERVE
    print(f"checkout that travels: {checkout_bytes / 2**20:.1f} MiB ({checkout_files} files); wheels for Python "
          f"{', '.join(pythons)}: {wheel_info['bytes'] / 2**20:.1f} MiB ({len(wheels)} wheels, "
          f"{wheel_info['zip_bytes'] / 2**20:.1f} MiB as downloaded)", flush=True)
    if used > limit:
        raise JobError(f"The checkout ({checkout_bytes / 2**20:.1f} MiB) and the wheels for Python "
                       f"{', '.join(pythons)} ({wheel_info['bytes'] / 2**20:.1f} MiB) already exceed the "
                       f"{limit_mib:g} MiB a device call carries; stage fewer Python versions or name packages the GPU "
                       f"machine already has (--present).")
    data_info = None
    if data is not None and job == "train":
        data_info = stage_data(data, out, limit - used, images, seed, quality, min_quality)
    meta = {
        "commit": commit, "dirty": dirty, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "job": job, "pythons": pythons, "present": present, "requirements": list(JOBS[job]), "wheels": wheel_info,
        "data": data_info, "checkout": {"path": str(checkout.resolve()), "bytes": checkout_bytes,
                                        "files": checkout_files},
        "limit_bytes": limit, "fast_compression": fast,
    }
    staged = 0
    for _ in range(4):  # STAGE.json states its own size among the staged bytes: write until that is stable
        meta["staged_bytes"], meta["total_bytes"] = staged, staged + checkout_bytes
        (out / STAGE_JSON).write_text(json.dumps(meta, indent=1) + "\n")
        now = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        if now == staged:
            break
        staged = now
    print(f"staged {staged / 2**20:.1f} MiB into {out}; with the checkout {meta['total_bytes'] / 2**20:.1f} MiB of "
          f"{limit_mib:g} MiB (commit {commit[:10]}{', tracked files modified' if dirty else ''}) "
          f"in {time.monotonic() - started:.0f} s", flush=True)
    if meta["total_bytes"] > limit:
        raise JobError(f"The staged job measures {meta['total_bytes'] / 2**20:.1f} MiB with the checkout, over the "
                       f"{limit_mib:g} MiB a device call carries; stage fewer images (--images N).")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Stage the GPU job (wheels, data, size check) into one folder.")
    parser.add_argument("--out", type=Path, required=True, help="staged folder (.gpu in the checkout is git-ignored)")
    parser.add_argument("--job", choices=sorted(JOBS), default="train",
                        help="train: smoke run, bench, training (all wheels + data); bench: the throughput bench only "
                             "(Keras, pydantic, OpenCV, Pillow; no data)")
    parser.add_argument("--python", default="3.11,3.12,3.13",
                        help="CPython versions the GPU machine may run, comma-separated (its own is unknown until the "
                             "job prints it; install picks the set for it)")
    parser.add_argument("--present", default="", help="more distributions the GPU machine already has, comma-separated")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "eyepacs_256",
                        help="EyePACS folder (labels.csv + images/)")
    parser.add_argument("--no-data", action="store_true", help="stage no images (smoke run and bench only)")
    parser.add_argument("--images", type=int, help="at most this many images (whole patients, seeded); default all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jpeg-quality", default="auto", help="auto = the highest of 90..--min-quality that fits")
    parser.add_argument("--min-quality", type=int, default=60)
    parser.add_argument("--limit-mib", type=float, default=64.0, help="what one device call carries")
    parser.add_argument("--checkout", type=Path, default=REPO, help="the checkout the device call is made from")
    parser.add_argument("--cache", type=Path, help="downloads and compressed containers (default ~/.cache/dr-gpu-job)")
    parser.add_argument("--fast", action="store_true", help="quick, weak compression (tests)")
    args = parser.parse_args(argv)
    try:
        stage(args.out, [p.strip() for p in args.python.split(",") if p.strip()],
              [p.strip() for p in args.present.split(",")], None if args.no_data else args.data, args.images,
              args.seed, args.jpeg_quality, args.min_quality, args.limit_mib, args.checkout, args.cache, args.fast,
              job=args.job)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
