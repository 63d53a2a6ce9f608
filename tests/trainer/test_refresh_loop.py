"""The model-refresh loop end to end, through the commands a clinic and an ML engineer type (docs/model_updates.md):
demo screenings on a unit -> ``device export`` -> a synthetic specialist's grades -> ``trainer import-grades`` ->
a tiny training -> ``trainer export --sign`` -> ``device model install`` -> the kiosk screens with the new model
-> ``device model rollback`` -> the old model again; every step on the unit is in its audit trail."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from device.app import build_kiosk
from device.cli import cli as device_cli
from device.config import load_config
from device.model.bundle import default_model_dir
from device.model.signature import PROJECT_KEYS
from device.records import RecordStore
from tests.helpers import REPO_ROOT
from trainer.cli import cli as trainer_cli

pytestmark = pytest.mark.slow  # one tiny training and one export (~1 minute on the shared 2-core CPU)
DEFAULT_ID = default_model_dir().name


def _unit_config(path, unit, keys) -> None:
    trusted = ", ".join(f'{{ name = "{k.name}", public_key = "{k.public_key}" }}' for k in keys)
    path.write_text(f"""
[camera]
type = "folder"
path = "{REPO_ROOT / 'samples'}"
[model]
type = "bundle"
store = "{unit / 'models'}"
trusted_keys = [{trusted}]
[quality]
max_retakes = 1
[display]
type = "fake"
[records]
folder = "{unit / 'records'}"
fsync = false
min_free_mb = 0
[link]
type = "fake"
[kiosk]
unit_name = "field-unit-7"
trigger = "auto"
patients = 8
poll_interval_s = 0.0
""")


def _ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_export_grade_import_train_sign_install_screen_rollback(tmp_path):
    unit, lab = tmp_path / "unit", tmp_path / "lab"
    config = tmp_path / "unit.toml"
    _unit_config(config, unit, PROJECT_KEYS)
    dev, train = CliRunner(), CliRunner()
    day = datetime.now(UTC).strftime("%Y-%m-%d")

    # 1. the unit screens (the signed bundled default) and packages the photographs for grading
    kiosk = build_kiosk(load_config(config))
    summary = kiosk.run()
    kiosk.store.close()
    assert summary.screenings >= 16 and len(summary.patients) == 8
    _ok(dev.invoke(device_cli, ["export", "--since", day, "--to", str(tmp_path / "usb" / "grading"), "--config",
                                str(config)]))

    # 2. a specialist grades it (synthetic: odd-numbered patients referable, grade 3), the lab imports the grades
    template = list(csv.DictReader((tmp_path / "usb" / "grading" / "grades_template.csv").open()))
    rows = [f"{r['image']},{3 if int(r['image'].split('_')[1][1:]) % 2 else 0}" for r in template]
    (lab / "grades.csv").parent.mkdir(parents=True)
    (lab / "grades.csv").write_text("image,level\n" + "\n".join(rows) + "\n")
    out = _ok(train.invoke(trainer_cli, ["import-grades", str(tmp_path / "usb" / "grading"), str(lab / "grades.csv"),
                                         "--out", str(lab / "dataset")]))
    assert "images (grades 0:" in out and (lab / "dataset" / "labels.csv").is_file()

    # 3. tiny training on the new dataset, then a signed export with the lab's new key
    _ok(train.invoke(trainer_cli, ["keygen", str(lab / "keys" / "lab.pem"), "--name", "lab-key"]))
    _ok(train.invoke(trainer_cli, ["train", "--preset", "tiny", "--set", f"data.path={lab / 'dataset'}",
                                   "--set", "epochs=1", "--run-dir", str(lab / "runs" / "refresh")]))
    out = _ok(train.invoke(trainer_cli, ["export", str(lab / "runs" / "refresh"), "--format", "float16",
                                         "--id", "refresh", "--out", str(lab / "models"), "--data", "synthetic",
                                         "--held-out-images", "8", "--sign", str(lab / "keys" / "lab.pem")]))
    assert "signed with lab-key" in out
    new_id = "refresh-float16"

    # 4. the unit refuses it until it trusts the lab's key, and a forged copy (one byte of the self-test set
    #    changed, the card's and the manifest's hashes updated) even then; then it installs the real one
    res = dev.invoke(device_cli, ["model", "install", str(lab / "models" / new_id), "--config", str(config)])
    assert res.exit_code != 0 and "which this unit does not trust" in str(res.exception)
    from trainer.signing import load_signing_key

    _unit_config(config, unit, (*PROJECT_KEYS, load_signing_key(lab / "keys" / "lab.pem").trusted))
    forged = shutil.copytree(lab / "models" / new_id, tmp_path / "forged" / new_id)
    data = bytearray((forged / "selftest.npz").read_bytes())
    data[len(data) // 2] ^= 0x01
    (forged / "selftest.npz").write_bytes(bytes(data))
    card = json.loads((forged / "model.json").read_text())
    card["selftest"]["sha256"] = hashlib.sha256(data).hexdigest()
    (forged / "model.json").write_text(json.dumps(card, indent=2))
    sig = json.loads((forged / "signature.json").read_text())
    for name in ("selftest.npz", "model.json"):
        sig["manifest"]["files"][name] = {"sha256": hashlib.sha256((forged / name).read_bytes()).hexdigest(),
                                          "size": (forged / name).stat().st_size}
    (forged / "signature.json").write_text(json.dumps(sig))
    res = dev.invoke(device_cli, ["model", "install", str(forged), "--config", str(config)])
    assert "does not match: the bundle was altered after signing" in str(res.exception)
    out = _ok(dev.invoke(device_cli, ["model", "install", str(lab / "models" / new_id), "--config", str(config)]))
    assert f"{new_id}: installed, active now (rollback returns to {DEFAULT_ID})" in out

    # 5. the kiosk screens with the new model, then, after a rollback, with the old one from the next patient
    cfg = load_config(config)
    kiosk = build_kiosk(cfg)
    try:
        assert kiosk.contract.id == new_id
        kiosk.screen_once()
        kiosk.screen_once()
        _ok(dev.invoke(device_cli, ["model", "rollback", "--config", str(config)]))
        while kiosk.eye_index or kiosk.attempt > 1:
            kiosk.screen_once()
        after = kiosk.screen_once()
        assert after.model_id == DEFAULT_ID
    finally:
        kiosk.store.close()

    # 6. every step is in the unit's audit trail, in order
    records = RecordStore(cfg.records.folder, fsync=False)
    trail = [(a["action"], a["model_id"]) for a in records.audit_trail()]
    models = {r["model_id"] for r in records.screenings()}
    records.close()
    assert models == {DEFAULT_ID, new_id}
    steps = [("session_started", DEFAULT_ID), ("screened", DEFAULT_ID), ("grading_export", None),
             ("model_install_refused", None), ("model_install_refused", None), ("model_install_started", None),
             ("model_verified", new_id),
             ("model_selftest_passed", new_id), ("model_installed", new_id), ("model_activated", new_id),
             ("session_started", new_id), ("screened", new_id), ("model_verified", DEFAULT_ID),
             ("model_rolled_back", DEFAULT_ID), ("model_switched", DEFAULT_ID), ("screened", DEFAULT_ID)]
    at = 0
    for step in steps:
        at = trail.index(step, at) + 1  # ValueError names the first missing step
    detail = json.loads((tmp_path / "lab" / "dataset" / "import.json").read_text())
    assert detail["package_unit"] == "field-unit-7"
