"""Observability: one call to instrument every policy, pipeline and store.

::

    from buttress.observe import instrument

    instrument()

turns on, for every policy in the process (those built before the call too):

- **structured logs**, one line per event (:mod:`buttress.observe.logging`),
  through structlog when it is configured, else stdlib ``logging``;
- **Prometheus** metrics, when ``prometheus_client`` is installed: buttress's
  collector in its default registry (:mod:`buttress.observe.prometheus`);
- **OpenTelemetry** metrics, when ``opentelemetry-api`` is installed: observable
  instruments on the global meter provider (:mod:`buttress.observe.otel`).

Nothing here costs a call that succeeds anything: metrics read the policies' state
when scraped, and count the events of the rare paths (rejections, retries,
transitions, timeouts, fallbacks, store outages). Latency histograms and calls by
outcome come from :class:`Measure`, placed where you want them.

One switch turns it all off: ``BUTTRESS_INSTRUMENT=0`` in the environment makes
:func:`instrument` do nothing (and say so at DEBUG). Each exporter is usable
alone, and :meth:`Instrumentation.close` undoes what :func:`instrument` did.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from buttress._events import subscribe as subscribe_all
from buttress.errors import ConfigError

if TYPE_CHECKING:
    from buttress.observe.measure import Measure

__all__ = ["Instrumentation", "Measure", "instrument", "uninstrument"]

_log = logging.getLogger("buttress")


class Instrumentation:
    """What :func:`instrument` turned on; :meth:`close` turns it off again."""

    __slots__ = ("_undo", "logs", "otel", "prometheus")

    def __init__(self) -> None:
        self.logs = False
        """Whether events are logged."""
        self.prometheus = False
        """Whether buttress's collector is registered with prometheus_client."""
        self.otel = False
        """Whether OpenTelemetry instruments were created."""
        self._undo: list[Callable[[], None]] = []

    def close(self) -> None:
        """Stop logging and counting events, and unregister the Prometheus collector.

        The counts so far are kept (a counter never goes back). OpenTelemetry
        instruments cannot be removed from a meter; they stay, and keep reporting
        the policies' state.
        """
        while self._undo:
            self._undo.pop()()
        self.logs = self.prometheus = False

    def __repr__(self) -> str:
        return f"Instrumentation(logs={self.logs}, prometheus={self.prometheus}, otel={self.otel})"


_lock = threading.Lock()
_current: Instrumentation | None = None


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _wanted(flag: bool | None, module: str, extra: str) -> bool:
    if flag is None:
        return _installed(module)
    if flag and not _installed(module):
        raise ImportError(f"{module} is not installed: pip install 'buttress[{extra}]'")
    return flag


def _switched_off() -> bool:
    value = os.environ.get("BUTTRESS_INSTRUMENT", "").strip().lower()
    if value in {"", "1", "true", "yes", "on"}:
        return False
    if value in {"0", "false", "no", "off"}:
        return True
    raise ConfigError(
        f"expected 1/0, true/false, yes/no or on/off, got {value!r}",
        path="BUTTRESS_INSTRUMENT",
    )


def instrument(
    *,
    logs: bool = True,
    prometheus: bool | None = None,
    otel: bool | None = None,
    log_level: int = logging.INFO,
    logger: logging.Logger | str = "buttress",
    structlog: bool | None = None,
    registry: Any = None,
    meter_provider: Any = None,
) -> Instrumentation:
    """Turn on logs and metrics for every policy (see :mod:`buttress.observe`).

    ``prometheus`` / ``otel``: ``None`` (default) when the package is installed,
    ``True`` to require it (``ImportError`` naming the extra otherwise), ``False``
    to leave it out. ``registry``: the ``prometheus_client`` registry (default: its
    global one); ``meter_provider``: the OpenTelemetry provider (default: the
    global one). ``log_level``, ``logger``, ``structlog``: as for
    :class:`~buttress.observe.logging.LogListener`.

    Calling it again replaces the earlier instrumentation. With
    ``BUTTRESS_INSTRUMENT=0`` it does nothing and returns an inactive handle.
    """
    global _current
    done = Instrumentation()
    if _switched_off():
        _log.debug("buttress: instrument() skipped, BUTTRESS_INSTRUMENT is off")
        return done
    use_prometheus = _wanted(prometheus, "prometheus_client", "prometheus")
    use_otel = _wanted(otel, "opentelemetry", "otel")
    with _lock:
        if _current is not None:
            _current.close()
        if logs:
            from buttress.observe.logging import LogListener  # noqa: PLC0415

            listener = LogListener(logger, structlog=structlog, level=log_level)
            done._undo.append(subscribe_all(listener))
            done.logs = True
        if use_prometheus:
            from buttress.observe import prometheus as exporter  # noqa: PLC0415

            exporter.register(registry)
            done._undo.append(lambda: exporter.unregister(registry))
            done.prometheus = True
        from buttress.observe.metrics import _unsubscribe_tally, tally  # noqa: PLC0415

        tally()
        done._undo.insert(0, _unsubscribe_tally)
        if use_otel:
            from buttress.observe import otel as otel_exporter  # noqa: PLC0415

            otel_exporter.instrument(meter_provider)
            done.otel = True
        _current = done
    return done


def uninstrument() -> None:
    """Undo :func:`instrument` (see :meth:`Instrumentation.close`)."""
    global _current
    with _lock:
        if _current is not None:
            _current.close()
            _current = None


def __getattr__(name: str) -> Any:
    if name == "Measure":
        from buttress.observe.measure import Measure  # noqa: PLC0415

        return Measure
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
