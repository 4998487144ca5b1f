"""Retention on PostgreSQL: a pruning write is one round trip, and stays exact under races.

With ``retention="prune-oldest"``, an append to an existing key deletes the
key's oldest versions beyond ``max_versions_per_key`` and nets them out of
the namespace's usage in the same single statement that bumps the key and
charges the write (``_sql_statements._append_pruning``). Round trips are
counted on the wire: libpq's own trace of every message the server sends,
where each ``ReadyForQuery`` ends one round trip. The races are run against
the real server: writers of one key, a delete or a quota change committed
while a pruning write is under way (a test-only trigger holds it at a chosen
row), and readers of the versions being pruned.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _places import throwaway_engine
from order_workflow import build_order_machine
from test_backend_postgres import Order, _formats

import gotstate_persist as gp
from gotstate_persist.backends.sql import SQLBackend
from gotstate_persist.errors import VersionConflict

KEPT = 3
RETAIN = gp.Quota(max_versions_per_key=KEPT, retention="prune-oldest")


def _sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    engine = throwaway_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.exec_driver_sql(statement)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _sql_backend(store_or_backend: gp.Store | SQLBackend) -> SQLBackend:
    if isinstance(store_or_backend, SQLBackend):
        return store_or_backend
    inner = store_or_backend.backend.inner  # type: ignore[attr-defined]  # the quota adapter's
    assert isinstance(inner, SQLBackend)
    return inner


def _round_trips(target: gp.Store | SQLBackend, action: Callable[[], object]) -> int:
    """Round trips ``action`` makes to the server: ``ReadyForQuery`` messages in libpq's trace."""
    connections = _sql_backend(target)._connections
    acquire = connections.acquire
    traced: list[Any] = []
    with tempfile.TemporaryFile("w+") as trace:

        def tracing() -> Any:
            conn = acquire()
            conn.dbapi_connection.pgconn.trace(trace.fileno())
            traced.append(conn.dbapi_connection.pgconn)
            return conn

        connections.acquire = tracing  # type: ignore[method-assign]
        try:
            action()
        finally:
            del connections.acquire
            for pgconn in traced:
                pgconn.untrace()
        trace.seek(0)
        messages = [line.split("\t") for line in trace.read().splitlines()]
    assert traced, "the action reached no connection"
    return sum(1 for m in messages if len(m) > 3 and m[1:2] == ["B"] and m[3] == "ReadyForQuery")


def _key_counts(url: str, namespace: str) -> list[tuple[str, int, int]]:
    """(key, kept ``versions`` count, stored rows) of every key of the namespace."""
    rows = _sql(
        url,
        'SELECT k."key", k.versions, (SELECT COUNT(*) FROM gotstate_persist_records r '
        'WHERE r.namespace = k.namespace AND r."key" = k."key") '
        f"FROM gotstate_persist_keys k WHERE k.namespace = '{namespace}' ORDER BY 1",
    )
    return [(str(key), int(kept), int(stored)) for key, kept, stored in rows]


def _assert_exact(url: str, backend: SQLBackend, namespace: str) -> None:
    """Kept usage counters and per-key counts equal what is stored."""
    assert all(kept == stored for _, kept, stored in _key_counts(url, namespace))
    kept = backend.usage(namespace)
    recounted = backend.recount(namespace)
    assert recounted.drift is None, f"counters drifted: kept {kept}, recounted {recounted}"


def _put(backend: SQLBackend, namespace: str, key: str, version: int, blob: bytes) -> None:
    backend.put(namespace, key, version, blob, kind="t", format_version=1, created_at_us=0)


@contextlib.contextmanager
def _slow_delete_of(url: str, version: int) -> Iterator[None]:
    """Deleting the row of ``version`` (any key) takes half a second, inside its statement."""
    _sql(
        url,
        "CREATE FUNCTION gsp_test_slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.5); RETURN OLD; END $$",
    )
    _sql(
        url,
        "CREATE TRIGGER gsp_test_slow BEFORE DELETE ON gotstate_persist_records FOR EACH ROW "
        f"WHEN (OLD.version = {version}) EXECUTE FUNCTION gsp_test_slow()",
    )
    try:
        yield
    finally:
        _sql(url, "DROP TRIGGER gsp_test_slow ON gotstate_persist_records")
        _sql(url, "DROP FUNCTION gsp_test_slow()")


