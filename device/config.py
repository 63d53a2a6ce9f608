"""The unit's one configuration: validated once at start-up, unknown keys rejected, every field documented.

Each hardware section is keyed on ``type`` (Frigate style): ``camera`` (picamera2 | opencv | folder | fake),
``model`` (bundle | fake), ``display`` (framebuffer | file | fake), ``link`` (none | fake | serial). No I/O happens
in these objects: :func:`load_config` reads the TOML file, the kiosk opens the devices.

    cfg = load_config("device/configs/demo.toml")        # raises ConfigError with one sentence naming the field
    python -m device kiosk --config my.toml --check-config
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.config import first_error_sentence
from device.atomic import FileTooLargeError, SpecialFileError, read_regular
from device.camera import CAMERAS, CameraConfig, FolderCameraConfig
from device.console.config import ConsoleConfig
from device.display import DISPLAYS, DisplayConfig, FileDisplayConfig
from device.errors import ConfigError
from device.model import MODELS, BundleModelConfig, FakeModelConfig, ModelConfig
from device.quality import QualityConfig
from device.records import RecordsConfig
from firmware_bridge.config import NoneLinkConfig
from firmware_bridge.factory import LINKS, LinkConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEMO_CONFIG = CONFIG_DIR / "demo.toml"
EYES = ("right", "left")
MAX_CONFIG_BYTES = 1 << 20  # a unit config is a few kB
# The ``type`` values of the hardware sections: pydantic puts them in an error's location, a person never writes them.
TYPE_TAGS = frozenset(CAMERAS.tags + MODELS.tags + DISPLAYS.tags + LINKS.tags)


class KioskConfig(BaseModel):
    """How the screening loop behaves."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    operator: str = Field("operator", min_length=1, max_length=64, description="who screens (audit trail)")
    unit_name: str = Field("dr-unit", min_length=1, max_length=64, description="this unit's name (audit trail)")
    trigger: Literal["button_or_keyboard", "button", "keyboard", "auto"] = Field(
        "button_or_keyboard", description="what starts a capture; 'auto' captures continuously (demo, soak test)")
    eyes: tuple[Literal["right", "left"], ...] = Field(EYES, min_length=1, max_length=2,
                                                       description="eyes photographed per patient, in order")
    patients: int | None = Field(None, ge=1, le=1_000_000, description="stop after this many patients; "
                                                                        "None = until 'q' is typed or SIGTERM")
    first_patient: int = Field(1, ge=1, description="number of the first patient (ids are P0001, P0002, ...)")
    flash_ms: int = Field(120, ge=1, le=2000, description="capture flash pulse, milliseconds")
    illumination: int = Field(40, ge=0, le=255, description="steady focusing light between captures, 0..255")
    poll_interval_s: float = Field(0.05, ge=0, le=5, description="pause between checks for a trigger, seconds")
    export_folder: str | None = Field(None, description="write session CSV + JSON here when the loop ends")
    button_debounce_ms: int = Field(500, ge=0, le=5000, description="a button press this soon after the last one "
                                    "is ignored (double presses, a bouncing or stuck button)")
    retry_backoff_s: float = Field(1.0, ge=0, le=60, description="trigger 'auto': pause after a failed capture, "
                                   "seconds, doubled after each identical failure (at most 60 s)")
    max_repeated_failures: int = Field(5, ge=1, le=1000, description="trigger 'auto': stop after this many identical "
                                       "failures in a row, with one message (a button press always tries again)")


class UnitConfig(BaseModel):
    """Everything the unit needs; see docs/unit.md for a commented example."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    camera: CameraConfig = Field(default_factory=lambda: FolderCameraConfig(path="samples"),
                                 description="capture source")
    model: ModelConfig = Field(default_factory=BundleModelConfig, description="model bundle (or fake)")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="quality-gate thresholds, retakes")
    display: DisplayConfig = Field(default_factory=FileDisplayConfig, description="where screens are shown")
    records: RecordsConfig = Field(default_factory=RecordsConfig, description="records database and images")
    link: LinkConfig = Field(default_factory=NoneLinkConfig, description="microcontroller (button, LEDs, flash)")
    kiosk: KioskConfig = Field(default_factory=KioskConfig, description="the screening loop")
    console: ConsoleConfig = Field(default_factory=ConsoleConfig, description="the operator console (web page)")
    base_dir: str = Field(".", description="folder relative input paths are resolved against (set by "
                                           "load_config to the config file's folder)")


def parse_config(data: dict, base_dir: str | Path = ".") -> UnitConfig:
    """Validate a config mapping.

    Args:
        data: the parsed TOML/JSON mapping.
        base_dir: the folder relative input paths (camera folder, model path) are relative to.

    Raises:
        ConfigError: one sentence naming the first bad field and what is wrong.
    """
    try:
        return UnitConfig.model_validate({**data, "base_dir": str(base_dir)})
    except ValidationError as exc:
        raise ConfigError(first_error_sentence(exc, "Unit config", "fix it in the config file (docs/unit.md lists "
                                               "every field)", tags=TYPE_TAGS)) from None


def load_config(path: str | Path | None = None) -> UnitConfig:
    """Read and validate a TOML config file (default: the demo config).

    Raises:
        ConfigError: the file is missing, not valid TOML, or a field is invalid (one sentence).
    """
    path = Path(path) if path is not None else DEMO_CONFIG
    try:
        data = tomllib.loads(read_regular(path, MAX_CONFIG_BYTES).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"The config file {path} does not exist; check the path.") from None
    except SpecialFileError as exc:
        raise ConfigError(f"The config file {path} is {exc.kind}, not a TOML file; give the unit's config file.") \
            from None
    except FileTooLargeError:
        raise ConfigError(f"The config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB, so it is not a unit "
                          "config; give the unit's config file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"The config file {path} cannot be read ({exc}); check its permissions.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The config file {path} is not valid TOML ({exc}); fix the syntax.") from None
    return parse_config(data, path.resolve().parent)


def resolve(cfg: UnitConfig, path: str) -> Path:
    """An input path from the config, resolved against the config file's folder when relative."""
    p = Path(path)
    return p if p.is_absolute() else Path(cfg.base_dir) / p


def describe(cfg: UnitConfig) -> str:
    """A short human-readable summary of the config (for ``--check-config``)."""
    lines = [f"camera:  {cfg.camera.type}", f"model:   {cfg.model.type}", f"display: {cfg.display.type}",
             f"link:    {cfg.link.type}", f"records: {cfg.records.folder}",
             f"trigger: {cfg.kiosk.trigger}, eyes {', '.join(cfg.kiosk.eyes)}, up to "
             f"{cfg.quality.max_retakes} retakes per eye"]
    return "\n".join(lines)


def model_config_for(cfg: UnitConfig, model: str | None = None):
    """The model config to use: ``model`` ('fake' or a bundle folder) overrides the file (keeping its trusted keys);
    a relative ``path`` resolves against the config file's folder (a ``store``, like ``records``, against the working
    directory)."""
    m = cfg.model
    if model == "fake":
        return FakeModelConfig()
    if model:
        if isinstance(m, BundleModelConfig):
            return m.model_copy(update={"path": str(Path(model).resolve()), "store": None})
        return BundleModelConfig(path=str(Path(model).resolve()))
    if isinstance(m, BundleModelConfig) and m.path:
        return m.model_copy(update={"path": str(resolve(cfg, m.path))})
    return m
