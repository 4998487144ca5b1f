"""Backend I/O benchmarks: every backend next to its raw client, in one run.

Run with ``.venv/bin/python benchmarks/bench_backends.py [--rounds N] [--quick]``.

The same two sealed blobs (1 KB and 100 KB, sealed once) are written with
``put`` and read back with ``get`` through each backend, and the same bytes
are written and read by the backend's raw client with the same durability, in
the same process. Raw and ours run interleaved round by round (who goes first
alternates), each figure is the median over rounds of the median call, and
the ratio is ours/raw in operations per second (issue 5 target: >= 0.8x).

Every write appends version ``last_version + 1`` of a key, as a store does;
the raw clients use the same (namespace, key, version) scheme. Each round
appends to a fresh key, so every key holds the same number of versions
whatever ``--rounds`` is (printed per backend: the object stores list the key
directory on every put and get, so their cost grows with it), and the reads
fetch the newest version of the last round's key.

* SQLite: ``SQLBackend("sqlite:///...")`` vs ``sqlite3`` (WAL, synchronous=FULL,
  BEGIN IMMEDIATE + INSERT + COMMIT per write; SELECT newest by (namespace, key)),
  timed once both WAL files have grown to their steady size.
* PostgreSQL: a throw-away server started by ``tests/_postgres.py``'s own
  helper (loopback only, ``fsync=off`` as in the tests, so commits cost round
  trips, not disk flushes), ``SQLBackend`` vs one psycopg connection: INSERT +
  COMMIT per write, and "+CAS", the same plus the compare-and-set UPDATE of a
  per-key row that ``put`` makes. Reads are compared with psycopg in
  autocommit mode (one round trip) and in transaction mode (BEGIN, SELECT,
  ROLLBACK). Client and server are pinned to two CPUs (``--pg-cpus``): on a
  small VM a loopback round trip otherwise costs 10 or 80 us depending on
  where the scheduler happens to put each connection's server process.
* Local files: ``file://`` vs temporary file + write + flush + fsync,
  ``os.link`` to the final name, unlink, directory fsync; reads: ``os.listdir``
  of the key directory, then open + read of the newest file.
* S3: moto's ``ThreadedMotoServer`` on 127.0.0.1 (in this process) with fake
  credentials, ``s3://`` vs one raw request through the same s3fs client:
  ``pipe_file(mode="create")`` (one conditional PutObject) for writes, one
  GetObject of the known name for reads (s3fs's plain ``cat_file`` would send
  a HEAD first), and for reads of the newest ``ls`` + GetObject too. Rows
  marked "issue 16" carry that issue's targets for plain S3 (object layout 2):
  a write >= 0.3x of one PUT, a known-version ``get(ns, key, version)`` >= 0.9x
  of one GET; "s3 layout 1" rows measure a store of the layout before it,
  side by side. moto's LIST costs about a PUT on a small key and grows with
  the key (and, in moto only, with the bucket), so these ratios mostly count
  requests.
* memory:// and end-to-end ``open_store(...).save_machine/restore_machine`` of a
  100-state machine with ~1 KB of state data: rates only.

No traffic leaves 127.0.0.1. ``--profile`` runs cProfile over our side of
every comparison under the target and prints the hot spots.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import secrets
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import figure, note_postgres  # noqa: E402
from bench_snapshot import build, timed  # noqa: E402

import gotstate_persist as gp  # noqa: E402
from gotstate_persist.backends import open_backend  # noqa: E402
from gotstate_persist.backends.base import Backend, to_micros  # noqa: E402
from gotstate_persist.backends.sql import SQLBackend  # noqa: E402
from gotstate_persist.sealing import envelope_overhead, seal  # noqa: E402

NS = "bench"
KIND = "gotstate.machine"
TARGET = 0.8
#: The marker every release before S3 object layout 2 wrote (bench: "s3 layout 1").
LAYOUT_1_MARKER = b'{"managed_by_catalog":false,"catalog":null,"catalog_id":null}'
#: Issue 16, target 4: plain S3 (no catalog) against one raw request.
WRITE_TARGET_S3 = 0.3
READ_TARGET_S3 = 0.9
SIZES = (("1 KB", 1_000), ("100 KB", 100_000))
NOW_US = to_micros(datetime.now(UTC))
E2E_STATES, E2E_DATA_BYTES = 100, 1_000

Op = Callable[[], object]
OpFactory = Callable[[int], Op]  # round index -> the operation timed in that round
Writer = Callable[[str, int, bytes], object]  # (key, version, blob)


# Timing: interleaved rounds, medians.


def interleaved(sides: Sequence[OpFactory], rounds: int, repeat: int) -> list[float]:
    """Run every side once per round, rotating which goes first; median per side."""
    for make in sides:  # warm up connections, pools, caches, directories
        timed(make(-1), 3)
    per_side: list[list[float]] = [[] for _ in sides]
    for r in range(rounds):
        ops = [make(r) for make in sides]
        shift = r % len(sides)
        for i in [*range(shift, len(sides)), *range(shift)]:
            per_side[i].append(timed(ops[i], repeat))
    return [statistics.median(samples) for samples in per_side]


def appends(write: Writer, blob: bytes, tag: str) -> OpFactory:
    """Each round appends versions 1, 2, 3, ... of its own key ``<tag>-r<round>``."""

    def for_round(r: int) -> Op:
        key = f"{tag}-r{r}"
        version = [0]

        def op() -> None:
            version[0] += 1
            write(key, version[0], blob)

        return op

    return for_round


def same(op: Op) -> OpFactory:
    return lambda _r: op


# Results.


@dataclass
class Row:
    backend: str
    op: str
    size: str
    raw_s: float | None
    ours_s: float
    baseline: str = ""
    ours_factory: OpFactory | None = field(default=None, repr=False)
    repeat: int = 0
    target: float = TARGET

    @property
    def ratio(self) -> float | None:
        return None if self.raw_s is None else self.raw_s / self.ours_s


def _rate(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1 / seconds:,.0f}"


def _ratio(row: Row) -> str:
    ratio = row.ratio
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" + ("  < target" if ratio < row.target else "")


HOW_RATIO = (
    "put / get of the same sealed blob through the backend vs its raw client (named in "
    "'details') at the same durability, interleaved rounds, median call; ours ops/s / raw"
)
HOW_RATE = "operations per second through the backend alone (no raw baseline), median call"


def show(row: Row) -> None:
    raw = "" if row.raw_s is None else f"raw {1 / row.raw_s:9,.0f}/s  "
    ratio = "" if row.ratio is None else f"  ratio {_ratio(row)}"
    note = f"  [{row.baseline}]" if row.baseline else ""
    if row.target != TARGET and row.ratio is not None:
        note += f"  [issue 16 target >= {row.target}x]"
    line = f"  {row.op:<16} {row.size:>7}  {raw}ours {1 / row.ours_s:9,.0f}/s{ratio}{note}"
    name = f"{row.backend} {row.op} {row.size}"
    if row.ratio is None:
        figure(
            "backends", name, 1 / row.ours_s, "ops/s", detail=row.baseline, how=HOW_RATE, line=line
        )
        return
    detail = f"raw {_rate(row.raw_s)}/s, ours {_rate(row.ours_s)}/s; raw: {row.baseline}"
    figure(
        "backends",
        name,
        row.ratio,
        "x speed",
        detail=detail,
        at_least=row.target,
        how=HOW_RATIO,
        line=line,
    )


def _target(row: Row) -> str:
    if row.ratio is None:
        return "-"
    return f">= {row.target}x" + (" (issue 16)" if row.target != TARGET else "")


def table(rows: Sequence[Row]) -> None:
    header = ("backend", "op", "size", "raw ops/s", "ours ops/s", "target", "ratio")
    lines = [
        (r.backend, r.op, r.size, _rate(r.raw_s), _rate(r.ours_s), _target(r), _ratio(r))
        for r in rows
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    aligns = ("<", "<", ">", ">", ">", "<", "<")
    print()
    for line in (header, *lines):
        print(
            "  ".join(
                f"{cell:{a}{w}}" for cell, a, w in zip(line, aligns, widths, strict=True)
            ).rstrip()
        )


@dataclass
class Bench:
    """Run settings, the sealed blobs and the rows measured so far."""

    rounds: int
    scale: float
    profile: bool
    keys: gp.KeyRing
    blobs: dict[str, bytes]
    rows: list[Row] = field(default_factory=list)

    def repeat(self, base: int) -> int:
        return max(5, round(base * self.scale))

    def add(self, row: Row) -> None:
        self.rows.append(row)
        show(row)

    def compare_writes(
        self,
        backend: str,
        raws: Sequence[tuple[str, str, Writer]],
        ours: Backend,
        repeat: int,
        target: float = TARGET,
    ) -> int:
        """Appends of each blob: ``ours.put`` vs each ``(op, baseline, write)``.

        Returns the number of versions each round's key holds afterwards.
        """
        n = self.repeat(repeat)
        print(f"  (each round appends {n} versions to a fresh key)", flush=True)
        for size, blob in self.blobs.items():
            tag = f"w{len(blob)}"
            ours_factory = appends(put_into(ours), blob, tag)
            factories = [appends(write, blob, tag) for _, _, write in raws]
            *raw_times, ours_s = interleaved([*factories, ours_factory], self.rounds, n)
            for (op, baseline, _), raw_s in zip(raws, raw_times, strict=True):
                self.add(Row(backend, op, size, raw_s, ours_s, baseline, ours_factory, n, target))
        return n

    def compare_reads(
        self,
        backend: str,
        raws: Sequence[tuple[str, str, Callable[[str, int], bytes]]],
        ours: Backend,
        repeat: int,
        version: int,
        *,
        known: bool = False,
        target: float = TARGET,
    ) -> None:
        """Reads of the newest ``version``: ours.get vs each ``(op, baseline, read(key, v))``.

        ``known``: ours asks for that version by number (``get(ns, key, version)``),
        else for the newest (``get(ns, key)``).
        """
        for size, blob in self.blobs.items():
            key = f"w{len(blob)}-r{self.rounds - 1}"
            info, stored = ours.get(NS, key)
            if stored != blob or info.version != version:
                raise SystemExit(f"{backend}: ours read back the wrong record of {key!r}")
            for op, _baseline, read in raws:
                if read(key, version) != blob:
                    raise SystemExit(f"{backend}: the raw client of {op!r} read other bytes")
            factories = [same(partial(read, key, version)) for _, _, read in raws]
            asked = (NS, key, version) if known else (NS, key)
            ours_factory = same(partial(ours.get, *asked))
            n = self.repeat(repeat)
            *raw_times, ours_s = interleaved([*factories, ours_factory], self.rounds, n)
            for (op, baseline, _), raw_s in zip(raws, raw_times, strict=True):
                row = Row(backend, op, size, raw_s, ours_s, baseline, ours_factory, n, target)
                self.add(row)

    def rates_only(self, backend: str, ours: Backend, repeat: int) -> None:
        """Writes and reads through ``ours`` alone (no raw baseline)."""
        for size, blob in self.blobs.items():
            tag = f"w{len(blob)}"
            (ours_s,) = interleaved(
                [appends(put_into(ours), blob, tag)], self.rounds, self.repeat(repeat)
            )
            self.add(Row(backend, "write", size, None, ours_s))
            key = f"{tag}-r{self.rounds - 1}"
            (ours_s,) = interleaved(
                [same(partial(ours.get, NS, key))], self.rounds, self.repeat(repeat)
            )
            self.add(Row(backend, "read", size, None, ours_s))

    def end_to_end(
        self,
        backend: str,
        url: str,
        repeat: int,
        warm_up: Callable[[Writer], None] | None = None,
        **options: Any,
    ) -> None:
        """``save_machine`` / ``restore_machine`` of a ~100-state machine through ``open_store``."""
        machine = build(E2E_STATES, E2E_DATA_BYTES)
        target = build(E2E_STATES, E2E_DATA_BYTES)
        with gp.open_store(url, keyring=self.keys, **options) as store:
            if warm_up is not None:
                warm_up(put_into(store.backend))

            def saves(r: int) -> Op:
                key = f"e2e-r{r}"
                return lambda: store.save_machine(key, machine)

            n = self.repeat(repeat)
            (save_s,) = interleaved([saves], self.rounds, n)
            last = f"e2e-r{self.rounds - 1}"
            ref = store.restore_machine(last, target)
            (load_s,) = interleaved(
                [same(lambda: store.restore_machine(last, target))], self.rounds, n
            )
        size = f"{E2E_STATES} st"
        self.add(Row(backend, "save_machine", size, None, save_s, f"sealed {ref.size} B"))
        self.add(Row(backend, "restore_machine", size, None, load_s))

    def profile_slow(self, backend: str) -> None:
        """cProfile our side of each comparison of ``backend`` that is under the target."""
        if not self.profile:
            return
        done: set[int] = set()
        for row in self.rows:
            ratio = row.ratio
            if row.backend != backend or ratio is None or ratio >= row.target:
                continue
            if row.ours_factory is None or id(row.ours_factory) in done:
                continue
            done.add(id(row.ours_factory))
            op = row.ours_factory(self.rounds)  # a fresh key for writes
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(row.repeat):
                op()
            profiler.disable()
            print(f"\n  cProfile, ours: {backend} {row.op} {row.size} x{row.repeat} ({ratio:.2f}x)")
            for order in ("tottime", "cumulative"):
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(12)
                body = out.getvalue().split("ncalls", 1)[-1].rstrip()
                print(f"    by {order}:\n    ncalls" + body.replace("\n", "\n    "))


Compared = tuple[str, str, Writer]
ComparedRead = tuple[str, str, Callable[[str, int], bytes]]


def put_into(backend: Backend) -> Writer:
    def write(key: str, version: int, blob: bytes) -> None:
        backend.put(NS, key, version, blob, kind=KIND, format_version=1, created_at_us=NOW_US)

    return write


# SQLite.

_SQLITE_TABLE = (
    "CREATE TABLE records (namespace TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL, "
    "kind TEXT NOT NULL, format_version INTEGER NOT NULL, size INTEGER NOT NULL, "
    "created_at_us INTEGER NOT NULL, blob BLOB NOT NULL, PRIMARY KEY (namespace, key, version))"
)
_SQLITE_NEWEST = (
    "SELECT key, version, kind, format_version, size, created_at_us, blob "
    "FROM records WHERE namespace = ? AND key = ? ORDER BY version DESC LIMIT 1"
)


def fill_wal(blob: bytes) -> Callable[[Writer], None]:
    """Append enough to grow a SQLite WAL to its steady size before anything is timed.

    Until the WAL first reaches the autocheckpoint size (1,000 pages) every
    commit's fsync also journals the file's new size and costs about twice as
    much; afterwards commits rewrite the same file. Our put writes more pages
    per commit (the bookkeeping row too), so without this it would reach the
    cheap steady state first and look faster than raw sqlite3.
    """

    def warm_up(write: Writer) -> None:
        for version in range(1, 1 + 6_000_000 // len(blob)):  # ~1,500 pages
            write("wal-warm-up", version, blob)

    return warm_up


def bench_sqlite(bench: Bench, tmp: Path) -> None:
    print("\nSQLite (WAL, synchronous=FULL)", flush=True)
    raw = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=FULL")
    raw.execute(_SQLITE_TABLE)
    insert = "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

    def raw_write(key: str, version: int, blob: bytes) -> None:
        raw.execute("BEGIN IMMEDIATE")
        raw.execute(insert, (NS, key, version, KIND, 1, len(blob), NOW_US, blob))
        raw.execute("COMMIT")

    def raw_read(key: str, _version: int) -> bytes:
        row = raw.execute(_SQLITE_NEWEST, (NS, key)).fetchone()
        return bytes(row[6])

    ours = SQLBackend(f"sqlite:///{tmp / 'ours.db'}")
    warm_up = fill_wal(bench.blobs["100 KB"])
    try:
        warm_up(raw_write)
        warm_up(put_into(ours))
        writes = [("write", "sqlite3 BEGIN IMMEDIATE+INSERT+COMMIT", raw_write)]
        written = bench.compare_writes("sqlite", writes, ours, 100)
        reads = [("read", "sqlite3 SELECT newest", raw_read)]
        bench.compare_reads("sqlite", reads, ours, 500, written)
        bench.profile_slow("sqlite")
    finally:
        ours.close()
        raw.close()
    bench.end_to_end("sqlite", f"sqlite:///{tmp / 'e2e.db'}", 20, warm_up)


# PostgreSQL.

_PG_TABLE = (
    'CREATE TABLE raw_records (namespace VARCHAR(255) NOT NULL, "key" VARCHAR(255) NOT NULL, '
    "version BIGINT NOT NULL, kind VARCHAR(64) NOT NULL, format_version INTEGER NOT NULL, "
    "size BIGINT NOT NULL, created_at_us BIGINT NOT NULL, blob BYTEA NOT NULL, "
    'PRIMARY KEY (namespace, "key", version))'
)
# The same shape as the backend's per-key bookkeeping table, for the +CAS baseline.
_PG_KEYS_TABLE = (
    'CREATE TABLE raw_keys (namespace VARCHAR(255) NOT NULL, "key" VARCHAR(255) NOT NULL, '
    "last_version BIGINT NOT NULL, newest BIGINT NOT NULL, kind VARCHAR(64), "
    'PRIMARY KEY (namespace, "key"))'
)
_PG_BUMP = (
    "UPDATE raw_keys SET last_version = %s, newest = %s, kind = %s "
    'WHERE namespace = %s AND "key" = %s AND last_version = %s AND (newest = 0 OR kind = %s)'
)


@contextmanager
def _pin_postgres(admin_url: str, placement: str) -> Iterator[str]:
    """Pin this process and the server's processes to CPUs; yield what was done.

    On a small VM a loopback round trip costs ~10-20 us when client and server
    share a CPU and ~80 us when the server's CPU must be woken up, and the
    scheduler picks per connection: unpinned, two connections of one run can
    differ 4x. Pinning makes every connection alike. The postmaster's
    affinity is inherited by the backends it forks for later connections.
    """
    import psycopg

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []
    if placement == "off" or len(cpus) < 2:
        yield "unpinned"
        return
    with psycopg.connect(admin_url, autocommit=True) as admin:
        row = admin.execute("SHOW data_directory").fetchone()
    assert row is not None
    postmaster = int((Path(row[0]) / "postmaster.pid").read_text().split()[0])
    server_cpu = cpus[1] if placement == "cross" else cpus[0]
    family = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid ...: comm may hold spaces, so split after ")"
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                family.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    client_before = os.sched_getaffinity(0)
    for pid in family:
        try:
            os.sched_setaffinity(pid, {server_cpu})
        except OSError:  # a worker that just exited; nothing else can stop root
            continue
    os.sched_setaffinity(0, {cpus[0]})
    try:
        yield f"client on CPU {cpus[0]}, server on CPU {server_cpu}"
    finally:
        os.sched_setaffinity(0, client_before)


@dataclass
class BenchDatabase:
    """A PostgreSQL database a benchmark may fill and drop."""

    server: Any
    database: str
    url: str
    external: bool

    def describe(self) -> str:
        where = f"external server, database {self.database}" if self.external else "server up"
        return f"{where} on {self.server.host}:{self.server.port}"


@contextmanager
def postgres_database(tag: str) -> Iterator[BenchDatabase | None]:
    """A database for one benchmark (None, after saying why, if PostgreSQL is unavailable).

    The server of ``GOTSTATE_PERSIST_TEST_POSTGRES_URL`` if that is set (a
    throw-away database in it, dropped afterwards), else one started like
    tests/_postgres.py for the run.
    """
    try:
        import psycopg
        from _postgres import (  # type: ignore[import-not-found]
            EXTERNAL_URL_VARIABLE,
            _admin_execute,
            _external,
            _running_server,
            _Unavailable,
        )
    except ImportError as exc:
        print(f"  skipped: {exc}")
        yield None
        return
    with ExitStack() as stack:
        external = os.environ.get(EXTERNAL_URL_VARIABLE)
        try:
            if external:
                server = _external(external)
                database = f"gsp_bench_{tag}_{secrets.token_hex(6)}"
                _admin_execute(server.admin_url, f"CREATE DATABASE {database} TEMPLATE template0")
                stack.callback(
                    _admin_execute, server.admin_url, f"DROP DATABASE {database} WITH (FORCE)"
                )
            else:
                server = stack.enter_context(_running_server())
                database = server.database
        except (_Unavailable, psycopg.Error) as exc:
            print(f"  skipped: {exc}")
            yield None
            return
        note_postgres(server.url(database))
        yield BenchDatabase(server, database, server.url(database), bool(external))


def bench_postgres(bench: Bench, placement: str) -> None:
    print("\nPostgreSQL (server on 127.0.0.1, started like tests/_postgres.py: fsync=off)")
    try:
        import psycopg
        from _postgres import _running_server, _Unavailable  # type: ignore[import-not-found]
    except ImportError as exc:
        print(f"  skipped: {exc}")
        return
    with ExitStack() as stack:
        try:
            server = stack.enter_context(_running_server())
        except _Unavailable as exc:
            print(f"  skipped: {exc}")
            return
        url = server.url(server.database)
        note_postgres(url)
        pinned = stack.enter_context(_pin_postgres(server.admin_url, placement))
        print(f"  server up on 127.0.0.1:{server.port}; {pinned}", flush=True)
        tx = stack.enter_context(psycopg.connect(url))  # transaction mode, as SQLBackend
        auto = stack.enter_context(psycopg.connect(url, autocommit=True))
        auto.execute(_PG_TABLE)
        auto.execute(_PG_KEYS_TABLE)
        insert = "INSERT INTO raw_records VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        newest = (
            'SELECT "key", version, kind, format_version, size, created_at_us, blob FROM '
            'raw_records WHERE namespace = %s AND "key" = %s ORDER BY version DESC LIMIT 1'
        )

        def raw_write(key: str, version: int, blob: bytes) -> None:
            tx.execute(insert, (NS, key, version, KIND, 1, len(blob), NOW_US, blob))
            tx.commit()

        def raw_write_cas(key: str, version: int, blob: bytes) -> None:
            """What the backend's put does, by hand: compare-and-set the key row, insert."""
            key = f"cas-{key}"
            if version == 1:
                tx.execute("INSERT INTO raw_keys VALUES (%s, %s, 1, 1, %s)", (NS, key, KIND))
            else:
                bumped = tx.execute(_PG_BUMP, (version, version, KIND, NS, key, version - 1, KIND))
                if bumped.rowcount != 1:
                    raise RuntimeError(f"raw compare-and-set of {key!r} failed")
            tx.execute(insert, (NS, key, version, KIND, 1, len(blob), NOW_US, blob))
            tx.commit()

        def read_autocommit(key: str, _version: int) -> bytes:
            row = auto.execute(newest, (NS, key)).fetchone()
            assert row is not None
            return bytes(row[6])

        def read_in_transaction(key: str, _version: int) -> bytes:
            row = tx.execute(newest, (NS, key)).fetchone()
            tx.rollback()
            assert row is not None
            return bytes(row[6])

        ours = SQLBackend(url)
        stack.callback(ours.close)
        writes = [
            ("write", "psycopg INSERT+COMMIT", raw_write),
            ("write (raw: +CAS)", "psycopg UPDATE keys row+INSERT+COMMIT", raw_write_cas),
        ]
        written = bench.compare_writes("postgresql", writes, ours, 200)
        reads = [
            ("read", "psycopg autocommit SELECT", read_autocommit),
            ("read (raw: txn)", "psycopg SELECT+ROLLBACK", read_in_transaction),
        ]
        bench.compare_reads("postgresql", reads, ours, 500, written)
        bench.profile_slow("postgresql")
        bench.end_to_end("postgresql", url, 30)


