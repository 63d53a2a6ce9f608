"""common.config: one validation-error sentence and one --set parser for every program."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.config import OverrideError, apply_overrides, first_error_sentence, parse_value


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(1, ge=1)


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    inner: _Inner = _Inner()


def _error(data: dict) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate(data)
    return info.value


def test_first_error_is_one_sentence_naming_the_field():
    assert first_error_sentence(_error({}), "Demo config", "fix it") == "Demo config: field 'name' is missing; fix it."
    text = first_error_sentence(_error({"name": "x", "inner": {"size": 0}}), "Demo config", "fix it")
    assert text == "Demo config: field 'inner.size' is invalid (Input should be greater than or equal to 1); fix it."
    text = first_error_sentence(_error({"name": "x", "inner": {"size": 2, "zoom": 3}}), "Demo", "fix it",
                                tags={"inner"}, whole="config")
    assert text.startswith("Demo: field 'zoom' is invalid (Extra inputs are not permitted)")


def test_overrides_are_toml_values_at_dotted_keys_and_leave_the_input_alone():
    base = {"epochs": 1, "data": {"path": "a"}}
    out = apply_overrides(base, ["epochs=3", "data.path=/x y", "augment.enabled=false", "rates=[0.5, 1]"], "epochs=1")
    assert out == {"epochs": 3, "data": {"path": "/x y"}, "augment": {"enabled": False}, "rates": [0.5, 1]}
    assert base == {"epochs": 1, "data": {"path": "a"}}
    assert apply_overrides({}, {"data.path": "/p"}, "x=1") == {"data": {"path": "/p"}}
    assert parse_value("word") == "word" and parse_value("4") == 4


@pytest.mark.parametrize("override, message", [
    ("epochs", "The override 'epochs' is not KEY=VALUE; write e.g. --set epochs=10."),
    ("=3", "The override '=3' is not KEY=VALUE; write e.g. --set epochs=10."),
    ("epochs.x=3", "The override 'epochs.x' goes inside 'epochs', which is not a section; check the key name."),
])
def test_bad_overrides_are_one_sentence(override, message):
    with pytest.raises(OverrideError) as info:
        apply_overrides({"epochs": 1}, [override], "epochs=10")
    assert str(info.value) == message
