"""Snapshot pipeline and SQLite backend benchmarks, measured side by side in one run.

Run with ``make bench``. Every figure is a ratio against a baseline measured in
the same process on the same data, interleaved round by round, so a noisy,
shared machine moves both sides alike. Targets (issue 4):

(a) vs (b)  capture+encode+seal / open+decode+apply must be no slower than
            the unsafe way: capture the same state and pickle it.
(c)         SQLite backend write/read of the same sealed bytes >= 0.8x raw
            sqlite3 INSERT/SELECT with the same durability (WAL, synchronous=FULL).
            Envelope overhead for AES-256-GCM: 39 bytes.
"""

from __future__ import annotations

import argparse
import pickle
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import msgspec  # noqa: E402
from _report import figure  # noqa: E402
from gotstate.core.events import Event  # noqa: E402
from machines import build_ring_machine, set_data  # noqa: E402

import gotstate_persist as gp  # noqa: E402
from gotstate_persist import machine as adapter  # noqa: E402
from gotstate_persist._gcpause import GC_PAUSE_MIN_BYTES, gc_paused  # noqa: E402
from gotstate_persist.backends.base import to_micros  # noqa: E402
from gotstate_persist.backends.sql import SQLBackend  # noqa: E402
from gotstate_persist.codec import MSGPACK  # noqa: E402
from gotstate_persist.formats import FormatRegistry, MachineSnapshot  # noqa: E402
from gotstate_persist.sealing import open_envelope, seal  # noqa: E402

FORMATS = FormatRegistry()
MACHINE_PAYLOAD = tuple[str, int, MachineSnapshot]


def build(n_states: int, data_bytes: int) -> Any:
    """A started ring machine with roughly ``data_bytes`` of mixed-type state data."""
    machine = build_ring_machine(n_states, groups=10)
    machine.start()
    for name in ("next", "next", "jump", "next"):
        machine.process_event(Event(name))
    leaves = [s.name for s in machine.get_states() if s.name.startswith("s-")]
    item = {
        "customer": "customer-name-0001",
        "qty": 3,
        "price": 19.99,
        "tags": ["a", "b"],
        "flags": (True, None),
    }
    per_item = len(pickle.dumps(item))
    count = max(1, data_bytes // per_item)
    for i in range(count):
        set_data(machine, leaves[i % len(leaves)], f"item-{i}", dict(item, qty=i))
    set_data(machine, leaves[0], "total", Decimal("1234.50"))
    set_data(machine, leaves[0], "when", datetime(2026, 11, 25, tzinfo=UTC))
    return machine


# (a2) What users write by hand today, unsafely: pull out the raw state, pickle it.


def unsafe_capture(machine: Any) -> bytes:
    return pickle.dumps(raw_state(machine), protocol=pickle.HIGHEST_PROTOCOL)


def raw_state(machine: Any) -> dict[str, Any]:
    graph = machine._graph
    current = graph._current_state
    return {
        "current": current.name if current else None,
        "started": machine._started,
        "history": {c.name: s.name for c, s in graph._history._history.items()},
        "data": {s.name: dict(d) for s, d in graph._state_data.items() if d},
    }


def unsafe_restore(machine: Any, blob: bytes) -> None:
    _apply_raw(machine, pickle.loads(blob))


def msgspec_capture(machine: Any) -> bytes:
    """The floor of any msgspec-only design: :func:`unsafe_capture` with msgspec for pickle."""
    return _MSGPACK_ENCODER.encode(raw_state(machine))


def msgspec_restore(machine: Any, blob: bytes) -> None:
    """Lossy (tuples come back as lists, Decimals as str): a floor, not a restore."""
    _apply_raw(machine, _MSGPACK_DECODER.decode(blob))


_MSGPACK_ENCODER = msgspec.msgpack.Encoder()
_MSGPACK_DECODER = msgspec.msgpack.Decoder()


def _apply_raw(machine: Any, state: dict[str, Any]) -> None:
    graph = machine._graph
    by_name = {s.name: s for s in graph._nodes}
    with machine._transition_lock:
        graph._current_state = by_name[state["current"]] if state["current"] else None
        graph._history._history = {by_name[c]: by_name[s] for c, s in state["history"].items()}
        for s, d in graph._state_data.items():
            d.clear()
            d.update(state["data"].get(s.name, {}))
        machine._started = state["started"]


# (a1) The baseline: the same capture (our adapter), pickled.


def adapter_pickle_capture(machine: Any) -> bytes:
    snapshot = adapter.capture(machine, struct_kind=FORMATS.kind_of, max_depth=64)
    return pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)


