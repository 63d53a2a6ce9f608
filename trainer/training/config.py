"""The training configuration: one validated pydantic model, named presets, TOML files and ``--set`` overrides.

Every field documents its unit and limits; unknown keys are rejected. ``load_train_config`` turns any problem into
one :class:`device.errors.ConfigError` sentence naming the field and the reason, before any work starts.

Presets live in ``trainer/training/presets/<name>.toml``: ``paper`` is exactly the recipe of DESIGN.md §2.2 and must
stay so; ``improved`` collects the changes measured to help on small data; ``tiny`` is for tests and smoke runs.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from common.config import OverrideError, apply_overrides, first_error_sentence
from device.errors import ConfigError
from device.model.card import CAM_STRIDE
from device.preprocess import InputNormalisation

PRESETS_DIR = Path(__file__).with_name("presets")
MAX_WORKERS = 256


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """One labelled image folder of a mixed training set (``data.source = "mixed"``)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="short name, used in the run folder and for per-source validation AUC")
    path: str = Field(min_length=1, description="dataset folder (EyePACS flat or Kaggle layout, or any folder with "
                      "`images` and `labels`)")
    images: str | None = Field(None, description="folder of the photographs when they are not under `path` "
                               "(relative paths: under `path` when they exist there, else to the working directory)")
    labels: str | None = Field(None, description="label CSV (image,level[,...]) when not the layout's own")
    manifest: str | None = Field(None, description="sha256sum-style file (`<hash>  images/<name>`): every image "
                                 "used must be listed there with that hash, or the run stops (same path rule)")
    max_images: int | None = Field(None, ge=4, description="use at most this many of this source's images")


class DataConfig(_Strict):
    """Where the images come from and how they are split and normalised."""

    source: Literal["cache", "folder", "mixed"] = Field(
        "folder", description="'cache': a training cache from `python -m trainer prepare`; "
        "'folder': an EyePACS-style folder (labels.csv + images/) loaded into memory; "
        "'mixed': the folders of `sources`, each split by patient on its own, loaded into memory")
    sources: tuple[SourceConfig, ...] = Field((), description="the folders of a 'mixed' data set")
    path: str = Field("", description="cache directory or image folder (relative paths: to the working directory)")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0,
                                description="fraction of patients held out for validation (folder source; "
                                "a cache carries its own split)")
    split_seed: int = Field(0, ge=0, description="seed of the patient-level split (folder source)")
    max_images: int | None = Field(None, ge=4, description="use at most this many images (smoke runs); None = all")
    normalisation: InputNormalisation = Field(
        "per_image", description="device.preprocess.standardise method: 'per_image' mean/std inside the FOV (the "
        "paper); 'local_contrast': Ben Graham's 4*img - 4*blur(img, size/30) + 128, then standardised; "
        "'scale_127': (rgb - 127) / 128, the input of the ImageNet EfficientNet-Lite weights")
    workers: int | Literal["auto"] = Field(
        "auto", description="background threads that make batches (gather, standardise if not preloaded, augment "
        "in the pipeline) and load the images: 'auto' = one per CPU core this process may use; 0 or 1 = in the "
        "training loop's own thread")
    preload: Literal["auto", "float32", "float16", "off"] = Field(
        "auto", description="standardise every image once when the data is loaded and keep the result in memory "
        "('float32', or 'float16' at half the memory, about 1e-3 relative rounding); 'off' = standardise each "
        "batch; 'auto' = float32 when it takes at most half of the available memory, else float16 when that "
        "fits, else off")

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> int | str:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_WORKERS):
            return value
        raise ValueError(f"must be 'auto' (one thread per CPU core) or a whole number of threads from 0 to "
                         f"{MAX_WORKERS}, got {value!r}")

    def worker_threads(self) -> int:
        """``workers`` as a number: ``auto`` = the CPU cores this process may run on (its affinity mask)."""
        if self.workers != "auto":
            return int(self.workers)
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, value: tuple[SourceConfig, ...]) -> tuple[SourceConfig, ...]:
        names = [s.name for s in value]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {', '.join(names)}")
        return value


class AugmentConfig(_Strict):
    """Random augmentation on the standardised image, run on the accelerator as a Keras layer."""

    enabled: bool = True
    brightness: float = Field(0.2, ge=0.0, le=2.0, description="max additive shift, in standard deviations")
    contrast: float = Field(0.2, ge=0.0, lt=1.0, description="max relative contrast change (factor 1 ± contrast)")
    rotation_deg: float = Field(180.0, ge=0.0, le=180.0, description="max rotation either way, degrees")
    hflip: bool = True
    vflip: bool = True
    placement: Literal["auto", "device", "pipeline"] = Field(
        "auto", description="where augmentation runs: 'device' = a Keras layer in the training step, 'pipeline' = "
        "OpenCV in the input threads, 'auto' = pipeline on CPU-only machines (measured faster), device otherwise")


class OptimizerConfig(_Strict):
    """SGD with momentum and a per-epoch exponential learning-rate decay (DESIGN.md §2.2)."""

    learning_rate: float = Field(0.01, gt=0.0, le=10.0, description="initial learning rate")
    momentum: float = Field(0.8, ge=0.0, lt=1.0)
    nesterov: bool = False
    decay_per_epoch: float = Field(0.01, ge=0.0, lt=1.0, description="lr(epoch e) = lr * (1 - decay)^e")


