"""Backoff schedules: their values, their validation, and their shape."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buttress.errors import ConfigError
from buttress.policies.backoff import (
    BACKOFF_NAMES,
    Backoff,
    Constant,
    DecorrelatedJitter,
    Exponential,
    Fibonacci,
    Linear,
    backoff_from_name,
)


def _never() -> float:
    raise AssertionError("a deterministic schedule must not draw randomness")


def _schedule(backoff: Backoff, attempts: int = 6) -> list[float]:
    return [backoff.compute(n, 0.0, _never) for n in range(1, attempts + 1)]


def test_constant() -> None:
    assert _schedule(Constant(0.5), 4) == [0.5, 0.5, 0.5, 0.5]
    assert Constant().delay == 0.1


def test_linear_step_defaults_to_initial() -> None:
    assert _schedule(Linear(1.0), 4) == [1.0, 2.0, 3.0, 4.0]
    assert Linear(1.0).step == 1.0


def test_linear_with_step() -> None:
    assert _schedule(Linear(1.0, step=0.5), 4) == [1.0, 1.5, 2.0, 2.5]
    assert _schedule(Linear(2.0, step=0), 3) == [2.0, 2.0, 2.0]


def test_exponential() -> None:
    assert _schedule(Exponential(), 5) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert _schedule(Exponential(1.0, factor=3.0), 4) == [1.0, 3.0, 9.0, 27.0]
    assert _schedule(Exponential(1.0, factor=1.0), 3) == [1.0, 1.0, 1.0]


def test_exponential_overflow_is_infinity_not_an_error() -> None:
    assert Exponential(0.1, 2.0).compute(5000, 0.0, _never) == math.inf
    assert Exponential(0.0, 2.0).compute(5000, 0.0, _never) == 0.0


def test_fibonacci() -> None:
    assert _schedule(Fibonacci(1.0), 8) == [1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0]
    assert _schedule(Fibonacci(0.5), 4) == [0.5, 0.5, 1.0, 1.5]


def test_fibonacci_far_out_is_infinity() -> None:
    assert Fibonacci(0.1).compute(10_000, 0.0, _never) == math.inf
    assert Fibonacci(0.0).compute(10_000, 0.0, _never) == 0.0


def test_decorrelated_jitter_spans_initial_to_factor_times_previous() -> None:
    backoff = DecorrelatedJitter(1.0)
    # First retry: previous is 0, so the range is [initial, factor * initial).
    assert backoff.compute(1, 0.0, lambda: 0.0) == 1.0
    assert backoff.compute(1, 0.0, lambda: 0.5) == 2.0
    # Later: [initial, factor * previous).
    assert backoff.compute(2, 4.0, lambda: 0.0) == 1.0
    assert backoff.compute(2, 4.0, lambda: 0.5) == 6.5
    # A previous below initial never shrinks the range below [initial, 3*initial).
    assert backoff.compute(2, 0.2, lambda: 0.5) == 2.0
    assert DecorrelatedJitter(1.0, factor=2.0).compute(1, 5.0, lambda: 0.5) == 5.5


def test_only_decorrelated_jitter_is_randomized() -> None:
    assert DecorrelatedJitter.randomized is True
    for kind in (Constant, Linear, Exponential, Fibonacci):
        assert kind.randomized is False


@pytest.mark.parametrize(
    "backoff", [Constant(), Linear(), Exponential(), Fibonacci(), DecorrelatedJitter()]
)
def test_schedules_are_frozen_backoffs(backoff: Backoff) -> None:
    assert isinstance(backoff, Backoff)
    field = dataclasses.fields(backoff)[0].name  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(backoff, field, 1.0)
    assert not hasattr(backoff, "__dict__")


def test_equal_and_hashable() -> None:
    assert Exponential(0.1, 2) == Exponential(0.1, 2.0)
    assert len({Linear(1.0), Linear(1.0, 1.0)}) == 1


def test_repr_names_parameters() -> None:
    assert repr(Exponential()) == "Exponential(initial=0.1, factor=2.0)"


def test_ints_are_stored_as_floats() -> None:
    backoff = Exponential(1, 2)
    assert type(backoff.initial) is float
    assert type(backoff.factor) is float


@pytest.mark.parametrize(
    ("factory", "path"),
    [
        (lambda: Constant(-1.0), "delay"),
        (lambda: Constant(math.nan), "delay"),
        (lambda: Constant(math.inf), "delay"),
        (lambda: Constant(True), "delay"),
        (lambda: Constant("1"), "delay"),  # type: ignore[arg-type]
        (lambda: Linear(-0.1), "initial"),
        (lambda: Linear(0.1, step=-1.0), "step"),
        (lambda: Exponential(-0.1), "initial"),
        (lambda: Exponential(0.1, factor=0.5), "factor"),
        (lambda: Exponential(0.1, factor=math.inf), "factor"),
        (lambda: Exponential(0.1, factor=False), "factor"),
        (lambda: Fibonacci(-2), "initial"),
        (lambda: DecorrelatedJitter(-1), "initial"),
        (lambda: DecorrelatedJitter(1, factor=0.9), "factor"),
    ],
)
def test_invalid_parameters_name_the_option(factory: Callable[[], object], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        factory()
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")


def test_from_name() -> None:
    names = ("constant", "linear", "exponential", "fibonacci", "decorrelated_jitter")
    assert names == BACKOFF_NAMES
    assert backoff_from_name("constant", 2.0) == Constant(2.0)
    assert backoff_from_name("linear", 2.0) == Linear(2.0, 2.0)
    assert backoff_from_name("exponential", 2.0) == Exponential(2.0, 2.0)
    assert backoff_from_name("fibonacci", 2.0) == Fibonacci(2.0)
    assert backoff_from_name("decorrelated_jitter", 2.0) == DecorrelatedJitter(2.0, 3.0)


def test_from_unknown_name() -> None:
    with pytest.raises(ConfigError, match="unknown backoff 'quadratic'") as info:
        backoff_from_name("quadratic", 1.0)
    assert info.value.path == "backoff"


def test_from_name_with_bad_delay_names_delay() -> None:
    with pytest.raises(ConfigError) as info:
        backoff_from_name("exponential", -1.0)
    assert info.value.path == "delay"


delays = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@given(
    initial=delays,
    step=delays,
    factor=st.floats(min_value=1.0, max_value=10.0),
    attempt=st.integers(min_value=1, max_value=3000),
)
def test_deterministic_schedules_never_shrink(
    initial: float, step: float, factor: float, attempt: int
) -> None:
    for backoff in (
        Constant(initial),
        Linear(initial, step),
        Exponential(initial, factor),
        Fibonacci(initial),
    ):
        now = backoff.compute(attempt, 0.0, _never)
        after = backoff.compute(attempt + 1, now, _never)
        assert 0.0 <= now <= after
        assert not math.isnan(after)


@given(
    initial=delays,
    factor=st.floats(min_value=1.0, max_value=10.0),
    previous=delays,
    draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_decorrelated_jitter_stays_in_range(
    initial: float, factor: float, previous: float, draw: float
) -> None:
    delay = DecorrelatedJitter(initial, factor).compute(2, previous, lambda: draw)
    high = factor * max(previous, initial)
    assert initial <= delay <= high or math.isclose(delay, high)
