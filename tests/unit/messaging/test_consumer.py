"""The consumer runner and its engine, with a fake source: no broker, no timed waits."""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence

import pytest
from prometheus_client import CollectorRegistry

from buttress import CircuitBreaker, Pipeline
from buttress.errors import ConfigError, Rejected
from buttress.messaging import Envelope, EnvelopeError
from buttress.messaging.brokers import PublishRefused
from buttress.messaging.consumer import Consumer, Engine, Received, Source
from buttress.messaging.deferred import DeferredError
from buttress.observe import prometheus
from buttress.policies.backoff import Constant, Exponential

from tests.helpers import tick

DELAY = 0.002  # drain() waits for the retries it scheduled to come due: keep them short


class FakeReceived:
    """One delivery; records how it was settled."""

    def __init__(self, envelope: Envelope | None, deliveries: int = 1, *, fail: str = "") -> None:
        self._envelope = envelope
        self.deliveries = deliveries
        self.message_id = envelope.id if envelope is not None else "broken"
        self.body = envelope.body() if envelope is not None else b"\xff"
        self.headers: Mapping[str, str] = {}
        self.settled: list[tuple[str, object]] = []
        self.fail = fail
        self.done = asyncio.Event()

    def envelope(self) -> Envelope:
        if self._envelope is None:
            raise EnvelopeError("not a CloudEvent", attribute="specversion")
        return self._envelope

    def _record(self, what: str, detail: object = None) -> None:
        if self.fail == what:
            raise ConnectionError(f"{what} lost")
        self.settled.append((what, detail))
        self.done.set()

    async def ack(self) -> None:
        self._record("ack")

    async def retry(self, delay: float) -> None:
        self._record("retry", delay)

    async def dead_letter(self, reason: str, *, poison: bool = False) -> None:
        self._record("poison" if poison else "dead_letter", reason)

    async def release(self) -> None:
        self._record("release")


class FakeSource:
    def __init__(self, *messages: FakeReceived) -> None:
        self.queue: deque[FakeReceived] = deque(messages)
        self.asked: list[int] = []
        self.errors = 0

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Received]:  # noqa: ASYNC109
        self.asked.append(max_messages)
        await tick()  # a real source waits; this one only yields to the loop
        if self.errors:
            self.errors -= 1
            raise ConnectionError("broker down")
        out = []
        while self.queue and len(out) < max_messages:
            out.append(self.queue.popleft())
        return out

    async def close(self) -> None:
        pass


def event(i: int = 0) -> Envelope:
    return Envelope(source="/t", type="t.happened", subject=f"k{i}", data={"i": i})


def consumer(source: FakeSource, handler: object, **options: object) -> Consumer:
    options.setdefault("random", lambda: 1.0)
    options.setdefault("backoff", Constant(DELAY))
    return Consumer(source, handler, **options)  # type: ignore[arg-type]


async def ok(envelope: Envelope) -> None:
    pass


async def test_fake_source_is_a_source() -> None:
    assert isinstance(FakeSource(), Source)
    assert isinstance(FakeReceived(event()), Received)


async def test_acks_only_after_the_handler_returned() -> None:
    seen: list[str] = []
    message = FakeReceived(event())

    async def handler(envelope: Envelope) -> None:
        assert message.settled == []  # not acked before the handler ends
        seen.append(envelope.id)

    runner = consumer(FakeSource(message), handler)
    assert await runner.drain() == 1
    assert seen == [message.message_id]
    assert message.settled == [("ack", None)]
    assert runner.handled == 1


async def test_a_failing_handler_is_retried_with_backoff_then_dead_lettered() -> None:
    async def handler(envelope: Envelope) -> None:
        raise ValueError("boom")

    first, last = FakeReceived(event(1), deliveries=1), FakeReceived(event(2), deliveries=3)
    runner = consumer(FakeSource(first, last), handler, max_deliveries=3)
    await runner.drain()
    assert first.settled == [("retry", DELAY)]
    [(what, reason)] = last.settled
    assert what == "dead_letter"
    assert reason == "ValueError: boom"
    assert (runner.retried, runner.dead_lettered, runner.failures) == (1, 1, 2)


async def test_a_malformed_message_goes_to_the_poison_queue_and_the_runner_goes_on() -> None:
    calls: list[str] = []

    async def handler(envelope: Envelope) -> None:
        calls.append(envelope.id)

    broken, good = FakeReceived(None), FakeReceived(event())
    runner = consumer(FakeSource(broken, good), handler)
    await runner.drain()
    [(what, reason)] = broken.settled
    assert what == "poison"
    assert "EnvelopeError" in str(reason)
    assert calls == [good.message_id]
    assert runner.poisoned == 1


