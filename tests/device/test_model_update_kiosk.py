"""Model updates seen from the running unit and its command line: the kiosk takes a newly activated model from the
next patient (or says why not, once), the development override is audited at every start and shown on every
screen, and ``python -m device model ...`` prints one sentence on a refusal."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib

import pytest
from click.testing import CliRunner

from device.app import build_kiosk, selftest
from device.cli import cli
from device.config import load_config
from device.model.active import ActivePointer, write_active
from device.model.signature import PROJECT_KEYS
from device.model.store import ModelStore
from device.model.watch import UNSIGNED_NOTICE
from tests.helpers import REPO_ROOT, STORE_TEST_BUNDLE, signed_copy, trusted


def _toml_keys(keys) -> str:
    return ", ".join(f'{{ name = "{k.name}", public_key = "{k.public_key}" }}' for k in keys)


@pytest.fixture
def unit_file(tmp_path, test_key):
    """A unit config file: fake camera and link, fake display, a model store, trusting the project and test keys."""
    path = tmp_path / "unit.toml"
    path.write_text(f"""
[camera]
type = "fake"
[model]
type = "bundle"
store = "{tmp_path / 'models'}"
trusted_keys = [{_toml_keys((*PROJECT_KEYS, trusted(test_key)))}]
[display]
type = "fake"
[records]
folder = "{tmp_path / 'records'}"
fsync = false
min_free_mb = 0
[link]
type = "fake"
[kiosk]
trigger = "auto"
poll_interval_s = 0.0
""")
    tomllib.loads(path.read_text())
    return path


@pytest.fixture
def bundles(tmp_path, test_key):
    return {n: signed_copy(STORE_TEST_BUNDLE, tmp_path / "src", test_key, new_id=f"model-{n}") for n in "abc"}


def _store(cfg):
    return ModelStore(cfg.model)


def _audit(kiosk) -> list[tuple[str, str | None]]:
    return [(a["action"], a["model_id"]) for a in kiosk.store.audit_trail()]


def test_the_kiosk_takes_a_new_model_from_the_next_patient(unit_file, bundles):
    cfg = load_config(unit_file)
    _store(cfg).install(bundles["a"])
    kiosk = build_kiosk(cfg)
    try:
        assert kiosk.screen_once().model_id == "model-a"            # patient 1, right eye
        _store(cfg).install(bundles["b"])                          # installed while patient 1 is being screened
        assert kiosk.screen_once().model_id == "model-a"            # patient 1, left eye: same model
        assert kiosk.screen_once().model_id == "model-b"            # patient 2: the new model
        _store(cfg).rollback()
        kiosk.screen_once()
        assert kiosk.screen_once().model_id == "model-a"            # patient 3: rolled back
        switched = [json.loads(a["detail"]) for a in kiosk.store.audit_trail() if a["action"] == "model_switched"]
        assert [(d["from"], d["to"]) for d in switched] == [("model-a", "model-b"), ("model-b", "model-a")]
        assert switched[0]["signature"]["trusted"]
    finally:
        kiosk.store.close()


def test_a_broken_new_model_is_refused_once_and_the_old_one_keeps_screening(unit_file, bundles):
    cfg = load_config(unit_file)
    store = _store(cfg)
    store.install(bundles["a"])
    shutil.copytree(bundles["c"], store.folder / "model-c")
    (store.folder / "model-c" / "model.tflite").write_bytes(b"TFL3 not really a model")
    kiosk = build_kiosk(cfg)
    try:
        kiosk.screen_once()
        kiosk.screen_once()
        write_active(store.folder, ActivePointer(active="model-c", previous="model-a"))  # behind the store's back
        assert kiosk.screen_once() is None                           # the message instead of a capture
        assert kiosk.display.shown[-1] == "model_update"
        assert kiosk.screen_once().model_id == "model-a"             # next press: screens, no spinning
        refused = [json.loads(a["detail"]) for a in kiosk.store.audit_trail() if a["action"] == "model_switch_refused"]
        assert len(refused) == 1 and refused[0]["to"] == "model-c"
        assert refused[0]["problem"].startswith("The new model model-c was not taken into use: The file ")
    finally:
        kiosk.store.close()


def test_a_kiosk_on_a_fixed_model_says_a_restart_is_needed(unit_file, bundles):
    cfg = load_config(unit_file)
    kiosk = build_kiosk(cfg, model=str(REPO_ROOT / "models" / "eyepacs256-w0125-lc-float16"))
    try:
        kiosk.screen_once()
        kiosk.screen_once()
        _store(cfg).install(bundles["a"])
        assert kiosk.screen_once() is None
        assert kiosk.contract.id == "eyepacs256-w0125-lc-float16"
        needed = next(a for a in kiosk.store.audit_trail() if a["action"] == "model_restart_needed")
        detail = json.loads(needed["detail"])
        assert "restart the unit to use it" in detail["problem"]
    finally:
        kiosk.store.close()


def test_the_override_is_audited_at_every_start_and_shown_on_every_screen(unit_file, tmp_path, monkeypatch):
    text = unit_file.read_text().replace('type = "bundle"', 'type = "bundle"\nallow_unsigned = true')
    unit_file.write_text(text)
    cfg = load_config(unit_file)
    unsigned = signed_copy(STORE_TEST_BUNDLE, tmp_path / "dev", None, new_id="dev-build")
    shown: list[str] = []
    import device.kiosk as kiosk_module

    real_message, real_result = kiosk_module.render_message, kiosk_module.render_result
    monkeypatch.setattr(kiosk_module, "render_message",
                        lambda h, m, *a, **k: shown.append(m) or real_message(h, m, *a, **k))
    monkeypatch.setattr(kiosk_module, "render_result", lambda r, p, s, t: shown.append(t) or real_result(r, p, s, t))
    for _ in range(2):
        kiosk = build_kiosk(cfg, model=str(unsigned))
        kiosk.ready_screen()
        kiosk.screen_once()
        kiosk.store.close()
    from device.records import RecordStore

    records = RecordStore(cfg.records.folder, fsync=False)
    overrides = [a for a in records.audit_trail() if a["action"] == "model_signature_override"]
    records.close()
    assert len(overrides) == 2 and all(a["model_id"] == "dev-build" for a in overrides)
    assert "is not signed (no signature.json)" in json.loads(overrides[0]["detail"])["problem"]
    assert shown[0].startswith(f"{UNSIGNED_NOTICE}: its signature was not verified.")
    assert shown[1].endswith(f"· {UNSIGNED_NOTICE}")
    line = next(c for c in selftest(cfg, model=str(unsigned)) if c.name == "model")
    assert line.ok and "SIGNATURE NOT VERIFIED (development override)" in line.message


def test_model_commands_and_their_one_sentence_errors(unit_file, bundles, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["model", "install", str(bundles["a"]), "--config", str(unit_file)])
    assert res.exit_code == 0, res.output
    assert "model-a: installed, active now (rollback returns to" in res.output
    res = runner.invoke(cli, ["model", "list", "--config", str(unit_file)])
    lines = res.output.splitlines()
    assert lines[0].startswith("ACTIVE   model-a  int8 256px") and "signed by test-key" in lines[0]
    res = runner.invoke(cli, ["model", "keys", "--config", str(unit_file)])
    assert PROJECT_KEYS[0].public_key in res.output
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"\0" * 100)
    res = subprocess.run([sys.executable, "-m", "device", "model", "install", str(bad), "--config", str(unit_file)],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"error: The bundle archive {bad} is ")
    res = runner.invoke(cli, ["model", "rollback", "--config", str(unit_file)])
    assert res.exit_code == 0 and "is active again" in res.output


def test_an_unsigned_bundle_stops_the_unit_with_one_sentence_on_screen(tmp_path):
    unsigned = signed_copy(STORE_TEST_BUNDLE, tmp_path / "src", None, new_id="unsigned")
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "device", "demo", "--out", str(out), "--model", str(unsigned)],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: The model bundle {unsigned} is not signed (no signature.json); install a bundle signed with a "
        "trusted key (`python -m trainer sign BUNDLE --key KEY`).")
    assert [p.name for p in (out / "screens").iterdir()] == ["0001_model_error.png"]
