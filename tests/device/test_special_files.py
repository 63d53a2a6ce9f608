"""The same class of fault as issue 16 item 3, elsewhere in the unit: every file the unit reads (config, model card,
active-model pointer, console credentials, quality calibration) is read as a regular file with a size limit, so a
FIFO or a link to a device is one sentence instead of a hang or a read until memory runs out."""

from __future__ import annotations

import os
import shutil

import pytest

from device.errors import ConfigError, ModelError
from tests.helpers import finishes


def _fifo(path):
    os.mkfifo(path)
    return path


def test_a_config_that_is_a_fifo_or_a_device(tmp_path):
    from device.config import load_config

    exc = finishes(lambda: load_config(_fifo(tmp_path / "unit.toml")))
    assert isinstance(exc, ConfigError) and str(exc) == (
        f"The config file {tmp_path / 'unit.toml'} is a named pipe (FIFO), not a TOML file; give the unit's config "
        "file.")
    (tmp_path / "zero.toml").symlink_to("/dev/zero")
    exc = finishes(lambda: load_config(tmp_path / "zero.toml"))
    assert isinstance(exc, ConfigError) and "is a device, not a TOML file" in str(exc)


def test_a_model_card_that_is_a_fifo(tmp_path):
    from device.model.bundle import BundleModelConfig, default_model_dir, open_checked_bundle

    bundle = tmp_path / "b"
    shutil.copytree(default_model_dir(), bundle)
    (bundle / "model.json").unlink()
    _fifo(bundle / "model.json")
    exc = finishes(lambda: open_checked_bundle(bundle, BundleModelConfig(allow_unsigned=True)))
    assert isinstance(exc, ModelError), exc


def test_an_active_pointer_that_is_a_fifo(tmp_path):
    from device.model.active import read_active

    _fifo(tmp_path / "ACTIVE")
    exc = finishes(lambda: read_active(tmp_path))
    assert isinstance(exc, ModelError) and "is a named pipe (FIFO), not a file" in str(exc)


def test_console_credentials_that_are_a_fifo(tmp_path):
    from device.console.auth import Credentials

    exc = finishes(lambda: Credentials(_fifo(tmp_path / "users.json")).users())
    assert isinstance(exc, ConfigError) and "is damaged" in str(exc)


def test_a_huge_config_is_refused_without_reading_it(tmp_path):
    from device.config import load_config

    big = tmp_path / "big.toml"
    with open(big, "wb") as handle:
        handle.truncate(2 << 20)  # sparse: 2 MiB of nothing
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_config(big)
