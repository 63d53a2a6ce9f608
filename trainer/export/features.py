"""Expose intermediate feature maps of an exported CAM network as more TFLite outputs (for a gradability head).

A bundle's gradability head (device/quality_score.py ``EmbeddingTerm``, fitted by ``python -m
bench.calibrate_quality --bundle``) reads the per-channel mean and standard deviation of a few of the screening
network's own feature maps, so the quality gate gets the network's view of the photograph at no extra inference
cost. Those tensors already exist inside the flatbuffer; this adds them to the subgraph's outputs and to the serving
signature, named after their Keras layer. No op, weight or quantisation parameter changes, so ``probs`` and ``cam``
stay bit-identical (tests/trainer/test_export_features.py).

It edits the model object, not the Keras graph, so it works on a bundle exported long ago as well as on a fresh one.

    flatbuffer = add_feature_outputs(Path("models/<id>/model.tflite").read_bytes(), LITE0_FEATURE_LAYERS)
    card = add_feature_outputs_to_bundle("models/<id>", LITE0_FEATURE_LAYERS)     # then sign it again
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from device.atomic import write_atomic
from device.model.bundle import load_bundle
from device.model.card import CARD_FILE, FEATURE_OUTPUT_PATTERN, OUTPUT_NAMES, ModelCard, OutputSpec, Quantisation
from device.model.signature import SIGNATURE_FILE
from trainer.export.convert import ExportError

# The last residual add of the EfficientNet-Lite0 stages 2-5 (strides 4, 8, 16, 16 in the stride-16 CAM network;
# 24, 40, 80, 112 channels): the layers whose statistics measured best for gradability (docs/unit.md).
LITE0_FEATURE_LAYERS = ("block2_add", "block4_add", "block7_add", "block10_add")


def _layer_pattern(layer: str) -> re.Pattern:
    # TFLite tensor names are ';'-joined Keras op paths, e.g. "cam_efficientnet_lite0_1/block2_add_1/Add".
    return re.compile(rf"(^|/){re.escape(layer)}(_\d+)?/")


def feature_tensor(model, layer: str) -> int:
    """Index of the tensor a Keras layer's op writes (the first ';'-part of its name names the layer).

    Args:
        model: a ``schema_py_generated.ModelT``.
        layer: the Keras layer name, e.g. ``block4_add``.

    Raises:
        ExportError: no op output, or more than one, belongs to that layer, or it is not a 4-D feature map.
    """
    graph = model.subgraphs[0]
    pattern = _layer_pattern(layer)
    outputs = {int(i) for op in graph.operators for i in op.outputs}
    found = [i for i in sorted(outputs) if pattern.search(graph.tensors[i].name.decode().split(";")[0])]
    if len(found) != 1:
        raise ExportError(f"The model has {len(found)} tensors written by layer '{layer}', not one: name a layer "
                          "of this network (its Keras layer names) whose output is a feature map.")
    shape = [int(d) for d in graph.tensors[found[0]].shape]
    if len(shape) != 4 or shape[0] != 1:
        raise ExportError(f"Layer '{layer}' writes a tensor of shape {shape}, not a (1, H, W, C) feature map.")
    return found[0]


def add_feature_outputs(flatbuffer: bytes, layers: Sequence[str]) -> bytes:
    """The same model with each layer's feature map added as a serving-signature output named after the layer.

    Args:
        flatbuffer: a ``.tflite`` model from ``trainer export`` (one subgraph, one signature).
        layers: Keras layer names; outputs already present are kept as they are.

    Raises:
        ExportError: a layer is not found, or a name would clash with ``probs``/``cam`` or be unsafe.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    if len(model.signatureDefs or []) != 1 or len(model.subgraphs) != 1:
        raise ExportError("The model must have one subgraph and one serving signature; re-export it with "
                          "`python -m trainer export`.")
    signature, graph = model.signatureDefs[0], model.subgraphs[0]
    present = {t.name.decode() for t in signature.outputs}
    for layer in layers:
        if layer in OUTPUT_NAMES or not re.fullmatch(FEATURE_OUTPUT_PATTERN, layer):
            raise ExportError(f"'{layer}' cannot name a feature output (letters, digits and '_', not probs/cam).")
        if layer in present:
            continue
        index = feature_tensor(model, layer)
        graph.outputs = [*(int(i) for i in graph.outputs), index]
        entry = schema.TensorMapT()
        entry.name = layer.encode()
        entry.tensorIndex = index
        signature.outputs = [*signature.outputs, entry]
        present.add(layer)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def add_feature_outputs_to_bundle(folder: str | Path, layers: Sequence[str]) -> ModelCard:
    """Give an existing bundle the feature-map outputs: its model file, and the card's sha256 and outputs.

    The bundle's signature no longer covers the changed files, so ``signature.json`` is removed: sign the bundle
    again (``python -m trainer sign``). The unit's checks and self-test run on the edited copy before the bundle is
    rewritten.

    Raises:
        ExportError: a layer is not found; ModelError: the edited bundle fails the unit's checks.
    """
    from device.model.runtime import LiteRTRuntime

    folder = Path(folder)
    card = load_bundle(folder, run_selftest=False).card
    flatbuffer = add_feature_outputs((folder / card.file).read_bytes(), layers)
    runtime = LiteRTRuntime(flatbuffer)
    known = {o.name for o in card.outputs}
    added = []
    for layer in layers:
        if layer in known:
            continue
        t = runtime.output(layer)
        added.append(OutputSpec(name=layer, shape=t.shape, dtype=t.dtype.name,
                                quantisation=Quantisation(scale=t.scale, zero_point=t.zero_point) if t.quantised
                                else None, description=f"feature map of layer {layer} (gradability head input)"))
    card = ModelCard.model_validate({**card.model_dump(), "sha256": hashlib.sha256(flatbuffer).hexdigest(),
                                     "outputs": [*(o.model_dump() for o in card.outputs),
                                                 *(o.model_dump() for o in added)]})
    text = (card.model_dump_json(indent=2) + "\n").encode()
    staging = folder.with_name(f".{folder.name}.features-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging)
    try:
        (staging / SIGNATURE_FILE).unlink(missing_ok=True)
        write_atomic(staging / card.file, flatbuffer)
        write_atomic(staging / CARD_FILE, text)
        load_bundle(staging, run_selftest=True)
        (folder / SIGNATURE_FILE).unlink(missing_ok=True)
        write_atomic(folder / card.file, flatbuffer)
        write_atomic(folder / CARD_FILE, text)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return card