class TrainConfig(_Strict):
    """A complete, frozen description of one training run."""

    name: str = Field("run", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="run name, used for the run folder")
    input_size: int = Field(512, ge=CAM_STRIDE, le=2048,
                            description=f"square input side in pixels, a multiple of {CAM_STRIDE}")
    width: float = Field(1.0, gt=0.0, le=4.0, description="channel multiplier of the CAM net (1.0 = 10.25 M params)")
    backbone: Literal["paper", "efficientnet_lite0"] = Field(
        "paper", description="'paper': o_O net A trained from scratch (DESIGN.md §2.1, uses `width`); "
        "'efficientnet_lite0': ImageNet-pretrained EfficientNet-Lite0 at output stride 16 with the same CAM head")
    freeze_blocks: int = Field(0, ge=0, le=16, description="efficientnet_lite0: freeze the stem and the first k of "
                               "its 16 MBConv blocks (0 = fine-tune everything)")
    backbone_bn: Literal["train", "frozen"] = Field(
        "train", description="efficientnet_lite0: 'frozen' keeps every batch norm at its ImageNet statistics")
    epochs: int = Field(150, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=4096, description="global batch size (split across devices)")
    l2: float = Field(5e-4, ge=0.0, le=1.0, description="L2 penalty l2*Σw² on conv and dense kernels")
    class_weight: Literal["balanced", "none"] = Field(
        "balanced", description="'balanced': weight each class by N/(2*N_class) in the loss")
    mixed_precision: Literal["auto", "on", "off"] = Field(
        "auto", description="'auto': mixed precision (float16 on TF, bfloat16 on JAX) when a GPU is present")
    distribution: Literal["auto", "none", "data_parallel"] = Field(
        "auto", description="'auto': data-parallel when several accelerators are visible")
    num_devices: int | None = Field(None, ge=1, le=1024, description="devices for data_parallel (None = all)")
    jit_compile: Literal["auto", "on", "off"] = "auto"
    seed: int = Field(0, ge=0, description="seed of weights init, shuffling and augmentation")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop when validation AUC has not improved for this many epochs; None = never")
    time_budget_minutes: float | None = Field(
        None, gt=0.0, description="wall-clock minutes for the whole run (loading, compiling, training, validation "
        "and checkpoints; summed over resumed sessions up to their last checkpoint): no epoch is started that is "
        "not expected to end, with its validation and checkpoint, inside it (at least one epoch runs); None = no "
        "limit")
    validate_every: int = Field(
        1, ge=1, le=10_000, description="validate (AUC, best weights) after every k-th epoch and after the last one")
    checkpoint_every: int = Field(
        1, ge=1, le=10_000, description="write the resume checkpoint and last weights after every k-th epoch, after "
        "the last one and after every new best validation AUC (a kill loses at most k-1 epochs)")
    tta_flip: bool = Field(False, description="validate on the mean of the image and its horizontal flip")
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    optimizer: OptimizerConfig = OptimizerConfig()

    @field_validator("input_size")
    @classmethod
    def _multiple_of_stride(cls, value: int) -> int:
        if value % CAM_STRIDE:
            raise ValueError(f"must be a multiple of {CAM_STRIDE} (the CAM is input/{CAM_STRIDE}), got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.data.source == "mixed" and not self.data.sources:
            raise ValueError("data.source 'mixed' needs at least one entry in data.sources")
        if self.data.source != "mixed" and self.data.sources:
            raise ValueError("data.sources is only read when data.source = 'mixed'")
        return self

    @field_validator("num_devices")
    @classmethod
    def _batch_fits_devices(cls, value: int | None, info: ValidationInfo) -> int | None:
        batch = info.data.get("batch_size")
        if value and batch and batch % value:
            raise ValueError(f"batch_size {batch} must be divisible by num_devices {value}")
        return value


def preset_names() -> list[str]:
    """Names of the packaged presets (``trainer/training/presets/*.toml``)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Training config file {path} does not exist; check the path.") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"Training config file {path} is not valid TOML ({err}); fix the syntax.") from None


def load_train_config(preset: str | None = "paper", path: str | Path | None = None,
                      overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """Build a validated config: preset, then a TOML/JSON file, then ``key.sub=value`` overrides.

    Args:
        preset: packaged preset name (see :func:`preset_names`) or None for the built-in defaults (= paper).
        path: optional TOML (or JSON, e.g. a run folder's ``config.json``) file merged over the preset.
        overrides: ``["epochs=3", "data.path=/x"]`` (values parsed as TOML, bare words as strings) or a dict of
            dotted keys.

    Returns:
        The frozen :class:`TrainConfig`.

    Raises:
        ConfigError: unknown preset, unreadable file, unknown key or invalid value (names field and reason).
    """
    tree: dict[str, Any] = {}
    origin = "defaults"
    if preset:
        if preset not in preset_names():
            raise ConfigError(f"Unknown training preset '{preset}'; choose one of {', '.join(preset_names())}.")
        tree = _read_toml(PRESETS_DIR / f"{preset}.toml")
        origin = f"preset '{preset}'"
    if path is not None:
        path = Path(path)
        if path.suffix == ".json":
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise ConfigError(f"Training config file {path} cannot be read as JSON ({err}); fix it.") from None
        else:
            loaded = _read_toml(path)
        tree = _merge(tree, loaded)
        origin = f"file {path}"
    if overrides:
        try:
            tree = apply_overrides(tree, overrides, example="epochs=10")
        except OverrideError as exc:
            raise ConfigError(str(exc)) from None
        origin = f"{origin} with overrides"
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(first_error_sentence(err, f"Training config {origin}", "fix it and run again")) from None


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
