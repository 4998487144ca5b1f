"""Configuration: ``put``/``get`` against raw SQLite, and watch latency, in one run.

Run with ``.venv/bin/python benchmarks/bench_config.py [--rounds N] [--quick]``.

Figures (issue 14), each side by side with its baseline in the same process,
interleaved round by round (who goes first rotates), medians over rounds:

1. ``cfg.put`` of a ~300 B configuration with five validators, CAS and a
   sealed commit, vs a raw ``sqlite3`` upsert of the same JSON text (one
   ``INSERT ... ON CONFLICT DO UPDATE`` in its own ``BEGIN IMMEDIATE``
   transaction). Both files use WAL and synchronous=FULL (the backend's
   default) and both WALs are grown to their steady size first. Target:
   ratio (put/s over upsert/s) >= 0.5.
2. ``cfg.get`` of the newest version vs a raw ``SELECT`` of the JSON and
   ``json.loads``. Target: ratio >= 0.8.
3. Watch latency, from calling ``cfg.put`` to the watcher receiving the
   version (so it includes the put itself): a writer thread and a ``watch``
   iterator in the same process (woken by the commit), and a writer in
   another process (seen by polling the log every ``poll_s``, 50 ms by
   default). Stated, no target.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import figure  # noqa: E402
from bench_backends import interleaved, same  # noqa: E402

import gotstate_persist as gp  # noqa: E402
from gotstate_persist import rules  # noqa: E402

PUT_TARGET, GET_TARGET = 0.5, 0.8
WAL_WARM_UP_WRITES = 1_500
HOW_RATIO = (
    "cfg.put / cfg.get of a ~300 B configuration vs a raw sqlite3 upsert / select + json.loads, "
    "both WAL and synchronous=FULL, interleaved rounds, median call; raw time / ours"
)
HOW_WATCH = "from calling cfg.put to the watch iterator yielding the version, median; no baseline"


class Payments(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    endpoint: str
    timeout_s: float = 2.0
    retries: int = 3
    currency: str = "EUR"
    api_token: gp.Secret = gp.Secret("")
    notes: str = ""


def https_only(candidate: Payments, previous: Payments | None) -> list[str]:
    return [] if candidate.endpoint.startswith("https://") else ["$.endpoint: must be https"]


VALIDATORS = [
    https_only,
    rules.in_range("$.timeout_s", min=0.1, max=60),
    rules.in_range("$.retries", min=0, max=10),
    rules.one_of("$.currency", ["EUR", "USD", "GBP"]),
    rules.matches("$.endpoint", r"https://[a-z0-9.-]+(/.*)?"),
]


def value(i: int) -> Payments:
    return Payments(
        f"https://pay{i % 7}.example.com/v1",
        timeout_s=1.0 + (i % 5),
        retries=i % 4,
        api_token=gp.Secret(f"tok-{i:08d}"),
        notes="x" * 150,
    )


def raw_sqlite(path: Path) -> sqlite3.Connection:
    raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=FULL")
    raw.execute("CREATE TABLE config (name TEXT PRIMARY KEY, version INTEGER, body TEXT)")
    return raw


def bench_put_get(rounds: int, repeat: int, tmp: Path) -> list[tuple[str, float, float, float]]:
    raw = raw_sqlite(tmp / "raw.db")
    counter = [0]

    def raw_put() -> None:
        counter[0] += 1
        body = json.dumps(msgspec.to_builtins(value(counter[0]), enc_hook=lambda s: "x"))
        raw.execute("BEGIN IMMEDIATE")
        raw.execute(
            "INSERT INTO config VALUES ('payments', 1, ?) ON CONFLICT(name) DO UPDATE SET "
            "version = version + 1, body = excluded.body",
            (body,),
        )
        raw.execute("COMMIT")

    def raw_get() -> Any:
        row = raw.execute("SELECT version, body FROM config WHERE name = 'payments'").fetchone()
        return json.loads(row[1])

    keys = gp.KeyRing.generate()
    with gp.open_store(f"sqlite:///{tmp / 'config.db'}", keyring=keys) as store:
        cfg = store.config
        cfg.define("payments", Payments, validators=VALIDATORS)
        version = [0]

        def ours_put() -> None:
            cfg.put("payments", value(version[0]), expected_version=version[0])
            version[0] += 1

        def ours_get() -> Any:
            return cfg.get("payments")

        for _ in range(WAL_WARM_UP_WRITES):  # both WALs to their steady size
            raw_put()
            ours_put()
        assert cfg.get("payments") == value(version[0] - 1)
        put_raw, put_ours = interleaved([same(raw_put), same(ours_put)], rounds, repeat)
        get_raw, get_ours = interleaved([same(raw_get), same(ours_get)], rounds, repeat * 10)
    raw.close()
    return [
        ("put (5 validators + CAS + seal) vs raw upsert", put_raw, put_ours, PUT_TARGET),
        ("get newest vs raw select + json.loads", get_raw, get_ours, GET_TARGET),
    ]


def _remote_writer(url: str, keys_text: str, count: int, gap_s: float, stamps: Any) -> None:
    with gp.open_store(url, keyring=gp.KeyRing.load(keys_text)) as store:
        cfg = store.config
        cfg.define("payments", Payments, validators=VALIDATORS)
        current = cfg.history("payments")[-1].version
        for i in range(count):
            time.sleep(gap_s)
            stamps.put(time.time())
            cfg.put("payments", value(i), expected_version=current)
            current += 1


def bench_watch(count: int, tmp: Path) -> list[tuple[str, float]]:
    keys = gp.KeyRing.generate()
    url = f"sqlite:///{tmp / 'watch.db'}"
    results = []
    with gp.open_store(url, keyring=keys) as store:
        cfg = store.config
        cfg.define("payments", Payments, validators=VALIDATORS)
        cfg.put("payments", value(0), expected_version=0)
        # same process: a writer thread, the watcher here
        sent: list[float] = []
        seen: list[float] = []

        def writer() -> None:
            for i in range(count):
                time.sleep(0.01)
                sent.append(time.perf_counter())
                cfg.put("payments", value(i + 1), expected_version=i + 1)

        thread = threading.Thread(target=writer)
        thread.start()
        for _ref in cfg.watch("payments", since=1, timeout=2):
            seen.append(time.perf_counter())
            if len(seen) == count:
                break
        thread.join()
        results.append(
            ("same process", statistics.median(b - a for a, b in zip(sent, seen, strict=True)))
        )
        # another process: seen by polling the log
        stamps: Any = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(
            target=_remote_writer, args=(url, keys.export(), count, 0.03, stamps)
        )
        start = cfg.history("payments")[-1].version
        child.start()
        delays = []
        for _ref in cfg.watch("payments", since=start, timeout=30):
            delays.append(time.time() - stamps.get(timeout=30))
            if len(delays) == count:
                break
        child.join(60)
        results.append(("another process (poll_s=0.05)", statistics.median(delays)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls (noisier)")
    args = parser.parse_args()
    rounds, repeat, count = (5, 20, 10) if args.quick else (args.rounds, 50, 30)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"configuration: {rounds} rounds; SQLite (WAL, synchronous=FULL); medians")
        print(f"{'figure':48} {'baseline':>12} {'ours':>12} {'ratio':>7} {'target':>7}  result")
        for label, base, ours, target in bench_put_get(rounds, repeat, Path(tmp)):
            ratio = base / ours
            verdict = "PASS" if ratio >= target else "MISS"
            figure(
                "configuration",
                label,
                ratio,
                "x speed",
                detail=f"raw {base * 1e6:.1f} us, ours {ours * 1e6:.1f} us",
                at_least=target,
                how=HOW_RATIO,
                line=(
                    f"{label:48} {base * 1e6:10.1f}us {ours * 1e6:10.1f}us {ratio:6.2f}x "
                    f"{'>=' + format(target, 'g'):>7}  {verdict}"
                ),
            )
        for label, delay in bench_watch(count, Path(tmp)):
            figure(
                "configuration",
                f"watch latency, {label}",
                delay * 1e3,
                "ms",
                how=HOW_WATCH,
                line=f"watch latency, put() to watcher, {label:31} {delay * 1e3:8.2f} ms",
            )


if __name__ == "__main__":
    main()
