"""Load a model bundle (``models/<id>/``): check its card, its hash and its self-test, then run it.

A bundle is ``model.tflite`` + ``model.json`` (validated by :mod:`device.model.card`) + ``selftest.npz``
(synthetic uint8 crops + FOV masks with the outputs recorded at export). :func:`load_bundle` refuses a bundle whose
card is invalid, whose model file does not match the card's sha256, whose tensors do not match the card, or whose
self-test this runtime does not reproduce, each with a one-sentence :class:`device.errors.ModelError`.

Usage::

    bundle = load_bundle(default_model_dir())          # or any models/<id> folder
    prediction = bundle.predict(preprocess(rgb, size=bundle.contract.input_size).image)
    prediction.prob_referable, prediction.cam           # float, float32 (S/16, S/16)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.config import first_error_sentence
from device.atomic import sha256_file
from device.errors import ModelError
from device.model.active import read_active
from device.model.base import Prediction
from device.model.card import CARD_FILE, ModelCard
from device.model.compat import check_compatible
from device.model.runtime import LiteRTRuntime
from device.model.signature import PROJECT_KEYS, SignatureCheck, TrustedKey, check_signature
from device.preprocess import standardise

MODELS_ROOT = Path(__file__).resolve().parents[2] / "models"
DEFAULT_FILE = "DEFAULT"  # models/DEFAULT holds the id (folder name) of the unit's default bundle
REEXPORT = "re-export it with `python -m trainer export`"


class BundleModelConfig(BaseModel):
    """A model bundle: ``model.tflite`` + ``model.json`` (+ self-test set), checked at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["bundle"] = "bundle"
    path: str | None = Field(None, description="bundle folder; None = the bundled default model (models/)")
    run_selftest: bool = Field(True, description="run the bundle's self-test images at start-up")
    num_threads: int | None = Field(None, ge=1, le=64, description="LiteRT CPU threads; None = runtime default")
    # Model updates (device.model.store, docs/model_updates.md): where installed bundles live, whom to trust.
    store: str | None = Field(None, description="folder of installed models (`python -m device model install`); its "
                                                "ACTIVE pointer names the model; None = `path` or the bundled default")
    trusted_keys: tuple[TrustedKey, ...] = Field(PROJECT_KEYS, description="Ed25519 public keys whose bundle "
                                                 "signatures the unit accepts; default: the project's key")
    allow_unsigned: bool = Field(False, description="DEVELOPMENT ONLY: run bundles whose signature does not verify "
                                                    "(audited at every start, shown on screens and the self-test)")

    @model_validator(mode="after")
    def _one_source(self) -> BundleModelConfig:
        if self.path and self.store:
            raise ValueError("give either path (one fixed bundle) or store (installed models), not both")
        return self


def map_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps (e.g. CAMs); two flat maps correlate 1 when equal, else 0."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))


def default_model_dir(models_root: str | Path | None = None) -> Path:
    """The folder of the default bundle, named by the id in ``<models_root>/DEFAULT``.

    Args:
        models_root: folder holding the bundles (default: the repository's ``models/``).

    Raises:
        ModelError: ``DEFAULT`` is missing or empty, or names a folder that does not exist.
    """
    root = Path(models_root) if models_root is not None else MODELS_ROOT
    marker = root / DEFAULT_FILE
    try:
        model_id = marker.read_text(encoding="utf-8").strip()
    except OSError:
        raise ModelError(f"No default model is designated ({marker} is missing); write a bundle id into it or "
                         "pass a model folder explicitly.") from None
    if not model_id or "/" in model_id or "\\" in model_id or model_id.startswith("."):
        raise ModelError(f"{marker} must hold one bundle id (a folder name under {root}); fix the file.")
    if not (root / model_id).is_dir():
        raise ModelError(f"The default model '{model_id}' named in {marker} is not in {root}; restore the bundle "
                         "or point DEFAULT at an existing one.")
    return root / model_id


def bundle_folder(cfg: BundleModelConfig) -> Path:
    """The bundle a config runs: its ``path``; else the model its ``store``'s ACTIVE pointer names; else the bundled
    default (a store where nothing was activated yet runs the bundled default too).

    Raises:
        ModelError: the pointer is damaged, or no default is designated.
    """
    if cfg.path:
        return Path(cfg.path)
    pointer = read_active(cfg.store) if cfg.store else None
    return Path(cfg.store) / pointer.active if pointer is not None else default_model_dir()


def _require_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ModelError(f"The model folder {folder} does not exist; check the path or copy the bundle there.")


def open_checked_bundle(folder: str | Path, cfg: BundleModelConfig) -> ModelBundle:
    """What the unit runs: the bundle's signature (against ``cfg.trusted_keys``), its compatibility with this unit,
    then :func:`load_bundle`'s checks (card, sha256, tensors, self-test), in that order.

    Returns:
        The bundle, with ``signature`` set (untrusted only under ``cfg.allow_unsigned``).

    Raises:
        ModelError: any check fails (a :class:`device.model.signature.SignatureError` for the signature).
    """
    folder = Path(folder)
    _require_folder(folder)
    signature = check_signature(folder, cfg.trusted_keys, cfg.allow_unsigned)
    check_compatible(folder)
    bundle = load_bundle(folder, run_selftest=cfg.run_selftest, num_threads=cfg.num_threads)
    bundle.signature = signature
    return bundle