async def test_at_most_concurrency_handlers_run_at_once() -> None:
    running = peak = 0
    gate = asyncio.Event()

    async def handler(envelope: Envelope) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    messages = [FakeReceived(event(i)) for i in range(10)]
    source = FakeSource(*messages)
    runner = consumer(source, handler, concurrency=3)
    task = asyncio.create_task(runner.drain())
    await tick(20)
    assert running == 3
    assert runner.in_flight == 3
    assert max(source.asked) <= 3
    gate.set()
    assert await task == 10
    assert peak == 3
    assert all(m.settled == [("ack", None)] for m in messages)


async def test_a_sync_handler_runs_in_a_worker_thread() -> None:
    threads: list[int] = []

    def handler(envelope: Envelope) -> None:
        threads.append(threading.get_ident())

    message = FakeReceived(event())
    await consumer(FakeSource(message), handler).drain()
    assert threads
    assert threads[0] != threading.get_ident()
    assert message.settled == [("ack", None)]


async def test_an_open_breaker_in_the_pipeline_redelivers_and_never_dead_letters() -> None:
    calls = 0

    async def handler(envelope: Envelope) -> None:
        nonlocal calls
        calls += 1

    breaker = CircuitBreaker(consecutive_failures=1, open_duration=0.01)
    breaker.isolate()  # open until reset: retry_after is infinite
    message = FakeReceived(event(), deliveries=99)
    runner = consumer(
        FakeSource(message),
        handler,
        pipeline=Pipeline(breaker),
        max_deliveries=2,
        max_retry_delay=0.01,
    )
    await runner.drain()
    assert calls == 0
    [(what, delay)] = message.settled
    assert what == "retry"
    assert delay == 0.01  # the breaker's retry_after, capped at max_retry_delay


async def test_a_handlers_own_cancelled_await_is_a_failure_not_a_stop() -> None:
    async def handler(envelope: Envelope) -> None:
        raise asyncio.CancelledError  # e.g. awaiting a future someone else cancelled

    message = FakeReceived(event())
    runner = consumer(FakeSource(message), handler)
    await runner.drain()
    assert message.settled == [("retry", DELAY)]


class FakeInbox:
    def __init__(self, *, down: bool = False) -> None:
        self.claimed: set[str] = set()
        self.released: list[str] = []
        self.down = down

    async def claim(self, message_id: str) -> bool:
        if self.down:
            raise ConnectionError("inbox down")
        if message_id in self.claimed:
            return False
        self.claimed.add(message_id)
        return True

    async def release(self, message_id: str) -> None:
        self.released.append(message_id)
        self.claimed.discard(message_id)


async def test_with_an_inbox_a_redelivered_message_has_no_second_effect() -> None:
    effects: list[str] = []

    async def handler(envelope: Envelope) -> None:
        effects.append(envelope.id)

    same = event()
    first = FakeReceived(same, fail="ack")  # the ack is lost: the broker redelivers
    again = FakeReceived(same, deliveries=2)
    inbox = FakeInbox()
    runner = consumer(FakeSource(first), handler, inbox=inbox)
    await runner.drain()
    assert runner.settle_errors == 1
    runner.source = FakeSource(again)
    await runner.drain()
    assert effects == [same.id]
    assert again.settled == [("ack", None)]
    assert runner.duplicates == 1
    assert runner.handled == 0  # the first ack was lost


async def test_a_failed_handler_releases_its_inbox_claim_so_the_retry_runs() -> None:
    effects: list[int] = []

    async def handler(envelope: Envelope) -> None:
        effects.append(1)
        if len(effects) == 1:
            raise ValueError("first time fails")

    same = event()
    inbox = FakeInbox()
    runner = consumer(
        FakeSource(FakeReceived(same), FakeReceived(same, deliveries=2)),
        handler,
        inbox=inbox,
        concurrency=1,
    )
    await runner.drain()
    assert inbox.released == [same.id]
    assert effects == [1, 1]
    assert runner.handled == 1


async def test_an_inbox_that_is_down_retries_without_running_the_handler() -> None:
    called = False

    async def handler(envelope: Envelope) -> None:
        nonlocal called
        called = True

    message = FakeReceived(event())
    await consumer(FakeSource(message), handler, inbox=FakeInbox(down=True)).drain()
    assert not called
    assert message.settled == [("retry", DELAY)]


