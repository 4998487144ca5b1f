"""A catalog on PostgreSQL (READ COMMITTED): races *inside* catalog transactions.

On SQLite every write transaction holds the database's write lock
(``BEGIN IMMEDIATE``), so the interleaving matrix of tests/test_interleavings.py
cannot reach these windows; on PostgreSQL a transaction paused after its
first statement holds only row locks. Each test pauses one transaction
before its commit, lets another run into its row locks (seen in
``pg_stat_activity``, not guessed by sleeping), then lets both finish.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from gotstate_persist.backends import open_backend
from gotstate_persist.backends.base import Replacement
from gotstate_persist.backends.catalog import CatalogBackend

NS = "ns"
_WAIT_S = 30.0


def _put(backend: Any, version: int, blob: bytes) -> Any:
    return backend.put(NS, "k", version, blob, kind="test.kind", format_version=1, created_at_us=1)


def _wait_until_someone_waits_for_a_lock(pg_url: str) -> None:
    database = pg_url.rsplit("/", 1)[1]
    deadline = time.monotonic() + _WAIT_S
    with psycopg.connect(pg_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = %s AND wait_event_type = 'Lock'",
                (database,),
            ).fetchone()
            if waiting and waiting[0]:
                return
            time.sleep(0.01)
    raise AssertionError("the second transaction never waited for the first one's locks")


def _run(results: dict[str, Any], name: str, operation: Callable[[], Any]) -> threading.Thread:
    def target() -> None:
        try:
            results[name] = operation()
        except BaseException as exc:  # inspected by the test
            results[name] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _settled(backend: CatalogBackend) -> None:
    """Counters equal a recount, and a sweep leaves exactly the objects rows name."""
    assert backend._catalog.recount(NS).drift is None
    backend.sweep(NS, older_than_s=0)
    named = {
        (key, ref) for (key, _version), (ref, _pending) in backend._rows.row_objects(NS).items()
    }
    top = backend._store._path([])
    found = {
        "/".join(parts)
        for parts, _size in backend._objects.walk(top, sizes=False)
        if len(parts) > 1
    }
    assert len(found) == len(named), (found, named)


def test_a_delete_racing_a_rewrite_switch_keeps_usage_exact(tmp_path: Path, pg_url: str) -> None:
    url, options = f"file://{tmp_path / 'blobs'}", {"catalog": pg_url}
    with open_backend(url, **options) as held, open_backend(url, **options) as other:
        assert isinstance(held, CatalogBackend) and isinstance(other, CatalogBackend)
        _put(held, 1, b"old-1")
        _put(held, 2, b"old-2")
        in_switch, go = threading.Event(), threading.Event()
        usage = held._catalog._usage
        charge = usage.charge_growth

        def paused_charge(conn: Any, namespace: str, size: int, grow: int) -> None:
            in_switch.set()  # the row is switched (and locked), not yet committed
            assert go.wait(_WAIT_S)
            charge(conn, namespace, size, grow)

        usage.charge_growth = paused_charge  # type: ignore[method-assign]
        results: dict[str, Any] = {}
        longer = Replacement("k", 1, b"a-much-longer-new-blob-1", 2, b"old-1")
        rewrite = _run(results, "rewrite", lambda: held.replace(NS, [longer]))
        assert in_switch.wait(_WAIT_S)
        delete = _run(results, "delete", lambda: other.delete(NS, "k", [1]))
        _wait_until_someone_waits_for_a_lock(pg_url)
        go.set()
        rewrite.join(_WAIT_S)
        delete.join(_WAIT_S)
        assert results == {"rewrite": [True], "delete": 1}
        assert [info.version for info in other.versions(NS, "k")] == [2]
        _settled(other)


def test_a_sweep_never_withdraws_a_save_confirmed_meanwhile(tmp_path: Path, pg_url: str) -> None:
    url, options = f"file://{tmp_path / 'blobs'}", {"catalog": pg_url}
    with open_backend(url, **options) as held, open_backend(url, **options) as other:
        assert isinstance(held, CatalogBackend) and isinstance(other, CatalogBackend)
        _put(held, 1, b"old-1")
        checked, confirming, release = threading.Event(), threading.Event(), threading.Event()
        catalog = held._catalog
        connections = catalog._connections
        transaction = connections.transaction

        def paused_before_commit(body: Callable[[Any], Any], durable: bool = True) -> Any:
            def body_then_wait(conn: Any) -> Any:
                done = body(conn)
                confirming.set()  # confirmed, not yet committed
                assert release.wait(_WAIT_S)
                return done

            return transaction(body_then_wait, durable=durable)

        def step(name: str) -> None:
            if name == "put:reserved":  # the sweep looks for the object first
                assert checked.wait(_WAIT_S)
            if name == "put:created":
                connections.transaction = paused_before_commit  # type: ignore[method-assign]

        held._step = step
        names = other._objects.names

        def looked(directory: str, prefix: str = "", **options: Any) -> list[str]:
            found = names(directory, prefix, **options)
            if prefix.startswith("o") and not checked.is_set():
                checked.set()  # no object yet: the reservation looks abandoned
                assert confirming.wait(_WAIT_S)
            return found

        other._objects.names = looked  # type: ignore[method-assign]
        results: dict[str, Any] = {}
        save = _run(results, "save", lambda: _put(held, 2, b"acknowledged-2"))
        while not (catalog.catalog_rows.stale_reservations(NS, time.time_ns() // 1000 + 1)):
            time.sleep(0.01)  # reserved
        sweep = _run(results, "sweep", lambda: other.sweep(NS, older_than_s=0))
        assert confirming.wait(_WAIT_S)
        _wait_until_someone_waits_for_a_lock(pg_url)
        release.set()
        save.join(_WAIT_S)
        sweep.join(_WAIT_S)
        connections.transaction = transaction  # type: ignore[method-assign]
        other._objects.names = names  # type: ignore[method-assign]
        assert not isinstance(results["save"], BaseException), results
        assert other.get(NS, "k", 2)[1] == b"acknowledged-2"  # acknowledged, so readable
        _settled(other)
