"""Structured logs: one line per buttress event, through stdlib ``logging`` or structlog.

:class:`LogListener` is an event listener. :func:`buttress.observe.instrument`
subscribes one to every policy; you can also subscribe one yourself::

    import buttress
    from buttress.observe.logging import LogListener

    buttress.events.subscribe(LogListener())

Each line carries structured fields — ``event`` (``retry_gave_up``, ...),
``policy``, ``call`` (the protected function's qualified name), ``reason`` and the
event's own fields — and the ``request_id`` / ``correlation_id`` of the request
being served (:mod:`buttress.observe.context`). With stdlib logging the fields are
attributes of the ``LogRecord`` (for a JSON formatter) and are also written into the
message as ``key=value`` pairs (for a plain one). With structlog they are the
event dict's keys.

Levels by kind: rejections and recoveries at INFO; retries scheduled at INFO; a
retry giving up, a timeout, a breaker opening and a store outage at WARNING; a
programming error reaching a policy (a retry giving up on a ``TypeError``) at
ERROR. Store outages are not logged here: a fallback store and a breaker hub log
their own, once per transition (on ``buttress.stores`` / ``buttress.circuit``, at
WARNING when the backend is lost and INFO when it is back), never once per call.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import re
from typing import Any

from buttress._events import Event
from buttress._outcome import PROGRAMMING_ERRORS, response_status
from buttress.observe.context import correlation_id, current_ids, request_id

__all__ = ["LogListener", "RequestIdFilter", "add_request_ids", "event_fields", "event_level"]

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def _value(name: str, value: object) -> object:
    if isinstance(value, BaseException):
        text = str(value)
        kind = type(value).__qualname__
        return f"{kind}: {text}" if text else kind
    if isinstance(value, enum.Enum):
        return str(value.value)
    if name == "result":
        # A returned value may be large or private: its type says enough. A health
        # check's result says why it did not pass in its output.
        output = getattr(value, "output", None)
        if isinstance(output, str) and type(value).__module__.startswith("buttress."):
            return output
        if value is None:
            return None
        status = response_status(value)  # an HTTP response: its status says why
        kind = type(value).__qualname__
        return kind if status is None else f"{kind} {status}"
    if isinstance(value, float):
        return round(value, 6)
    return value


def event_fields(event: Event) -> dict[str, object]:
    """The structured fields of ``event``: ``event`` (its type in snake case) and its own."""
    fields: dict[str, object] = {"event": _snake(type(event).__name__)}
    # Every buttress event is a frozen dataclass (Event is one).
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if value is None or (field.name == "call" and not value):
            continue
        fields[field.name] = _value(field.name, value)
    fields.update(current_ids())
    return fields


def event_level(event: Event) -> int:
    """The level a line about ``event`` is written at (see the module's docs)."""
    kind = type(event).__name__
    if kind == "RetryGaveUp":
        error = getattr(event, "error", None)
        return logging.ERROR if isinstance(error, PROGRAMMING_ERRORS) else logging.WARNING
    if kind == "CircuitStateChanged":
        new = str(getattr(event, "new", ""))
        return logging.WARNING if new in {"open", "isolated"} else logging.INFO
    if kind in {"TimeoutOccurred", "StoreFellBack"}:
        return logging.WARNING
    if kind == "HealthStatusChanged":
        return logging.WARNING if str(getattr(event, "new", "")) == "fail" else logging.INFO
    return logging.INFO


def _message(fields: dict[str, object]) -> str:
    head = str(fields["event"]).replace("_", " ")
    rest = " ".join(
        f"{key}={value!r}" if isinstance(value, str) and " " in value else f"{key}={value}"
        for key, value in fields.items()
        if key != "event"
    )
    return f"{head}: {rest}" if rest else head


class LogListener:
    """Write one log line per event (see :mod:`buttress.observe.logging`).

    ``logger``: a stdlib logger or its name (default ``"buttress"``).
    ``structlog``: ``True`` to write through structlog (it must be installed),
    ``False`` for stdlib logging, ``None`` (default) for structlog when it is
    installed and configured by the application, else stdlib logging.
    ``level``: lines below this level are not even built.
    """

    __slots__ = ("_logger", "_min", "_structlog")

    def __init__(
        self,
        logger: logging.Logger | str = "buttress",
        *,
        structlog: bool | None = None,
        level: int = logging.INFO,
    ) -> None:
        self._logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self._min = level
        self._structlog: Any = None
        if structlog is None:
            structlog = _structlog_configured()
        if structlog:
            try:
                import structlog as _structlog  # noqa: PLC0415 - optional
            except ImportError as exc:
                raise ImportError(
                    "LogListener(structlog=True) needs structlog: pip install structlog"
                ) from exc
            self._structlog = _structlog.get_logger(self._logger.name)

    def __call__(self, event: Event) -> None:
        if type(event).__name__ in _LOGGED_BY_EMITTER:
            return
        level = event_level(event)
        if level < self._min:
            return
        if self._structlog is not None:
            fields = event_fields(event)
            name = fields.pop("event")
            self._structlog.log(level, name, **fields)
            return
        if not self._logger.isEnabledFor(level):
            return
        fields = event_fields(event)
        # LogRecord attributes must not be overwritten: "message", "args", ... .
        extra = {key: value for key, value in fields.items() if key not in _RESERVED}
        self._logger.log(level, "%s", _message(fields), extra=extra)


# Events whose emitter writes its own line (once per transition).
_LOGGED_BY_EMITTER = frozenset({"StoreFellBack", "StoreRecovered"})

_RESERVED = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


def _structlog_configured() -> bool:
    try:
        import structlog  # noqa: PLC0415 - optional
    except ImportError:
        return False
    return bool(structlog.is_configured())


class RequestIdFilter(logging.Filter):
    """Stamp ``request_id`` and ``correlation_id`` on every record it sees.

    Add it to a handler, and every line through that handler — your application's
    too — carries the ids of the request being served (``None`` outside one), for a
    formatter to print (``%(request_id)s``) or a JSON formatter to include::

        handler.addFilter(RequestIdFilter())

    A record that already has the attribute keeps its own value.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        if not hasattr(record, "correlation_id"):
            record.correlation_id = correlation_id.get()
        return True


def add_request_ids(logger: object, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor adding ``request_id`` / ``correlation_id`` when set.

    ``structlog.configure(processors=[add_request_ids, ...])``: every event of the
    application carries the ids of the request being served.
    """
    for key, value in current_ids().items():
        event_dict.setdefault(key, value)
    return event_dict
