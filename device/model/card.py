"""The model card (``model.json``): the contract between an exported model and the unit.

One pydantic schema, used by ``trainer export`` to write the card and by the unit to check it before it runs a
model. Unknown keys are rejected everywhere (``extra="forbid"``), so a typo in a hand-edited card is an error, not
a silently ignored field.

Usage::

    card = ModelCard.model_validate_json(Path("models/<id>/model.json").read_text())
    card.input.size, card.decision_threshold, card.output("cam").shape
    card.contract                     # the typed facts the screening pipeline reads (device.model.base)
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from device.model.base import ModelContract
from device.notice import INTENDED_USE
from device.preprocess import InputNormalisation
from device.quality_score import GradabilityScore
from device.regions import CardCAMNormalisation

SCHEMA_VERSION = 1
MODEL_FILE = "model.tflite"
CARD_FILE = "model.json"
SELFTEST_FILE = "selftest.npz"
SIGNATURE_KEY = "serving_default"  # the serving signature written by trainer export
OUTPUT_NAMES = ("probs", "cam")  # ARCHITECTURE.md "Model contract": outputs are found by these names
# More outputs may be feature maps (1, H, W, C) of the network, named after their Keras layer
# (trainer/export/features.py): the inputs of the bundle's gradability head.
FEATURE_OUTPUT_PATTERN = r"[a-z][a-z0-9_]{0,63}"
CLASS_NAMES = ("non-referable", "referable")  # index 1 is the referable class, whose probability the unit uses
# The network downsamples by 16 (four stride-2 max-pools, DESIGN.md §2.1): CAM cell i covers model pixels
# 16i..16i+15, so a 512 px input gives a 32x32 CAM. Input sizes are multiples of it.
CAM_STRIDE = 16
# The TFLite formats `trainer export` writes and the unit runs.
ExportFormat = Literal["float16", "int8"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
SHA256_PATTERN = r"^[0-9a-f]{64}$"
# A file named by the card is a plain name inside the bundle folder: no folders, no "..", nothing absolute.
BUNDLE_FILE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*"
# The loosest self-test the unit accepts, whatever the card says: a card could otherwise switch its own check off
# (prob_atol 1). trainer export writes 0.01 / 0.999 (float16) and 0.05 / 0.9 (int8).
MAX_PROB_ATOL = 0.1
MIN_CAM_CORR = 0.8
MAX_SELFTEST_IMAGES = 64


def _inside_bundle(name: str) -> str:
    if len(name) > 100 or not re.fullmatch(BUNDLE_FILE_PATTERN, name):
        raise ValueError(f"must be a plain file name inside the bundle folder (no folders, no '..'), got {name!r}")
    return name


BundleFile = Annotated[str, AfterValidator(_inside_bundle)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quantisation(_Strict):
    """Affine quantisation of one tensor: ``real = scale * (q - zero_point)``."""

    scale: float = Field(gt=0, description="Real value of one quantisation step.")
    zero_point: int = Field(ge=-128, le=255, description="Integer that represents real 0.")


class InputSpec(_Strict):
    """The model's single input: one standardised RGB image."""

    name: str = Field("image", description="Input name in the serving signature.")
    size: int = Field(ge=CAM_STRIDE, le=4096, description=f"Side S of the square input, pixels; a multiple of "
                                                          f"{CAM_STRIDE}.")
    shape: tuple[int, int, int, int] = Field(description="Tensor shape (1, S, S, 3).")
    dtype: Literal["float32", "int8", "uint8"] = Field(description="Tensor dtype inside model.tflite.")
    colour_order: Literal["RGB"] = "RGB"
    normalisation: InputNormalisation = Field(
        description="The ``method`` of device.preprocess.standardise the model was trained with.",
    )
    quantisation: Quantisation | None = Field(None, description="Present when dtype is int8/uint8.")

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        if self.size % CAM_STRIDE:
            raise ValueError(f"size must be a multiple of {CAM_STRIDE}, got {self.size}")
        if self.shape != (1, self.size, self.size, 3):
            raise ValueError(f"shape must be (1, {self.size}, {self.size}, 3), got {self.shape}")
        if (self.dtype != "float32") != (self.quantisation is not None):
            raise ValueError("quantisation must be given exactly when dtype is int8 or uint8")
        return self


