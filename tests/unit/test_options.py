"""Options objects: validated, frozen, loaded from tables with key paths in errors."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from buttress._options import Options, option, register_conversion
from buttress._validate import check_count, check_seconds
from buttress.errors import CircuitOpen, ConfigError


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SampleOptions(Options):
    kind = "sample"

    attempts: int = option(3, doc="How many.")
    wait: float = option(0.5, doc="How long.")
    on: object = option(None, toml="exceptions", doc="Which errors.")
    hook: object = option(None, toml=False, doc="Code only.")
    words: object = option(None, toml="shout", doc="Converted by a registered conversion.")

    def __post_init__(self) -> None:
        self._set("attempts", check_count(self.attempts, "attempts"))
        self._set("wait", check_seconds(self.wait, "wait"))


register_conversion("shout", lambda value, path: str(value).upper())


def test_validated_and_normalised() -> None:
    options = SampleOptions(attempts=2, wait=datetime.timedelta(milliseconds=100))
    assert options.wait == 0.1
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.attempts = 5  # type: ignore[misc]
    with pytest.raises(ConfigError) as caught:
        SampleOptions(attempts=0)
    assert caught.value.path == "attempts"
    assert options.replace(attempts=7).attempts == 7
    with pytest.raises(ConfigError):
        options.replace(wait=-1)


def test_from_mapping() -> None:
    options = SampleOptions.from_mapping(
        {"attempts": 4, "on": ["ConnectionError", "CircuitOpen"], "words": "hi"},
        path="policies.x",
    )
    assert options.attempts == 4
    assert options.on == (ConnectionError, CircuitOpen)
    assert options.words == "HI"
    assert SampleOptions.from_mapping({"on": "builtins.KeyError"}).on is KeyError


def test_from_mapping_errors_carry_the_key_path() -> None:
    with pytest.raises(ConfigError) as caught:
        SampleOptions.from_mapping({"attempts": 0}, path="policies.x")
    assert caught.value.path == "policies.x.attempts"
    with pytest.raises(ConfigError, match="valid keys: attempts, wait, on, words") as caught:
        SampleOptions.from_mapping({"atempts": 3}, path="policies.x")
    assert caught.value.path == "policies.x.atempts"
    with pytest.raises(ConfigError, match="unknown option") as caught:
        SampleOptions.from_mapping({"hook": "x"}, path="policies.x")
    with pytest.raises(ConfigError, match="not a built-in") as caught:
        SampleOptions.from_mapping({"on": ["Nope"]}, path="policies.x")
    assert caught.value.path == "policies.x.on[0]"
    with pytest.raises(ConfigError, match="cannot import"):
        SampleOptions.from_mapping({"on": "nowhere.Error"})
    with pytest.raises(ConfigError, match="not an exception class"):
        SampleOptions.from_mapping({"on": "builtins.len"})


def test_keys_and_fields() -> None:
    assert SampleOptions.toml_keys() == ("attempts", "wait", "on", "words")
    assert SampleOptions.fields()[0].metadata["doc"] == "How many."
