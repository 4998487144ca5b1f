"""save_machine / restore_machine next to what users write by hand, on SQLite, in one run.

Run with ``make bench`` or ``.venv/bin/python benchmarks/bench_e2e.py [--rounds N]``.

The baseline (issue 16) is what users write today without this library: pull
the active state, the history and every state's data out of the machine into
plain dicts, ``pickle.dumps`` them and INSERT the bytes into a sqlite3
database (WAL, one transaction: BEGIN IMMEDIATE, INSERT, COMMIT); to restore,
SELECT the newest row, ``pickle.loads`` it and assign the dicts back. It keeps
no history of versions it can verify, no exact types, no authentication and no
format version. Ours is ``gp.open_store("sqlite:///...", sqlite_synchronous=S)``
``.save_machine`` / ``.restore_machine``, with the same ``synchronous`` setting
S on both sides (FULL, the default, and NORMAL).

Both sides run interleaved round by round on the same machine objects; each
figure is the median over rounds of the median call, and the ratio printed is
ours / by hand in time per call (issue 16 target: <= 1.00x).

Beside them, for information, a floor: the same by-hand code with msgspec's
MessagePack in place of pickle (no tagging, so tuples come back as lists and
Decimals as strings; no authentication, no versions), measured side by side
with the pickle version. The design allows msgspec only, so whatever this
floor costs over pickle, every design of ours pays too.

(2) Scaling: 10,000 states / 10 MB against 1,000 states / 1 MB, save and
restore (target: the larger <= 10.5x the time of the smaller), and the peak
memory a save and a restore allocate on top of what the machine already holds,
measured with tracemalloc, as a multiple of the sealed snapshot's size
(target: <= 3x); beside them, for information, the scaling and the peak of
the by-hand save and restore of the same machines, as multiples of the same
sizes.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import sqlite3
import statistics
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import figure  # noqa: E402
from bench_snapshot import (  # noqa: E402
    build,
    msgspec_capture,
    msgspec_restore,
    raw_state,
    side_by_side,
    timed,
    unsafe_capture,
    unsafe_restore,
)

import gotstate_persist as gp  # noqa: E402

TARGET_E2E = 1.0
TARGET_SCALE = 10.5
TARGET_MEMORY = 3.0
SECTION = "end-to-end vs by hand"
HOW_HAND = (
    "save_machine / restore_machine on SQLite vs raw state pickled into sqlite3 by hand "
    "(WAL, same synchronous); median call; ours time / by hand"
)
HOW_SCALE = (
    "save_machine / restore_machine (and the by-hand code) of 10,000 states / 10 MB: "
    "time / that of 1,000 / 1 MB"
)
HOW_FLOOR = (
    "the by-hand code with msgspec MessagePack in place of pickle (lossy: no tagging) vs "
    "with pickle, side by side; median call; msgspec time / pickle time"
)
HOW_WALK = (
    "a recursive Python visit calling type() once per value of the raw state (no encoding) "
    "vs pickle.dumps of it, side by side; median call; visit time / pickle time"
)
HOW_MEMORY = "tracemalloc peak during one call beyond what was live, / the sealed snapshot's size"


class ByHand:
    """The baseline: pickle into a sqlite3 table, as users write it today.

    ``serializer="msgspec"``: the floor, msgspec's MessagePack in place of pickle.
    """

    def __init__(self, path: Path, synchronous: str, serializer: str = "pickle") -> None:
        self.dumps, self.loads = (
            (unsafe_capture, unsafe_restore)
            if serializer == "pickle"
            else (msgspec_capture, msgspec_restore)
        )
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS machines (key TEXT, version INTEGER, blob BLOB, "
            "PRIMARY KEY (key, version))"
        )
        self.versions: dict[str, int] = {}

    def save(self, key: str, machine: Any) -> None:
        blob = self.dumps(machine)
        version = self.versions.get(key, 0) + 1
        self.versions[key] = version
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT INTO machines VALUES (?, ?, ?)", (key, version, blob))
        self.db.execute("COMMIT")

    def restore(self, key: str, machine: Any) -> None:
        (blob,) = self.db.execute(
            "SELECT blob FROM machines WHERE key = ? ORDER BY version DESC LIMIT 1", (key,)
        ).fetchone()
        self.loads(machine, blob)

    def close(self) -> None:
        self.db.close()


def ratio_line(label: str, base: float, ours: float, target: float) -> None:
    ratio = ours / base
    flag = "" if ratio <= target else "  > target"
    figure(
        SECTION,
        " ".join(label.split()),
        ratio,
        "x time",
        detail=f"by hand {base * 1e3:.3f} ms, ours {ours * 1e3:.3f} ms",
        at_most=target,
        how=HOW_HAND,
        line=(
            f"{label:<44} by hand {base * 1e3:8.3f} ms  ours {ours * 1e3:8.3f} ms  "
            f"ours/by hand {ratio:5.2f}x (target <= {target:.2f}x){flag}"
        ),
    )


def floor_line(label: str, base: float, floor: float) -> None:
    ratio = floor / base
    figure(
        SECTION,
        f"floor: {' '.join(label.split())}, msgspec by hand",
        ratio,
        "x time",
        detail=f"pickle by hand {base * 1e3:.3f} ms, msgspec by hand {floor * 1e3:.3f} ms",
        how=HOW_FLOOR,
        line=(
            f"{label:<44} pickle  {base * 1e3:8.3f} ms  msgspec {floor * 1e3:8.3f} ms  "
            f"floor/by hand {ratio:5.2f}x (informational)"
        ),
    )


def _visit(value: Any) -> None:
    """Look at the type of every value once, in Python: the least an exact-type save does."""
    kind = type(value)
    if kind is dict:
        for item in value.values():
            _visit(item)
    elif kind is list or kind is tuple:
        for item in value:
            _visit(item)


def bench_walk_floor(rounds: int) -> None:
    """Visiting every value once in Python vs pickle.dumps of the same state, side by side."""
    for n_states, data_bytes in ((100, 1_000), (1_000, 100_000)):
        state = raw_state(build(n_states, data_bytes))
        base, walk = side_by_side(
            lambda s=state: pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL),
            lambda s=state: _visit(s),
            rounds,
            20 if n_states <= 100 else 5,
        )
        ratio = walk / base
        figure(
            SECTION,
            f"floor: one type() per value in Python, {n_states} states",
            ratio,
            "x time",
            detail=f"pickle.dumps {base * 1e6:.1f} us, visit {walk * 1e6:.1f} us",
            how=HOW_WALK,
            line=(
                f"visit every value, {n_states:>5} states   pickle.dumps {base * 1e6:8.1f} us  "
                f"visit {walk * 1e6:8.1f} us  visit/pickle {ratio:5.2f}x (informational)"
            ),
        )


def bench_vs_hand(tmp: Path, rounds: int) -> None:
    keys = gp.KeyRing.generate()
    print("(1) save_machine / restore_machine vs pickle + sqlite3 by hand, same synchronous")
    for synchronous in ("FULL", "NORMAL"):
        url = f"sqlite:///{tmp / f'ours-{synchronous}.db'}"
        hand = ByHand(tmp / f"hand-{synchronous}.db", synchronous)
        floor = ByHand(tmp / f"floor-{synchronous}.db", synchronous, serializer="msgspec")
        with gp.open_store(url, keyring=keys, sqlite_synchronous=synchronous) as store:
            for n_states, data_bytes in ((100, 1_000), (1_000, 100_000)):
                machine = build(n_states, data_bytes)
                target = build(n_states, data_bytes)
                key = f"m{n_states}"
                repeat = 20 if n_states <= 100 else 5
                # warm both sides (WAL growth, caches) before timing
                for _ in range(repeat * 3):
                    hand.save(key, machine)
                    floor.save(key, machine)
                    store.save_machine(key, machine)
                operations = (
                    ("save   ", hand.save, store.save_machine, floor.save, machine),
                    ("restore", hand.restore, store.restore_machine, floor.restore, target),
                )
                for name, by_hand, by_store, by_floor, subject in operations:
                    base, ours = side_by_side(
                        lambda k=key, f=by_hand, m=subject: f(k, m),
                        lambda k=key, f=by_store, m=subject: f(k, m),
                        rounds,
                        repeat,
                    )
                    size = f"{n_states:>5} states / {data_bytes // 1000:>3} KB"
                    ratio_line(f"{name} {size}, {synchronous}", base, ours, TARGET_E2E)
                    base, least = side_by_side(
                        lambda k=key, f=by_hand, m=subject: f(k, m),
                        lambda k=key, f=by_floor, m=subject: f(k, m),
                        rounds,
                        repeat,
                    )
                    floor_line(f"{name} {size}, {synchronous}", base, least)
        hand.close()
        floor.close()


def peak_extra(fn: Callable[[], object]) -> int:
    """Bytes allocated at the peak of ``fn()`` beyond what was live before it."""
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def bench_scaling(tmp: Path, rounds: int) -> None:
    keys = gp.KeyRing.generate()
    print("\n(2) scaling: 10,000 states / 10 MB vs 1,000 states / 1 MB (FULL)")
    url = f"sqlite:///{tmp / 'scale.db'}"
    hand = ByHand(tmp / "scale-hand.db", "FULL")
    with gp.open_store(url, keyring=keys) as store:
        cases = {}
        for n_states, data_bytes in ((1_000, 1_000_000), (10_000, 10_000_000)):
            machine = build(n_states, data_bytes)
            target = build(n_states, data_bytes)
            key = f"s{n_states}"
            store.save_machine(key, machine)
            hand.save(key, machine)
            cases[n_states] = (key, machine, target)
        sides = {
            "save_machine": lambda k, m, t: store.save_machine(k, m),
            "restore_machine": lambda k, m, t: store.restore_machine(k, t),
            "by hand, save": lambda k, m, t: hand.save(k, m),
            "by hand, restore": lambda k, m, t: hand.restore(k, t),
        }
        series: dict[str, dict[int, list[float]]] = {
            label: {1_000: [], 10_000: []} for label in sides
        }
        for _ in range(max(3, rounds // 2)):
            for n, (key, machine, target) in cases.items():
                for label, side in sides.items():
                    series[label][n].append(
                        timed(lambda f=side, k=key, m=machine, t=target: f(k, m, t), 3)
                    )
        for label, times in series.items():
            scaling_line(label, times, None if label.startswith("by hand") else TARGET_SCALE)
        key, machine, target = cases[10_000]
        size = store.versions(key)[-1].size
        for label, side in sides.items():
            extra = peak_extra(lambda f=side: f(key, machine, target))
            memory_line(label, extra, size, None if label.startswith("by hand") else TARGET_MEMORY)
    hand.close()


def scaling_line(label: str, times: dict[int, list[float]], at_most: float | None) -> None:
    small, large = statistics.median(times[1_000]), statistics.median(times[10_000])
    ratio = large / small
    figure(
        SECTION,
        f"scaling {label}, 10,000 vs 1,000 states",
        ratio,
        "x time",
        detail=f"1,000: {small * 1e3:.2f} ms, 10,000: {large * 1e3:.2f} ms",
        at_most=at_most,
        how=HOW_SCALE,
        line=(
            f"{label:<16} 1,000: {small * 1e3:8.2f} ms  10,000: {large * 1e3:8.2f} ms  "
            f"ratio {ratio:5.2f}x {_verdict(ratio, at_most)}"
        ),
    )


def _verdict(ratio: float, at_most: float | None) -> str:
    if at_most is None:
        return "(informational)"
    return f"(target <= {at_most}x)" + ("" if ratio <= at_most else "  > target")


def memory_line(label: str, extra: int, size: int, at_most: float | None) -> None:
    ratio = extra / size
    figure(
        SECTION,
        f"peak extra memory, {label}, 10,000 states",
        ratio,
        "x size",
        detail=f"{extra / 1e6:.1f} MB, snapshot {size / 1e6:.1f} MB",
        at_most=at_most,
        how=HOW_MEMORY,
        line=(
            f"{label:<16} 10,000 states: peak extra memory {extra / 1e6:6.1f} MB = "
            f"{ratio:4.2f}x the snapshot ({size / 1e6:.1f} MB) {_verdict(ratio, at_most)}"
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", choices=("hand", "scale"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "scale":
            bench_vs_hand(Path(tmp), args.rounds)
            bench_walk_floor(args.rounds)
        if args.only != "hand":
            bench_scaling(Path(tmp), args.rounds)


if __name__ == "__main__":
    main()
