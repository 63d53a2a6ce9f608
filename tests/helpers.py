"""Helpers shared by the test areas (tests/device, tests/trainer, tests/bridge). Test modules import from here,
never from each other; pytest fixtures live in the conftest.py of the area that uses them.

Nothing heavy is imported at module level: each helper imports what it needs, so every area can use this module
with only its own extras installed.
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real, licensed data is never in the repository: it sits beside the checkout (DESIGN.md §3).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TINY_SIZE = 64  # tiny test models: 64 px input -> 4x4 CAM


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the calling test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


def tiny_cam_model(size: int = TINY_SIZE, seed: int = 0):
    """The real CAM network at width 1/16 with its head set so P(referable) spreads over images (needs Keras).

    With random weights every image gets P ~ 0.5 (the pooled features barely differ), which makes AUC and
    thresholds meaningless. The head is set along the first principal component of the pooled features of 24
    synthetic fundus images, scaled to a logit standard deviation of 2, so the network stays exactly the real one
    while its outputs vary. (An untrained net is the worst case for int8 AUC parity: its scores of referable and
    non-referable images interleave, so every small int8 rounding can swap a pair.)

    Returns:
        ``(keras model, the 24 standardised images float32 (24, S, S, 3))``.
    """
    import keras

    from trainer.export.representative import synthetic_images
    from trainer.model import build_cam_model, feature_model

    keras.utils.set_random_seed(seed)
    model = build_cam_model(size, width=1 / 16, l2=0.0)
    images = synthetic_images(24, size, seed=1).images
    pooled = np.asarray(feature_model(model).predict(images, verbose=0), np.float64).mean(axis=(1, 2))
    direction = np.linalg.svd(pooled - pooled.mean(axis=0), full_matrices=False)[2][0]
    z = pooled @ direction
    scale = 2.0 / max(float(z.std()), 1e-6)
    head = model.get_layer("cam_head")
    half = (direction * scale / 2).astype(np.float32)
    head.kernel.assign(np.stack([-half, half], axis=1))
    centre = float(z.mean() * scale / 2)
    head.bias.assign(np.array([centre, -centre], np.float32))
    return model, images


# The project's packages, whose import graph tests/test_import_graph.py checks.
PACKAGES = ("common", "device", "trainer", "firmware_bridge")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages (a package is its ``__init__``)."""
    out = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(resolve(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else resolve(base))
        graph[name] = {t for t in targets if t and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


# The committed bundle the unit's model-update tests copy, re-identify and re-sign (int8, 256 px, 0.6 MiB).
STORE_TEST_BUNDLE = REPO_ROOT / "models" / "eyepacs256-w0125-lc-int8"


def signed_copy(source: Path, dest_root: Path, private_key, new_id: str | None = None, card_edit=None,
                key_name: str = "test-key") -> Path:
    """Copy a bundle to ``dest_root/<id>``, optionally with another id or an edited card, and sign it.

    Args:
        source: a bundle folder.
        dest_root: where the copy goes (created).
        private_key: a ``cryptography`` Ed25519 private key (None: leave the copy unsigned).
        new_id: the copy's card id (default: the source's).
        card_edit: ``f(card dict) -> None`` applied to the card before signing.

    Returns:
        The copy's folder.
    """
    import json
    import shutil

    from device.model.signature import SIGNATURE_FILE, sign_bundle

    card = json.loads((source / "model.json").read_text())
    if new_id:
        card["id"] = new_id
    if card_edit:
        card_edit(card)
    folder = dest_root / card["id"]
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns(SIGNATURE_FILE))
    (folder / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    if private_key is not None:
        sign_bundle(folder, private_key, key_name)
    return folder


def trusted(private_key, name: str = "test-key"):
    """The config entry (``device.model.signature.TrustedKey``) of a test key's public half."""
    import base64

    from device.model.signature import TrustedKey, raw_public_key

    raw = raw_public_key(private_key)
    return TrustedKey(name=name, public_key=base64.b64encode(raw).decode())


def screened_unit(folder: Path, patients: int = 2, operator: str = "operator", unit_name: str = "test-unit"):
    """A unit config whose records (``folder/records``) hold ``patients`` patients screened with the fake camera
    and model (both eyes each, all gradable). Needs the unit's stack only.

    Returns:
        The ``device.config.UnitConfig``.
    """
    from device.camera import FakeCamera, draw_fundus
    from device.config import parse_config
    from device.display import FakeDisplay, FakeDisplayConfig
    from device.kiosk import Kiosk
    from device.model import FakeModel
    from device.records import RecordStore
    from firmware_bridge.fake import FakeLink

    cfg = parse_config({"records": {"folder": str(folder / "records"), "fsync": False, "min_free_mb": 0},
                        "kiosk": {"trigger": "auto", "patients": patients, "poll_interval_s": 0.0,
                                  "operator": operator, "unit_name": unit_name}})
    frames = [draw_fundus(i, 320, 240) for i in range(2 * patients)]
    store = RecordStore(cfg.records.folder, fsync=False)
    Kiosk(cfg, FakeCamera(frames=frames), FakeModel(size=64), FakeDisplay(FakeDisplayConfig(width=320, height=192)),
          FakeLink(), store).run()
    store.close()
    return cfg


def finishes(fn, seconds: float = 20.0) -> BaseException | None:
    """Run fn in a thread and return what it raised (None if nothing); fail if it is still running after
    ``seconds`` (reading a FIFO or a device used to block for ever)."""
    out: dict = {}

    def target():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - the calling test inspects it
            out["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "reading the file blocked"
    return out.get("exc")
