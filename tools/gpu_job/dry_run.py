"""Dry run of the GPU job on this machine: tools/gpu_job/run.sh on a staged folder, at tiny sizes, in an
interpreter that has what the GPU machine has (JAX and its dependencies, nothing else) and no TensorFlow at all;
then the local unpack of what it packed.

    python tools/gpu_job/dry_run.py --stage /work/scratch/me/stage --work /work/scratch/me/dry

The "GPU machine" interpreter is a fresh venv (no system site packages) whose site-packages holds links to this
interpreter's JAX stack (jax and its requirements) and a sitecustomize.py whose import hook makes ``tensorflow``,
``tensorboard`` and ``tf_keras`` raise ImportError. Everything else the trainer needs must come from the staged
wheels, as it will there. Prints a JSON summary; exit status 0 when the job and the unpack succeeded.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from jobtool import WEIGHTS, JobError, unpack

REPO = Path(__file__).resolve().parents[2]
HIDDEN = ("tensorflow", "tensorboard", "tf_keras")
BLOCKER = f'''"""Dry run of the GPU job: the GPU machine has no TensorFlow, so here it is not installed either: every
import finder answers "not found" for it (find_spec -> None, import -> ModuleNotFoundError), whatever sys.path holds."""
import sys

_HIDDEN = {HIDDEN!r}


class _HideTensorFlow:
    def __init__(self, inner):
        self._inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _HIDDEN:
            return None
        return self._inner.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self._inner, attr)


sys.meta_path[:] = [_HideTensorFlow(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
'''
TINY_BENCH = "--sizes 64 --width 0.0625 --batch 4 --steps 2 --warmup 1 --rounds 1 --workers 1"
TINY_TRAIN = ("--preset tiny --set name=dry_run --set input_size=64 --set epochs=2 --set batch_size=8 "
              "--set data.workers=1")


def jax_stack() -> list[importlib.metadata.Distribution]:
    """jax and, recursively, the distributions it requires (no extras)."""
    todo, seen, out = ["jax"], set(), []
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise JobError(f"{name} is not installed here; install the jax extra (pip install -e .[jax]).") from exc
        out.append(dist)
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(re.match(r"[A-Za-z0-9_.-]+", req).group(0))
    return out


def make_gpu_like_python(base: Path) -> Path:
    """A venv with only the JAX stack (links) and the TensorFlow blocker; returns its python."""
    if base.exists():
        shutil.rmtree(base)
    subprocess.run([sys.executable, "-m", "venv", str(base)], check=True)
    python = base / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for dist in jax_stack():
        root = Path(dist.locate_file(""))
        for top in sorted({Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}):
            link = site / top
            if (root / top).exists() and not link.exists():
                link.symlink_to(root / top)
    (site / "sitecustomize.py").write_text(BLOCKER)
    probe = ("import importlib.util as u, jax\n"
             "extra = [m for m in ('keras', 'pydantic', 'cv2', 'sklearn', 'matplotlib') if u.find_spec(m)]\n"
             "assert not extra, f'the GPU-like interpreter already has {extra}'\n"
             "import sys\n"
             "sys.path.extend(sys.argv[1:])  # where this machine's TensorFlow lives: hidden all the same\n"
             "assert u.find_spec('tensorflow') is None\n"
             "try:\n    import tensorflow\nexcept ModuleNotFoundError:\n    pass\n"
             "else:\n    raise SystemExit('tensorflow is importable')\n"
             "print('GPU-like interpreter: jax', jax.__version__, 'no keras/pydantic/cv2/sklearn/matplotlib, '\n"
             "      'tensorflow hidden')\n")
    tf = importlib.util.find_spec("tensorflow")
    tf_dirs = [str(Path(tf.origin).parents[1])] if tf and tf.origin else []
    subprocess.run([str(python), "-c", probe, *tf_dirs], check=True)
    return python


def dry_run(stage: Path, work: Path, job_seconds: int = 420, bench_args: str = TINY_BENCH,
            train_args: str = TINY_TRAIN) -> dict:
    """Run the staged job at tiny sizes with TensorFlow hidden, then unpack; returns the summary."""
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    python = make_gpu_like_python(work / "gpu_python")
    out, job, unpacked = work / "out", work / "job", work / "unpacked"
    for path in (out, unpacked):
        if path.exists():
            shutil.rmtree(path)
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"KERAS_BACKEND", "PYTHONPATH", "VIRTUAL_ENV"}}
    env.update(PYTHON=str(python), OUT=str(out), JOB_WORK=str(job), JOB_SECONDS=str(job_seconds),
               BENCH_ARGS=bench_args, TRAIN_ARGS=train_args, PACK_SECONDS="20")
    started = time.monotonic()
    result = subprocess.run(["bash", str(REPO / "tools" / "gpu_job" / "run.sh"), str(stage.resolve())], cwd=REPO,
                            env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    (work / "run.log").write_text(result.stdout + result.stderr)
    summary = {"returncode": result.returncode, "wall_seconds": round(wall, 1), "log": str(work / "run.log"),
               "returned_files": sorted(p.name for p in out.iterdir()),
               "returned_bytes": sum(p.stat().st_size for p in out.iterdir() if p.is_file())}
    if result.returncode == 0:
        run_dir = unpack(out, unpacked / "run")
        summary["unpacked"] = str(run_dir)
        summary["weights"] = (run_dir / WEIGHTS).is_file()
        summary["summary"] = json.loads((run_dir / "summary.json").read_text()) if (
            run_dir / "summary.json").is_file() else None
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Dry run of the staged GPU job here, TensorFlow hidden.")
    parser.add_argument("--stage", type=Path, required=True, help="the folder tools/gpu_job/stage.py wrote")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (outside the repository)")
    parser.add_argument("--job-seconds", type=int, default=420)
    args = parser.parse_args(argv)
    try:
        summary = dry_run(args.stage, args.work, args.job_seconds)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "summary"}, indent=1))
    job = json.loads((args.stage / "STAGE.json").read_text()).get("job", "train")
    ok = summary["returncode"] == 0 and (summary.get("weights") or job == "bench")  # a bench job trains nothing
    if not ok:
        print(f"the dry run failed; see {summary['log']}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
