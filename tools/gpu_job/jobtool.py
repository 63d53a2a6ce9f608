"""The GPU job's own tool: the staged-wheel format, the offline install, the data, packing and unpacking results.

Standard library only: it runs on the GPU machine before anything is installed there.

    python tools/gpu_job/jobtool.py install STAGE --work DIR     # GPU machine: wheels for this Python -> DIR/site
    python tools/gpu_job/jobtool.py versions [--out FILE]         # python, jax, keras, ... and the JAX devices
    python tools/gpu_job/jobtool.py data STAGE DEST               # the staged images -> DEST (an EyePACS folder)
    python tools/gpu_job/jobtool.py pack WORK OUT                 # results -> OUT: files < 16 MiB, MANIFEST.sha256
    python tools/gpu_job/jobtool.py unpack FILES --run-dir DIR    # here: check and reassemble them into a run folder

See docs/training.md, "Training on a GPU server".
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import lzma
import os
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

WHEELS = "wheels.tar.xz"
DATA = "data.tar"
STAGE_JSON = "STAGE.json"
MANIFEST = "MANIFEST.sha256"
RESULTS = "results.tar.gz"
WEIGHTS = "best.weights.h5"
# What the device tool returns: at most 8 files of 16 MiB each, 64 MiB together (/work/.library/device/README.md).
RETURN_FILE_LIMIT = 16 * 2**20
RETURN_FILES = 8
RETURN_TOTAL = 64 * 2**20
PART_BYTES = 15 * 2**20
# xz with the x86 branch filter: wheels are mostly shared libraries, which it makes ~25 % smaller than zip does.
XZ_FILTERS = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME,
                                         "dict_size": 64 * 2**20}]
XZ_FILTERS_FAST = [{"id": lzma.FILTER_LZMA2, "preset": 0}]
# Distributions printed by `versions` (those the trainer imports on the GPU machine).
VERSIONS_OF = ("jax", "jaxlib", "numpy", "scipy", "ml_dtypes", "keras", "optree", "h5py", "pydantic", "pydantic_core",
               "opencv-python-headless", "pillow", "scikit-learn", "matplotlib", "click", "tqdm", "torch")
_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)"
                         r"-(?P<plat>[^-]+)\.whl$")


class JobError(Exception):
    """A fault with one sentence that says what to do; the job prints it and stops."""


def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_wheel_name(filename: str) -> dict:
    match = _WHEEL_NAME.match(filename)
    if not match:
        raise JobError(f"{filename} is not a wheel file name; stage again with tools/gpu_job/stage.py.")
    return match.groupdict()


def wheel_fits(filename: str, version: tuple[int, int] | None = None) -> bool:
    """Whether the wheel installs on CPython ``version`` (default: this one) on x86-64 Linux."""
    major, minor = version or sys.version_info[:2]
    tags = parse_wheel_name(filename)
    plats = tags["plat"].split(".")
    if not any(p == "any" or (p.startswith("manylinux") and p.endswith("x86_64")) for p in plats):
        return False
    own = f"cp{major}{minor}"
    for py in tags["py"].split("."):
        for abi in tags["abi"].split("."):
            if abi == "none" and py in {f"py{major}", f"py{major}{minor}", own}:
                return True
            if py == own and abi == own:
                return True
            if abi == "abi3" and re.fullmatch(rf"cp{major}\d+", py) and int(py[3:]) <= minor:
                return True
    return False


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- staged wheels


def write_wheel_container(path: Path, wheels: dict[str, list[tuple[str, bytes, bool]]], stripped: dict[str, int],
                          fast: bool = False, sets: dict[str, list[str]] | None = None) -> None:
    """Write unpacked wheels as one xz tar: ``index.json`` + every distinct file once (``blobs/<sha256>``).

    ``sets``: for each Python version ("3.11"), the wheels pip resolved for it (default: all wheels, one set per
    version decided by tags at install time).

    Blobs are ordered by their path inside the wheel, so the builds of one file for several Python versions lie next
    to each other and xz finds what they share. RECORD files are left out (rebuilt on install).
    """
    index: dict[str, list] = {}
    blobs: dict[str, tuple[tuple[str, str], bytes]] = {}
    for wheel, entries in sorted(wheels.items()):
        rows = []
        for name, data, executable in entries:
            sha = _sha256(data)
            rows.append([name, sha, executable])
            key = (name.split("/", 1)[-1], wheel)
            if sha not in blobs or key < blobs[sha][0]:
                blobs[sha] = (key, data)
        index[wheel] = rows
    order = sorted(blobs, key=lambda sha: blobs[sha][0])
    raw = json.dumps({"format": 1, "wheels": index, "stripped": stripped, "sets": sets}, sort_keys=True).encode()
    filters = XZ_FILTERS_FAST if fast else XZ_FILTERS
    tmp = path.with_name(path.name + ".tmp")
    with lzma.open(tmp, "wb", format=lzma.FORMAT_XZ, filters=filters) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        _add_bytes(tar, "index.json", raw)
        for sha in order:
            _add_bytes(tar, f"blobs/{sha}", blobs[sha][1])
    tmp.replace(path)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def read_wheel_index(container: Path) -> dict:
    with lzma.open(container) as xz, tarfile.open(fileobj=xz, mode="r|") as tar:
        for member in tar:
            if member.name == "index.json":
                return json.loads(tar.extractfile(member).read())
            break
    raise JobError(f"{container} has no index.json first; stage again with tools/gpu_job/stage.py.")


def rebuild_wheels(container: Path, dest: Path, version: tuple[int, int] | None = None) -> list[Path]:
    """Rebuild the wheels that fit this Python from the container into ``dest`` (with a fresh RECORD).

    Raises:
        JobError: a staged distribution has no wheel for this Python, or two.
    """
    version = version or sys.version_info[:2]
    meta = read_wheel_index(container)
    index, sets = meta["wheels"], meta.get("sets")
    own = f"{version[0]}.{version[1]}"
    if sets:
        if own not in sets:
            raise JobError(f"The wheels were staged for Python {', '.join(sorted(sets))}, not {own}, which this "
                           f"machine runs; run tools/gpu_job/stage.py --python {own} and send the job again.")
        candidates_of = sets[own]
    else:
        candidates_of = list(index)
    by_dist: dict[str, list[str]] = {}
    for wheel in candidates_of:
        by_dist.setdefault(normalise(parse_wheel_name(wheel)["name"]), []).append(wheel)
    chosen = {}
    for dist, candidates in sorted(by_dist.items()):
        fits = [w for w in candidates if wheel_fits(w, version)]
        if not fits:
            raise JobError(f"No staged wheel of {dist} fits Python {own}; run tools/gpu_job/stage.py --python {own} "
                           f"and send the job again.")
        if len(fits) > 1:
            raise JobError(f"Two staged wheels of {dist} fit Python {own} ({', '.join(fits)}); stage again.")
        chosen[fits[0]] = index[fits[0]]
    needed = {sha for rows in chosen.values() for _, sha, _ in rows}
    blobs: dict[str, bytes] = {}
    with lzma.open(container) as xz, tarfile.open(fileobj=xz, mode="r|") as tar:
        for member in tar:
            if member.name.startswith("blobs/") and member.name[6:] in needed:
                blobs[member.name[6:]] = tar.extractfile(member).read()
    missing = needed - blobs.keys()
    if missing:
        raise JobError(f"{container} lacks {len(missing)} files its index names (a broken copy); stage again.")
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for wheel, rows in sorted(chosen.items()):
        out.append(_write_wheel(dest / wheel, rows, blobs))
    return out


def _write_wheel(path: Path, rows: list, blobs: dict[str, bytes]) -> Path:
    dist_info = next(name.split("/")[0] for name, _, _ in rows if name.split("/")[0].endswith(".dist-info"))
    record = io.StringIO()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, sha, executable in rows:
            data = blobs[sha]
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if executable else 0o644) << 16
            zf.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.write(f"{name},sha256={digest},{len(data)}\n")
        record.write(f"{dist_info}/RECORD,,\n")
        zf.writestr(zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=(1980, 1, 1, 0, 0, 0)), record.getvalue())
    return path


def check_present(names: list[str]) -> dict[str, str]:
    """Versions of the distributions the job expects on this machine (the ones not staged)."""
    found, missing = {}, []
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise JobError(f"This machine lacks {', '.join(missing)}, which the staged job expects to find here; stage "
                       f"again with those wheels included (tools/gpu_job/stage.py --present without them).")
    return found


def install(stage: Path, work: Path) -> Path:
    """Check the machine's own packages, rebuild the wheels for this Python and pip-install them into work/site."""
    meta = json.loads((stage / STAGE_JSON).read_text())
    print(f"present here: {json.dumps(check_present(meta['present']))}", flush=True)
    started = time.monotonic()
    wheels = rebuild_wheels(stage / WHEELS, work / "wheels")
    site = work / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--disable-pip-version-check", "--no-cache-dir", "--upgrade", "--target", str(site),
           *[str(w) for w in wheels]]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        raise JobError(f"pip could not install the staged wheels into {site}: {result.stderr.strip()[-2000:]}")
    print(f"installed {len(wheels)} wheels into {site} in {time.monotonic() - started:.1f} s: "
          f"{', '.join(w.name for w in wheels)}", flush=True)
    return site