def adapter_pickle_restore(machine: Any, blob: bytes) -> None:
    snapshot = pickle.loads(blob)
    adapter.apply(machine, snapshot, struct_type=FORMATS.type_for)


# (b) The safe pipeline, layer by layer, exactly as Store.save_machine and
# Store.restore_machine run it (including their GC pause and the restore's
# single typed decode, whose schema bounds the depth), minus storage I/O.


def safe_capture(machine: Any, keys: gp.KeyRing) -> bytes:
    snapshot = adapter.capture(machine, struct_kind=FORMATS.kind_of, max_depth=64)
    payload = MSGPACK.encode(("gotstate.machine", 1, snapshot), depth_checked=True)
    return seal(keys, payload, codec_id=1, namespace="bench", key="m", version=1)


def safe_restore(machine: Any, blob: bytes, keys: gp.KeyRing) -> None:
    _codec, payload = open_envelope(keys, blob, namespace="bench", key="m", version=1)
    with gc_paused(len(payload) >= GC_PAUSE_MIN_BYTES):
        _kind, _version, snapshot = MSGPACK.decode(payload, MACHINE_PAYLOAD, type_bounds_depth=True)
    adapter.apply(machine, snapshot, struct_type=FORMATS.type_for)


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds per call over ``repeat`` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def side_by_side(
    baseline: Callable[[], object], ours: Callable[[], object], rounds: int, repeat: int
) -> tuple[float, float]:
    """Interleave rounds of both, who goes first alternating; (baseline, ours) medians."""
    base: list[float] = []
    mine: list[float] = []
    for r in range(rounds):
        pair = [(baseline, base), (ours, mine)]
        for fn, out in pair if r % 2 == 0 else reversed(pair):
            out.append(timed(fn, repeat))
    return statistics.median(base), statistics.median(mine)


HOW_PIPELINE = (
    "capture+encode+seal (save) / open+decode+apply (load), no storage, vs (a1) the same "
    "capture pickled or (a2) raw state pickled by hand; median call; baseline time / ours"
)
HOW_SQLITE = (
    "SQLBackend put/get of a sealed 1 KB blob vs raw sqlite3 INSERT/SELECT, both WAL and "
    "synchronous=FULL; median call; raw time / ours"
)
HOW_E2E = "open_store(sqlite file).save_machine / restore_machine: calls per second, no baseline"


def report(
    label: str, baseline: float, ours: float, at_least: float | None, name: str = "", how: str = ""
) -> None:
    ratio = baseline / ours
    target = "informational" if at_least is None else f"target >= {at_least:.1f}x"
    figure(
        "snapshot",
        name or label,
        ratio,
        "x speed",
        detail=f"baseline {baseline * 1e6:.1f} us, ours {ours * 1e6:.1f} us",
        at_least=at_least,
        how=how,
        line=(
            f"{label:<54} baseline {baseline * 1e6:9.1f} us  ours {ours * 1e6:9.1f} us  "
            f"speed ratio {ratio:5.2f}x  ({target})"
        ),
    )


def bench_pipeline(rounds: int) -> None:
    keys = gp.KeyRing.generate()
    for n_states, data_bytes in ((100, 1_000), (1_000, 100_000)):
        machine = build(n_states, data_bytes)
        target = build(n_states, data_bytes)
        hand_blob = unsafe_capture(machine)
        pickled = adapter_pickle_capture(machine)
        sealed = safe_capture(machine, keys)
        repeat = 50 if n_states <= 100 else 5
        print(
            f"\n{n_states} states: hand-rolled pickle {len(hand_blob)} B, pickled snapshot "
            f"{len(pickled)} B, sealed snapshot {len(sealed)} B"
        )
        cases = [
            (
                "(a1) save: capture+pickle vs (b) capture+encode+seal",
                lambda m=machine: adapter_pickle_capture(m),
                lambda m=machine: safe_capture(m, keys),
                1.0,
            ),
            (
                "(a1) load: unpickle+apply vs (b) open+decode+apply",
                lambda t=target, b=pickled: adapter_pickle_restore(t, b),
                lambda t=target, b=sealed: safe_restore(t, b, keys),
                1.0,
            ),
            (
                "(a2) save: hand-rolled pickle vs (b)",
                lambda m=machine: unsafe_capture(m),
                lambda m=machine: safe_capture(m, keys),
                None,
            ),
            (
                "(a2) load: hand-rolled unpickle vs (b)",
                lambda t=target, b=hand_blob: unsafe_restore(t, b),
                lambda t=target, b=sealed: safe_restore(t, b, keys),
                None,
            ),
        ]
        for label, baseline, ours, at_least in cases:
            base, mine = side_by_side(baseline, ours, rounds, repeat)
            name = f"{n_states} states: {label}"
            report(label, base, mine, at_least, name, HOW_PIPELINE)


