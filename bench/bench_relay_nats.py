"""Outbox relay backlog drain, PostgreSQL → NATS JetStream (issue 8's target: ≥ 25,000/s).

``--events`` rows are written to a fresh PostgreSQL outbox table first (``--keys``
ordering keys, round robin), then one buttress :class:`~buttress.messaging.Relay`
publishes all of them through a :class:`~buttress.messaging.brokers.nats.NatsPublisher`
(file-storage stream, ``Nats-Msg-Id`` dedup, every PubAck awaited); events/s from the
first claim to the last mark. It reuses ``bench/bench_relay.py``'s helpers and
settings (the outbox rows, the relay's batch and concurrency), and that script runs
this scenario with the others through :data:`SCENARIOS`. Alone::

    python bench/bench_relay_nats.py                  # 3 rounds of 20,000 events
    python bench/bench_relay_nats.py --rounds 5 --events 50000
    python bench/bench_relay_nats.py --profile        # cProfile of one run

Needs PostgreSQL (``test`` db) and NATS with JetStream on 127.0.0.1. Every run uses a
table and a stream of its own, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import socket
import statistics
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
NATS = os.environ.get("BUTTRESS_BENCH_NATS", "nats://127.0.0.1:4222")
NATS_PORT = 4222


def _relay_bench() -> ModuleType:
    """``bench_relay``'s helpers, from whichever copy of it is loaded (``__main__`` when
    it is the script being run)."""
    main = sys.modules.get("__main__")
    if main is not None and hasattr(main, "drain_buttress"):
        return main
    sys.path.insert(0, str(HERE))
    import bench_relay  # type: ignore[import-not-found]

    return bench_relay


# bench_relay checks each scenario's services by port; it knows no NATS port itself.
for _module in (sys.modules.get("__main__"), sys.modules.get("bench_relay")):
    _ports = getattr(_module, "PORTS", None)
    if isinstance(_ports, dict):
        _ports.setdefault("nats", NATS_PORT)


def nats_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", NATS_PORT), timeout=0.5):
            return True
    except OSError:
        return False


async def drop_stream(name: str) -> None:
    import nats

    client = await nats.connect(NATS)
    try:
        await client.jetstream().delete_stream(name)
    except Exception:  # never created: nothing to remove
        pass
    finally:
        await client.close()


async def drain_pg_nats(args: Any) -> float:
    """One backlog drain; returns events/s."""
    from buttress.messaging.brokers.nats import NatsPublisher
    from buttress.messaging.relay import PostgresRelayStore

    bench = _relay_bench()
    stream = f"BENCH_RELAY_{uuid.uuid4().hex[:10]}"
    table = bench.pg_table(args.events, args.keys)
    try:
        publisher = NatsPublisher(NATS, stream=stream, subject_prefix=f"bench.{stream}")
        rate: float = await bench.drain_buttress(
            PostgresRelayStore(bench.PG, table), publisher, args.batch, args.events
        )
        return rate
    finally:
        bench.pg_drop(table)
        await drop_stream(stream)


def latency_nats(rate: float) -> Any:
    """Commit-to-confirm latency at ``rate`` events/s offered (bench_relay's writer in
    another process, one event per transaction; the relay woken by LISTEN/NOTIFY)."""

    async def scenario(args: Any) -> dict[str, float]:
        from buttress.messaging.brokers.nats import NatsPublisher
        from buttress.messaging.relay import PostgresRelayStore

        bench = _relay_bench()
        stream = f"BENCH_LATENCY_{uuid.uuid4().hex[:10]}"

        async def run(table: str, stop: asyncio.Event) -> dict[str, float]:
            timed = bench.Timed(
                NatsPublisher(NATS, stream=stream, subject_prefix=f"bench.{stream}")
            )
            store = PostgresRelayStore(bench.PG, table)
            async with timed:
                relay = bench.relay(store, timed, args.batch, poll_interval=5.0)
                task = asyncio.create_task(relay.run())
                await stop.wait()
                relay.stop()
                await task
            await store.close()
            confirmed: dict[str, float] = timed.confirmed
            return confirmed

        try:
            result: dict[str, float] = await bench._latency(args, rate, run)
            return result
        finally:
            await drop_stream(stream)

    return scenario


# The latency targets to NATS, on these two cores.
LATENCY_TARGETS = {100: ("p50", 5.0), 1000: ("p99", 10.0)}

SCENARIOS = [
    (
        "drain-pg-nats",
        "PostgreSQL → NATS JetStream, buttress",
        ("postgres", "nats"),
        drain_pg_nats,
    ),
]
"""For bench_relay.py: (name, label, services needed, async function returning events/s)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one run")
    parser.add_argument(
        "--latency", action="store_true", help="commit-to-confirm latency at 100/s and 1,000/s"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per latency run")
    options = parser.parse_args()
    bench = _relay_bench()
    if not nats_up() or not bench.up("postgres"):
        raise SystemExit("needs PostgreSQL on 127.0.0.1:5432 and NATS on 127.0.0.1:4222")
    args = bench.Args(
        events=options.events,
        keys=options.keys,
        batch=options.batch,
        rounds=options.rounds,
        seconds=options.seconds,
    )
    if options.latency:
        for rate, (measure, goal) in LATENCY_TARGETS.items():
            runs = [asyncio.run(latency_nats(rate)(args)) for _ in range(options.rounds)]
            best = min(runs, key=lambda r: r["p99"])
            verdict = "met" if best[measure] <= goal else "missed"
            print(
                f"PostgreSQL → NATS at {rate:,}/s offered (writer achieved "
                f"{best['achieved']:,.0f}/s): p50 {best['p50']:.1f} ms, p99 {best['p99']:.1f} ms, "
                f"max {best['max']:.1f} ms (target {measure} ≤ {goal:g} ms: {verdict}; best p99 "
                f"of {len(runs)}); load average {os.getloadavg()[0]:.1f}"
            )
        return
    if options.profile:
        profile = cProfile.Profile()
        profile.enable()
        rate = asyncio.run(drain_pg_nats(args))
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        print(f"drain-pg-nats: {rate:,.0f} events/s under cProfile")
        return
    rates = []
    for _ in range(options.rounds):
        rates.append(asyncio.run(drain_pg_nats(args)))
        print(f"drain-pg-nats: {rates[-1]:,.0f} events/s", file=sys.stderr, flush=True)
    target = bench.TARGETS["drain-pg-nats"]
    best = max(rates)
    verdict = "met" if best >= target else f"missed, {best / target:.0%}"
    print(
        f"PostgreSQL → NATS JetStream, {args.events:,} events, {args.keys:,} keys, batches of "
        f"{args.batch}: best {best:,.0f}/s, median {statistics.median(rates):,.0f}/s "
        f"(target ≥ {target:,.0f}/s: {verdict}); "
        f"{os.cpu_count()} cores shared with other engineers' runs, load average "
        f"{os.getloadavg()[0]:.1f} at the end, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


if __name__ == "__main__":
    main()