def versions() -> dict:
    """Python, the installed versions of VERSIONS_OF, Keras' backend and the JAX devices."""
    out = {"python": sys.version.split()[0], "executable": sys.executable}
    for name in VERSIONS_OF:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    try:
        import jax

        out["jax_devices"] = [str(d) for d in jax.devices()]
    except Exception as exc:  # noqa: BLE001 - reported, never fatal: the job goes on and says what is missing
        out["jax_devices"] = f"error: {exc}"
    out["tensorflow_importable"] = importlib.util.find_spec("tensorflow") is not None
    out["KERAS_BACKEND"] = os.environ.get("KERAS_BACKEND")
    return out


# ---------------------------------------------------------------------------------------------- data


def extract_data(stage: Path, dest: Path) -> dict:
    """Unpack the staged images (an EyePACS folder: labels.csv + images/) and return their DATA.json."""
    archive = stage / DATA
    if not archive.is_file():
        raise JobError(f"{stage} holds no {DATA}; stage with data (drop --no-data) to train.")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if not member.isfile() or member.name.startswith(("/", "..")) or "/../" in member.name:
                raise JobError(f"{archive} holds an unexpected entry {member.name!r}; stage again.")
        tar.extractall(dest)
    return json.loads((dest / "DATA.json").read_text())


