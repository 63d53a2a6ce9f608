"""Is a bundle made for this unit? Its card's ``compatible_units`` (PEP 440 specifiers) against the unit's version.

The check reads the raw card before the schema does, so a bundle from a newer exporter (with card fields this unit
does not know) is refused with "update the unit software", not with a puzzling field error.

    check_compatible(folder)        # ModelError (one sentence) when the bundle is not for this unit
"""

from __future__ import annotations

import json
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from device.atomic import read_regular
from device.errors import ModelError
from device.model.card import CARD_FILE, SCHEMA_VERSION
from device.version import UNIT_VERSION

UPDATE_HINT = "update the unit software or install a bundle exported for this version"


def check_compatible(folder: str | Path, unit_version: str = UNIT_VERSION) -> None:
    """Refuse a bundle whose card names unit versions that exclude this one, or a card schema this unit cannot read.

    A card that is missing or not JSON passes here: the card check that follows names that problem.

    Args:
        folder: the bundle folder.
        unit_version: this unit's software version (default :data:`device.version.UNIT_VERSION`).

    Raises:
        ModelError: incompatible, or ``compatible_units`` is not a valid specifier set.
    """
    path = Path(folder) / CARD_FILE
    try:
        raw = json.loads(read_regular(path, 1 << 20).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return  # load_bundle's card check names the problem
    if not isinstance(raw, dict):
        return
    schema = raw.get("schema_version", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise ModelError(f"The bundle {Path(folder)} has a version {schema} model card; this unit ({unit_version}) "
                         f"reads version {SCHEMA_VERSION}: {UPDATE_HINT}.")
    spec = raw.get("compatible_units")
    if spec is None:
        return
    try:
        allowed = SpecifierSet(str(spec))
    except InvalidSpecifier:
        raise ModelError(f"The model card {path} gives compatible_units {spec!r}, which is not a version range like "
                         "'>=0.2,<1'; re-export the bundle.") from None
    if not allowed.contains(Version(unit_version), prereleases=True):
        raise ModelError(f"The bundle {Path(folder)} is made for unit software {spec} (compatible_units in its "
                         f"card) but this unit runs {unit_version}: {UPDATE_HINT}.")
