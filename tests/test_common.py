"""common.config: one validation-error sentence and one --set parser for every program."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.config import OverrideError, apply_overrides, first_error_sentence, parse_value
from common.factory import ConfigTable


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


class _AConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["a"] = "a"
    n: int = 1


class _A:
    def __init__(self, n: int, extra: str) -> None:
        self.n, self.extra = n, extra

    @classmethod
    def from_config(cls, cfg: _AConfig, extra: str = "") -> _A:
        return cls(cfg.n, extra)


def test_config_table_gives_the_union_and_the_factory():
    table = ConfigTable({"a": (_AConfig, _A)})

    class Holder(BaseModel):
        part: table.union = Field(default_factory=_AConfig)

    assert Holder.model_validate({"part": {"type": "a", "n": 3}}).part.n == 3
    built = table.open({"type": "a", "n": 2}, "arg")
    assert isinstance(built, _A) and (built.n, built.extra) == (2, "arg")
    config = _AConfig(n=5)
    assert table.validate(config) is config and table.tags == ("a",)
    with pytest.raises(ValidationError):
        table.open({"type": "b"})
