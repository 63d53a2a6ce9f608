"""Open the microcontroller link a config describes: one table from config ``type`` to implementation.

Both the config union (:data:`LinkConfig`, part of the unit's config) and :func:`open_link` come from
:data:`LINKS`, so adding an implementation is one row.

    from firmware_bridge.factory import open_link
    link = open_link({"type": "serial", "url": "/dev/ttyACM0"})     # or {"type": "fake"}, {"type": "none"}, None
"""

from __future__ import annotations

from pydantic import ValidationError

from common.config import first_error_sentence
from common.factory import ConfigTable
from firmware_bridge.config import FakeLinkConfig, LinkConfigError, NoneLinkConfig, SerialLinkConfig
from firmware_bridge.fake import FakeLink, NullLink
from firmware_bridge.link import UnitLink
from firmware_bridge.serial_link import SerialLink

# Config ``type`` -> (config class, implementation): the config union and open_link() both come from this table.
LINKS = ConfigTable({
    "none": (NoneLinkConfig, NullLink),
    "fake": (FakeLinkConfig, FakeLink),
    "serial": (SerialLinkConfig, SerialLink),
})
LinkConfig = LINKS.union


def parse_link_config(data: object) -> LinkConfig:
    """Validate a link config (a mapping, or an already-built config object).

    Args:
        data: e.g. ``{"type": "serial", "url": "/dev/ttyACM0"}``; ``None`` means ``{"type": "none"}``.

    Returns:
        The validated, frozen config object.

    Raises:
        LinkConfigError: one sentence naming the first bad field and what is allowed.
    """
    if data is None:
        return NoneLinkConfig()
    try:
        return LINKS.validate(data)
    except ValidationError as exc:
        raise LinkConfigError(first_error_sentence(exc, "Microcontroller link config", "fix it in the unit config "
                                                   f"(type is one of {', '.join(LINKS.tags)})", tags=LINKS.tags,
                                                   whole="type")) from None


def open_link(config: object = None) -> UnitLink:
    """Open the link described by ``config``; never blocks or raises on hardware.

    Args:
        config: a mapping such as ``{"type": "serial", "url": "/dev/ttyACM0"}``, a config object, or None (no link).

    Returns:
        A ``NullLink``, ``FakeLink`` or ``SerialLink``. A serial port that is absent is not an error here: the
        ``SerialLink`` keeps trying to open it and reports ``error``/``connected`` events.

    Raises:
        LinkConfigError: the config itself is invalid (one sentence).
    """
    return LINKS.open(parse_link_config(config))
