"""Bulk migration: ``Store.migrate`` of many small records on SQLite and PostgreSQL.

Run with ``.venv/bin/python benchmarks/bench_migrate.py [--records N] [--quick]``.

Issue 7 target: at least 20,000 records/s on SQLite, with memory flat in the
record count. Each backend gets N records (default 200,000; ``--quick``
20,000) of kind ``"order"`` in format version 1: ``OrderV1`` (3 fields, 83-87 B
sealed; 100 B as version 2), N/4 keys x 4 versions each. They are written through the
backend's ``put`` as sealed blobs, exactly as ``Store.save`` stores them
(SQLite with ``synchronous=OFF`` while populating); populating is not
timed.

Then a fresh child process opens the store with a registry whose version 2
adds one field by upcast (``OrderV2``, ``currency="EUR"``) and times
``store.migrate("order", batch_size=1000)``: the store as an application opens
it (SQLite: WAL, ``synchronous=FULL``, the default). Memory is measured in
that child, so population and earlier runs do not count:

* ``ru_maxrss`` before and after the migration (peak RSS of the process; it
  cannot be reset, so it reads 0 when the migration stays under the peak the
  child reached while importing and opening the store);
* ``VmHWM`` of ``/proc/self/status``, its peak reset just before the
  migration (``/proc/self/clear_refs``), minus ``VmRSS`` at that moment.

The table's "RSS growth" is the larger of the two. To show that memory stays
flat, every backend is also run with N/4 records (in its own namespace of the
same database): the growth at N should be no more than at N/4 plus a little
("flat" = at most 4 MB more, i.e. no per-record state is kept).

Afterwards (not timed) every record of the namespace must be format 2 (a
second ``migrate`` finds them all current) and a sample of records loads as
``OrderV2``. ``--profile`` runs the timed migrations under cProfile (rates are
then not comparable) and prints the hot spots.

* SQLite: one database file in a temporary directory.
* PostgreSQL: a throw-away server started by ``tests/_postgres.py``'s helper
  (loopback only, ``fsync=off``), client and server pinned to CPUs as in
  bench_backends (``--pg-cpus``); or the server of
  ``GOTSTATE_PERSIST_TEST_POSTGRES_URL`` if that is set (not pinned). If
  neither is available the section prints why and is skipped.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import figure  # noqa: E402
from bench_backends import _pin_postgres, _terminate, postgres_database  # noqa: E402

import gotstate_persist as gp  # noqa: E402
from gotstate_persist.backends.base import Backend, to_micros  # noqa: E402
from gotstate_persist.backends.sql import SQLBackend  # noqa: E402
from gotstate_persist.codec import codec_by_name  # noqa: E402
from gotstate_persist.sealing import seal  # noqa: E402

KIND = "order"
VERSIONS_PER_KEY = 4
BATCH_SIZE = 1000
SQLITE_TARGET = 20_000  # records/s
FLAT_MB = 4.0  # RSS growth at N may exceed that at N/4 by this much and still be flat
SAMPLE = 200  # records loaded back after each run
NOW_US = to_micros(datetime.now(UTC))
HOW_RATE = (
    "Store.migrate of N small records V1 -> V2 by upcast, batch_size=1000, timed in a fresh "
    "child process; records / seconds; no baseline"
)
HOW_FLAT = "peak RSS growth of the child during the migration at N minus that at N/4"
_KEYS_VARIABLE = "GSP_BENCH_MIGRATE_KEYS"  # the child's keyring (never on argv)
_URL_VARIABLE = "GSP_BENCH_MIGRATE_URL"  # the child's URL (holds a password)


class OrderV1(msgspec.Struct, frozen=True):
    id: str
    qty: int
    price_cents: int


class OrderV2(msgspec.Struct, frozen=True):
    id: str
    qty: int
    price_cents: int
    currency: str


def to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "currency": "EUR"}


def registry() -> gp.FormatRegistry:
    formats = gp.FormatRegistry()
    formats.register(OrderV1, kind=KIND)
    formats.register(OrderV2, kind=KIND, version=2, upcast=to_v2)
    return formats


def key_of(i: int) -> str:
    return f"order-{i:07d}"


def record_of(i: int, version: int) -> OrderV1:
    return OrderV1(key_of(i), version, 100 * i + version)


# Populating (not timed).


def populate(backend: Backend, keys: gp.KeyRing, namespace: str, records: int) -> float:
    """Write ``records`` version-1 records as sealed blobs; returns the seconds it took.

    Keys ``0 .. records/4 - 1``, each with versions 1..4, written key by key.
    Blobs are made one at a time: nothing is kept, so the parent's memory
    does not grow with N.
    """
    codec = codec_by_name("msgpack")
    started = time.perf_counter()
    for i in range(-(-records // VERSIONS_PER_KEY)):
        key = key_of(i)
        for version in range(1, min(VERSIONS_PER_KEY, records - i * VERSIONS_PER_KEY) + 1):
            payload = codec.encode((KIND, 1, record_of(i, version)))
            blob = seal(
                keys, payload, codec_id=codec.id, namespace=namespace, key=key, version=version
            )
            backend.put(
                namespace, key, version, blob, kind=KIND, format_version=1, created_at_us=NOW_US
            )
    seconds = time.perf_counter() - started
    stored = backend.usage(namespace).records
    if stored != records:
        raise SystemExit(f"populating {namespace!r} stored {stored:,} records, not {records:,}")
    return seconds


# The timed migration, in a child process.


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(url: str, namespace: str, records: int, profile: bool) -> dict[str, Any]:
    keys = gp.KeyRing.load(os.environ[_KEYS_VARIABLE])
    with gp.open_store(url, namespace=namespace, keyring=keys, formats=registry()) as store:
        if store.usage().records != records:
            raise SystemExit(f"{namespace!r} holds {store.usage().records:,} records")
        profiler = cProfile.Profile() if profile else None
        reset = _reset_peak()
        rss_before = _status_kb("VmRSS")
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        report = store.migrate(KIND, batch_size=BATCH_SIZE)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - started
        maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        hwm_after = _status_kb("VmHWM")
        problems = _verify(store, report, records)
    hwm_growth = None
    if reset and hwm_after is not None and rss_before is not None:
        hwm_growth = (hwm_after - rss_before) / 1024
    result = {
        "seconds": seconds,
        "migrated": report.migrated,
        "maxrss_growth_mb": (maxrss_after - maxrss_before) / 1024,
        "hwm_growth_mb": hwm_growth,
        "rss_before_mb": None if rss_before is None else rss_before / 1024,
        "problems": problems,
        "profile": None,
    }
    if profiler is not None:
        result["profile"] = _hot_spots(profiler)
    return result


def _verify(store: gp.Store, report: Any, records: int) -> list[str]:
    """Every record rewritten once, all format 2 now, a sample loads as OrderV2."""
    problems = []
    if report.failed:
        problems.append(f"{len(report.failed)} failed, first: {report.failed[0]}")
    if (report.scanned, report.migrated, report.already_current) != (records, records, 0):
        problems.append(
            f"scanned {report.scanned:,}, migrated {report.migrated:,}, "
            f"already current {report.already_current:,}; expected {records:,} migrated"
        )
    again = store.migrate(KIND, dry_run=True)
    if (again.already_current, again.migrated) != (records, 0):
        problems.append(
            f"a second run found {again.already_current:,} current, {again.migrated:,} to migrate"
        )
    key_count = -(-records // VERSIONS_PER_KEY)
    chosen = random.Random(records).sample(range(key_count), min(SAMPLE, key_count))
    for i in chosen:
        refs = store.versions(key_of(i))
        if [ref.format_version for ref in refs] != [2] * len(refs):
            problems.append(f"{key_of(i)}: format versions {[r.format_version for r in refs]}")
            break
        ref = refs[-1]
        loaded = store.load(key_of(i), version=ref.version)
        expected = OrderV2(**msgspec.structs.asdict(record_of(i, ref.version)), currency="EUR")
        if loaded != expected:
            problems.append(f"{key_of(i)} v{ref.version} loaded as {loaded!r}")
            break
    return problems


def _hot_spots(profiler: cProfile.Profile) -> str:
    parts = []
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(18)
        body = out.getvalue().split("ncalls", 1)[-1].rstrip()
        parts.append(f"    by {order}:\n    ncalls" + body.replace("\n", "\n    "))
    return "\n".join(parts)


def run_child(
    url: str, keys: gp.KeyRing, namespace: str, records: int, profile: bool
) -> dict[str, Any]:
    """Time one migration in a fresh interpreter (its own peak RSS)."""
    env = {**os.environ, _KEYS_VARIABLE: keys.export(), _URL_VARIABLE: url}
    argv = [sys.executable, __file__, "--child", namespace, "--records", str(records)]
    if profile:
        argv.append("--profile")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the migration child failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# Results.


@dataclass
class Result:
    backend: str
    records: int
    seconds: float
    growth_mb: float  # max of ru_maxrss growth and VmHWM growth
    maxrss_mb: float
    hwm_mb: float | None
    problems: list[str]
    profiled: bool = False

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def target(self) -> str:
        return f">= {SQLITE_TARGET:,}/s" if self.backend == "sqlite" else "-"

    @property
    def met(self) -> str:
        if self.backend != "sqlite":
            return "-"
        if self.profiled:
            return "n/a (cProfile)"
        return "yes" if self.rate >= SQLITE_TARGET else "NO"


def measure(
    backend: str,
    url: str,
    keys: gp.KeyRing,
    sizes: Sequence[int],
    profile: bool,
    populate_with: Backend,
    timing: Callable[[], AbstractContextManager[str]] = lambda: nullcontext(""),
) -> list[Result]:
    """Populate a namespace per size, then time each migration inside ``timing()``."""
    for records in sizes:
        took = populate(populate_with, keys, f"migrate-{records}", records)
        print(
            f"  {records:,} records populated in {took:.1f} s ({records / took:,.0f}/s, not timed)",
            flush=True,
        )
    results = []
    with timing() as note:
        if note:
            print(f"  {note}", flush=True)
        for records in sizes:
            results.append(run(backend, url, keys, records, profile))
    return results


def run(backend: str, url: str, keys: gp.KeyRing, records: int, profile: bool) -> Result:
    out = run_child(url, keys, f"migrate-{records}", records, profile)
    if out["migrated"] != records:
        out["problems"].insert(0, f"migrated {out['migrated']:,} of {records:,}")
    growths = [g for g in (out["maxrss_growth_mb"], out["hwm_growth_mb"]) if g is not None]
    row = Result(
        backend,
        records,
        out["seconds"],
        max(growths),
        out["maxrss_growth_mb"],
        out["hwm_growth_mb"],
        out["problems"],
        profile,
    )
    hwm = "n/a" if row.hwm_mb is None else f"{row.hwm_mb:.1f} MB"
    figure(
        "migrate",
        f"{backend} {records:,} records",
        row.rate,
        "records/s",
        detail=f"{row.seconds:.2f} s; RSS growth {row.growth_mb:.1f} MB"
        + ("" if not row.problems else "; verification FAILED"),
        at_least=SQLITE_TARGET if backend == "sqlite" and not profile else None,
        how=HOW_RATE,
        line=(
            f"  migrate {records:,}: {row.seconds:.2f} s, {row.rate:,.0f} records/s "
            f"({row.seconds / records * 1e6:.1f} us/record); RSS growth: ru_maxrss "
            f"{row.maxrss_mb:.1f} MB, VmHWM {hwm} (RSS before {out['rss_before_mb']:.1f} MB); "
            f"verified: {'ok' if not row.problems else '; '.join(row.problems)}"
        ),
    )
    if out["profile"]:
        print(f"\n  cProfile, {backend} migrate of {records:,} records:\n{out['profile']}\n")
    return row


def bench_sqlite(keys: gp.KeyRing, tmp: Path, sizes: Sequence[int], profile: bool) -> list[Result]:
    print("\nSQLite (one file in a temp dir; WAL, synchronous=FULL while migrating)", flush=True)
    path = tmp / "migrate.db"
    filler = SQLBackend(f"sqlite:///{path}", sqlite_synchronous="OFF")
    try:
        return measure("sqlite", f"sqlite:///{path}", keys, sizes, profile, filler)
    finally:
        filler.close()


def bench_postgres(
    keys: gp.KeyRing, sizes: Sequence[int], profile: bool, placement: str
) -> list[Result]:
    print("\nPostgreSQL (server on 127.0.0.1, started like tests/_postgres.py: fsync=off)")
    with postgres_database("migrate") as found, ExitStack() as stack:
        if found is None:
            return []
        if found.external:
            placement = "off"  # its processes are not ours to pin
        url = found.url
        server = found.server
        filler = SQLBackend(url)
        stack.callback(filler.close)
        print(f"  {found.describe()}", flush=True)
        # Populated unpinned (both CPUs), timed pinned: the child inherits this
        # process's CPU, the server's backends the postmaster's.
        return measure(
            "postgresql",
            url,
            keys,
            sizes,
            profile,
            filler,
            lambda: _pin_postgres(server.admin_url, placement),
        )


def flatness(results: Sequence[Result]) -> None:
    """Per backend: RSS growth at N vs at N/4."""
    for backend in dict.fromkeys(r.backend for r in results):
        rows = sorted((r for r in results if r.backend == backend), key=lambda r: r.records)
        if len(rows) < 2:
            continue
        small, large = rows[0], rows[-1]
        extra = large.growth_mb - small.growth_mb
        per_record = extra * 2**20 / (large.records - small.records)
        verdict = "flat" if extra <= FLAT_MB else "NOT flat"
        figure(
            "migrate",
            f"{backend} memory: RSS growth at {large.records:,} - at {small.records:,}",
            extra,
            "MB",
            detail=f"{small.growth_mb:.1f} MB vs {large.growth_mb:.1f} MB",
            at_most=FLAT_MB,
            how=HOW_FLAT,
            line=(
                f"{backend}: RSS growth {small.growth_mb:.1f} MB at {small.records:,} records, "
                f"{large.growth_mb:.1f} MB at {large.records:,}: {extra:+.1f} MB "
                f"({per_record:+.1f} B per extra record) -> {verdict} (<= {FLAT_MB:.0f} MB more)"
            ),
        )


def table(results: Sequence[Result]) -> None:
    header = (
        "backend",
        "records",
        "seconds",
        "records/s",
        "target",
        "met?",
        "RSS growth MB",
        "verified",
    )
    lines = [
        (
            r.backend,
            f"{r.records:,}",
            f"{r.seconds:.2f}",
            f"{r.rate:,.0f}",
            r.target,
            r.met,
            f"{r.growth_mb:.1f}",
            "ok" if not r.problems else "FAILED",
        )
        for r in results
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
    aligns = ("<", ">", ">", ">", "<", "<", ">", "<")
    print()
    for line in (header, *lines):
        print(
            "  ".join(
                f"{cell:{a}{w}}" for cell, a, w in zip(line, aligns, widths, strict=True)
            ).rstrip()
        )
    flatness(results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--records", type=int, default=None, help="records per backend (default 200,000)"
    )
    parser.add_argument("--quick", action="store_true", help="20,000 records (< 1 min)")
    parser.add_argument(
        "--only", default="sqlite,postgresql", help="comma-separated subset of sqlite,postgresql"
    )
    parser.add_argument(
        "--profile", action="store_true", help="run the migrations under cProfile, print hot spots"
    )
    parser.add_argument(
        "--pg-cpus",
        choices=("cross", "same", "off"),
        default="cross",
        help="pin PostgreSQL client and server to different CPUs (default), one CPU, or not",
    )
    parser.add_argument("--child", metavar="NAMESPACE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    records = args.records or (20_000 if args.quick else 200_000)
    if records < 4 * VERSIONS_PER_KEY:
        parser.error(f"--records must be at least {4 * VERSIONS_PER_KEY}")
    if args.child:
        out = child(os.environ[_URL_VARIABLE], args.child, records, args.profile)
        print(json.dumps(out))
        return
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    if set(chosen) - {"sqlite", "postgresql"}:
        parser.error(f"unknown backend(s) in --only {args.only!r}")
    signal.signal(signal.SIGTERM, _terminate)
    keys = gp.KeyRing.generate()
    sizes = (records // 4, records)
    print(
        f"Store.migrate of {' and '.join(f'{n:,}' for n in sizes)} small '{KIND}' records "
        f"(V1 -> V2 by upcast; {VERSIONS_PER_KEY} versions per key; batch_size={BATCH_SIZE}; "
        f"{keys.algorithm}){'; under cProfile' if args.profile else ''}"
    )
    started = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="gsp-bench-migrate-") as name:
        for backend in chosen:
            section = time.perf_counter()
            if backend == "sqlite":
                results += bench_sqlite(keys, Path(name), sizes, args.profile)
            else:
                results += bench_postgres(keys, sizes, args.profile, args.pg_cpus)
            print(f"  ({time.perf_counter() - section:.0f} s)", flush=True)
    if results:
        table(results)
    print(f"\n{time.perf_counter() - started:.0f} s")
    if any(r.problems for r in results):
        raise SystemExit("verification FAILED (see above)")


if __name__ == "__main__":
    main()