# ---------------------------------------------------------------------------------------------- results


def pack(work: Path, out: Path, run_name: str = "run", part_bytes: int = PART_BYTES) -> list[Path]:
    """Pack the job's results into ``out``: the run folder's small files and logs in one tar.gz, the best weights in
    parts of at most ``part_bytes``, and MANIFEST.sha256 (parts, whole weights, tarball). Returns the files written.

    Skips the checkpoint and the last weights (only the best epoch's weights travel back).
    """
    out.mkdir(parents=True, exist_ok=True)
    run = work / run_name
    written = []
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for path in sorted(work.rglob("*")):
            rel = path.relative_to(work)
            if not path.is_file() or rel.parts[0] in {"site", "wheels", "data", "synth"}:
                continue
            if path.name in {"checkpoint.npz", "last.weights.h5"}:
                continue
            if rel.parts[0] == run_name and path.name == WEIGHTS:  # travels in parts
                continue
            if path.stat().st_size > 4 * 2**20:  # e.g. a smoke run's weights would be tiny; anything big stays
                continue
            tar.add(path, arcname=str(rel))
    results = out / RESULTS
    results.write_bytes(buffer.getvalue())
    written.append(results)
    manifest = [f"{file_sha256(results)}  {RESULTS}"]
    weights = run / WEIGHTS
    if weights.is_file():
        manifest.append(f"{file_sha256(weights)}  {WEIGHTS}")
        with open(weights, "rb") as f:
            for i, block in enumerate(iter(lambda: f.read(part_bytes), b"")):
                part = out / f"{WEIGHTS}.part{i:02d}"
                part.write_bytes(block)
                written.append(part)
                manifest.append(f"{_sha256(block)}  {part.name}")
    (out / MANIFEST).write_text("\n".join(manifest) + "\n")
    written.append(out / MANIFEST)
    total = sum(p.stat().st_size for p in written)
    existing = [p for p in out.iterdir() if p.is_file()]
    if len(existing) > RETURN_FILES or total > RETURN_TOTAL or any(p.stat().st_size > RETURN_FILE_LIMIT
                                                                   for p in written):
        raise JobError(f"The results ({len(existing)} files, {total / 2**20:.1f} MiB) exceed what the device tool "
                       f"returns ({RETURN_FILES} files of 16 MiB, 64 MiB together); pack fewer files.")
    print(f"packed {len(written)} files, {total / 2**20:.1f} MiB, into {out}", flush=True)
    return written


