"""Damaged and over-trusting model bundles (issue 16 items 7 and 12): each ends as one ModelError sentence and, in
the unit, on the MODEL PROBLEM screen, never a traceback."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import numpy as np
import pytest

import device.app
from device.app import build_kiosk, demo_config
from device.display import FakeDisplayConfig
from device.errors import ModelError
from device.model.bundle import default_model_dir, load_bundle

DEFAULT = default_model_dir()


@pytest.fixture()
def bundle(tmp_path):
    folder = tmp_path / DEFAULT.name
    shutil.copytree(DEFAULT, folder)
    (folder / "signature.json").unlink(missing_ok=True)
    return folder


def edit_card(folder, **changes):
    card = json.loads((folder / "model.json").read_text())
    for dotted, value in changes.items():
        node = card
        *path, last = dotted.split("__")
        for key in path:
            node = node[key] if not isinstance(node, list) else node[int(key)]
        node[last] = value
    (folder / "model.json").write_text(json.dumps(card, indent=1))


def replace_selftest(folder, data: bytes):
    (folder / "selftest.npz").write_bytes(data)
    edit_card(folder, selftest__sha256=hashlib.sha256(data).hexdigest())  # the hash was updated to match


def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def damage(case, folder):
    if case == "card_not_utf8":
        (folder / "model.json").write_bytes(b'{"id": "\xff\xfe\xfd"}')
    elif case == "cam_stride_0":
        edit_card(folder, cam_stride=0)
    elif case == "selftest_garbage":
        replace_selftest(folder, b"PK\x03\x04 this is not a zip archive" * 10)
    elif case == "selftest_wrong_arrays":
        replace_selftest(folder, npz(rgb=np.zeros((3, 8, 8, 3), np.uint8), fov_mask=np.zeros((3, 8, 8)),
                                     probs=np.zeros((3, 2)), cam=np.zeros((3, 2, 2))))
    elif case == "selftest_missing_array":
        replace_selftest(folder, npz(rgb=np.zeros((3, 8, 8, 3), np.uint8)))
    elif case == "tolerance_switched_off":
        edit_card(folder, selftest__prob_atol=1.0)
    elif case == "correlation_switched_off":
        edit_card(folder, selftest__cam_min_corr=0.01)
    elif case == "file_outside_bundle":
        edit_card(folder, file="../../elsewhere/model.tflite")
    elif case == "selftest_outside_bundle":
        edit_card(folder, selftest__file="/etc/passwd")
    elif case == "input_quantisation_changed":
        card = json.loads((folder / "model.json").read_text())
        q = card["input"]["quantisation"]
        edit_card(folder, input__quantisation={"scale": q["scale"] * 2, "zero_point": q["zero_point"]})
    elif case == "output_quantisation_changed":
        card = json.loads((folder / "model.json").read_text())
        outputs = card["outputs"]
        for o in outputs:
            if o["name"] == "probs":
                o["quantisation"] = {"scale": o["quantisation"]["scale"], "zero_point": 0}
        edit_card(folder, outputs=outputs)
    else:  # pragma: no cover
        raise AssertionError(case)


CASES = {
    "card_not_utf8": "is not UTF-8 text",
    "cam_stride_0": "field 'cam_stride' is invalid (Input should be greater than or equal to 1)",
    "selftest_garbage": "is damaged or not this model's (BadZipFile)",
    "selftest_wrong_arrays": "is damaged or not this model's ('rgb' is uint8 (3, 8, 8, 3)",
    "selftest_missing_array": "is damaged or not this model's (KeyError)",
    "tolerance_switched_off": "field 'selftest.prob_atol' is invalid (Input should be less than or equal to 0.1)",
    "correlation_switched_off": "field 'selftest.cam_min_corr' is invalid (Input should be greater than or equal",
    "file_outside_bundle": "field 'file' is invalid (must be a plain file name inside the bundle folder",
    "selftest_outside_bundle": "field 'selftest.file' is invalid (must be a plain file name inside",
    "input_quantisation_changed": "input quantisation of the model",
    "output_quantisation_changed": "quantisation of model output 'probs'",
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_bundle_is_one_model_error(bundle, case):
    if "quantisation" in case and json.loads((bundle / "model.json").read_text())["format"] != "int8":
        pytest.skip("the default bundle is not quantised")
    damage(case, bundle)
    with pytest.raises(ModelError) as err:
        load_bundle(bundle)
    message = str(err.value)
    assert CASES[case] in message and message.endswith("."), message
    assert "\n" not in message


@pytest.mark.parametrize("case", ["card_not_utf8", "cam_stride_0", "selftest_garbage"])
def test_the_unit_shows_model_problem(tmp_path, bundle, case, monkeypatch):
    damage(case, bundle)
    cfg = demo_config(tmp_path / "out")
    cfg = cfg.model_copy(update={"display": FakeDisplayConfig(),
                                 "model": cfg.model.model_copy(update={"allow_unsigned": True, "store": None})})
    displays = []
    real = device.app.open_display
    monkeypatch.setattr(device.app, "open_display", lambda dcfg: displays.append(real(dcfg)) or displays[-1])
    with pytest.raises(ModelError):
        build_kiosk(cfg, str(bundle))
    assert displays[0].shown == ["model_error"]


def test_a_default_marker_that_is_not_text_is_one_sentence(tmp_path):
    (tmp_path / "DEFAULT").write_bytes(b"\xff\xfe\x00m\x00o")
    with pytest.raises(ModelError) as err:
        default_model_dir(tmp_path)
    assert str(err.value) == (f"{tmp_path / 'DEFAULT'} must hold one bundle id (a folder name under {tmp_path}, as "
                              "plain text); fix the file.")
