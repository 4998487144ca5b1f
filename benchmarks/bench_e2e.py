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

(2) Scaling: 10,000 states / 10 MB against 1,000 states / 1 MB, save and
restore (target: the larger <= 10.5x the time of the smaller), and the peak
memory a save and a restore allocate on top of what the machine already holds,
measured with tracemalloc, as a multiple of the sealed snapshot's size
(target: <= 3x).
"""

from __future__ import annotations

import argparse
import gc
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
from bench_snapshot import build, side_by_side, timed, unsafe_capture, unsafe_restore  # noqa: E402

import gotstate_persist as gp  # noqa: E402

TARGET_E2E = 1.0
TARGET_SCALE = 10.5
TARGET_MEMORY = 3.0
SECTION = "end-to-end vs by hand"
HOW_HAND = (
    "save_machine / restore_machine on SQLite vs raw state pickled into sqlite3 by hand "
    "(WAL, same synchronous); median call; ours time / by hand"
)
HOW_SCALE = "save_machine / restore_machine of 10,000 states / 10 MB: time / that of 1,000 / 1 MB"
HOW_MEMORY = "tracemalloc peak during one call beyond what was live, / the sealed snapshot's size"


class ByHand:
    """The baseline: pickle into a sqlite3 table, as users write it today."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS machines (key TEXT, version INTEGER, blob BLOB, "
            "PRIMARY KEY (key, version))"
        )
        self.versions: dict[str, int] = {}

    def save(self, key: str, machine: Any) -> None:
        blob = unsafe_capture(machine)
        version = self.versions.get(key, 0) + 1
        self.versions[key] = version
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT INTO machines VALUES (?, ?, ?)", (key, version, blob))
        self.db.execute("COMMIT")

    def restore(self, key: str, machine: Any) -> None:
        (blob,) = self.db.execute(
            "SELECT blob FROM machines WHERE key = ? ORDER BY version DESC LIMIT 1", (key,)
        ).fetchone()
        unsafe_restore(machine, blob)

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


def bench_vs_hand(tmp: Path, rounds: int) -> None:
    keys = gp.KeyRing.generate()
    print("(1) save_machine / restore_machine vs pickle + sqlite3 by hand, same synchronous")
    for synchronous in ("FULL", "NORMAL"):
        url = f"sqlite:///{tmp / f'ours-{synchronous}.db'}"
        hand = ByHand(tmp / f"hand-{synchronous}.db", synchronous)
        with gp.open_store(url, keyring=keys, sqlite_synchronous=synchronous) as store:
            for n_states, data_bytes in ((100, 1_000), (1_000, 100_000)):
                machine = build(n_states, data_bytes)
                target = build(n_states, data_bytes)
                key = f"m{n_states}"
                repeat = 20 if n_states <= 100 else 5
                # warm both sides (WAL growth, caches) before timing
                for _ in range(repeat * 3):
                    hand.save(key, machine)
                    store.save_machine(key, machine)
                operations = (
                    ("save   ", hand.save, store.save_machine, machine),
                    ("restore", hand.restore, store.restore_machine, target),
                )
                for name, by_hand, by_store, subject in operations:
                    base, ours = side_by_side(
                        lambda k=key, f=by_hand, m=subject: f(k, m),
                        lambda k=key, f=by_store, m=subject: f(k, m),
                        rounds,
                        repeat,
                    )
                    size = f"{n_states:>5} states / {data_bytes // 1000:>3} KB"
                    ratio_line(f"{name} {size}, {synchronous}", base, ours, TARGET_E2E)
        hand.close()


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
    with gp.open_store(url, keyring=keys) as store:
        cases = {}
        for n_states, data_bytes in ((1_000, 1_000_000), (10_000, 10_000_000)):
            machine = build(n_states, data_bytes)
            target = build(n_states, data_bytes)
            key = f"s{n_states}"
            store.save_machine(key, machine)
            cases[n_states] = (key, machine, target)
        small, large = cases[1_000], cases[10_000]
        saves: dict[int, list[float]] = {1_000: [], 10_000: []}
        loads: dict[int, list[float]] = {1_000: [], 10_000: []}
        for _ in range(max(3, rounds // 2)):
            for n, (key, machine, target) in ((1_000, small), (10_000, large)):
                saves[n].append(timed(lambda k=key, m=machine: store.save_machine(k, m), 3))
                loads[n].append(timed(lambda k=key, t=target: store.restore_machine(k, t), 3))
        for label, series in (("save_machine", saves), ("restore_machine", loads)):
            s, lg = statistics.median(series[1_000]), statistics.median(series[10_000])
            ratio = lg / s
            flag = "" if ratio <= TARGET_SCALE else "  > target"
            figure(
                SECTION,
                f"scaling {label}, 10,000 vs 1,000 states",
                ratio,
                "x time",
                detail=f"1,000: {s * 1e3:.2f} ms, 10,000: {lg * 1e3:.2f} ms",
                at_most=TARGET_SCALE,
                how=HOW_SCALE,
                line=(
                    f"{label:<16} 1,000: {s * 1e3:8.2f} ms  10,000: {lg * 1e3:8.2f} ms  "
                    f"ratio {ratio:5.2f}x (target <= {TARGET_SCALE}x){flag}"
                ),
            )
        key, machine, target = large
        size = store.versions(key)[-1].size
        for label, fn in (
            ("save_machine", lambda: store.save_machine(key, machine)),
            ("restore_machine", lambda: store.restore_machine(key, target)),
        ):
            extra = peak_extra(fn)
            ratio = extra / size
            flag = "" if ratio <= TARGET_MEMORY else "  > target"
            figure(
                SECTION,
                f"peak extra memory, {label}, 10,000 states",
                ratio,
                "x size",
                detail=f"{extra / 1e6:.1f} MB, snapshot {size / 1e6:.1f} MB",
                at_most=TARGET_MEMORY,
                how=HOW_MEMORY,
                line=(
                    f"{label:<16} 10,000 states: peak extra memory {extra / 1e6:6.1f} MB = "
                    f"{ratio:4.2f}x the snapshot ({size / 1e6:.1f} MB) "
                    f"(target <= {TARGET_MEMORY}x){flag}"
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
        if args.only != "hand":
            bench_scaling(Path(tmp), args.rounds)


if __name__ == "__main__":
    main()
