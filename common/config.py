"""Config helpers used by every program: the first validation error as one sentence, and ``--set`` overrides.

    except ValidationError as exc:
        raise ConfigError(first_error_sentence(exc, "Unit config", "fix it in the config file")) from None
    tree = apply_overrides({}, ["epochs=3", "data.path=/x"], example="epochs=10")   # {"epochs": 3, "data": {...}}
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError


class OverrideError(ValueError):
    """A ``--set`` override is malformed; ``str()`` is one sentence saying how to write it."""


def first_error_sentence(exc: ValidationError, subject: str, fix: str, tags: Iterable[str] = (),
                         whole: str = "config") -> str:
    """The first problem of a pydantic validation error as one sentence a person can act on.

    Args:
        exc: the validation error.
        subject: what was validated, e.g. ``"Unit config"`` or ``"The model card models/x/model.json"``.
        fix: what to do, e.g. ``"fix it in the config file"``.
        tags: discriminator values pydantic inserts into the location (``camera.folder.path``), left out so the
            location is the key path a person writes (``camera.path``).
        whole: the name used when the error concerns the whole object (no field location).

    Returns:
        ``"<subject>: field '<where>' is missing; <fix>."`` or ``"... is invalid (<reason>); <fix>."``.
    """
    error = exc.errors()[0]
    skip = set(tags)
    where = ".".join(str(p) for p in error["loc"] if str(p) not in skip) or whole
    reason = error["msg"].removeprefix("Value error, ")
    problem = "is missing" if error["type"] == "missing" else f"is invalid ({reason})"
    return f"{subject}: field '{where}' {problem}; {fix}."


def parse_value(text: str) -> Any:
    """A ``--set`` value parsed as a TOML value (``3``, ``0.5``, ``true``, ``[1, 2]``, ``"x"``); a bare word stays
    a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(tree: dict, overrides: Iterable[str] | Mapping[str, Any] | None, example: str) -> dict:
    """Set ``key.sub=value`` overrides into a (copied) nested mapping.

    Args:
        tree: the settings so far (e.g. a preset); not modified.
        overrides: ``["epochs=3", "data.path=/x"]`` (values as in :func:`parse_value`) or ``{dotted key: value}``.
        example: a valid override for the error message, e.g. ``"epochs=10"``.

    Returns:
        A new nested dict with the overrides applied.

    Raises:
        OverrideError: an override is not ``KEY=VALUE`` or goes inside a key that is not a section.
    """
    out = _copy(tree)
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = []
        for text in overrides or []:
            key, sep, value = text.partition("=")
            if not sep or not key.strip():
                raise OverrideError(f"The override {text!r} is not KEY=VALUE; write e.g. --set {example}.")
            items.append((key.strip(), parse_value(value.strip())))
    for dotted, value in items:
        *sections, last = dotted.split(".")
        node = out
        for key in sections:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise OverrideError(f"The override {dotted!r} goes inside '{key}', which is not a section; check "
                                    "the key name.")
        node[last] = value
    return out


def _copy(tree: Mapping) -> dict:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in tree.items()}