# One round trip per write.


def test_a_pruning_append_is_one_round_trip_like_one_without_retention(pg_url: str) -> None:
    with SQLBackend(pg_url) as backend:
        backend.store_quota("kept", RETAIN, replace=True)
        # Warm up past psycopg's prepare_threshold: the execution that prepares
        # a statement takes one more round trip, once per connection.
        for version in range(1, 10):
            _put(backend, "plain", "k", version, b"p" * 50)
            _put(backend, "kept", "k", version, b"r" * 50)
        for version in range(10, 13):
            plain = _round_trips(
                backend, functools.partial(_put, backend, "plain", "k", version, b"p")
            )
            kept = _round_trips(
                backend, functools.partial(_put, backend, "kept", "k", version, b"r")
            )
            assert (plain, kept) == (1, 1)
            versions = [info.version for info in backend.versions("kept", "k")]
            assert versions == list(range(version - KEPT + 1, version + 1))
        _assert_exact(pg_url, backend, "kept")
        assert backend.usage("kept") == gp.Usage(KEPT, KEPT, 1)  # one byte each
        # With expected_newest too; a stale one is refused (and explained) as ever.
        expected = functools.partial(
            backend.put, "kept", "k", kind="t", format_version=1, created_at_us=0
        )
        assert _round_trips(backend, lambda: expected(13, b"e", expected_newest=12)) == 1
        with pytest.raises(VersionConflict):
            expected(14, b"e", expected_newest=12)
        assert [info.version for info in backend.versions("kept", "k")] == [11, 12, 13]
        _assert_exact(pg_url, backend, "kept")


def test_save_machine_with_retention_takes_the_round_trips_of_one_without(
    pg_url: str, keyring: gp.KeyRing
) -> None:
    machine = build_order_machine()
    machine.start()
    with (
        gp.open_store(pg_url, namespace="plain", keyring=keyring) as plain,
        gp.open_store(pg_url, namespace="kept", keyring=keyring, quota=RETAIN) as kept,
    ):
        # Warm up well past psycopg's prepare_threshold (5) for every statement a save
        # runs (head reads, the append), on both connections: the execution that
        # prepares a statement takes one more round trip, and must not be measured.
        for _ in range(12):
            plain.save_machine("m", machine)
            kept.save_machine("m", machine)
        without = _round_trips(plain, lambda: plain.save_machine("m", machine))
        with_retention = _round_trips(kept, lambda: kept.save_machine("m", machine))
        assert with_retention == without
        assert [ref.version for ref in kept.versions("m")] == [11, 12, 13]
    # Another process that set nothing itself: the stored quota picks the statement.
    with gp.open_store(pg_url, namespace="kept", keyring=keyring) as later:
        later.save_machine("m", machine)  # learns the retention (stored quota, or by pruning)
        assert _round_trips(later, lambda: later.save_machine("m", machine)) == without
        assert [ref.version for ref in later.versions("m")] == [13, 14, 15]
        assert later.usage(recount=True).drift is None


# Races.


def test_racing_writers_of_one_key_keep_exactly_the_newest_versions(
    pg_url: str, keyring: gp.KeyRing
) -> None:
    writers, saves = 4, 12
    with gp.open_store(pg_url, keyring=keyring, formats=_formats(), quota=RETAIN):
        pass  # the schema and the quota exist before the race
    barrier = threading.Barrier(writers)
    saved: dict[int, Order] = {}
    failures: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            with gp.open_store(pg_url, keyring=keyring, formats=_formats()) as store:
                store.versions("warm-up")  # connected before the race
                barrier.wait(timeout=60)
                for i in range(saves):
                    record = Order(f"w{index}", i)
                    saved[store.save("shared", record).version] = record
                    store.save(f"own-{index}", record)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert failures == []
    assert sorted(saved) == list(range(1, writers * saves + 1))
    with gp.open_store(pg_url, keyring=keyring, formats=_formats()) as store:
        newest = sorted(saved)[-KEPT:]
        assert [ref.version for ref in store.versions("shared")] == newest
        assert [store.load("shared", version=v) for v in newest] == [saved[v] for v in newest]
        for index in range(writers):
            assert [ref.version for ref in store.versions(f"own-{index}")] == [10, 11, 12]
        _assert_exact(pg_url, _sql_backend(store), "default")
        assert store.usage().records == KEPT * (writers + 1)


