"""Backend I/O benchmarks: every backend next to its raw client, in one run.

Run with ``.venv/bin/python benchmarks/bench_backends.py [--rounds N] [--quick]``.

The same two sealed blobs (1 KB and 100 KB, sealed once) are written with
``put`` and read back with ``get`` through each backend, and the same bytes
are written and read by the backend's raw client with the same durability, in
the same process. Raw and ours run interleaved round by round (who goes first
alternates), each figure is the median over rounds of the median call, and
the ratio is ours/raw in operations per second (issue 5 target: >= 0.8x).

Every write appends the next version of a key, as ``put`` requires
(``version == last_version + 1``); the raw clients use the same (namespace,
key, version) scheme. Each round appends to a fresh key, so every key holds
the same number of versions whatever ``--rounds`` is, and the reads fetch the
newest version of the last round's key.

* SQLite: ``SQLBackend("sqlite:///...")`` vs ``sqlite3`` (WAL, synchronous=FULL,
  BEGIN IMMEDIATE + INSERT + COMMIT per write; SELECT newest by (namespace, key)).
* PostgreSQL: a throw-away server started as the test suite starts it
  (``tests/_postgres.py``: loopback only, ``fsync=off``), ``SQLBackend`` vs one
  psycopg connection (INSERT + COMMIT per write). Reads are compared with
  psycopg in autocommit mode (one round trip) and in transaction mode.
* Local files: ``file://`` vs temporary file + write + flush + fsync,
  ``os.link`` to the final name, unlink, directory fsync; reads: ``os.listdir``
  of the key directory, then open + read of the newest file.
* S3: moto's ``ThreadedMotoServer`` on 127.0.0.1 with fake credentials,
  ``s3://`` vs s3fs ``pipe_file(mode="create")`` / ``cat_file`` of the known
  newest object (and, for reads, ``ls`` + ``cat_file`` too).
* memory:// and end-to-end ``open_store(...).save_machine/restore_machine`` of a
  100-state machine: rates only.

No traffic leaves 127.0.0.1. ``--profile`` runs cProfile over our side of
every comparison under the target and prints the hot spots.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_snapshot import build  # noqa: E402

import gotstate_persist as gp  # noqa: E402
from gotstate_persist.backends import open_backend  # noqa: E402
from gotstate_persist.backends.base import Backend, to_micros  # noqa: E402
from gotstate_persist.backends.sql import SQLBackend  # noqa: E402
from gotstate_persist.sealing import envelope_overhead, seal  # noqa: E402

NS = "bench"
KIND = "gotstate.machine"
TARGET = 0.8
SIZES = (("1 KB", 1_000), ("100 KB", 100_000))
NOW_US = to_micros(datetime.now(timezone.utc))
E2E_STATES, E2E_DATA_BYTES = 100, 1_000

Op = Callable[[], object]
OpFactory = Callable[[int], Op]  # round index -> the operation timed in that round
Writer = Callable[[str, int, bytes], object]  # (key, version, blob)


# Timing: interleaved rounds, medians.


def timed(fn: Op, repeat: int) -> float:
    """Median seconds per call over ``repeat`` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


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

    @property
    def ratio(self) -> float | None:
        return None if self.raw_s is None else self.raw_s / self.ours_s


def _rate(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1 / seconds:,.0f}"


def _ratio(row: Row) -> str:
    ratio = row.ratio
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" + ("  < target" if ratio < TARGET else "")


def show(row: Row) -> None:
    raw = "" if row.raw_s is None else f"raw {1 / row.raw_s:9,.0f}/s  "
    ratio = "" if row.ratio is None else f"  ratio {_ratio(row)}"
    note = f"  [{row.baseline}]" if row.baseline else ""
    print(
        f"  {row.op:<16} {row.size:>7}  {raw}ours {1 / row.ours_s:9,.0f}/s{ratio}{note}",
        flush=True,
    )