def unpack(files: Path, run_dir: Path, data_path: str | None = None) -> Path:
    """Check MANIFEST.sha256, join the weight parts and lay the run folder out at ``run_dir`` (here, after the call).

    ``data_path``: the local copy of the data the job trained on (e.g. ../shared/data/eyepacs_256); it replaces the
    GPU machine's path in config.json, so ``validate`` and ``export --data run`` work here (the old path is kept in
    gpu_job/relocated.json). The split is made from labels and seed, so it is the same when every image was staged.

    Raises:
        JobError: a file is missing or its sha256 differs.
    """
    manifest_path = files / MANIFEST
    if not manifest_path.is_file():
        raise JobError(f"{files} holds no {MANIFEST}; give the folder the device call's files landed in.")
    expected = {}
    for line in manifest_path.read_text().splitlines():
        sha, name = line.split(maxsplit=1)
        expected[name.strip()] = sha
    for name, sha in expected.items():
        if name == WEIGHTS:
            continue
        path = files / name
        if not path.is_file():
            raise JobError(f"{path} is missing (the manifest lists it); fetch the call's files again.")
        if file_sha256(path) != sha:
            raise JobError(f"{path} does not match its sha256 in {MANIFEST}; fetch the call's files again.")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise JobError(f"{run_dir} already exists and is not empty; choose another --run-dir.")
    staging = run_dir.with_name(run_dir.name + ".unpacking")
    staging.mkdir(parents=True, exist_ok=True)
    with tarfile.open(files / RESULTS) as tar:
        for member in tar.getmembers():
            if not member.isfile() or member.name.startswith(("/", "..")) or "/../" in member.name:
                raise JobError(f"{files / RESULTS} holds an unexpected entry {member.name!r}.")
        tar.extractall(staging)
    run_src = staging / "run"
    target = run_dir.with_name(run_dir.name + ".assembling")
    if run_src.is_dir():
        run_src.rename(target)
    else:
        target.mkdir()
    parts = sorted(files.glob(f"{WEIGHTS}.part*"))
    if WEIGHTS in expected:
        if not parts:
            raise JobError(f"{files} holds no {WEIGHTS}.partNN files although {MANIFEST} lists {WEIGHTS}.")
        joined = target / WEIGHTS
        with open(joined, "wb") as f:
            for part in parts:
                f.write(part.read_bytes())
        if file_sha256(joined) != expected[WEIGHTS]:
            raise JobError(f"The joined {WEIGHTS} does not match its sha256; fetch the call's files again.")
    staging.rename(target / "gpu_job")  # smoke run, bench table, versions, logs, STAGE.json, DATA.json
    config = target / "config.json"
    if data_path and config.is_file():
        cfg = json.loads(config.read_text())
        (target / "gpu_job" / "relocated.json").write_text(json.dumps({"data.path on the GPU machine": cfg["data"][
            "path"], "data.path here": data_path}, indent=1) + "\n")
        cfg["data"]["path"] = data_path
        config.write_text(json.dumps(cfg, indent=2) + "\n")
    if run_dir.exists():
        run_dir.rmdir()
    target.rename(run_dir)
    joined_note = f" ({WEIGHTS} joined from {len(parts)} parts, sha256 checked)" if parts else ""
    print(f"unpacked into {run_dir}{joined_note}")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install")
    p.add_argument("stage", type=Path)
    p.add_argument("--work", type=Path, required=True)
    p = sub.add_parser("versions")
    p.add_argument("--out", type=Path)
    p = sub.add_parser("data")
    p.add_argument("stage", type=Path)
    p.add_argument("dest", type=Path)
    p = sub.add_parser("pack")
    p.add_argument("work", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--part-mib", type=float, default=PART_BYTES / 2**20)
    p = sub.add_parser("unpack")
    p.add_argument("files", type=Path)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--data-path", help="local copy of the training data: replaces the GPU machine's in config.json")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install(args.stage, args.work)
        elif args.command == "versions":
            info = versions()
            text = json.dumps(info, indent=1)
            print(text, flush=True)
            if args.out:
                args.out.write_text(text + "\n")
        elif args.command == "data":
            info = extract_data(args.stage, args.dest)
            print(f"data: {info['images']} images ({info['referable']} referable) at JPEG quality "
                  f"{info['jpeg_quality']} in {args.dest}", flush=True)
        elif args.command == "pack":
            pack(args.work, args.out, part_bytes=int(args.part_mib * 2**20))
        elif args.command == "unpack":
            unpack(args.files, args.run_dir, args.data_path)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
