"""``python -m buttress.demo``: watch a pipeline protect calls to a flaky service.

A simulated upstream goes through five phases — steady, outage, recovery, a burst
of concurrent callers, a slow spell — and every call goes through one pipeline::

    Pipeline(Timeout(0.25), Retry(...), CircuitBreaker(...), Bulkhead(3, max_queue=2))

The demo prints what each policy does as it happens (it is a listener on
buttress's events, exactly as a metrics exporter would be), then a summary. It
takes about five seconds and needs the ``cli`` extra (rich).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

try:
    from rich.console import Console
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the demo prints with rich: install it with `pip install 'buttress[cli]'`"
    ) from exc

from buttress import (
    BulkheadFull,
    CallRejected,
    CircuitOpen,
    Event,
    Pipeline,
    RetryExhausted,
    TimeoutExceeded,
    subscribe,
)
from buttress.policies.bulkhead import Bulkhead
from buttress.policies.circuit import CircuitBreaker, CircuitStateChanged
from buttress.policies.retry import Retry, RetryGaveUp, RetryRecovered, RetryScheduled
from buttress.policies.timeout import Timeout, TimeoutOccurred

__all__ = ["main"]


@dataclass
class FlakyService:
    """A pretend upstream: ``failure_rate`` of calls reset, each takes ``latency`` s."""

    failure_rate: float = 0.0
    latency: float = 0.01
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    served: int = 0

    async def fetch(self, item: int) -> str:
        await asyncio.sleep(self.latency)
        if self.rng.random() < self.failure_rate:
            raise ConnectionResetError(f"upstream reset while fetching item {item}")
        self.served += 1
        return f"item-{item}"


class Narrator:
    """Prints buttress events as they happen; counts them for the summary."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.counts: Counter[str] = Counter()
        self.start = time.monotonic()

    def say(self, style: str, text: str) -> None:
        elapsed = time.monotonic() - self.start
        self.console.print(f"[dim]{elapsed:5.2f}s[/dim] [{style}]{text}[/{style}]")

    def __call__(self, event: Event) -> None:
        kind = type(event).__name__
        self.counts[kind] += 1
        if isinstance(event, RetryScheduled):
            what = type(event.error).__name__ if event.error else "bad result"
            self.say(
                "yellow",
                f"retry    attempt {event.attempt} failed ({what}); "
                f"next in {event.delay * 1000:.0f} ms",
            )
        elif isinstance(event, RetryRecovered):
            self.say("green", f"retry    recovered on attempt {event.attempts}")
        elif isinstance(event, RetryGaveUp):
            self.say("red", f"retry    gave up after {event.attempts} attempts ({event.reason})")
        elif isinstance(event, CircuitStateChanged):
            style = {"open": "bold red", "half_open": "bold yellow", "closed": "bold green"}
            self.say(
                style.get(event.new.value, "bold"),
                f"breaker  {event.old.value} → {event.new.value} ({event.reason})",
            )
        elif isinstance(event, CallRejected):
            self.counts[f"rejected:{event.reason}"] += 1
            self.say("magenta", f"{event.policy:<8} rejected a call: {event.reason}")
        elif isinstance(event, TimeoutOccurred):
            self.say("red", f"timeout  call exceeded {event.timeout * 1000:.0f} ms")


async def _call(
    pipeline: Pipeline, service: FlakyService, item: int, outcomes: Counter[str]
) -> None:
    try:
        await pipeline.acall(service.fetch, item)
    except CircuitOpen:
        outcomes["circuit open"] += 1
    except BulkheadFull:
        outcomes["bulkhead full"] += 1
    except TimeoutExceeded:
        outcomes["timed out"] += 1
    except (RetryExhausted, ConnectionError):
        outcomes["failed"] += 1
    else:
        outcomes["ok"] += 1


async def run(console: Console, *, speed: float = 1.0) -> Counter[str]:
    """Play the five phases; ``speed`` > 1 shortens every real wait."""
    breaker = CircuitBreaker(
        name="breaker", window=10, min_calls=8, failure_ratio=0.6, open_duration=1.0 / speed
    )
    pipeline = Pipeline(
        Timeout(0.25 / speed, name="timeout"),
        Retry(3, delay=0.02 / speed, max_delay=0.1, on=(ConnectionError,), name="retry"),
        breaker,
        Bulkhead(3, max_queue=2, max_wait=0.2 / speed, name="bulkhead"),
        name="demo",
    )
    narrator = Narrator(console)
    unsubscribe = subscribe(narrator)
    service = FlakyService(latency=0.01 / speed)
    outcomes: Counter[str] = Counter()
    try:
        console.rule("[bold]1. steady traffic: 10% of calls fail, retries absorb them")
        service.failure_rate = 0.1
        for item in range(12):
            await _call(pipeline, service, item, outcomes)

        console.rule("[bold]2. outage: every call fails; the breaker opens and fails fast")
        service.failure_rate = 1.0
        for item in range(12, 22):
            await _call(pipeline, service, item, outcomes)

        console.rule("[bold]3. recovery: after the open duration, a trial call closes it")
        service.failure_rate = 0.0
        await asyncio.sleep(1.05 / speed)
        for item in range(22, 26):
            await _call(pipeline, service, item, outcomes)

        console.rule("[bold]4. burst: 10 concurrent callers, 3 slots + 2 queued")
        service.latency = 0.12 / speed
        await asyncio.gather(*(_call(pipeline, service, i, outcomes) for i in range(26, 36)))

        console.rule("[bold]5. slow spell: the upstream takes 400 ms, the timeout is 250 ms")
        service.latency = 0.4 / speed
        for item in range(36, 38):
            await _call(pipeline, service, item, outcomes)
    finally:
        unsubscribe()

    table = Table(title="What happened")
    table.add_column("outcome")
    table.add_column("calls", justify="right")
    for outcome, count in sorted(outcomes.items()):
        table.add_row(outcome, str(count))
    table.add_section()
    for kind, count in sorted(narrator.counts.items()):
        table.add_row(f"[dim]event {kind}[/dim]", f"[dim]{count}[/dim]")
    console.print(table)
    console.print(f"breaker is now [bold]{breaker.state.value}[/bold]")
    return outcomes


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m buttress.demo`` (``--fast`` runs it 10× quicker)."""
    args = sys.argv[1:] if argv is None else argv
    speed = 10.0 if "--fast" in args else 1.0
    console = Console(highlight=False)
    console.print("[bold]buttress demo[/bold]: one pipeline between a caller and a flaky service")
    asyncio.run(run(console, speed=speed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