def table(rows: Sequence[Row]) -> None:
    header = ("backend", "op", "size", "raw ops/s", "ours ops/s", "ratio")
    lines = [(r.backend, r.op, r.size, _rate(r.raw_s), _rate(r.ours_s), _ratio(r)) for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    aligns = ("<", "<", ">", ">", ">", "<")
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
        self, backend: str, raw: Writer, ours: Backend, repeat: int, baseline: str
    ) -> int:
        """Writes of each blob size, raw vs ``ours.put``; returns the versions per key."""
        for size, blob in self.blobs.items():
            tag = f"w{len(blob)}"
            ours_factory = appends(put_into(ours), blob, tag)
            raw_s, ours_s = interleaved(
                [appends(raw, blob, tag), ours_factory], self.rounds, self.repeat(repeat)
            )
            self.add(
                Row(
                    backend,
                    "write",
                    size,
                    raw_s,
                    ours_s,
                    baseline,
                    ours_factory,
                    self.repeat(repeat),
                )
            )
        return self.repeat(repeat)

    def compare_reads(
        self,
        backend: str,
        raws: Sequence[tuple[str, str, Callable[[str, int], bytes]]],
        ours: Backend,
        repeat: int,
        version: int,
    ) -> None:
        """Reads of the newest ``version``: ours.get vs each ``(op, baseline, read(key, v))``."""
        for size, blob in self.blobs.items():
            key = f"w{len(blob)}-r{self.rounds - 1}"
            info, stored = ours.get(NS, key)
            if stored != blob or info.version != version:
                raise SystemExit(f"{backend}: ours read back the wrong record of {key!r}")
            for _op, _baseline, read in raws:
                if read(key, version) != blob:
                    raise SystemExit(f"{backend}: the raw client read back other bytes")
            factories = [same(lambda r=read, k=key: r(k, version)) for _, _, r in raws]
            ours_factory = same(lambda k=key: ours.get(NS, k))
            *raw_times, ours_s = interleaved(
                [*factories, ours_factory], self.rounds, self.repeat(repeat)
            )
            for (op, baseline, _), raw_s in zip(raws, raw_times, strict=True):
                self.add(
                    Row(
                        backend,
                        op,
                        size,
                        raw_s,
                        ours_s,
                        baseline,
                        ours_factory,
                        self.repeat(repeat),
                    )
                )

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
                [same(lambda k=key: ours.get(NS, k))], self.rounds, self.repeat(repeat)
            )
            self.add(Row(backend, "read", size, None, ours_s))

    def end_to_end(self, backend: str, url: str, repeat: int, **options: Any) -> None:
        """``save_machine`` / ``restore_machine`` of a ~100-state machine through ``open_store``."""
        machine = build(E2E_STATES, E2E_DATA_BYTES)
        target = build(E2E_STATES, E2E_DATA_BYTES)
        with gp.open_store(url, keyring=self.keys, **options) as store:

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
        for row in self.rows:
            ratio = row.ratio
            if row.backend != backend or ratio is None or ratio >= TARGET:
                continue
            if row.ours_factory is None:
                continue
            op = row.ours_factory(self.rounds)  # a fresh key for writes
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(row.repeat):
                op()
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out).strip_dirs()
            stats.sort_stats("tottime").print_stats(14)
            print(f"\n  cProfile, ours: {backend} {row.op} {row.size} x{row.repeat} ({ratio:.2f}x)")
            body = out.getvalue().split("ncalls", 1)[-1]
            print("    ncalls" + body.rstrip().replace("\n", "\n    "))


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
    try:
        written = bench.compare_writes(
            "sqlite", raw_write, ours, 50, "sqlite3 BEGIN IMMEDIATE+INSERT+COMMIT"
        )
        reads = [("read", "sqlite3 SELECT newest", raw_read)]
        bench.compare_reads("sqlite", reads, ours, 300, written)
        bench.profile_slow("sqlite")
    finally:
        ours.close()
        raw.close()
    bench.end_to_end("sqlite", f"sqlite:///{tmp / 'e2e.db'}", 20)


