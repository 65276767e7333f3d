"""The event a :class:`~buttress.policies.budget.Degradation` emits on every change of level."""

from __future__ import annotations

from dataclasses import dataclass

from buttress.events import Event

__all__ = ["DegradationChanged"]


@dataclass(frozen=True, slots=True)
class DegradationChanged(Event):
    """The degradation moved from level ``old`` to level ``new``.

    ``reason`` is short and stable, fit for a metric label: ``"condition"`` (a
    condition of a lower level began to hold), ``"recovered"`` (the conditions of
    the level it left stopped holding), ``"forced"`` (``force(level)``) and
    ``"released"`` (``release()``: back to what the conditions say).
    ``condition`` names the condition that holds for ``new`` (``""`` when none does).
    """

    old: str
    new: str
    reason: str
    condition: str = ""
