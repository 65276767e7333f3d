"""The bulkhead core against a model: bounds, FIFO hand-over, no slot ever lost."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from buttress.policies.bulkhead import Bulkhead
from buttress.policies.bulkhead._engine import Waiter as _Waiter


class _Recorder(_Waiter):
    __slots__ = ("woken",)

    def __init__(self) -> None:
        super().__init__()
        self.woken = 0

    def wake(self) -> bool:
        self.woken += 1
        return True


class BulkheadMachine(RuleBasedStateMachine):
    """Drives the core the way the drivers do; the model says who holds what."""

    def __init__(self) -> None:
        super().__init__()
        self.bulkhead = Bulkhead(1)
        self.running = 0  # callers that claimed a slot and are running
        self.queue: list[_Recorder] = []  # waiting, in arrival order
        self.handed: list[_Recorder] = []  # slot handed over, not yet claimed

    @initialize(max_concurrent=st.integers(1, 4), max_queue=st.integers(0, 4))
    def build(self, max_concurrent: int, max_queue: int) -> None:
        self.bulkhead = Bulkhead(max_concurrent, max_queue=max_queue)
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue

    def _held(self) -> int:
        return self.running + len(self.handed)

    @rule()
    def arrive(self) -> None:
        if self.bulkhead._slots.try_acquire():
            assert self._held() < self.max_concurrent
            self.running += 1
            return
        assert self._held() == self.max_concurrent
        waiter = _Recorder()
        if self.bulkhead._slots.enqueue(waiter):
            assert len(self.queue) < self.max_queue
            assert not waiter.granted
            self.queue.append(waiter)
        else:
            assert len(self.queue) == self.max_queue

    @precondition(lambda self: self.running > 0)
    @rule()
    def finish(self) -> None:
        self.bulkhead._slots.release()
        self.running -= 1
        self._expect_hand_over()

    def _expect_hand_over(self) -> None:
        if self.queue:
            first = self.queue.pop(0)
            assert first.granted
            assert first.woken == 1
            self.handed.append(first)
        for waiter in self.queue:
            assert not waiter.granted
            assert waiter.woken == 0

    @precondition(lambda self: bool(self.handed))
    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        waiter = data.draw(st.sampled_from(self.handed))
        assert self.bulkhead._slots.settle(waiter)
        assert not self.bulkhead._slots.settle(waiter)  # a grant is claimed once
        self.handed.remove(waiter)
        self.running += 1

    @precondition(lambda self: bool(self.handed))
    @rule(data=st.data())
    def cancelled_as_handed(self, data: st.DataObject) -> None:
        waiter = data.draw(st.sampled_from(self.handed))
        assert self.bulkhead._slots.settle(waiter)
        self.bulkhead._slots.release()  # what a cancelled task does: pass it on
        self.handed.remove(waiter)
        self._expect_hand_over()

    @precondition(lambda self: bool(self.queue))
    @rule(data=st.data())
    def give_up(self, data: st.DataObject) -> None:
        waiter = data.draw(st.sampled_from(self.queue))
        assert not self.bulkhead._slots.settle(waiter)
        self.queue.remove(waiter)

    @invariant()
    def bounds_hold(self) -> None:
        bulkhead = self.bulkhead
        assert 0 <= bulkhead.active <= self.max_concurrent
        assert 0 <= bulkhead.queued <= self.max_queue
        assert bulkhead.active + bulkhead.available == self.max_concurrent

    @invariant()
    def counters_match_the_model(self) -> None:
        assert self.bulkhead.active == self._held()
        assert self.bulkhead.queued == len(self.queue)
        assert list(self.bulkhead._slots.waiters) == self.queue

    @invariant()
    def nobody_waits_beside_a_free_slot(self) -> None:
        assert not (self.bulkhead.available and self.bulkhead.queued)


BulkheadMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40)
TestBulkheadMachine = BulkheadMachine.TestCase
