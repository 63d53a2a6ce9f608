"""DESIGN.md §1 import rules: the unit never needs TensorFlow, Keras or the trainer; hardware libraries stay lazy."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import import_graph

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "common": {"device", "trainer", "firmware_bridge", "tensorflow", "keras", "jax", "torch"},
    "device": {"trainer", "tensorflow", "keras", "jax", "torch"},
    "firmware_bridge": {"trainer", "device", "tensorflow", "keras", "jax", "torch"},
}
# Hardware and runtime libraries: only ever imported inside a function of their adapter module.
LAZY_ONLY = {"picamera2", "serial", "ai_edge_litert", "tflite_runtime"}
# The parts of the unit the trainer shares (docs/ARCHITECTURE.md): never the kiosk, camera, display or records.
# The signature and tar formats, the grading package format and the unit version are contracts both sides keep.
TRAINER_MAY_IMPORT_FROM_DEVICE = {"device.atomic", "device.errors", "device.imageio", "device.model.bundle",
                                  "device.model.card", "device.model.runtime", "device.notice", "device.preprocess",
                                  "device.regions", "device.model.signature", "device.model.archive",
                                  "device.grading_package", "device.version"}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level package name, imported at module level?) for every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            found.append((name.split(".")[0], node.col_offset == 0))
    return found


def test_packages_do_not_import_forbidden_packages():
    offences = []
    for package, forbidden in FORBIDDEN.items():
        for path in (REPO / package).rglob("*.py"):
            if "firmware" in path.relative_to(REPO / package).parts[:1]:
                continue  # MicroPython sources for the board, not host code
            for name, _ in _imports(path):
                if name in forbidden:
                    offences.append(f"{path.relative_to(REPO)} imports {name}")
    assert not offences, offences


def test_trainer_takes_only_the_shared_parts_of_the_unit():
    taken = {dep for module, deps in import_graph().items() if module.startswith("trainer") for dep in deps
             if dep.split(".")[0] == "device"}
    assert taken, "the graph should see the trainer's imports of device"
    assert taken <= TRAINER_MAY_IMPORT_FROM_DEVICE, sorted(taken - TRAINER_MAY_IMPORT_FROM_DEVICE)


def test_hardware_libraries_are_imported_lazily():
    offences = []
    for package in ("common", "device", "firmware_bridge"):
        for path in (REPO / package).rglob("*.py"):
            if "firmware" in path.relative_to(REPO / package).parts[:1]:
                continue
            for name, top_level in _imports(path):
                if name in LAZY_ONLY and top_level:
                    offences.append(f"{path.relative_to(REPO)} imports {name} at module level")
    assert not offences, offences


def test_importing_every_unit_module_loads_no_heavy_library():
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import common, device, firmware_bridge\n"
        "for pkg in (common, device, firmware_bridge):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if '.firmware' in m.name: continue\n"
        "        importlib.import_module(m.name)\n"
        "heavy = {'tensorflow', 'keras', 'trainer', 'jax', 'torch', 'serial', 'picamera2', 'ai_edge_litert', "
        "'tflite_runtime'}\n"
        "print(json.dumps(sorted(heavy & {k.split('.')[0] for k in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