def read_card(folder: Path) -> ModelCard:
    """Parse and validate ``model.json`` in ``folder``.

    Raises:
        ModelError: the card is missing, is not JSON, or does not match the schema (first problem named).
    """
    path = folder / CARD_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise ModelError(f"The model card {path} is missing; {REEXPORT}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"The model card {path} is not valid JSON (line {exc.lineno}); {REEXPORT}.") from None
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        raise ModelError(first_error_sentence(exc, f"The model card {path}", REEXPORT, whole="(card)")) from None


def _check_tensors(card: ModelCard, runtime: LiteRTRuntime, folder: Path) -> None:
    spec = runtime.input
    if spec.shape != card.input.shape or spec.dtype.name != card.input.dtype:
        raise ModelError(f"The model in {folder} takes {spec.dtype.name} {spec.shape} but its card says "
                         f"{card.input.dtype} {card.input.shape}; {REEXPORT}.")
    for out in card.outputs:
        tensor = runtime.output(out.name)
        if tensor.shape != out.shape:
            raise ModelError(f"The model output '{out.name}' in {folder} has shape {tensor.shape} but its card says "
                             f"{out.shape}; {REEXPORT}.")


class ModelBundle:
    """A checked bundle with its runtime (created once). Build it with :func:`load_bundle`.

    Attributes:
        folder: the bundle folder.
        card: the whole validated model card.
        contract: the card facts the screening pipeline reads (``card.contract``).
        runtime: the LiteRT interpreter, created once.
        signature: how its signature checked out (:func:`open_checked_bundle`); None when loaded without that check
            (:func:`load_bundle`, e.g. by the trainer).
    """

    def __init__(self, folder: Path, card: ModelCard, runtime: LiteRTRuntime):
        self.folder = folder
        self.card = card
        self.contract = card.contract
        self.runtime = runtime
        self.signature: SignatureCheck | None = None

    @classmethod
    def from_config(cls, cfg: BundleModelConfig) -> ModelBundle:
        """Load and check the bundle a config names (:func:`bundle_folder`), signature first."""
        return open_checked_bundle(bundle_folder(cfg), cfg)

    @property
    def id(self) -> str:
        """The model id (for results and the audit trail)."""
        return self.card.id

    def predict(self, image: np.ndarray) -> Prediction:
        """Run one standardised image.

        Args:
            image: float32 (S, S, 3), ``device.preprocess.preprocess(...).image`` at ``card.input.size``.

        Returns:
            :class:`Prediction` (the runtime quantises int8 inputs itself).
        """
        out = self.runtime.run(image)
        probs = out["probs"].reshape(2)
        return Prediction(prob_referable=float(probs[1]), probs=probs, cam=out["cam"])

    def selftest(self) -> dict[str, float]:
        """Re-run the bundled synthetic crops (standardised here, as the unit does) and compare with the outputs
        recorded at export, so preprocessing, runtime and model are checked together.

        Returns:
            ``{"prob_max_abs_diff", "cam_min_corr"}`` measured now (worst image).

        Raises:
            ModelError: the self-test file is missing or altered, or an output differs beyond the card's tolerance.
        """
        spec = self.card.selftest
        path = self.folder / spec.file
        if not path.is_file():
            raise ModelError(f"The self-test file {path} is missing; restore the bundle or {REEXPORT}.")
        if sha256_file(path) != spec.sha256:
            raise ModelError(f"The self-test file {path} does not match the sha256 in its card; restore the bundle "
                             f"or {REEXPORT}.")
        with np.load(path) as data:
            crops, masks, probs, cams = data["rgb"], data["fov_mask"], data["probs"], data["cam"]
        prob_diff, cam_corr = 0.0, 1.0
        for crop, mask, want_probs, want_cam in zip(crops, masks, probs, cams):
            got = self.predict(standardise(crop, mask, self.card.input.normalisation))
            prob_diff = max(prob_diff, float(np.abs(got.probs - want_probs).max()))
            cam_corr = min(cam_corr, map_correlation(got.cam, want_cam))
        if prob_diff > spec.prob_atol or cam_corr < spec.cam_min_corr:
            raise ModelError(f"The model self-test failed on this machine ({self.runtime.backend}: probability "
                             f"differs by {prob_diff:.4f}, limit {spec.prob_atol}; CAM correlation {cam_corr:.3f}, "
                             f"limit {spec.cam_min_corr}); do not screen with it and reinstall the runtime.")
        return {"prob_max_abs_diff": prob_diff, "cam_min_corr": cam_corr}


def load_bundle(path: str | Path, run_selftest: bool = True, num_threads: int | None = None,
                backend: str | None = None) -> ModelBundle:
    """Load and check a model bundle.

    Args:
        path: the bundle folder (``models/<id>``).
        run_selftest: re-run the bundled self-test images (recommended at start-up; about one inference each).
        num_threads: interpreter CPU threads (None: runtime default).
        backend: force a runtime module (see ``device.model.runtime.BACKENDS``).

    Returns:
        A :class:`ModelBundle` ready to :meth:`~ModelBundle.predict`.

    Raises:
        ModelError: missing folder or file, invalid card, hash mismatch, tensors that disagree with the card,
            self-test mismatch, or no runtime installed — one sentence saying what to do.
    """
    folder = Path(path)
    _require_folder(folder)
    card = read_card(folder)
    model_path = folder / card.file
    if not model_path.is_file():
        raise ModelError(f"The model file {model_path} is missing; restore the bundle or {REEXPORT}.")
    if sha256_file(model_path) != card.sha256:
        raise ModelError(f"The model file {model_path} does not match the sha256 in its card (corrupted or "
                         f"tampered); restore the bundle or {REEXPORT}.")
    runtime = LiteRTRuntime(model_path, num_threads=num_threads, signature=card.signature, backend=backend)
    _check_tensors(card, runtime, folder)
    bundle = ModelBundle(folder, card, runtime)
    if run_selftest:
        bundle.selftest()
    return bundle