# Local files.


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def bench_files(bench: Bench, tmp: Path) -> None:
    print("\nLocal files (fsync of file and directory)", flush=True)
    raw_root = tmp / "raw-files"
    raw_root.mkdir()

    def raw_write(key: str, version: int, blob: bytes) -> None:
        directory = str(raw_root / key)
        if version == 1:
            os.makedirs(directory, exist_ok=True)
            _fsync_directory(str(raw_root))
        final = os.path.join(directory, f"v{version:010d}")
        temporary = os.path.join(directory, f".tmp-{version}")
        with open(temporary, "xb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, final)
        os.unlink(temporary)
        _fsync_directory(directory)

    def raw_read(key: str, _version: int) -> bytes:
        directory = str(raw_root / key)
        newest = max(name for name in os.listdir(directory) if name.startswith("v"))
        with open(os.path.join(directory, newest), "rb") as handle:
            return handle.read()

    ours = open_backend(f"file://{tmp / 'ours-files'}")
    try:
        writes = [("write", "tmp+write+fsync, link, unlink, dir fsync", raw_write)]
        written = bench.compare_writes("file", writes, ours, 50)
        reads = [("read", "listdir + open/read newest", raw_read)]
        bench.compare_reads("file", reads, ours, 300, written)
        bench.profile_slow("file")
    finally:
        ours.close()
    bench.end_to_end("file", f"file://{tmp / 'e2e-files'}", 20)


# S3 on moto.

_AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "NO_PROXY",
    "no_proxy",
)
FAKE_ACCESS_KEY = "gsp-bench-fake-access-key"
FAKE_SECRET_KEY = "gsp-bench-fake-secret-key"
REGION = "us-east-1"


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3 on a free 127.0.0.1 port, fake credentials only while it runs."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    saved = {name: os.environ.get(name) for name in _AWS_VARIABLES}
    for name in _AWS_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID=FAKE_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=FAKE_SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",  # never ask an instance metadata service
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    try:
        starter = threading.Thread(target=server.start, daemon=True)
        starter.start()
        starter.join(20)
        if starter.is_alive():
            raise RuntimeError("the moto server did not start within 20 s")
        host, bound = server.get_host_and_port()
        if host != "127.0.0.1":
            raise RuntimeError(f"moto bound {host}, not 127.0.0.1")
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def bench_s3(bench: Bench) -> None:
    print("\nS3 (moto ThreadedMotoServer on 127.0.0.1, in this process)", flush=True)
    try:
        import boto3
        import s3fs
        from fsspec.asyn import sync
    except ImportError as exc:
        print(f"  skipped: {exc}")
        return
    with moto_s3() as endpoint:
        options: dict[str, Any] = {
            "endpoint_url": endpoint,
            "key": FAKE_ACCESS_KEY,
            "secret": FAKE_SECRET_KEY,
            "client_kwargs": {"region_name": REGION},
        }
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=FAKE_ACCESS_KEY,
            aws_secret_access_key=FAKE_SECRET_KEY,
        )
        for bucket in ("gsp-bench-raw", "gsp-bench-ours", "gsp-bench-e2e"):
            client.create_bucket(Bucket=bucket)
        fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **options)

        def raw_clients(root: str) -> tuple[list[Compared], list[ComparedRead], ComparedRead]:
            """Raw s3fs writes and reads under their own ``root``, like ours: one request
            each (and ``ls`` + GET for the newest)."""
            bucket, prefix = root.split("/", 1)

            def raw_write(key: str, version: int, blob: bytes) -> None:
                fs.pipe_file(f"{root}/{key}/v{version:010d}", blob, mode="create")

            def get_object(path: str) -> bytes:
                answer = fs.call_s3("get_object", Bucket=bucket, Key=path)
                body = answer["Body"]
                try:
                    return bytes(sync(fs.loop, body.read))
                finally:
                    body.close()

            def raw_get(key: str, version: int) -> bytes:
                return get_object(f"{prefix}/{key}/v{version:010d}")

            def raw_list_get(key: str, _version: int) -> bytes:
                newest = max(fs.ls(f"{root}/{key}", detail=False))
                return get_object(newest.split("/", 1)[1])

            writes: list[Compared] = [("write", "s3fs pipe_file(mode='create')", raw_write)]
            reads: list[ComparedRead] = [
                ("read newest", "one GetObject of the known name", raw_get),
                ("read (raw: ls)", "s3fs ls + GetObject of the newest", raw_list_get),
            ]
            return writes, reads, ("read known", "one GetObject of the known name", raw_get)

        writes, reads, known = raw_clients("gsp-bench-raw/state")
        ours = open_backend("s3://gsp-bench-ours/state", **options)
        try:
            written = bench.compare_writes("s3", writes, ours, 30, target=WRITE_TARGET_S3)
            bench.compare_reads("s3", [known], ours, 60, written, known=True, target=READ_TARGET_S3)
            bench.compare_reads("s3", reads, ours, 60, written)
            bench.profile_slow("s3")
        finally:
            ours.close()
        bench.end_to_end("s3", "s3://gsp-bench-e2e/state", 10, None, **options)
        # Before issue 16: the same on a store of object layout 1 (as earlier releases
        # made it: their marker at the root), against the same raw requests.
        client.create_bucket(Bucket="gsp-bench-layout1")
        client.put_object(
            Bucket="gsp-bench-layout1", Key="state/gotstate-persist.json", Body=LAYOUT_1_MARKER
        )
        writes, _reads, known = raw_clients("gsp-bench-raw/layout1")
        ours = open_backend("s3://gsp-bench-layout1/state", **options)
        try:
            written = bench.compare_writes("s3 layout 1", writes, ours, 30)
            bench.compare_reads("s3 layout 1", [known], ours, 60, written, known=True)
        finally:
            ours.close()
        # The same bucket layout question answered by a catalog: versions and
        # usage in SQLite, one request per blob.
        for bucket in ("gsp-bench-catalog", "gsp-bench-catalog-e2e"):
            client.create_bucket(Bucket=bucket)
        writes, reads, known = raw_clients("gsp-bench-raw/catalog")
        with tempfile.TemporaryDirectory(prefix="gsp-bench-catalog-") as where:
            catalog = {**options, "catalog": f"sqlite:///{where}/catalog.db"}
            ours = open_backend("s3://gsp-bench-catalog/state", **catalog)
            try:
                written = bench.compare_writes("s3+catalog", writes, ours, 30)
                bench.compare_reads("s3+catalog", [known], ours, 60, written, known=True)
                bench.compare_reads("s3+catalog", reads, ours, 60, written)
                bench.profile_slow("s3+catalog")
            finally:
                ours.close()
            catalog["catalog"] = f"sqlite:///{where}/e2e.db"
            bench.end_to_end("s3+catalog", "s3://gsp-bench-catalog-e2e/state", 10, None, **catalog)


