"""AsyncStore throughput against the sync Store, and how free the event loop stays.

Run with ``.venv/bin/python benchmarks/bench_async.py [--rounds N] [--quick]
[--parts saves,attach]``.

Part "saves":

50 writers each save the order machine (with ~1 KB of state data) to their
own key, ``--saves`` times each:

(a) sync ``Store``, 50 threads (the baseline);
(b) ``AsyncStore`` (its default pool of 4 threads), 50 asyncio tasks on one
    event loop, while a ticker task sleeps 1 ms at a time and records the
    longest gap between its wake-ups;
(c) sync ``Store``, 4 threads: not a target, it shows how much of (b)'s
    figure is simply fewer writers contending for the database.

Part "attach" (issue 15's attachments): 50 writers each attach a ring
machine (13 states, a transition action that counts in state data) to
their own key (not timed), then process ``--events`` accepted events and
detach (timed):

(d) sync ``Store.attach``, 50 threads, ``snapshot_every=1`` (a snapshot per
    event; the baseline of (e));
(e) ``AsyncStore.attach`` of gotstate's ``AsyncStateMachine``, 50 tasks,
    ``snapshot_every=1``, with the ticker;
(f) sync ``Store.attach``, 50 threads, ``journal=True, snapshot_every=50``
    (an append per event, a snapshot every 50; the baseline of (g));
(g) ``AsyncStore.attach`` of the async machine, 50 tasks, journal,
    ``snapshot_every=50``, with the ticker.

Figures are accepted events per second; ratio (e)/(d) and (g)/(f).

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
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _async_runtime_helpers import ring  # noqa: E402
from _report import figure  # noqa: E402
from bench_backends import postgres_database  # noqa: E402
from gotstate.core.events import Event  # noqa: E402
from gotstate.core.state_machine import StateMachine  # noqa: E402
from order_workflow import build_order_machine, set_data  # noqa: E402

import gotstate_persist as gp  # noqa: E402

WRITERS = 50
SMALL_POOL = 4
TICK_S = 0.001
POSTGRES_VARIABLE = "GOTSTATE_PERSIST_BENCH_POSTGRES_URL"
BASELINE = "(a) sync, 50 threads"
#: The attach part's variants: (label, sync or async, journal, snapshot_every).
ATTACH_VARIANTS = (
    ("(d) sync attach, snapshot_every=1", "sync", False, 1),
    ("(e) async attach, snapshot_every=1", "async", False, 1),
    ("(f) sync attach, journal, every 50", "sync", True, 50),
    ("(g) async attach, journal, every 50", "async", True, 50),
)
ATTACH_RATIOS = ((1, 0), (3, 2))  # (variant, its baseline) by index in ATTACH_VARIANTS
HOW_SAVES = (
    "50 writers x save_machine: AsyncStore from 50 tasks vs sync Store from 50 threads, "
    "interleaved rounds, median saves/s; variant / (a)"
)
HOW_ATTACH = (
    "50 attached machines x accepted events, async (tasks) vs sync (threads) attach, "
    "interleaved rounds, median events/s; (e)/(d), (g)/(f)"
)
HOW_GAP = "longest gap of a ticker task sleeping 1 ms on the event loop, beyond its sleep"


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


async def ticked(writer: Callable[[int], Awaitable[None]]) -> tuple[float, float]:
    """Run ``writer(i)`` for every writer at once while a ticker task sleeps ``TICK_S`` at a time.

    Returns the seconds the writers took and the ticker's worst gap beyond its sleep.
    """
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

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(WRITERS)))
    seconds = time.perf_counter() - start
    stop.set()
    await ticking
    return seconds, worst


async def async_round(
    astore: gp.AsyncStore, saves: int, machine: Any, tag: str
) -> tuple[float, float]:
    async def writer(i: int) -> None:
        for _ in range(saves):
            await astore.save_machine(f"{tag}-{i}", machine)

    return await ticked(writer)


def attach_sync_round(
    store: gp.Store, threads: ThreadPoolExecutor, events: int, journal: bool, every: int, tag: str
) -> float:
    """Attach 50 machines (not timed), then time their events and detaches on 50 threads."""

    def attach(i: int) -> gp.Attached:
        machine = ring(StateMachine)
        machine.start()
        return store.attach(machine, f"{tag}-{i}", journal=journal, snapshot_every=every)

    def writer(attached: gp.Attached) -> None:
        with attached:
            for _ in range(events):
                assert attached.process_event(Event("next"))

    attachments = list(threads.map(attach, range(WRITERS)))
    start = time.perf_counter()
    list(threads.map(writer, attachments))
    return time.perf_counter() - start


async def attach_async_round(
    astore: gp.AsyncStore, events: int, journal: bool, every: int, tag: str
) -> tuple[float, float]:
    """Attach 50 async machines (not timed), then time their events and detaches, ticking."""

    async def attach(i: int) -> gp.AsyncAttached:
        machine = ring()  # gotstate's AsyncStateMachine
        await machine.start()
        return await astore.attach(machine, f"{tag}-{i}", journal=journal, snapshot_every=every)

    attachments = await asyncio.gather(*(attach(i) for i in range(WRITERS)))

    async def writer(i: int) -> None:
        async with attachments[i]:
            for _ in range(events):
                assert await attachments[i].process_event(Event("next"))

    return await ticked(writer)


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
    backend = label.split(maxsplit=1)[0]
    for name, rates in figures.rates.items():
        rate = statistics.median(rates)
        first = name == BASELINE
        figure(
            "asyncio",
            f"{backend} saves {name}",
            rate if first else rate / base,
            "saves/s" if first else "x speed",
            detail="baseline" if first else f"{rate:,.0f} saves/s",
            at_least=1.0 if name.startswith("(b)") else None,
            how=HOW_SAVES,
            line=f"  {name:<26} {rate:8,.0f} saves/s  ratio {rate / base:4.2f}",
        )
    figure(
        "asyncio",
        f"{backend} saves, event loop worst gap during (b)",
        max(figures.worst_gaps) * 1e3,
        "ms",
        detail=f"median of each round's worst {statistics.median(figures.worst_gaps) * 1e3:.1f} ms",
        how=HOW_GAP,
        line=(
            f"  event loop during (b): worst gap {max(figures.worst_gaps) * 1e3:.1f} ms over all "
            f"rounds, median of each round's worst "
            f"{statistics.median(figures.worst_gaps) * 1e3:.1f}"
            f" ms (beyond the ticker's own {TICK_S * 1e3:.0f} ms sleep)"
        ),
    )


def bench_attach(label: str, url: str, keys: gp.KeyRing, rounds: int, events: int) -> None:
    print(
        f"\n{label}: attach, {WRITERS} writers x {events} events per round, {rounds} rounds",
        flush=True,
    )
    run_id = uuid.uuid4().hex[:8]
    rates: dict[str, list[float]] = {}
    gaps: list[float] = []
    loop = asyncio.new_event_loop()
    with (
        gp.open_store(url, namespace=f"bench-attach-sync-{run_id}", keyring=keys) as store,
        ThreadPoolExecutor(WRITERS) as threads,
    ):
        astore = gp.open_async_store(url, namespace=f"bench-attach-async-{run_id}", keyring=keys)
        loop.run_until_complete(astore.__aenter__())
        try:

            def one(variant: tuple[str, str, bool, int], tag: str) -> float:
                _, kind, journal, every = variant
                if kind == "sync":
                    return attach_sync_round(store, threads, events, journal, every, tag)
                seconds, worst = loop.run_until_complete(
                    attach_async_round(astore, events, journal, every, tag)
                )
                gaps.append(worst)
                return seconds

            for i, variant in enumerate(ATTACH_VARIANTS):  # warm up
                one(variant, f"warm{i}")
            gaps.clear()
            for r in range(rounds):
                for k in range(len(ATTACH_VARIANTS)):
                    index = (r + k) % len(ATTACH_VARIANTS)
                    variant = ATTACH_VARIANTS[index]
                    seconds = one(variant, f"r{r}v{index}")
                    rates.setdefault(variant[0], []).append(WRITERS * events / seconds)
        finally:
            loop.run_until_complete(astore.aclose())
            loop.close()
    medians = {name: statistics.median(found) for name, found in rates.items()}
    names = [variant[0] for variant in ATTACH_VARIANTS]
    baselines = {names[i]: names[base] for i, base in ATTACH_RATIOS}
    backend = label.split(maxsplit=1)[0]
    for name in names:
        line = f"  {name:<38} {medians[name]:8,.0f} events/s"
        if name in baselines:
            ratio = medians[name] / medians[baselines[name]]
            line += f"  ratio {ratio:4.2f} vs {baselines[name][:3]}"
            figure(
                "asyncio",
                f"{backend} {name}",
                ratio,
                "x speed",
                detail=f"{medians[name]:,.0f} events/s vs {baselines[name][:3]}",
                how=HOW_ATTACH,
                line=line,
            )
        else:
            figure(
                "asyncio",
                f"{backend} {name}",
                medians[name],
                "events/s",
                detail="baseline",
                how=HOW_ATTACH,
                line=line,
            )
    figure(
        "asyncio",
        f"{backend} attach, event loop worst gap during (e) and (g)",
        max(gaps) * 1e3,
        "ms",
        detail=f"median of each round's worst {statistics.median(gaps) * 1e3:.1f} ms",
        how=HOW_GAP,
        line=(
            f"  event loop during (e) and (g): worst gap {max(gaps) * 1e3:.1f} ms over all "
            f"rounds, median of each round's worst {statistics.median(gaps) * 1e3:.1f} ms"
        ),
    )


def run_parts(
    parts: set[str], label: str, url: str, keys: gp.KeyRing, rounds: int, saves: int, events: int
) -> None:
    if "saves" in parts:
        bench(label, url, keys, rounds, saves)
    if "attach" in parts:
        bench_attach(label, url, keys, rounds, events)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 15, quick 5)")
    parser.add_argument("--saves", type=int, default=None, help="saves per writer per round")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and saves")
    parser.add_argument(
        "--events", type=int, default=None, help="accepted events per writer per attach round"
    )
    parser.add_argument(
        "--only", default="sqlite,postgresql", help="comma-separated subset of sqlite,postgresql"
    )
    parser.add_argument(
        "--parts", default="saves,attach", help="comma-separated subset of saves,attach"
    )
    args = parser.parse_args()
    chosen = {name.strip() for name in args.only.split(",") if name.strip()}
    if chosen - {"sqlite", "postgresql"}:
        parser.error(f"unknown backend(s) in --only {args.only!r}")
    parts = {name.strip() for name in args.parts.split(",") if name.strip()}
    if not parts or parts - {"saves", "attach"}:
        parser.error(f"unknown part(s) in --parts {args.parts!r}")
    rounds = args.rounds or (5 if args.quick else 15)
    saves = args.saves or (2 if args.quick else 4)
    events = args.events or (5 if args.quick else 20)
    keys = gp.KeyRing.generate()
    if "sqlite" in chosen:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            label = "SQLite (file; WAL, synchronous=FULL)"
            run_parts(parts, label, url, keys, rounds, saves, events)
    if "postgresql" not in chosen:
        return
    given = os.environ.get(POSTGRES_VARIABLE)
    if given:
        run_parts(parts, f"PostgreSQL ({POSTGRES_VARIABLE})", given, keys, rounds, saves, events)
        return
    with postgres_database("async") as found:
        if found is not None:
            label = f"PostgreSQL ({found.describe()}, fsync=off)"
            run_parts(parts, label, found.url, keys, rounds, saves, events)


if __name__ == "__main__":
    main()
