"""Reference firmware for the unit's microcontroller (Raspberry Pi Pico, MicroPython).

``fw_core.py`` is the board-independent behaviour (also run by ``firmware_bridge.emulator``); ``main.py`` binds it
to the Pico's pins and USB serial port. See docs/firmware_bridge.md for the pin map and flashing steps.
"""