# memory://


def bench_memory(bench: Bench) -> None:
    print("\nmemory:// (rates only)", flush=True)
    url = f"memory://gsp-bench-{os.getpid()}"
    ours = open_backend(url)
    try:
        bench.rates_only("memory", ours, 50)
    finally:
        ours.close()
    bench.end_to_end("memory", f"{url}-e2e", 20)


# Main.


def _terminate(_signum: int, _frame: object) -> None:
    raise SystemExit(143)  # unwind, so servers are stopped and files removed


BACKENDS = ("sqlite", "postgresql", "file", "s3", "memory")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 7, quick 3)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls (< 1 min)")
    parser.add_argument(
        "--only", default=",".join(BACKENDS), help=f"comma-separated subset of {BACKENDS}"
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile our side of comparisons under 0.8x"
    )
    parser.add_argument(
        "--pg-cpus",
        choices=("cross", "same", "off"),
        default="cross",
        help="pin PostgreSQL client and server to different CPUs (default), one CPU, or not",
    )
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    rounds = args.rounds or (3 if args.quick else 7)
    signal.signal(signal.SIGTERM, _terminate)

    keys = gp.KeyRing.generate()
    overhead = envelope_overhead(keys.algorithm)
    blobs = {
        label: seal(keys, os.urandom(size - overhead), codec_id=1, namespace=NS, key="k", version=1)
        for label, size in SIZES
    }
    bench = Bench(rounds, 0.3 if args.quick else 1.0, args.profile, keys, blobs)
    print(
        f"{rounds} rounds; sealed blobs of {', '.join(f'{len(b):,} B' for b in blobs.values())} "
        f"({keys.algorithm}); ratio = ours/raw ops per second, target >= {TARGET}x"
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gsp-bench-") as name:
        tmp = Path(name)
        sections: dict[str, Callable[[], None]] = {
            "sqlite": lambda: bench_sqlite(bench, tmp),
            "postgresql": lambda: bench_postgres(bench, args.pg_cpus),
            "file": lambda: bench_files(bench, tmp),
            "s3": lambda: bench_s3(bench),
            "memory": lambda: bench_memory(bench),
        }
        for backend in chosen:
            section_start = time.perf_counter()
            sections[backend]()
            print(f"  ({time.perf_counter() - section_start:.0f} s)", flush=True)
    table(bench.rows)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
