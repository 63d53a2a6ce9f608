"""Bundle signatures: a trusted key signs every file of a bundle; one changed byte anywhere (card, model, self-test
set, report), even with the card's and the manifest's hashes updated, is refused for its signature; the development
override is explicit and never skips the other checks."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from device.config import UnitConfig, parse_config
from device.errors import ConfigError, ModelError
from device.model.bundle import BundleModelConfig, default_model_dir, load_bundle, open_checked_bundle
from device.model.signature import (
    PROJECT_KEYS,
    SIGNATURE_FILE,
    SignatureError,
    sign_bundle,
    verify_bundle,
)
from device.model.watch import UNSIGNED_NOTICE, unsigned_notice
from device.version import UNIT_VERSION, compatible_units
from tests.helpers import REPO_ROOT, STORE_TEST_BUNDLE, signed_copy, trusted

COMMITTED = sorted(p.parent for p in (REPO_ROOT / "models").glob("*/model.json"))


@pytest.fixture
def bundle(tmp_path, test_key):
    return signed_copy(STORE_TEST_BUNDLE, tmp_path / "bundles", test_key, new_id="signed-copy")


def _cfg(folder, key=None, **extra) -> BundleModelConfig:
    keys = (trusted(key),) if key is not None else PROJECT_KEYS
    return BundleModelConfig(path=str(folder), trusted_keys=keys, **extra)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("folder", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_bundles_are_signed_with_a_project_key(folder):
    check = verify_bundle(folder, PROJECT_KEYS)
    assert check.trusted and check.key_id in {k.key_id for k in PROJECT_KEYS}


def test_the_default_bundle_is_signed_with_the_current_project_key():
    # bundles made since the first key's private half was lost (docs/model_updates.md) carry the second key
    check = verify_bundle(default_model_dir(), PROJECT_KEYS)
    assert check.trusted and check.key_id == PROJECT_KEYS[-1].key_id


def test_the_default_config_trusts_the_project_key_and_runs_the_signed_default():
    assert UnitConfig().model.trusted_keys == PROJECT_KEYS
    bundle = open_checked_bundle(default_model_dir(), BundleModelConfig())
    assert bundle.signature.trusted and unsigned_notice(bundle) is None


def test_a_signed_copy_verifies_with_its_key_only(bundle, test_key):
    check = verify_bundle(bundle, [trusted(test_key)])
    assert check.trusted and check.key_name == "test-key" and check.key_id == trusted(test_key).key_id
    with pytest.raises(SignatureError) as err:
        verify_bundle(bundle, PROJECT_KEYS)
    assert str(err.value) == (f"The bundle {bundle} is signed with key test-key ({check.key_id}), which this unit does "
                              "not trust; add its public key to [model] trusted_keys or install a bundle signed with a "
                              "trusted key (`python -m trainer sign BUNDLE --key KEY`).")


def test_an_unsigned_bundle_is_refused_before_anything_else(tmp_path):
    folder = signed_copy(STORE_TEST_BUNDLE, tmp_path, None, new_id="unsigned")
    with pytest.raises(SignatureError) as err:
        open_checked_bundle(folder, _cfg(folder))
    assert str(err.value) == (f"The model bundle {folder} is not signed (no signature.json); install a bundle signed "
                              "with a trusted key (`python -m trainer sign BUNDLE --key KEY`).")


def _tamper(folder, name: str) -> None:
    """Change one byte of ``name`` (the card: one digit of its decision threshold, so it stays valid JSON)."""
    path = folder / name
    if name == "model.json":
        card = json.loads(path.read_text())
        card["decision_threshold"] = round(1 - card["decision_threshold"], 6)
        path.write_text(json.dumps(card, indent=2) + "\n")
        return
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _update_hashes(folder, name: str) -> None:
    """What a forger without the key can do: fix the card's hashes and the manifest entry of the changed file."""
    card = json.loads((folder / "model.json").read_text())
    if name == "model.tflite":
        card["sha256"] = _sha(folder / name)
    elif name == "selftest.npz":
        card["selftest"]["sha256"] = _sha(folder / name)
    (folder / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    sig = json.loads((folder / SIGNATURE_FILE).read_text())
    for changed in {name, "model.json"}:
        sig["manifest"]["files"][changed] = {"sha256": _sha(folder / changed),
                                             "size": (folder / changed).stat().st_size}
    (folder / SIGNATURE_FILE).write_text(json.dumps(sig, indent=2))


@pytest.mark.parametrize("update_hashes", [False, True], ids=["as-is", "hashes-updated"])
@pytest.mark.parametrize("name", ["model.json", "model.tflite", "selftest.npz", "parity_report.png"])
def test_one_changed_byte_anywhere_is_refused_for_its_signature(bundle, test_key, name, update_hashes):
    _tamper(bundle, name)
    if update_hashes:
        _update_hashes(bundle, name)
        if name != "model.tflite":  # without the signature the forgery would pass the unit's other checks
            load_bundle(bundle, run_selftest=name != "selftest.npz")
    with pytest.raises(SignatureError) as err:
        open_checked_bundle(bundle, _cfg(bundle, test_key))
    message = str(err.value)
    assert SIGNATURE_FILE in message and trusted(test_key).key_id in message and message.count(".") >= 1
    if update_hashes:
        assert "does not match: the bundle was altered after signing" in message
    else:
        assert f"The file {bundle / name} does not match its signature" in message


def test_a_byte_changed_in_the_signature_itself_is_refused(bundle, test_key):
    sig = json.loads((bundle / SIGNATURE_FILE).read_text())
    sig["signed_at"] = sig["signed_at"].replace("2", "3", 1)
    (bundle / SIGNATURE_FILE).write_text(json.dumps(sig))
    with pytest.raises(SignatureError, match="does not match: the bundle was altered after signing"):
        verify_bundle(bundle, [trusted(test_key)])


def test_added_removed_and_linked_files_are_refused(bundle, test_key):
    keys = [trusted(test_key)]
    (bundle / "extra.txt").write_text("not signed")
    with pytest.raises(SignatureError, match=r"extra\.txt is not covered by the signature .*signature\.json"):
        verify_bundle(bundle, keys)
    (bundle / "extra.txt").unlink()
    (bundle / "parity_report.md").unlink()
    with pytest.raises(SignatureError, match=r"The file parity_report\.md signed in .* is missing from the bundle"):
        verify_bundle(bundle, keys)
    os.symlink(bundle / "model.json", bundle / "parity_report.md")
    with pytest.raises(SignatureError, match=r"parity_report\.md does not match its signature"):
        verify_bundle(bundle, keys)


def test_signing_refuses_a_bundle_holding_a_link(bundle, test_key):
    os.symlink("/etc/passwd", bundle / "passwd")
    with pytest.raises(SignatureError, match="holds passwd, which is not a plain file"):
        sign_bundle(bundle, test_key, "test-key")


def test_a_damaged_signature_file_is_named(bundle, test_key):
    (bundle / SIGNATURE_FILE).write_text('{"format": "dr-cam-bundle-signature", "key_id": "zz"}')
    with pytest.raises(SignatureError) as err:
        verify_bundle(bundle, [trusted(test_key)])
    assert str(err.value).startswith(f"The signature file {bundle / SIGNATURE_FILE}: field 'key_id' is invalid")


def test_the_development_override_runs_an_unsigned_bundle_but_says_so(tmp_path):
    folder = signed_copy(STORE_TEST_BUNDLE, tmp_path, None, new_id="dev-build")
    bundle = open_checked_bundle(folder, _cfg(folder, allow_unsigned=True))
    assert not bundle.signature.trusted and unsigned_notice(bundle) == UNSIGNED_NOTICE
    assert bundle.signature.describe().startswith("SIGNATURE NOT VERIFIED (development override): The model bundle")
    _tamper(folder, "model.tflite")  # the override skips the signature only, never the card's sha256
    with pytest.raises(ModelError, match="does not match the sha256 in its card") as err:
        open_checked_bundle(folder, _cfg(folder, allow_unsigned=True))
    assert not isinstance(err.value, SignatureError)


def test_trusted_keys_in_the_config_are_validated():
    with pytest.raises(ConfigError) as err:
        parse_config({"model": {"type": "bundle", "trusted_keys": [{"name": "x", "public_key": "abc"}]}})
    assert str(err.value) == ("Unit config: field 'model.trusted_keys.0.public_key' is invalid (must be base64 (the "
                              "line `trainer keygen` prints)); fix it in the config file (docs/unit.md lists every "
                              "field).")
    with pytest.raises(ConfigError, match=r"give either path .* or store"):
        parse_config({"model": {"type": "bundle", "path": "a", "store": "b"}})


@pytest.mark.parametrize(("edit", "expected"), [
    ({"compatible_units": ">=9.0"}, f"is made for unit software >=9.0 (compatible_units in its card) but this unit "
                                    f"runs {UNIT_VERSION}: update the unit software"),
    ({"compatible_units": "newest"}, "gives compatible_units 'newest', which is not a version range"),
    ({"schema_version": 2, "field_of_2030": 1}, f"has a version 2 model card; this unit ({UNIT_VERSION}) reads "
                                                "version 1"),
])
def test_a_bundle_for_another_unit_version_is_refused_with_one_sentence(tmp_path, test_key, edit, expected):
    folder = signed_copy(STORE_TEST_BUNDLE, tmp_path, test_key, new_id="future", card_edit=lambda c: c.update(edit))
    with pytest.raises(ModelError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        open_checked_bundle(folder, _cfg(folder, test_key))


def test_a_compatible_range_loads_and_new_exports_carry_one():
    assert compatible_units("0.2.0") == ">=0.2,<1" and compatible_units("1.4.2") == ">=1.4,<2"
    assert compatible_units() == compatible_units(UNIT_VERSION)


def test_pyproject_takes_the_version_from_its_one_home():
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "device.version.UNIT_VERSION"}