async def test_a_source_without_release_is_left_to_redeliver_by_itself() -> None:
    class Plain(FakeReceived):
        release = None  # type: ignore[assignment]  # an optional method, absent

    async def handler(envelope: Envelope) -> None:
        await asyncio.Event().wait()

    message = Plain(event())
    runner = consumer(FakeSource(message), handler, drain_timeout=0)
    task = asyncio.create_task(runner.run())
    while runner.in_flight == 0:
        await tick()
    runner.stop()
    await task
    assert message.settled == []
    assert runner.released == 1


async def test_a_lost_ack_never_stops_the_runner() -> None:
    lost, fine = FakeReceived(event(1), fail="ack"), FakeReceived(event(2))
    runner = consumer(FakeSource(lost, fine), ok)
    await runner.drain()
    assert lost.settled == []
    assert fine.settled == [("ack", None)]
    assert runner.settle_errors == 1


async def test_receive_errors_are_retried_and_never_stop_the_runner() -> None:
    message = FakeReceived(event())
    source = FakeSource(message)
    source.errors = 1
    runner = consumer(source, ok)
    task = asyncio.create_task(runner.run())
    await message.done.wait()  # after the runner's 0.2 s pause
    runner.stop()
    await task
    assert runner.handled == 1


async def test_stop_lets_handlers_in_flight_finish() -> None:
    gate = asyncio.Event()

    async def handler(envelope: Envelope) -> None:
        await gate.wait()

    message = FakeReceived(event())
    runner = consumer(FakeSource(message), handler)
    task = asyncio.create_task(runner.run())
    while runner.in_flight == 0:
        await tick()
    runner.stop()
    await tick(5)
    assert not task.done()
    gate.set()
    await task
    assert message.settled == [("ack", None)]


async def test_past_the_drain_timeout_handlers_are_cancelled_and_messages_left_unacked() -> None:
    async def handler(envelope: Envelope) -> None:
        await asyncio.Event().wait()

    message = FakeReceived(event())
    inbox = FakeInbox()
    runner = consumer(FakeSource(message), handler, drain_timeout=0, inbox=inbox)
    task = asyncio.create_task(runner.run())
    while runner.in_flight == 0:
        await tick()
    runner.stop()
    await task
    assert message.settled == [("release", None)]  # handed back: redelivered now
    assert runner.released == 1
    assert inbox.released == [message.message_id]  # so the redelivery runs the handler


async def test_cancelling_run_interrupts_handlers_and_leaves_messages_unacked() -> None:
    started = asyncio.Event()

    async def handler(envelope: Envelope) -> None:
        started.set()
        await asyncio.Event().wait()

    message = FakeReceived(event())
    runner = consumer(FakeSource(message), handler, drain_timeout=60)
    task = asyncio.create_task(runner.run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert message.settled == [("release", None)]  # handed back, never acked
    assert runner.in_flight == 0
    assert runner.released == 1


async def test_a_cancellation_a_source_swallowed_still_stops_the_runner() -> None:
    class Swallowing(FakeSource):
        async def receive(self, max_messages: int, timeout: float) -> Sequence[Received]:  # noqa: ASYNC109
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:  # what some drivers do, now and then
                pass
            return []

    runner = consumer(Swallowing(), ok)
    task = asyncio.create_task(runner.run())
    await tick(3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):  # only on failure: the runner would go on
            await task


async def test_run_twice_at_once_is_refused_and_stop_before_run_returns_at_once() -> None:
    runner = consumer(FakeSource(), ok)
    runner.stop()
    await runner.run()  # returns at once
    task = asyncio.create_task(runner.run())
    await tick()
    with pytest.raises(RuntimeError, match="already running"):
        await runner.drain()
    runner.stop()
    await task


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"max_deliveries": 0}, "max_deliveries"),
        ({"drain_timeout": -1}, "drain_timeout"),
        ({"receive_timeout": 0}, "receive_timeout"),
        ({"pipeline": "timeout"}, "pipeline"),
        ({"inbox": object()}, "inbox"),
        ({"backoff": 3}, "backoff"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        consumer(FakeSource(), ok, **options)
    assert caught.value.path == path


def test_a_source_and_a_handler_are_checked() -> None:
    with pytest.raises(ConfigError, match="source"):
        Consumer(object(), ok)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="handler"):
        Consumer(FakeSource(), 42)  # type: ignore[arg-type]


# -- the engine ---------------------------------------------------------------------