class OutputSpec(_Strict):
    """One named output of the serving signature."""

    name: str = Field(pattern=rf"^({FEATURE_OUTPUT_PATTERN})$",
                      description="'probs', 'cam', or a feature map named after its layer")
    shape: tuple[int, ...] = Field(description="Tensor shape including the batch of 1.")
    dtype: Literal["float32", "int8", "uint8"]
    quantisation: Quantisation | None = None
    description: str = ""


class Thresholds(_Strict):
    """How the decision threshold was chosen (it is applied to the referable probability)."""

    method: Literal["youden_j", "sensitivity_target", "fixed"]
    split: str = Field(description="Data the threshold was chosen on, e.g. 'validation'.")
    target_sensitivity: float | None = Field(None, ge=0, le=1)
    sensitivity: float | None = Field(None, ge=0, le=1, description="At the threshold on that split.")
    specificity: float | None = Field(None, ge=0, le=1, description="At the threshold on that split.")
    n_images: int = Field(ge=0)


class TrainingData(_Strict):
    """What the model was trained on (counts only; never any image or file name)."""

    dataset: str = Field(description="e.g. 'EyePACS/Kaggle 2015 subset (eyepacs_256)', 'synthetic'.")
    image_size: int = Field(ge=16)
    n_train: int | None = Field(ge=0, description="Training images (None: not known to the exporter).")
    n_validation: int | None = Field(ge=0)
    n_train_referable: int | None = Field(None, ge=0)
    n_validation_referable: int | None = Field(None, ge=0)
    referable_definition: str = "Kaggle DR level >= 2"
    licence: str = Field(description="Terms of the training data, e.g. 'non-commercial research, no redistribution'.")
    notes: str = ""


class RepresentativeData(_Strict):
    """Calibration data of an int8 export."""

    source: Literal["training_data", "synthetic"]
    n_images: int = Field(ge=1)
    split: str | None = None


class NetworkInfo(_Strict):
    """The Keras network that was exported (for benchmarks and reproduction)."""

    name: str = Field(description="Architecture, e.g. 'cam_net' (o_O net A + CAM head, DESIGN.md §2.1).")
    width: float | None = Field(None, gt=0, description="Channel multiplier (1.0 = the paper's 10.25 M parameters).")
    parameters: int = Field(ge=1)


class SelfTest(_Strict):
    """Synthetic images with the outputs this model produced at export; checked by the unit at start-up."""

    file: BundleFile = Field(SELFTEST_FILE, description="A file name inside the bundle.")
    sha256: str = Field(pattern=SHA256_PATTERN)
    n_images: int = Field(ge=1, le=MAX_SELFTEST_IMAGES)
    prob_atol: float = Field(gt=0, le=MAX_PROB_ATOL, description="Max |prob difference| allowed.")
    cam_min_corr: float = Field(ge=MIN_CAM_CORR, le=1, description="Min Pearson correlation of each CAM with the "
                                                                   "recorded one.")


class GradabilityHead(_Strict):
    """The bundle's gradability head: the gate's score refitted with this network's feature maps as more inputs.

    Fitted after export by ``python -m bench.calibrate_quality --bundle models/<id>`` (cross-validated by patient
    on expert-graded photographs and three other cameras, docs/unit.md); the figures held out of the fit are in
    ``cross_validation``.
    """

    score: GradabilityScore
    method: str = Field(max_length=2000, description="How the head and its threshold were fitted.")
    data: dict[str, int] = Field(description="Photographs per source it was fitted on.")
    cross_validation: dict[str, float] = Field(default_factory=dict, description="Held-out figures, fractions.")
    created: datetime

    @field_validator("score")
    @classmethod
    def _has_embedding(cls, score: GradabilityScore) -> GradabilityScore:
        if score.embedding is None:
            raise ValueError("a bundle's gradability head must read the network's feature maps (embedding)")
        return score


