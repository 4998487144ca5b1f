"""AsyncStore throughput against the sync Store, and how free the event loop stays.

Run with ``.venv/bin/python benchmarks/bench_async.py [--rounds N] [--quick]``.

50 writers each save the order machine (with ~1 KB of state data) to their
own key, ``--saves`` times each:

(a) sync ``Store``, 50 threads (the baseline);
(b) ``AsyncStore`` (its default pool of 4 threads), 50 asyncio tasks on one
    event loop, while a ticker task sleeps 1 ms at a time and records the
    longest gap between its wake-ups;
(c) sync ``Store``, 4 threads: not a target, it shows how much of (b)'s
    figure is simply fewer writers contending for the database.

Each variant writes in its own namespace of the same database; the variants
run interleaved round by round (who goes first rotates) and each figure is
the median over rounds of saves per second. Ratio = variant / (a); target
(issue 15): (b) >= 1.00. The ticker's worst gap is the largest over all
rounds, and the median of each round's largest: how long the loop was kept
from running (what other requests of an asyncio service would wait).

* SQLite: one database file in a temporary directory (WAL, synchronous=FULL,
  the backend's default).
* PostgreSQL: the database ``GOTSTATE_PERSIST_BENCH_POSTGRES_URL`` names
  (fresh namespaces in it), else a throw-away server started like
  bench_quota's (``tests/_postgres.py``, loopback, ``fsync=off``), not
  pinned to CPUs; ``--only sqlite`` skips it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_backends import postgres_database  # noqa: E402
from order_workflow import build_order_machine, set_data  # noqa: E402

import gotstate_persist as gp  # noqa: E402

WRITERS = 50
SMALL_POOL = 4
TICK_S = 0.001
POSTGRES_VARIABLE = "GOTSTATE_PERSIST_BENCH_POSTGRES_URL"
BASELINE = "(a) sync, 50 threads"


def order_machine() -> Any:
    machine = build_order_machine()
    machine.start()
    set_data(machine, "idle", "note", "x" * 1024)
    return machine


@dataclass
class Figures:
    rates: dict[str, list[float]] = field(default_factory=dict)
    worst_gaps: list[float] = field(default_factory=list)

    def add(self, variant: str, saves: int, seconds: float) -> None:
        self.rates.setdefault(variant, []).append(saves / seconds)


def sync_round(
    store: gp.Store, pool: ThreadPoolExecutor, saves: int, machine: Any, tag: str
) -> float:
    def writer(i: int) -> None:
        for _ in range(saves):
            store.save_machine(f"{tag}-{i}", machine)

    start = time.perf_counter()
    list(pool.map(writer, range(WRITERS)))  # a pool of 4 queues the other writers
    return time.perf_counter() - start


async def async_round(
    astore: gp.AsyncStore, saves: int, machine: Any, tag: str
) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    worst = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        last = loop.time()
        while not stop.is_set():
            await asyncio.sleep(TICK_S)
            now = loop.time()
            worst = max(worst, now - last - TICK_S)
            last = now

    async def writer(i: int) -> None:
        for _ in range(saves):
            await astore.save_machine(f"{tag}-{i}", machine)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(WRITERS)))
    seconds = time.perf_counter() - start
    stop.set()
    await ticking
    return seconds, worst


def bench(label: str, url: str, keys: gp.KeyRing, rounds: int, saves: int) -> None:
    print(f"\n{label}: {WRITERS} writers x {saves} saves per round, {rounds} rounds", flush=True)
    machine = order_machine()
    run_id = uuid.uuid4().hex[:8]
    figures = Figures()
    loop = asyncio.new_event_loop()
    with (
        gp.open_store(url, namespace=f"bench-sync-{run_id}", keyring=keys) as sync_store,
        gp.open_store(url, namespace=f"bench-small-{run_id}", keyring=keys) as small_store,
        ThreadPoolExecutor(WRITERS) as threads,
        ThreadPoolExecutor(SMALL_POOL) as few_threads,
    ):
        astore = gp.open_async_store(url, namespace=f"bench-async-{run_id}", keyring=keys)
        loop.run_until_complete(astore.__aenter__())
        try:

            def run_sync(tag: str) -> float:
                return sync_round(sync_store, threads, saves, machine, tag)

            def run_small(tag: str) -> float:
                return sync_round(small_store, few_threads, saves, machine, tag)

            def run_async(tag: str) -> float:
                seconds, worst = loop.run_until_complete(async_round(astore, saves, machine, tag))
                figures.worst_gaps.append(worst)
                return seconds

            variants: list[tuple[str, Callable[[str], float]]] = [
                (BASELINE, run_sync),
                ("(b) AsyncStore, 50 tasks", run_async),
                ("(c) sync, 4 threads", run_small),
            ]
            for _, call in variants:  # warm up: schema, connections, caches
                call("warm")
            for r in range(rounds):
                for k in range(len(variants)):
                    name, call = variants[(r + k) % len(variants)]
                    figures.add(name, WRITERS * saves, call(f"r{r}"))
        finally:
            loop.run_until_complete(astore.aclose())
            loop.close()
    base = statistics.median(figures.rates[BASELINE])
    for name, rates in figures.rates.items():
        rate = statistics.median(rates)
        print(f"  {name:<26} {rate:8,.0f} saves/s  ratio {rate / base:4.2f}", flush=True)
    print(
        f"  event loop during (b): worst gap {max(figures.worst_gaps) * 1e3:.1f} ms over all "
        f"rounds, median of each round's worst {statistics.median(figures.worst_gaps) * 1e3:.1f}"
        f" ms (beyond the ticker's own {TICK_S * 1e3:.0f} ms sleep)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 15, quick 5)")
    parser.add_argument("--saves", type=int, default=None, help="saves per writer per round")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and saves")
    parser.add_argument(
        "--only", default="sqlite,postgresql", help="comma-separated subset of sqlite,postgresql"
    )
    args = parser.parse_args()
    chosen = {name.strip() for name in args.only.split(",") if name.strip()}
    if chosen - {"sqlite", "postgresql"}:
        parser.error(f"unknown backend(s) in --only {args.only!r}")
    rounds = args.rounds or (5 if args.quick else 15)
    saves = args.saves or (2 if args.quick else 4)
    keys = gp.KeyRing.generate()
    if "sqlite" in chosen:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            bench("SQLite (file; WAL, synchronous=FULL)", url, keys, rounds, saves)
    if "postgresql" not in chosen:
        return
    given = os.environ.get(POSTGRES_VARIABLE)
    if given:
        bench(f"PostgreSQL ({POSTGRES_VARIABLE})", given, keys, rounds, saves)
        return
    with postgres_database("async") as found:
        if found is not None:
            bench(f"PostgreSQL ({found.describe()}, fsync=off)", found.url, keys, rounds, saves)


if __name__ == "__main__":
    main()
