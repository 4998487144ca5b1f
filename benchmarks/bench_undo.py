"""What a checkpoint costs per event, next to a full capture of the same machine.

Run with ``python benchmarks/bench_undo.py``; it prints and asserts nothing.
An attachment takes a checkpoint (``machine.checkpoint``) around every event
so it can put the machine back if the commit fails; runtime.md's journaled
attachment needs that per-event overhead to be a small fraction (~1/10) of a
snapshot save. The machine is ``bench_snapshot.build(1000, 100_000)``: 1,000
states, ~100 KB of state data. Figures are best-of ``--rounds`` rounds, each
the median of ``--repeat`` calls, the variants interleaved round by round so a
noisy, shared machine moves them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from _report import figure
from bench_snapshot import FORMATS, build
from gotstate.core.events import Event

from gotstate_persist import machine as adapter

N_STATES = 1000
DATA_BYTES = 100_000
NEXT = Event("next")
HOW_TIME = "best round of the median call, variants interleaved; 1,000 states / ~100 KB"
HOW_RATIO = "checkpoint overhead per event (with it - without it) / one full capture: x time"


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds per call over ``repeat`` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def best_of(
    variants: dict[str, Callable[[], object]], rounds: int, repeat: int
) -> dict[str, float]:
    """Interleave rounds of every variant; each one's best round."""
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):
        for name, fn in variants.items():
            best[name] = min(best[name], timed(fn, repeat))
    return best


def touching(machine: Any) -> Any:
    """Give every leaf an entry action that writes its own data (a first touch per event)."""
    graph = machine._graph
    for state in machine.get_states():
        if state.name.startswith("s-"):
            state.entry_actions.append(
                lambda state=state: graph.set_state_data(state, "visited", True)
            )
    return machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()

    plain = build(N_STATES, DATA_BYTES)
    touched = touching(build(N_STATES, DATA_BYTES))

    def capture() -> None:
        adapter.capture(plain, struct_kind=FORMATS.kind_of, max_depth=64)

    def around(machine: Any, *, rollback: bool = False) -> Callable[[], None]:
        def run() -> None:
            point = adapter.checkpoint(machine)
            machine.process_event(NEXT)
            if rollback:
                point.rollback()
            else:
                point.close()

        return run

    def bare() -> None:
        point = adapter.checkpoint(plain)
        point.close()

    variants: dict[str, Callable[[], object]] = {
        "capture": capture,
        "event": lambda: plain.process_event(NEXT),
        "checkpoint+event+close": around(plain),
        "checkpoint+close": bare,
        "touching event": lambda: touched.process_event(NEXT),
        "checkpoint+touching event+close": around(touched),
        "checkpoint+touching event+rollback": around(touched, rollback=True),
    }
    best = best_of(variants, args.rounds, args.repeat)
    for name, seconds in best.items():
        figure(
            "undo",
            name,
            seconds * 1e6,
            "us",
            how=HOW_TIME,
            line=f"{name:<38} {seconds * 1e6:9.1f} us",
        )
    cap = best["capture"]
    overhead = best["checkpoint+event+close"] - best["event"]
    touch_overhead = best["checkpoint+touching event+close"] - best["touching event"]
    ratios = {
        "checkpoint+close / capture": best["checkpoint+close"] / cap,
        "per-event overhead, no data touched / capture": overhead / cap,
        "per-event overhead, one state touched / capture": touch_overhead / cap,
    }
    for name, ratio in ratios.items():
        figure(
            "undo",
            name,
            ratio,
            "x time",
            detail=f"{ratio:.4f}",
            how=HOW_RATIO,
            line=f"{name:<50} {ratio:.4f}",
        )


if __name__ == "__main__":
    main()
