"""The unit software's version: the one home of the number (pyproject.toml reads it from here).

A model card may name the unit versions that can run it (``compatible_units``, a PEP 440 specifier set such as
``">=0.2,<1"``); the unit compares it with this version before it installs or loads the bundle
(:mod:`device.model.compat`). Bump the minor version when the card contract or the preprocessing changes in a way
an older unit cannot follow, the major version when old bundles stop being valid.
"""

UNIT_VERSION = "0.2.0"


def compatible_units(version: str = UNIT_VERSION) -> str:
    """The ``compatible_units`` a bundle exported by this code carries: this minor version up to the next major
    (``"0.2.0"`` -> ``">=0.2,<1"``), since later minor versions still read today's cards."""
    major, minor = (int(part) for part in version.split(".")[:2])
    return f">={major}.{minor},<{major + 1}"
