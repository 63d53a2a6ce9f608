"""Feature-map outputs added to an exported bundle (trainer/export/features.py), for its gradability head.

Run on a shipped EfficientNet-Lite0 bundle: the edit needs neither the Keras weights nor a re-export, and it must not
change ``probs`` or ``cam`` by a single bit.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from device.model.bundle import MODELS_ROOT, load_bundle
from device.model.signature import SIGNATURE_FILE

pytestmark = pytest.mark.slow  # TensorFlow's flatbuffer tools


def _lite0_bundle():
    for folder in sorted(MODELS_ROOT.iterdir()):
        card = folder / "model.json"
        if card.is_file() and (json.loads(card.read_text()).get("network") or {}).get("name") == \
                "cam_efficientnet_lite0":
            return folder
    pytest.fail("no EfficientNet-Lite0 bundle under models/")


def test_feature_outputs_leave_probs_and_cam_bit_identical_and_drop_the_signature(tmp_path):
    from trainer.export.convert import ExportError
    from trainer.export.features import LITE0_FEATURE_LAYERS, add_feature_outputs, add_feature_outputs_to_bundle
    from trainer.export.representative import synthetic_images

    source = _lite0_bundle()
    folder = shutil.copytree(source, tmp_path / source.name)
    (folder / SIGNATURE_FILE).write_text("{}")
    before = load_bundle(source)
    card = add_feature_outputs_to_bundle(folder, LITE0_FEATURE_LAYERS)
    assert not (folder / SIGNATURE_FILE).exists()  # the old signature does not cover the new files
    after = load_bundle(folder)  # the unit's checks: sha256, tensors against the card, self-test
    assert after.card.sha256 == card.sha256
    size = after.card.input.size
    channels = {"block2_add": 24, "block4_add": 40, "block7_add": 80, "block10_add": 112}
    strides = {"block2_add": 4, "block4_add": 8, "block7_add": 16, "block10_add": 16}
    for name in LITE0_FEATURE_LAYERS:
        side = size // strides[name]
        assert after.card.output(name).shape == (1, side, side, channels[name])
        assert after.runtime.output(name).shape == (1, side, side, channels[name])
    for image in synthetic_images(3, size, seed=5).images:
        a = before.runtime.run(image)
        b = after.runtime.run(image)
        assert np.array_equal(a["probs"], b["probs"]) and np.array_equal(a["cam"], b["cam"])
        assert all(np.isfinite(b[n]).all() and b[n].std() > 0 for n in LITE0_FEATURE_LAYERS)
    flat = (folder / "model.tflite").read_bytes()
    assert add_feature_outputs(flat, LITE0_FEATURE_LAYERS) == flat  # already there: nothing changes
    with pytest.raises(ExportError, match="tensors written by layer 'block99_add'"):
        add_feature_outputs(flat, ["block99_add"])
    with pytest.raises(ExportError, match="cannot name a feature output"):
        add_feature_outputs(flat, ["probs"])
    with pytest.raises(ExportError, match="has 3 tensors written by layer 'cam_head', not one"):
        add_feature_outputs(flat, ["cam_head"])  # a layer of several ops is ambiguous: refused
