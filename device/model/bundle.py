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
import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.config import first_error_sentence
from device.atomic import FileTooLargeError, SpecialFileError, read_regular, sha256_file
from device.errors import ModelError
from device.model.active import BUNDLE_ID_PATTERN, read_active
from device.model.base import Prediction
from device.model.card import CARD_FILE, ModelCard
from device.model.compat import check_compatible
from device.model.runtime import LiteRTRuntime
from device.model.signature import PROJECT_KEYS, SignatureCheck, TrustedKey, check_signature
from device.preprocess import standardise
from device.quality_score import pool_mean_std

MODELS_ROOT = Path(__file__).resolve().parents[2] / "models"
DEFAULT_FILE = "DEFAULT"  # models/DEFAULT holds the id (folder name) of the unit's default bundle
REEXPORT = "re-export it with `python -m trainer export`"
MAX_CARD_BYTES = 1 << 20  # a model card is a few kB
MAX_DEFAULT_BYTES = 4096


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
        model_id = read_regular(marker, MAX_DEFAULT_BYTES).decode("utf-8").strip()
    except FileNotFoundError:
        raise ModelError(f"No default model is designated ({marker} is missing); write a bundle id into it or "
                         "pass a model folder explicitly.") from None
    except (OSError, UnicodeDecodeError):
        model_id = ""  # not a small UTF-8 text file: the sentence below says what it must be
    if not re.fullmatch(BUNDLE_ID_PATTERN, model_id):
        raise ModelError(f"{marker} must hold one bundle id (a folder name under {root}, as plain text); fix the "
                         "file.")
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
    try:
        signature = check_signature(folder, cfg.trusted_keys, cfg.allow_unsigned)
        check_compatible(folder)
        bundle = load_bundle(folder, run_selftest=cfg.run_selftest, num_threads=cfg.num_threads)
    except ModelError:
        raise
    except Exception as exc:  # every model problem ends on the MODEL PROBLEM screen, never a traceback
        raise ModelError(f"The model bundle {folder} could not be loaded ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120] if str(exc) else 'no detail'}); restore the bundle or "
                         f"{REEXPORT}.") from exc
    bundle.signature = signature
    return bundle


def read_card(folder: Path) -> ModelCard:
    """Parse and validate ``model.json`` in ``folder``.

    Raises:
        ModelError: the card is missing, is not JSON, or does not match the schema (first problem named).
    """
    path = folder / CARD_FILE
    try:
        text = read_regular(path, MAX_CARD_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise ModelError(f"The model card {path} is missing; {REEXPORT}.") from None
    except (SpecialFileError, FileTooLargeError):
        raise ModelError(f"The model card {path} is not a plain file of at most 1 MiB; {REEXPORT}.") from None
    except UnicodeDecodeError:
        raise ModelError(f"The model card {path} is not UTF-8 text (damaged or not a card); {REEXPORT}.") from None
    except OSError as exc:
        raise ModelError(f"The model card {path} cannot be read ({exc.strerror}); check the disk or "
                         f"{REEXPORT}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"The model card {path} is not valid JSON (line {exc.lineno}); {REEXPORT}.") from None
    except RecursionError:
        raise ModelError(f"The model card {path} is nested too deeply to be a model card; {REEXPORT}.") from None
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        raise ModelError(first_error_sentence(exc, f"The model card {path}", REEXPORT, whole="(card)")) from None


def _same_quantisation(card_q, tensor) -> bool:
    """Whether a card's quantisation (None = float) is the tensor's, to float32 precision."""
    if card_q is None:
        return not tensor.quantised
    return (tensor.quantised and tensor.zero_point == card_q.zero_point
            and abs(tensor.scale - card_q.scale) <= 1e-6 * abs(card_q.scale))


def _check_tensors(card: ModelCard, runtime: LiteRTRuntime, folder: Path) -> None:
    """The card's input and outputs (shape, dtype, quantisation) are the model file's, or ModelError."""
    spec = runtime.input
    if spec.shape != card.input.shape or spec.dtype.name != card.input.dtype:
        raise ModelError(f"The model in {folder} takes {spec.dtype.name} {spec.shape} but its card says "
                         f"{card.input.dtype} {card.input.shape}; {REEXPORT}.")
    if not _same_quantisation(card.input.quantisation, spec):
        raise ModelError(f"The input quantisation of the model in {folder} (scale {spec.scale:.6g}, zero point "
                         f"{spec.zero_point}) is not the one its card gives; {REEXPORT}.")
    for out in card.outputs:
        tensor = runtime.output(out.name)
        if tensor.shape != out.shape or tensor.dtype.name != out.dtype:
            raise ModelError(f"The model output '{out.name}' in {folder} is {tensor.dtype.name} {tensor.shape} but "
                             f"its card says {out.dtype} {out.shape}; {REEXPORT}.")
        if not _same_quantisation(out.quantisation, tensor):
            raise ModelError(f"The quantisation of model output '{out.name}' in {folder} (scale "
                             f"{tensor.scale:.6g}, zero point {tensor.zero_point}) is not the one its card gives; "
                             f"{REEXPORT}.")


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

    def _selftest_arrays(self, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The self-test file's arrays, checked against the card (count, shapes), or ModelError: a file whose
        sha256 in the card was updated can still be damaged or hold anything."""
        n, s, cells = self.card.selftest.n_images, self.card.input.size, self.card.cam_size
        damaged = f"The self-test file {path} is damaged or not this model's"
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = tuple(np.asarray(data[key]) for key in ("rgb", "fov_mask", "probs", "cam"))
        except Exception as exc:  # noqa: BLE001 - zipfile, numpy and OS errors of a damaged file, all the same here
            raise ModelError(f"{damaged} ({type(exc).__name__}); restore the bundle or {REEXPORT}.") from None
        want = {"rgb": ((n, s, s, 3), np.uint8), "fov_mask": ((n, s, s), None), "probs": ((n, 2), None),
                "cam": ((n, cells, cells), None)}
        for (key, (shape, dtype)), array in zip(want.items(), arrays):
            if array.shape != shape or (dtype is not None and array.dtype != dtype) or array.dtype.kind not in "biuf":
                raise ModelError(f"{damaged} ('{key}' is {array.dtype} {array.shape}, the card needs {shape}); "
                                 f"restore the bundle or {REEXPORT}.")
        if not all(np.isfinite(a).all() for a in arrays[2:]):
            raise ModelError(f"{damaged} (its recorded outputs are not finite numbers); restore the bundle or "
                             f"{REEXPORT}.")
        return arrays

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
        head = self.card.gradability
        features = pool_mean_std([out[n] for n in head.score.embedding.inputs]) if head is not None else None
        return Prediction(prob_referable=float(probs[1]), probs=probs, cam=out["cam"], features=features)

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
        crops, masks, probs, cams = self._selftest_arrays(path)
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
