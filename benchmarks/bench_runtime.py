"""Auto-persist benchmark (issue 15), measured side by side in one run.

A 1,000-state machine holding ~100 KB of state data processes "next" events
through ``store.attach``. Target: with ``journal=True``, ``snapshot_every=50``
costs at least 10x less per event than ``snapshot_every=1`` (for 49 of 50
events the commit is one small journal append instead of a 100 KB snapshot).
For reference it also prints plain snapshot mode (``journal=False``) and the
request cycle users wrote by hand before (restore -> process_event -> save
with compare-and-set), against the same baseline.

Rounds are interleaved (a block of events on each side per round) so that a
noisy shared machine moves both sides alike; figures are medians of rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _report import figure  # noqa: E402
from bench_snapshot import build  # noqa: E402
from gotstate.core.events import Event  # noqa: E402

import gotstate_persist as gp  # noqa: E402

N_STATES = 1_000
DATA_BYTES = 100_000
NEXT = Event("next")
HOW = (
    "store.attach of a 1,000-state / ~100 KB machine on SQLite, blocks of process_event calls, "
    "interleaved rounds, median; time per event with snapshot_every=1 / this one"
)


def per_event(step: Callable[[], object], events: int) -> float:
    """Seconds per event over a block of ``events`` calls."""
    start = time.perf_counter()
    for _ in range(events):
        step()
    return (time.perf_counter() - start) / events


def attached(store: gp.Store, key: str, **options: Any) -> gp.Attached:
    machine = build(N_STATES, DATA_BYTES)
    store.save_machine(key, machine)  # the key's head: the machine's state now
    return store.attach(machine, key, **options)


def hand_written(store: gp.Store, key: str) -> Callable[[], object]:
    """What a request handler did before attach: restore, process, save with CAS."""
    store.save_machine(key, build(N_STATES, DATA_BYTES))

    def step() -> None:
        machine = build_empty()
        ref = store.restore_machine(key, machine)
        machine.process_event(NEXT)
        store.save_machine(key, machine, expected_version=ref.version)

    return step


def build_empty() -> Any:
    """A fresh machine of the same structure (built once, then rebuilt cheaply)."""
    from machines import build_ring_machine

    return build_ring_machine(N_STATES, groups=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=50, help="events per block")
    args = parser.parse_args()
    keys = gp.KeyRing.generate()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/runtime.db"
        with gp.open_store(url, keyring=keys) as store:
            every1 = attached(store, "every-1", journal=True, snapshot_every=1)
            every50 = attached(store, "every-50", journal=True, snapshot_every=50)
            plain = attached(store, "plain", journal=False)
            manual = hand_written(store, "manual")
            sides: dict[str, Callable[[], object]] = {
                "journal, snapshot_every=1": lambda: every1.process_event(NEXT),
                "journal, snapshot_every=50": lambda: every50.process_event(NEXT),
                "no journal (snapshot per event)": lambda: plain.process_event(NEXT),
                "by hand: restore, process, save(CAS)": manual,
            }
            samples: dict[str, list[float]] = {name: [] for name in sides}
            for _ in range(args.rounds):
                for name, step in sides.items():
                    samples[name].append(per_event(step, args.events))
            medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["journal, snapshot_every=1"]
    print(f"auto-persist, {N_STATES} states, ~{DATA_BYTES // 1000} KB state data, SQLite file")
    for name, seconds in medians.items():
        if name == "journal, snapshot_every=50":  # the target's figure, reported below
            print(f"  {name:<40} {seconds * 1e6:9.1f} us/event  {base / seconds:6.2f}x vs every=1")
            continue
        first = name == "journal, snapshot_every=1"  # the baseline
        figure(
            "runtime",
            f"auto-persist, {name}",
            seconds * 1e6 if first else base / seconds,
            "us/event" if first else "x speed",
            detail="baseline" if first else f"{seconds * 1e6:,.0f} us/event",
            how=HOW,
            line=f"  {name:<40} {seconds * 1e6:9.1f} us/event  {base / seconds:6.2f}x vs every=1",
        )
    ratio = base / medians["journal, snapshot_every=50"]
    verdict = "PASS" if ratio >= 10 else "MISS"
    figure(
        "runtime",
        "auto-persist, journal, snapshot_every=50",
        ratio,
        "x speed",
        detail=f"{medians['journal, snapshot_every=50'] * 1e6:,.0f} us/event",
        at_least=10,
        how=HOW,
        line=(
            f"snapshot_every=50 vs 1 with journal: {ratio:.2f}x per event "
            f"(target >= 10x: {verdict})"
        ),
    )


if __name__ == "__main__":
    main()
