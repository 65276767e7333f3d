"""A UUIDv7 generator (RFC 9562, section 5.7): time-ordered, unique, thread-safe.

Layout, from the most significant bit: 48 bits of Unix time in milliseconds, the
version (``0111``), 12 bits ``rand_a``, the variant (``10``), 62 bits ``rand_b``.

Monotonicity (RFC 9562, section 6.2, method 2, "monotonic random"): the 74 bits
``rand_a || rand_b`` are one number. The first id of a millisecond takes 73 fresh
random bits from :func:`os.urandom` (the top bit left clear, so the number has room
to grow); every further id in the same millisecond adds a random increment of 1 to
2**32 to the previous number, so ids made in one process sort in the order they were
made and stay unguessable. If the clock goes backwards, the last timestamp is kept;
if the number would overflow, the timestamp moves one millisecond ahead. A lock makes
this safe across threads; a forked child starts a fresh sequence.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["uuid7"]

_RAND_BITS = 74
_RAND_LIMIT = 1 << _RAND_BITS
_B62 = (1 << 62) - 1

# Module globals so that tests can patch the clock (``_time_ns``).
_time_ns = time.time_ns
_lock = threading.Lock()
_last_ms = -1
_last_rand = 0


def _fresh() -> int:
    return int.from_bytes(os.urandom(10), "big") >> (80 - _RAND_BITS + 1)  # 73 bits


def _reset() -> None:
    global _lock, _last_ms, _last_rand
    _lock = threading.Lock()
    _last_ms = -1
    _last_rand = 0


if hasattr(os, "register_at_fork"):  # pragma: no branch  # absent on Windows only
    os.register_at_fork(after_in_child=_reset)


def uuid7() -> uuid.UUID:
    """A new UUIDv7: later calls in this process return greater ids.

    Returns:
        A :class:`uuid.UUID` with ``version == 7`` and the RFC 9562 variant.
    """
    global _last_ms, _last_rand
    with _lock:
        ms = _time_ns() // 1_000_000
        if ms > _last_ms:
            rand = _fresh()
        else:
            ms = _last_ms
            rand = _last_rand + 1 + (int.from_bytes(os.urandom(4), "big"))
            if rand >= _RAND_LIMIT:
                ms += 1
                rand = _fresh()
        _last_ms, _last_rand = ms, rand
    rand_a = rand >> 62
    rand_b = rand & _B62
    value = ((ms & 0xFFFF_FFFF_FFFF) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)
