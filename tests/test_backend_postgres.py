"""The SQL backend on a real PostgreSQL server (started by tests/_postgres.py).

The conformance suite runs unchanged, once at PostgreSQL's default isolation
(READ COMMITTED) and once with every connection at SERIALIZABLE, where
concurrent appends end in serialization failures that the backend must retry.
Every test gets a fresh database, with a linguistic (ICU) collation where the
server has one.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest
import sqlalchemy as sa
from _postgres import PostgresServer
from gotstate.core.events import Event
from order_workflow import build_order_machine, get_data, set_data

import gotstate_persist as gp
from gotstate_persist.backends import Backend, KeyHead, open_backend
from gotstate_persist.backends.sql import SQLBackend
from gotstate_persist.errors import FormatError, VersionConflict
from gotstate_persist.migrations import HEAD_REVISION, VERSION_TABLE
from gotstate_persist.testing import BackendTests


class Order(msgspec.Struct, frozen=True):
    id: str
    total: int


def _formats() -> gp.FormatRegistry:
    formats = gp.FormatRegistry()
    formats.register(Order, kind="order", version=1)
    return formats


def _libpq(url: str) -> str:
    """The SQLAlchemy URL as a libpq connection string for psycopg itself."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _database(url: str) -> str:
    name = sa.make_url(url).database
    assert name
    return name