class ModelCard(_Strict):
    """``model.json``: everything the unit needs to run, trust and explain a model."""

    schema_version: Literal[1] = SCHEMA_VERSION
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$", description="Folder name under models/.")
    format: ExportFormat
    file: BundleFile = Field(MODEL_FILE, description="A file name inside the bundle.")
    sha256: str = Field(pattern=SHA256_PATTERN, description="sha256 of model.tflite (hex).")
    signature: str = SIGNATURE_KEY
    input: InputSpec
    outputs: tuple[OutputSpec, ...]
    class_names: tuple[str, str] = CLASS_NAMES
    cam_class: int = Field(ge=0, le=1, description="Index of the class whose CAM the 'cam' output is.")
    cam_stride: int = Field(CAM_STRIDE, ge=1, le=4096, description="Model pixels per CAM cell (cell i covers "
                                                                   "16i..16i+15).")
    decision_threshold: float = Field(gt=0, lt=1, description="Referable when prob_referable >= this.")
    threshold: Thresholds
    region_threshold: float = Field(gt=0, lt=1, description="On the [0, 1]-normalised CAM (paper: "
                                                            "device.regions.REGION_THRESHOLD).")
    region_normalisation: CardCAMNormalisation = Field(
        "max", description="How device.regions normalises the CAM before the region threshold (paper: max).")
    network: NetworkInfo | None = None
    training_data: TrainingData
    representative_data: RepresentativeData | None = None
    gradability: GradabilityHead | None = Field(
        None, description="A gradability score on the gate's metrics and this network's pooled features; when present "
        "the unit uses it instead of the gate's own score (device/quality.py).")
    metrics: dict[str, float | int | str | None] = Field(description="Evaluation metrics, key -> value.")
    parity: dict[str, float | int | str | bool | None] = Field(description="Summary of parity_report.json.")
    selftest: SelfTest
    code_version: str = Field(min_length=1)
    compatible_units: str | None = Field(
        None, max_length=100, description="PEP 440 specifiers of the unit software versions (device.version) that can "
        "run this bundle, e.g. '>=0.2,<1'; None = any unit that reads this card schema (device.model.compat).")
    created: datetime
    source: str = Field(description="What was exported (checkpoint / run name), no private paths required.")
    licence: str = Field(description="Licence of the model weights and of this bundle.")
    intended_use: str = INTENDED_USE

    @field_validator("outputs")
    @classmethod
    def _names(cls, outputs: tuple[OutputSpec, ...]) -> tuple[OutputSpec, ...]:
        names = [o.name for o in outputs]
        if len(set(names)) != len(names) or not set(OUTPUT_NAMES) <= set(names):
            raise ValueError(f"outputs must name {list(OUTPUT_NAMES)} once each, and any feature maps once, got "
                             f"{names}")
        for o in outputs:
            if o.name not in OUTPUT_NAMES and (len(o.shape) != 4 or o.shape[0] != 1):
                raise ValueError(f"feature output '{o.name}' must have shape (1, H, W, C), got {o.shape}")
        return outputs

    @model_validator(mode="after")
    def _shapes(self) -> ModelCard:
        if self.input.size % self.cam_stride:
            raise ValueError(f"cam_stride must divide the input size {self.input.size}, got {self.cam_stride}")
        cells = self.input.size // self.cam_stride
        if self.output("probs").shape != (1, 2):
            raise ValueError(f"output 'probs' must have shape (1, 2), got {self.output('probs').shape}")
        if self.output("cam").shape != (1, cells, cells):
            raise ValueError(f"output 'cam' must have shape (1, {cells}, {cells}), got {self.output('cam').shape}")
        if self.gradability is not None:
            term = self.gradability.score.embedding
            maps = {o.name: o for o in self.outputs if o.name not in OUTPUT_NAMES}
            missing = [n for n in term.inputs if n not in maps]
            if missing:
                raise ValueError(f"the gradability head reads outputs {missing}, which the model does not have")
            values = sum(2 * maps[n].shape[3] for n in term.inputs)
            if values != len(term.weights):
                raise ValueError(f"the gradability head has {len(term.weights)} weights but its inputs pool to "
                                 f"{values} values (mean and std per channel)")
        if (self.format == "int8") != (self.input.dtype != "float32"):
            raise ValueError("an int8 model must have an integer input and a float16 model a float32 input")
        return self

    def output(self, name: str) -> OutputSpec:
        """The output spec called ``name`` ('probs', 'cam' or a feature map)."""
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def contract(self) -> ModelContract:
        """The facts the screening pipeline reads, as one typed value."""
        return ModelContract(self.id, self.input.size, self.input.normalisation, self.decision_threshold,
                             self.region_threshold, self.region_normalisation,
                             self.gradability.score if self.gradability else None)

    @property
    def cam_size(self) -> int:
        """Side of the CAM in cells (input size / ``cam_stride``)."""
        return self.input.size // self.cam_stride
