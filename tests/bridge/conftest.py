"""tests/bridge: the microcontroller link. They need only ``.[serial,dev]`` (pyserial drives the emulated firmware
over a real pty); without pyserial or pydantic the area is skipped."""

from __future__ import annotations

import pytest

for _module in ("serial", "pydantic"):
    pytest.importorskip(_module, reason=f"the serial link's stack is not installed ({_module}): "
                                        "pip install -e '.[serial,dev]'")