def _query(url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def _dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of the public schema with all its rows, for "nothing changed" checks."""
    tables = [
        row[0]
        for row in _query(
            url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
    ]
    return {table: sorted(_query(url, f'SELECT * FROM "{table}"')) for table in tables}


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TestPostgresBackend(BackendTests):
    @pytest.fixture
    def backend_url(self, pg_url: str) -> tuple[str, dict[str, Any]]:
        return pg_url, {}

    @pytest.fixture
    def backend(self, backend_url: tuple[str, dict[str, Any]]) -> Iterator[Backend]:
        url, options = backend_url
        with open_backend(url, **options) as opened:
            yield opened


class TestPostgresSerializable(TestPostgresBackend):
    """The same contract when the application runs PostgreSQL at SERIALIZABLE."""

    @pytest.fixture
    def backend_url(self, pg_url: str) -> tuple[str, dict[str, Any]]:
        return pg_url, {"engine_options": {"isolation_level": "SERIALIZABLE"}}


# Store-level behaviour on PostgreSQL.


def test_plain_postgresql_url_uses_psycopg_3(pg_url: str) -> None:
    assert pg_url.startswith("postgresql://")
    with open_backend(pg_url) as backend:
        assert isinstance(backend, SQLBackend)
        assert backend.engine.dialect.name == "postgresql"
        assert backend.engine.dialect.driver == "psycopg"


def test_store_round_trips_a_machine(pg_url: str, keyring: gp.KeyRing) -> None:
    machine = build_order_machine()
    machine.start()
    machine.process_event(Event("start"))
    set_data(machine, "cart", "items", ["book", "pen"])
    set_data(machine, "cart", "total", Decimal("12.50"))
    set_data(machine, "cart", "due", date(2026, 12, 24))
    with gp.open_store(pg_url, namespace="orders", keyring=keyring) as store:
        first = store.save_machine("order-42", machine)
        machine.process_event(Event("checkout"))
        second = store.save_machine("order-42", machine, expected_version=first.version)
        assert (first.version, second.version) == (1, 2)
        assert [ref.version for ref in store.versions("order-42")] == [1, 2]
    with gp.open_store(pg_url, namespace="orders", keyring=keyring) as store:
        fresh = build_order_machine()
        store.restore_machine("order-42", fresh)
        assert fresh.current_state.name == "payment"
        store.restore_machine("order-42", fresh, version=1)
        assert fresh.current_state.name == "cart"
        assert get_data(fresh, "cart") == {
            "items": ["book", "pen"],
            "total": Decimal("12.50"),
            "due": date(2026, 12, 24),
        }
        fresh.process_event(Event("checkout"))
        assert fresh.current_state.name == "payment"
        assert store.keys() == ["order-42"]


def _append_worker(url: str, keys_text: str, worker: int, count: int) -> None:
    keys = gp.KeyRing.load(keys_text)
    with gp.open_store(url, keyring=keys, formats=_formats()) as store:
        for i in range(count):
            store.save("shared", Order(f"w{worker}", i))


def _run_processes(url: str, keyring: gp.KeyRing, workers: int, per_worker: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_append_worker, args=(url, keyring.export(), w, per_worker))
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=180)
        assert proc.exitcode == 0, "a writer process failed"


def test_concurrent_appends_from_processes(pg_url: str, keyring: gp.KeyRing) -> None:
    workers, per_worker = 4, 15
    with gp.open_store(pg_url, keyring=keyring, formats=_formats()):
        pass  # create the schema once, as a deployment would
    _run_processes(pg_url, keyring, workers, per_worker)
    with gp.open_store(pg_url, keyring=keyring, formats=_formats()) as store:
        refs = store.versions("shared")
        assert [ref.version for ref in refs] == list(range(1, workers * per_worker + 1))
        seen = [store.load("shared", version=ref.version) for ref in refs]
    assert sorted((o.id, o.total) for o in seen) == sorted(
        (f"w{w}", i) for w in range(workers) for i in range(per_worker)
    )
    # Per writer, its records are in the order it saved them.
    for w in range(workers):
        assert [o.total for o in seen if o.id == f"w{w}"] == list(range(per_worker))


def _open_worker(url: str, keys_text: str, start: Any, worker: int) -> None:
    import alembic.command  # noqa: F401 - imported lazily by the first open otherwise
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401

    keys = gp.KeyRing.load(keys_text)
    start.wait(timeout=60)  # every process opens the fresh database at the same moment
    with gp.open_store(url, keyring=keys, formats=_formats()) as store:
        for i in range(2):
            store.save("shared", Order(f"w{worker}", i))


def test_concurrent_first_opens_of_a_fresh_database(pg_url: str, keyring: gp.KeyRing) -> None:
    workers = 3
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(workers)
    procs = [
        ctx.Process(target=_open_worker, args=(pg_url, keyring.export(), start, w))
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=180)
        assert proc.exitcode == 0, "a process failed to open the fresh database"
    with gp.open_store(pg_url, keyring=keyring, formats=_formats()) as store:
        assert [ref.version for ref in store.versions("shared")] == list(range(1, 7))
    assert _query(pg_url, f"SELECT version_num FROM {VERSION_TABLE}") == [(HEAD_REVISION,)]


def test_append_during_a_delete_keeps_the_bookkeeping_exact(pg_url: str) -> None:
    """A delete locks the key's row first, so an append cannot commit between its steps.

    A trigger makes the delete slow; the append that arrives meanwhile must
    wait for it. Otherwise the delete, which listed version 1 only, would then
    record "no stored version" although version 2 is stored.
    """
    with open_backend(pg_url) as backend:
        backend.put("ns", "k", 1, b"one", kind="t", format_version=1, created_at_us=0)
        _query(
            pg_url,
            "CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(0.5); RETURN OLD; END $$",
        )
        _query(
            pg_url,
            "CREATE TRIGGER slow_delete BEFORE DELETE ON gotstate_persist_records "
            "FOR EACH ROW EXECUTE FUNCTION slow_delete()",
        )
        deleter = threading.Thread(target=backend.delete, args=("ns", "k"))
        deleter.start()
        time.sleep(0.15)  # the delete is now inside the trigger
        backend.put("ns", "k", 2, b"two", kind="t", format_version=1, created_at_us=0)
        deleter.join()
        assert [info.version for info in backend.versions("ns", "k")] == [2]
        assert backend.head("ns", "k") == KeyHead(last_version=2, newest=2, kind="t")
        assert backend.keys("ns") == ["k"]


def test_listings_are_in_code_point_order_whatever_the_collation(pg_url: str) -> None:
    """pg_url's databases sort linguistically (ICU en-US); listings must not."""
    keys = ["b", "B", "a-b", "ab", "a b", "A", "é", "e", "z", "_x", "%x"]
    with open_backend(pg_url) as backend:
        for key in keys:
            backend.put("ns", key, 1, b"x", kind="t", format_version=1, created_at_us=0)
            backend.put(key, "k", 1, b"x", kind="t", format_version=1, created_at_us=0)
        assert backend.keys("ns") == sorted(keys)
        assert backend.keys("ns", "a") == ["a b", "a-b", "ab"]
        assert backend.namespaces() == sorted([*keys, "ns"])


# Connection failures: BackendError, cause chained, password never shown.


def _assert_backend_error(url: str, password: str) -> gp.BackendError:
    with pytest.raises(gp.BackendError) as info:
        open_backend(url)
    error = info.value
    assert error.__cause__ is not None
    assert password not in str(error)
    assert password not in "".join(traceback.format_exception(error))
    assert "***" in str(error)
    return error


def test_wrong_password_is_backend_error_without_the_password(
    postgres_server: PostgresServer, pg_url: str
) -> None:
    wrong = "wrong-Pa55word-do-not-show"
    url = postgres_server.url(_database(pg_url), password=wrong)
    error = _assert_backend_error(url, wrong)
    assert "password authentication failed" in str(error)
    assert postgres_server.password not in str(error)


def test_unreachable_server_is_backend_error(postgres_server: PostgresServer) -> None:
    nobody_listens = dataclasses.replace(postgres_server, port=_unused_port())
    _assert_backend_error(nobody_listens.url("gsp"), postgres_server.password)


def test_missing_database_is_backend_error(postgres_server: PostgresServer) -> None:
    error = _assert_backend_error(postgres_server.url("no_such_database"), postgres_server.password)
    assert "no_such_database" in str(error)


def test_store_with_bad_credentials_is_backend_error(
    postgres_server: PostgresServer, pg_url: str, keyring: gp.KeyRing
) -> None:
    url = postgres_server.url(_database(pg_url), password="nope-nope-nope")
    with pytest.raises(gp.BackendError) as info:
        gp.open_store(url, keyring=keyring)
    assert "nope-nope-nope" not in str(info.value)


def test_connection_dropped_by_the_server_is_not_reused(
    postgres_server: PostgresServer, pg_url: str
) -> None:
    with open_backend(pg_url) as backend:
        backend.put("ns", "k", 1, b"x", kind="t", format_version=1, created_at_us=0)
        _query(
            postgres_server.admin_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            _database(pg_url),
        )
        try:
            backend.get("ns", "k")
        except gp.BackendError as exc:  # the pooled connection was dead: reported, dropped
            assert exc.__cause__ is not None  # chained; its type is the driver's business
        assert backend.get("ns", "k")[1] == b"x"
        assert backend.head("ns", "k").newest == 1


# The schema and its private version table.


def test_private_version_table_leaves_the_application_alembic_table_alone(
    pg_url: str, keyring: gp.KeyRing
) -> None:
    _query(pg_url, "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
    _query(pg_url, "INSERT INTO alembic_version VALUES ('app_rev_1')")
    with gp.open_store(pg_url, keyring=keyring) as store:
        store.save_machine("m", build_order_machine())
    assert _query(pg_url, "SELECT version_num FROM alembic_version") == [("app_rev_1",)]
    assert _query(pg_url, f"SELECT version_num FROM {VERSION_TABLE}") == [(HEAD_REVISION,)]
    columns = dict(
        _query(
            pg_url,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'gotstate_persist_records'",
        )
    )
    assert columns["blob"] == "bytea"
    assert columns["version"] == columns["created_at_us"] == "bigint"


def test_schema_newer_than_code_is_refused_untouched(
    postgres_server: PostgresServer, pg_url: str, keyring: gp.KeyRing
) -> None:
    with gp.open_store(pg_url, keyring=keyring, formats=_formats()) as store:
        store.save("k", Order("k", 1))
    _query(pg_url, f"UPDATE {VERSION_TABLE} SET version_num = 'v9.0.0.a'")
    before = _dump(pg_url)
    with pytest.raises(gp.SchemaTooNew, match="upgrade gotstate-persist") as info:
        gp.open_store(pg_url, keyring=keyring, upgrade=True)
    assert postgres_server.password not in str(info.value)
    assert _dump(pg_url) == before


def test_reopening_a_current_schema_changes_nothing(pg_url: str, keyring: gp.KeyRing) -> None:
    with gp.open_store(pg_url, keyring=keyring, formats=_formats()) as store:
        store.save("k", Order("k", 1))
    before = _dump(pg_url)
    with gp.open_store(pg_url, keyring=keyring, formats=_formats()) as store:
        assert store.load("k") == Order("k", 1)
    assert _dump(pg_url) == before


def test_reads_take_one_round_trip(pg_url: str) -> None:
    """Reads run in autocommit: the server is never left inside a transaction."""
    import psycopg

    statuses: list[object] = []
    with open_backend(pg_url) as backend:
        backend.put("ns", "k", 1, b"x", kind="k", format_version=1, created_at_us=0)
        connections = backend._connections  # type: ignore[attr-defined]
        original = connections.acquire
        spied: list[object] = []

        def spy() -> object:
            conn = original()
            real = conn.dbapi_connection

            def execute(*args: object, **kwargs: object) -> object:
                cursor = real.execute(*args, **kwargs)
                statuses.append(real.info.transaction_status)
                return cursor

            conn.execute = execute
            spied.append(conn)
            return conn

        connections.acquire = spy
        try:
            backend.get("ns", "k")
            backend.get("ns", "k", 1)
            backend.head("ns", "k")
            backend.versions("ns", "k")
        finally:
            for conn in spied:
                del conn.execute  # type: ignore[attr-defined]
    assert len(statuses) == 4
    assert set(statuses) == {psycopg.pq.TransactionStatus.IDLE}


def test_appends_to_an_existing_key_are_one_statement(pg_url: str) -> None:
    """After the first version, an append is a single autocommitted statement."""
    with open_backend(pg_url) as backend:
        backend.put("ns", "k", 1, b"one", kind="k", format_version=1, created_at_us=0)
        calls: list[object] = []
        connections = backend._connections  # type: ignore[attr-defined]
        original = connections.transaction

        def counting(body: object) -> object:
            calls.append(body)
            return original(body)

        connections.transaction = counting
        backend.put("ns", "k", 2, b"two", kind="k", format_version=1, created_at_us=0)
        backend.put(
            "ns", "k", 3, b"three", kind="k", format_version=1, created_at_us=0, expected_newest=2
        )
        assert calls == []
        with pytest.raises(VersionConflict):  # refusals still explained by the full path
            backend.put(
                "ns", "k", 4, b"x", kind="k", format_version=1, created_at_us=0, expected_newest=2
            )
        with pytest.raises(FormatError):
            backend.put("ns", "k", 4, b"x", kind="other", format_version=1, created_at_us=0)
        assert len(calls) == 2
        assert [i.version for i in backend.versions("ns", "k")] == [1, 2, 3]


def test_appends_take_the_one_statement_path_within_limits_and_with_retention(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends to an existing key, within limits or pruning, are one CTE statement."""
    import gotstate_persist as gp
    from gotstate_persist.backends.sql import SQLBackend

    with SQLBackend(pg_url) as backend:
        put = functools.partial(
            backend.put, "ns", "k", blob=b"x" * 10, kind="test.kind", format_version=1,
            created_at_us=1,
        )  # fmt: skip
        put(version=1)  # a new key and namespace: the transactional path
        transactions: list[int] = []
        real = backend._writes.append
        monkeypatch.setattr(backend._writes, "append", lambda p: transactions.append(1) or real(p))
        put(version=2)
        put(version=3)
        assert transactions == []
        backend.store_quota("ns", gp.Quota(max_bytes=35), replace=True)
        with pytest.raises(gp.QuotaExceeded) as refused:
            put(version=4)  # 40 bytes > 35: the statement aborts, the transaction explains
        assert (refused.value.limit, refused.value.usage, refused.value.requested) == (
            "max_bytes",
            30,
            10,
        )
        assert transactions == [1]
        assert backend.head("ns", "k").last_version == 3  # the aborted statement left nothing
        assert backend.usage("ns") == backend.recount("ns")
        backend.store_quota(
            "ns", gp.Quota(max_versions_per_key=2, retention="prune-oldest"), replace=True
        )
        put(version=4)  # pruning: the same one statement (the quota set here says so)
        assert [i.version for i in backend.versions("ns", "k")] == [3, 4]
        put(version=5)
        assert [i.version for i in backend.versions("ns", "k")] == [4, 5]
        assert transactions == [1]
        assert backend.usage("ns") == backend.recount("ns")
