"""``trainer keygen | sign | export --sign``: private keys stay private (0600, optional passphrase, refused when
others can read them), a bundle is signed only after it passes the unit's checks, and the signed bundle (folder or
tar) is what a unit trusting the key installs."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile

import pytest
from click.testing import CliRunner

from device.config import parse_config
from device.errors import ModelError
from device.model.signature import SIGNATURE_FILE, verify_bundle
from device.model.store import ModelStore
from device.version import compatible_units
from tests.helpers import STORE_TEST_BUNDLE
from trainer.cli import cli
from trainer.signing import PASSPHRASE_ENV, SigningError, generate_key, load_signing_key, sign_bundle_folder


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path):
    res = CliRunner().invoke(cli, ["keygen", str(tmp_path / "keys" / "lab.pem"), "--name", "lab-2026"])
    assert res.exit_code == 0, res.output
    key = tmp_path / "keys" / "lab.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_signing_key(key)
    assert loaded.name == "lab-2026"
    assert f'trusted_keys = [{{ name = "lab-2026", public_key = "{loaded.public_key}" }}]' in res.output
    again = CliRunner().invoke(cli, ["keygen", str(key), "--name", "lab-2026"])
    assert again.exit_code == 1 and "already exists; choose another file name" in again.output


def test_a_passphrase_protects_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    res = CliRunner().invoke(cli, ["keygen", str(tmp_path / "k.pem"), "--name", "k", "--passphrase"])
    assert res.exit_code == 0, res.output
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "k.pem").read_bytes()
    assert load_signing_key(tmp_path / "k.pem").name == "k"
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(SigningError, match="is protected by a passphrase; type it when asked or set DR_KEY_PASSPHRASE"):
        load_signing_key(tmp_path / "k.pem")
    with pytest.raises(SigningError, match=r"cannot be opened \(wrong passphrase"):
        load_signing_key(tmp_path / "k.pem", b"wrong")


def test_a_key_others_can_read_is_refused(tmp_path):
    key = generate_key(tmp_path / "k.pem", "k").path
    os.chmod(key, 0o644)
    with pytest.raises(SigningError) as err:
        load_signing_key(key)
    assert str(err.value) == (f"The signing key {key} is readable by other users (mode 644); run `chmod 600 {key}` and "
                              "check who copied it.")


def test_sign_checks_the_bundle_first_and_writes_a_tar_a_unit_installs(tmp_path):
    key = generate_key(tmp_path / "k.pem", "k")
    bundle = shutil.copytree(STORE_TEST_BUNDLE, tmp_path / "b", ignore=shutil.ignore_patterns(SIGNATURE_FILE))
    res = CliRunner().invoke(cli, ["sign", str(bundle), "--key", str(key.path), "--tar", str(tmp_path / "b.tar")])
    assert res.exit_code == 0, res.output
    assert f"signed with k (key {key.key_id}); tar: {tmp_path / 'b.tar'}" in res.output
    assert verify_bundle(bundle, [key.trusted]).trusted
    with tarfile.open(tmp_path / "b.tar") as tar:
        assert all(m.isreg() and m.name.startswith("b/") and m.mode == 0o644 for m in tar.getmembers())
    unit = parse_config({"model": {"type": "bundle", "store": str(tmp_path / "unit"),
                                   "trusted_keys": [key.trusted.model_dump()]}})
    assert ModelStore(unit.model).install(tmp_path / "b.tar").model_id == STORE_TEST_BUNDLE.name
    (bundle / "model.tflite").write_bytes(b"TFL3" + bytes(100))
    signature = (bundle / SIGNATURE_FILE).read_bytes()
    with pytest.raises(ModelError, match="does not match the sha256 in its card"):
        sign_bundle_folder(bundle, key)
    assert (bundle / SIGNATURE_FILE).read_bytes() == signature  # a bundle that fails the checks is not re-signed


@pytest.mark.slow
def test_export_sign_signs_every_bundle_and_records_the_unit_versions(tmp_path):
    from tests.helpers import tiny_cam_model

    key = generate_key(tmp_path / "k.pem", "k")
    model, _ = tiny_cam_model()
    model.save(tmp_path / "tiny.keras")
    out = tmp_path / "models"
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "tiny.keras"), "--format", "float16", "--id", "signed",
                                   "--out", str(out), "--data", "synthetic", "--held-out-images", "8", "--sign",
                                   str(key.path)])
    assert res.exit_code == 0, res.output
    assert f"signed with k (key {key.key_id})" in res.output
    folder = out / "signed-float16"
    assert verify_bundle(folder, [key.trusted]).trusted
    assert json.loads((folder / "model.json").read_text())["compatible_units"] == compatible_units()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left