def test_engine_acks_success_and_retries_with_capped_jittered_backoff() -> None:
    engine = Engine(backoff=Exponential(1.0, 2.0), max_delay=5.0, random=lambda: 1.0)
    assert engine.handled(1, None).action == "ack"
    assert [engine.handled(n, OSError("x")).delay for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    low = Engine(backoff=Exponential(1.0, 2.0), random=lambda: 0.0)
    assert low.handled(3, OSError("x")).delay == 2.0  # equal jitter: half to all


def test_engine_dead_letters_at_max_deliveries_and_poisons_undecodable() -> None:
    engine = Engine(max_deliveries=2, random=lambda: 1.0)
    assert engine.handled(1, KeyError("k")).action == "retry"
    verdict = engine.handled(2, KeyError("k"))
    assert (verdict.action, verdict.reason) == ("dead_letter", "KeyError: 'k'")
    assert engine.handled(5, KeyError("k")).action == "dead_letter"
    poison = Engine.undecodable(EnvelopeError("bad", attribute="id"))
    assert poison.action == "poison"
    assert "EnvelopeError" in poison.reason
    assert Engine.duplicate().action == "ack"


def test_engine_max_deliveries_one_never_retries() -> None:
    assert Engine(max_deliveries=1).handled(1, OSError()).action == "dead_letter"


def test_engine_caps_a_rejections_retry_after_and_never_dead_letters_it() -> None:
    never = Rejected("isolated")
    never.retry_after = math.inf
    verdict = Engine(max_deliveries=1, max_delay=5.0).handled(9, never)
    assert (verdict.action, verdict.delay) == ("retry", 5.0)
    soon = Rejected("bulkhead full")
    soon.retry_after = 0.5
    assert Engine(max_delay=5.0).handled(1, soon).delay == 0.5


class _Says(Exception):
    def __init__(self, transient: object) -> None:
        super().__init__("says")
        self.transient = transient


class _Raising(Exception):
    @property
    def transient(self) -> bool:
        raise RuntimeError("no answer")


def test_engine_dead_letters_at_once_an_error_that_says_it_is_permanent() -> None:
    engine = Engine(max_deliveries=5)
    assert engine.handled(1, PublishRefused("no route", ["e-1"])).action == "dead_letter"
    assert engine.handled(1, DeferredError("no operation")).action == "dead_letter"
    assert engine.handled(1, _Says(False)).action == "dead_letter"
    # Saying nothing, saying transient, or a non-boolean / raising answer: retried.
    for error in (ValueError("x"), _Says(True), _Says(0), _Says(None), _Raising()):
        assert engine.handled(1, error).action == "retry", error


async def test_a_handler_error_that_says_it_is_permanent_is_dead_lettered_at_once() -> None:
    async def handler(envelope: Envelope) -> None:
        raise DeferredError("no operation is registered for this type")

    only = FakeReceived(event(1), deliveries=1)
    runner = consumer(FakeSource(only), handler, max_deliveries=5)
    await runner.drain()
    [(what, reason)] = only.settled
    assert what == "dead_letter"
    assert reason.startswith("DeferredError: no operation")
    assert (runner.retried, runner.dead_lettered) == (0, 1)


async def test_a_claim_interrupted_by_a_stop_is_released() -> None:
    class SlowInbox(FakeInbox):
        async def claim(self, message_id: str) -> bool:
            self.claimed.add(message_id)  # made on the server, the answer never came
            await asyncio.Event().wait()
            return True

    message = FakeReceived(event())
    inbox = SlowInbox()
    runner = consumer(FakeSource(message), ok, drain_timeout=0, inbox=inbox)
    task = asyncio.create_task(runner.run())
    while not inbox.claimed:
        await tick()
    runner.stop()
    await task
    assert message.settled == [("release", None)]  # handed back, never acked
    assert inbox.released == [message.message_id]


# -- metrics ------------------------------------------------------------------------


async def test_a_consumers_figures_are_exported_by_name() -> None:
    registry = CollectorRegistry()
    prometheus.register(registry)
    try:

        async def handler(envelope: Envelope) -> None:
            if envelope.data["i"] == 1:
                raise ValueError("boom")

        messages = [
            FakeReceived(event(0)),
            FakeReceived(event(1), deliveries=1),
            FakeReceived(None),
        ]
        runner = consumer(FakeSource(*messages), handler, name="billing-metrics")
        await runner.drain()

        def value(name: str) -> float | None:
            return registry.get_sample_value(name, {"consumer": "billing-metrics"})

        assert value("buttress_consumer_handled_total") == 1.0
        assert value("buttress_consumer_retried_total") == 1.0
        assert value("buttress_consumer_failures_total") == 1.0
        assert value("buttress_consumer_poisoned_total") == 1.0
        assert value("buttress_consumer_dead_lettered_total") == 0.0
        assert value("buttress_consumer_in_flight") == 0.0
    finally:
        prometheus.unregister(registry)
