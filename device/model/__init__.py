"""Where the unit's model comes from: a checked model bundle (``models/<id>/``), or a deterministic fake.

The pipeline needs only a :class:`ScreeningModel`: a typed :class:`ModelContract` (id, input size and
normalisation, decision and region thresholds) and ``predict(image)`` returning a :class:`Prediction`. The real
bundle checks the file's sha256, the card and the self-test when it loads; the fake ships here so tests, the soak
test and laptop demos run with no model file. The config's ``type`` picks the implementation::

    from device.model import open_model
    model = open_model({"type": "bundle"})                 # default bundled model, checked at start-up
    model = open_model({"type": "fake", "size": 64})       # deterministic, no file
"""

from __future__ import annotations

from common.factory import ConfigTable
from device.model.base import ModelContract, Prediction, ScreeningModel
from device.model.bundle import BundleModelConfig, ModelBundle
from device.model.fake import FakeModel, FakeModelConfig

# Config ``type`` -> (config class, implementation): the config union and open_model() both come from this table.
MODELS = ConfigTable({
    "bundle": (BundleModelConfig, ModelBundle),
    "fake": (FakeModelConfig, FakeModel),
})
ModelConfig = MODELS.union

__all__ = ["MODELS", "BundleModelConfig", "FakeModel", "FakeModelConfig", "ModelBundle", "ModelConfig",
           "ModelContract", "Prediction", "ScreeningModel", "open_model"]


def open_model(cfg: object) -> ScreeningModel:
    """Load the model a config describes.

    Args:
        cfg: a model config object or mapping (``{"type": "bundle", "path": ...}`` or ``{"type": "fake"}``).

    Returns:
        The model, ready to predict.

    Raises:
        ModelError: the bundle is missing, tampered with, fails its self-test, or no runtime is installed.
    """
    return MODELS.open(cfg)
