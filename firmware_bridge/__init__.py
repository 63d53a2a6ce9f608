"""The serial link between the screening unit and its microcontroller (button, LEDs, buzzer, illumination).

The kiosk uses one interface, :class:`firmware_bridge.link.UnitLink`, opened by
``firmware_bridge.factory.open_link({"type": "none" | "fake" | "serial", ...})``. See docs/firmware_bridge.md.
This package never imports ``device`` or ``trainer``; pyserial is imported only by ``serial_link``.
"""

__version__ = "0.1.0"