def bench_sqlite(rounds: int) -> None:
    keys = gp.KeyRing.generate()
    payload_1k = b"x" * 1_000
    blob = seal(keys, payload_1k, codec_id=1, namespace="bench", key="k", version=1)
    figure(
        "snapshot",
        "envelope overhead, aes-256-gcm",
        len(blob) - len(payload_1k),
        "B",
        at_most=39,
        how="size of a sealed 1 KB payload minus the payload",
        line=f"\nenvelope overhead aes-256-gcm: {len(blob) - len(payload_1k)} bytes (target 39)",
    )
    with tempfile.TemporaryDirectory() as tmp:
        raw = sqlite3.connect(Path(tmp) / "raw.db", isolation_level=None)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=FULL")
        raw.execute(
            "CREATE TABLE records (namespace TEXT, key TEXT, version INTEGER, kind TEXT, "
            "format_version INTEGER, size INTEGER, created_at_us INTEGER, blob BLOB, "
            "PRIMARY KEY (namespace, key, version))"
        )
        backend = SQLBackend(f"sqlite:///{Path(tmp) / 'ours.db'}")
        counters = {"raw": 0, "ours": 0}
        now_us = to_micros(datetime.now(UTC))

        def raw_write() -> None:
            counters["raw"] += 1
            raw.execute("BEGIN IMMEDIATE")
            raw.execute(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ("bench", "k", counters["raw"], "gotstate.machine", 1, len(blob), now_us, blob),
            )
            raw.execute("COMMIT")

        def our_write() -> None:
            counters["ours"] += 1
            backend.put(
                "bench",
                "k",
                counters["ours"],
                blob,
                kind="gotstate.machine",
                format_version=1,
                created_at_us=now_us,
            )

        # Grow both WAL files to their steady size first: while a WAL is still
        # growing every commit costs more, and the two would grow at different
        # paces (ours writes two tables), distorting the ratio.
        for _ in range(600):
            raw_write()
            our_write()
        base, ours = side_by_side(raw_write, our_write, rounds, 100)
        report("backend write 1 KB blob vs raw sqlite3 INSERT", base, ours, 0.8, how=HOW_SQLITE)

        def raw_read() -> None:
            raw.execute(
                "SELECT key, version, kind, format_version, size, created_at_us, blob "
                "FROM records WHERE namespace=? AND key=? ORDER BY version DESC LIMIT 1",
                ("bench", "k"),
            ).fetchone()

        def our_read() -> None:
            backend.get("bench", "k")

        base, ours = side_by_side(raw_read, our_read, rounds, 200)
        report("backend read 1 KB blob vs raw sqlite3 SELECT", base, ours, 0.8, how=HOW_SQLITE)
        backend.close()
        raw.close()

        url = f"sqlite:///{Path(tmp) / 'e2e.db'}"
        for n_states, data_bytes in ((100, 1_000), (1_000, 100_000)):
            machine = build(n_states, data_bytes)
            target = build(n_states, data_bytes)
            with gp.open_store(url, keyring=keys) as store:
                key = f"m{n_states}"
                store.save_machine(key, machine)
                save_s = timed(lambda s=store, k=key, m=machine: s.save_machine(k, m), 20)
                load_s = timed(lambda s=store, k=key, t=target: s.restore_machine(k, t), 20)
            line = (
                f"end-to-end {n_states:>5} states: save_machine {1 / save_s:8.0f}/s  "
                f"restore_machine {1 / load_s:8.0f}/s"
            )
            for op, seconds in (("save_machine", save_s), ("restore_machine", load_s)):
                figure(
                    "snapshot",
                    f"end-to-end {op}, {n_states} states",
                    1 / seconds,
                    "ops/s",
                    how=HOW_E2E,
                    line=line if op == "restore_machine" else None,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    bench_pipeline(args.rounds)
    bench_sqlite(args.rounds)


if __name__ == "__main__":
    main()
