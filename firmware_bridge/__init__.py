"""The serial link between the screening unit and its microcontroller (button, LEDs, buzzer, illumination)."""

__version__ = "0.1.0"
