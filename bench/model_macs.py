"""Multiply-accumulates per image of the CAM networks, counted from their Keras layers (no timing).

    python bench/model_macs.py

Counts every Conv2D (k*k*C_in*C_out per output pixel), DepthwiseConv2D (k*k*C per output pixel) and Dense layer,
and the CAM head (GAP + dense + the CAM's 1x1 convolution); batch norm, activations, pooling and adds are left out
(they are < 1 % of the total). Used to place the networks beside published latencies of models of similar size.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def count_macs(model) -> int:
    """MACs of one image through ``model`` (Conv2D, DepthwiseConv2D, Dense, CAMHead)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            c_in = layer.input.shape[-1]
            total += h * w * c_out * c_in * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
        elif layer.name == "cam_head":
            _, h, w, c = layer.input.shape
            total += c * 2 + h * w * c  # logits + the CAM of one class
    return int(total)


def main() -> None:
    from trainer.backbones.efficientnet_lite import build_efficientnet_lite0
    from trainer.model import build_cam_model, build_lite0_cam_model

    rows = [("paper CAM net, width 1.0", 512, build_cam_model(512, 1.0)),
            ("paper CAM net, width 1/8 (eyepacs256-w0125 bundles)", 256, build_cam_model(256, 0.125)),
            ("EfficientNet-Lite0 CAM net, output stride 16", 256, build_lite0_cam_model(256, pretrained=False)),
            ("EfficientNet-Lite0 CAM net, output stride 16", 512, build_lite0_cam_model(512, pretrained=False)),
            # the stock ImageNet classifier, the model that published single-board latencies are quoted for
            ("EfficientNet-Lite0 ImageNet classifier, stride 32", 224, build_efficientnet_lite0(224, include_top=True))]
    base = count_macs(rows[0][2])
    print("| network | input | parameters | MACs | MACs / paper net at 512 px |\n|---|---|---|---|---|")
    for label, size, model in rows:
        macs = count_macs(model)
        print(f"| {label} | {size} px | {model.count_params():,} | {macs / 1e9:.3f} G | {macs / base:.3f} |")


if __name__ == "__main__":
    main()
