"""A process that hammers one Redis-backed rate limit from many threads.

Run by ``test_ratelimit_redis.py`` in spawned processes; kept apart from the test
module so a child imports only this and buttress, not pytest.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from buttress.ratelimit import FixedWindow, RateLimiter
from buttress.stores import RedisStore


def hammer(
    *,
    url: str,
    prefix: str,
    limit: int,
    period: float,
    threads: int,
    seconds: float,
    start: Any,
    results: Any,
) -> None:
    """Hit one key from ``threads`` threads for ``seconds``; report what was admitted.

    Puts ``(started, stopped, admitted)`` on ``results``: wall-clock bounds of the
    hammering, and for each admitted request the wall-clock moment its window ends
    (the reply's ``reset_after`` counted from when the reply arrived).
    """
    store = RedisStore.from_url(url, prefix=prefix, timeout=5.0)
    limiter = RateLimiter(FixedWindow(limit, period), store=store, name="shared")
    limiter.hit("warm-up", cost=0)  # connect and load the script before the start
    admitted: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)
    start.wait()
    began = time.time()
    deadline = began + seconds

    def worker() -> None:
        mine: list[float] = []
        barrier.wait()
        while time.time() < deadline:
            result = limiter.hit("k")
            if result.allowed:
                mine.append(time.time() + result.reset_after)
        with lock:
            admitted.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    stopped = time.time()
    store.close()
    results.put((began, stopped, admitted))
