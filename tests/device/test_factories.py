"""Every factory comes from one table of config ``type`` -> (config class, implementation)."""

from __future__ import annotations

import pytest

from device.camera import CAMERAS
from device.display import DISPLAYS
from device.model import MODELS
from firmware_bridge.factory import LINKS


@pytest.mark.parametrize("table", [CAMERAS, DISPLAYS, MODELS, LINKS], ids=["camera", "display", "model", "link"])
def test_table_keys_are_the_config_types_and_every_implementation_builds_from_its_config(table):
    for key, (config, implementation) in table.rows.items():
        assert config.model_fields["type"].default == key
        assert callable(getattr(implementation, "from_config", None)), implementation