def test_a_delete_committed_during_a_pruning_append_is_seen(pg_url: str) -> None:
    """The append planned to prune version 1, but a delete of version 2 went first.

    The append's snapshot still holds 3 versions, so it would prune one; it
    waits for the delete's lock on the key, finds the key's count changed and
    leaves the decision to the transactional path: 3 versions with the new
    one, nothing to prune. Version 1 must survive.
    """
    with SQLBackend(pg_url) as backend:
        backend.store_quota("ns", RETAIN, replace=True)
        for version in (1, 2, 3):
            _put(backend, "ns", "k", version, b"x" * 10)
        with _slow_delete_of(pg_url, 2):
            deleter = threading.Thread(target=backend.delete, args=("ns", "k", [2]))
            deleter.start()
            time.sleep(0.15)  # the delete now holds the key's row
            _put(backend, "ns", "k", 4, b"y" * 20)
            deleter.join()
        assert [info.version for info in backend.versions("ns", "k")] == [1, 3, 4]
        _assert_exact(pg_url, backend, "ns")
        assert backend.usage("ns") == gp.Usage(40, 3, 1)


def test_a_quota_changed_during_a_pruning_append_is_the_one_applied(pg_url: str) -> None:
    """The append is deleting version 1 when the limit is raised: it prunes nothing."""
    with SQLBackend(pg_url) as backend, SQLBackend(pg_url) as elsewhere:
        backend.store_quota("ns", RETAIN, replace=True)
        for version in (1, 2, 3):
            _put(backend, "ns", "k", version, b"x" * 10)
        raised = gp.Quota(max_versions_per_key=KEPT + 1, retention="prune-oldest")
        with _slow_delete_of(pg_url, 1):
            appender = threading.Thread(target=_put, args=(backend, "ns", "k", 4, b"y" * 20))
            appender.start()
            time.sleep(0.15)  # the append is pruning version 1
            elsewhere.store_quota("ns", raised, replace=True)
            appender.join()
        assert [info.version for info in backend.versions("ns", "k")] == [1, 2, 3, 4]
        _assert_exact(pg_url, backend, "ns")
        assert backend.usage("ns") == gp.Usage(50, 4, 1)


def test_reads_racing_the_pruning_of_their_version_get_it_whole_or_not_found(
    pg_url: str, keyring: gp.KeyRing
) -> None:
    quota = gp.Quota(max_versions_per_key=1, retention="prune-oldest")
    saves = 60
    ready, done = threading.Event(), threading.Event()
    outcomes: dict[str, int] = {"read": 0, "gone": 0}
    failures: list[BaseException] = []

    def reader() -> None:
        try:
            with gp.open_store(pg_url, keyring=keyring, formats=_formats()) as store:
                store.load("k")  # connected before the writes start
                ready.set()
                while not done.is_set():
                    newest = store.load("k")  # the newest version is never pruned
                    assert isinstance(newest, Order)
                    for version in (newest.total, newest.total + 1):
                        try:
                            assert store.load("k", version=version) == Order("k", version)
                            outcomes["read"] += 1
                        except gp.NotFound:
                            outcomes["gone"] += 1
        except BaseException as exc:
            failures.append(exc)

    with gp.open_store(pg_url, keyring=keyring, formats=_formats(), quota=quota) as store:
        store.save("k", Order("k", 1))
        thread = threading.Thread(target=reader)
        thread.start()
        try:
            assert ready.wait(timeout=60)
            for version in range(2, saves + 1):
                assert store.save("k", Order("k", version)).version == version
        finally:
            done.set()
            thread.join(timeout=60)
        assert failures == []
        assert outcomes["read"] > 0
        assert [ref.version for ref in store.versions("k")] == [saves]
        _assert_exact(pg_url, _sql_backend(store), "default")