# PostgreSQL.

_PG_TABLE = (
    'CREATE TABLE raw_records (namespace VARCHAR(255) NOT NULL, "key" VARCHAR(255) NOT NULL, '
    "version BIGINT NOT NULL, kind VARCHAR(64) NOT NULL, format_version INTEGER NOT NULL, "
    "size BIGINT NOT NULL, created_at_us BIGINT NOT NULL, blob BYTEA NOT NULL, "
    'PRIMARY KEY (namespace, "key", version))'
)


def bench_postgres(bench: Bench) -> None:
    print("\nPostgreSQL (server on 127.0.0.1, started like tests/_postgres.py: fsync=off)")
    try:
        import psycopg
        from _postgres import _running_server, _Unavailable
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
        print(f"  server up on 127.0.0.1:{server.port}", flush=True)
        tx = stack.enter_context(psycopg.connect(url))  # transaction mode, as SQLBackend
        auto = stack.enter_context(psycopg.connect(url, autocommit=True))
        auto.execute(_PG_TABLE)
        insert = "INSERT INTO raw_records VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        newest = (
            'SELECT "key", version, kind, format_version, size, created_at_us, blob FROM '
            'raw_records WHERE namespace = %s AND "key" = %s ORDER BY version DESC LIMIT 1'
        )

        def raw_write(key: str, version: int, blob: bytes) -> None:
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
        written = bench.compare_writes("postgresql", raw_write, ours, 100, "psycopg INSERT+COMMIT")
        reads = [
            ("read", "psycopg autocommit SELECT", read_autocommit),
            ("read (raw: txn)", "psycopg SELECT+ROLLBACK", read_in_transaction),
        ]
        bench.compare_reads("postgresql", reads, ours, 300, written)
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
        written = bench.compare_writes(
            "file", raw_write, ours, 50, "tmp+write+fsync, link, unlink, dir fsync"
        )
        reads = [("read", "listdir + open/read newest", raw_read)]
        bench.compare_reads("file", reads, ours, 200, written)
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
        raw_root = "gsp-bench-raw/state"

        def raw_write(key: str, version: int, blob: bytes) -> None:
            fs.pipe_file(f"{raw_root}/{key}/v{version:010d}", blob, mode="create")

        def raw_get(key: str, version: int) -> bytes:
            return bytes(fs.cat_file(f"{raw_root}/{key}/v{version:010d}"))

        def raw_list_get(key: str, _version: int) -> bytes:
            newest = max(fs.ls(f"{raw_root}/{key}", detail=False))
            return bytes(fs.cat_file(newest))

        ours = open_backend("s3://gsp-bench-ours/state", **options)
        try:
            written = bench.compare_writes(
                "s3", raw_write, ours, 20, "s3fs pipe_file(mode='create')"
            )
            reads = [
                ("read", "s3fs cat_file of known name", raw_get),
                ("read (raw: ls)", "s3fs ls + cat_file newest", raw_list_get),
            ]
            bench.compare_reads("s3", reads, ours, 40, written)
            bench.profile_slow("s3")
        finally:
            ours.close()
        bench.end_to_end("s3", "s3://gsp-bench-e2e/state", 10, **options)


# memory://


def bench_memory(bench: Bench) -> None:
    print("\nmemory:// (rates only)", flush=True)
    url = f"memory://gsp-bench-{os.getpid()}"
    ours = open_backend(url)
    try:
        bench.rates_only("memory", ours, 100)
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
        if "sqlite" in chosen:
            bench_sqlite(bench, tmp)
        if "postgresql" in chosen:
            bench_postgres(bench)
        if "file" in chosen:
            bench_files(bench, tmp)
        if "s3" in chosen:
            bench_s3(bench)
        if "memory" in chosen:
            bench_memory(bench)
    table(bench.rows)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
