"""Quotas (issue 6) against real storage: SQLite files, PostgreSQL, local files, S3.

Nothing here mocks storage or the database. Sizes are never guessed: they are
measured by saving the same records in a scratch ``memory://`` store, and every
successful save checks that its stored size is the measured one. Time-based
rate limits run under time-machine with the clock frozen; nothing sleeps to
pass time.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from _places import SQL_KINDS, Place, make_place, throwaway_engine
from _quota_workers import (
    KILLED_LENGTH,
    RACE_LENGTHS,
    formats,
    killed_writer,
    note,
    object_writer,
    race_writer,
)
from gotstate.core.events import Event
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from order_workflow import build_order_machine

import gotstate_persist as gp
from gotstate_persist.cli import main as cli
from gotstate_persist.migrations import alembic_config

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NAMESPACE = "ns"
#: A whole second of the clock, so "a new second starts" is easy to reason about.
START = 1_800_000_000.0


# Where the data lives, and how to look at all of it without the library.


def _place(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return make_place(kind, request, tmp_path, database="quota.db", cls=Place)


@pytest.fixture(params=["sqlite", "postgresql", "file"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return _place(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql", "file", "s3"])
def any_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """Like ``place``, and S3 (moto) too, for the tests where it is cheap."""
    return _place(request.param, request, tmp_path)


@pytest.fixture(params=SQL_KINDS)
def sql_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return _place(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "file"])
def local_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return _place(request.param, request, tmp_path)


def _sql_rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite:///"):  # sqlite3 itself: cheap enough to call after every step
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return [tuple(row) for row in conn.execute(sql, params)]
    engine = throwaway_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def _blob_bytes(url: str, namespace: str) -> tuple[int, int]:
    """(sum of the stored blobs' real lengths, sum of their size column) of a namespace."""
    length = "length" if url.startswith("sqlite") else "octet_length"
    [(real, recorded)] = _sql_rows(
        url,
        f"SELECT COALESCE(SUM({length}(blob)), 0), COALESCE(SUM(size), 0) "
        "FROM gotstate_persist_records WHERE namespace = :ns",
        ns=namespace,
    )
    return int(real), int(recorded)


def _assert_key_counts_exact(url: str, namespace: str) -> None:
    """Each key's kept ``versions`` count equals its stored rows (read before any recount)."""
    rows = _sql_rows(
        url,
        'SELECT k."key", k.versions, (SELECT COUNT(*) FROM gotstate_persist_records r '
        'WHERE r.namespace = k.namespace AND r."key" = k."key") '
        "FROM gotstate_persist_keys k WHERE k.namespace = :ns",
        ns=namespace,
    )
    assert [(key, int(kept)) for key, kept, _ in rows] == [
        (key, int(counted)) for key, _, counted in rows
    ]


# Records and their stored sizes.


def _open(place: Place, keyring: gp.KeyRing, namespace: str = NAMESPACE, **kwargs: Any) -> gp.Store:
    return gp.open_store(
        place.url,
        namespace=namespace,
        keyring=keyring,
        formats=formats(),
        **place.options,
        **kwargs,
    )


def _sizes(keyring: gp.KeyRing, *lengths: int) -> dict[int, int]:
    """Stored size of ``note(length)`` for each length, measured in a scratch store."""
    url = f"memory://gsp-quota-probe-{uuid.uuid4().hex}"
    with gp.open_store(url, keyring=keyring, formats=formats()) as probe:
        return {length: probe.save(f"k{length}", note(length)).size for length in lengths}


def _machine() -> Any:
    machine = build_order_machine()
    machine.start()
    machine.process_event(Event("start"))
    return machine


def _listed(store: gp.Store) -> tuple[int, int, int]:
    """(bytes, records, keys) counted from the listings, not from any counter."""
    refs = [ref for key in store.keys() for ref in store.versions(key)]
    return sum(ref.size for ref in refs), len(refs), len(store.keys())


def _assert_exact(store: gp.Store) -> gp.Usage:
    """Kept counters == a recount (which finds nothing to repair) == the listings."""
    kept = store.usage()
    recounted = store.usage(recount=True)
    assert recounted.drift is None, f"counters drifted: kept {kept}, recounted {recounted}"
    assert kept == recounted
    assert (kept.bytes, kept.records, kept.keys) == _listed(store)
    return kept


def _assert_refusal(
    exc: BaseException,
    *,
    limit: str,
    maximum: int,
    usage: int,
    requested: int,
    namespace: str = NAMESPACE,
) -> None:
    assert type(exc) is gp.QuotaExceeded, repr(exc)
    assert (exc.limit, exc.maximum, exc.usage, exc.requested) == (
        limit,
        maximum,
        usage,
        requested,
    )
    message = str(exc)
    assert limit in message and repr(namespace) in message
    assert "set_quota" in message, "the message must say how to raise the quota"
    assert "delete" in message, "the message must say how to free space"


# 1. Validation and persistence of the quota.

_LIMIT_FIELDS = (
    "max_bytes",
    "max_records",
    "max_keys",
    "max_blob_bytes",
    "max_versions_per_key",
    "max_writes_per_second",
    "max_reads_per_second",
)


@pytest.mark.parametrize("name", _LIMIT_FIELDS)
@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, 2.5, "5", 2**63, [1]])
def test_invalid_limits_are_refused(name: str, value: object) -> None:
    with pytest.raises(gp.InvalidArgument, match=name) as refused:
        gp.Quota(**{name: value})  # type: ignore[arg-type]
    assert isinstance(refused.value, ValueError)


@pytest.mark.parametrize("name", _LIMIT_FIELDS)
def test_limits_accept_every_positive_int64(name: str) -> None:
    for value in (1, 2**63 - 1, None):
        limits: dict[str, Any] = {name: value}
        assert getattr(gp.Quota(**limits), name) == value


@pytest.mark.parametrize("retention", ["oldest", "", "REJECT", None, 1])
def test_unknown_retention_is_refused(retention: object) -> None:
    with pytest.raises(gp.InvalidArgument, match="retention"):
        gp.Quota(max_versions_per_key=2, retention=retention)  # type: ignore[arg-type]


def test_quota_is_frozen_and_keyword_only() -> None:
    quota = gp.Quota(max_bytes=10, retention="prune-oldest")
    with pytest.raises(AttributeError):
        quota.max_bytes = 20  # type: ignore[misc]
    assert quota.max_bytes == 10
    with pytest.raises(TypeError):
        gp.Quota(10)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        gp.Quota(max_megabytes=10)  # type: ignore[call-arg]


def test_store_refuses_a_quota_that_is_not_a_quota(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with pytest.raises(gp.InvalidArgument, match="Quota"):
        gp.open_store(sqlite_url, keyring=keyring, quota={"max_bytes": 10})  # type: ignore[arg-type]
    with gp.open_store(sqlite_url, keyring=keyring) as store:
        with pytest.raises(gp.InvalidArgument, match="Quota"):
            store.set_quota({"max_bytes": 10})  # type: ignore[arg-type]
        assert store.quota is None


def test_quota_is_persisted_per_namespace(place: Place, keyring: gp.KeyRing) -> None:
    first = gp.Quota(max_bytes=10_000, max_versions_per_key=3, retention="prune-oldest")
    second = gp.Quota(max_records=7, max_writes_per_second=50)
    with _open(place, keyring, quota=first) as store:
        assert store.quota == first
    with _open(place, keyring, quota=first) as store:  # the same quota again: fine
        assert store.quota == first
    for different in (gp.Quota(max_bytes=10_001), second, gp.Quota(max_bytes=10_000)):
        with pytest.raises(gp.InvalidArgument, match="set_quota"):
            _open(place, keyring, quota=different)
    with _open(place, keyring) as store:  # without quota=: the stored one
        assert store.quota == first
    with _open(place, keyring, namespace="other") as other:  # per namespace
        assert other.quota is None
    with _open(place, keyring, namespace="other", quota=second) as other:
        assert other.quota == second
    with _open(place, keyring) as store:
        assert store.quota == first
        store.set_quota(second)
        assert store.quota == second
    with _open(place, keyring) as store:  # a later open sees the change
        assert store.quota == second
    with pytest.raises(gp.InvalidArgument):
        _open(place, keyring, quota=first)
    with _open(place, keyring) as store:
        store.set_quota(None)
        assert store.quota is None
    with _open(place, keyring) as store:
        assert store.quota is None
    with _open(place, keyring, quota=first) as store:  # none stored: the given one is adopted
        assert store.quota == first
    with _open(place, keyring, namespace="other") as other:
        assert other.quota == second


def test_removing_a_quota_that_was_never_set(place: Place, keyring: gp.KeyRing) -> None:
    # (On file:// this once failed: removing quota.json fsynced a namespace
    # directory that did not exist yet.)
    with _open(place, keyring, namespace="fresh") as store:
        store.set_quota(None)
        assert store.quota is None
        store.set_quota(gp.Quota(retention="prune-oldest"))  # no limit at all: the same
        assert store.quota is None


def test_a_tampered_stored_quota_is_refused(local_place: Place, keyring: gp.KeyRing) -> None:
    with _open(local_place, keyring, quota=gp.Quota(max_bytes=100)) as store:
        store.save("k", note(1))
    if local_place.kind == "sqlite":
        engine = throwaway_engine(local_place.url)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE gotstate_persist_namespaces SET max_bytes = 0"))
        engine.dispose()
    else:
        assert local_place.root is not None
        [stored] = list(local_place.root.rglob("quota.json"))
        stored.write_bytes(b'{"max_bytes": 0}')
    with _open(local_place, keyring) as store, pytest.raises(gp.IntegrityError):
        assert store.quota is not None


# 2. Every limit refuses exactly at its boundary; 3. a refused write changes nothing.


def test_max_bytes_boundary(any_place: Place, keyring: gp.KeyRing) -> None:
    sizes = _sizes(keyring, 8, 9)
    small, big = sizes[8], sizes[9]
    assert big == small + 1
    limit = 3 * small
    with _open(any_place, keyring, quota=gp.Quota(max_bytes=limit)) as store:
        assert store.save("k1", note(8)).size == small
        assert store.save("k2", note(8)).size == small
        before = any_place.snapshot()
        with pytest.raises(gp.QuotaExceeded) as refused:
            store.save("k3", note(9))  # one byte more than fits
        _assert_refusal(
            refused.value, limit="max_bytes", maximum=limit, usage=2 * small, requested=big
        )
        with pytest.raises(gp.QuotaExceeded):
            store.save("k1", note(9))  # the same on an existing key
        assert any_place.snapshot() == before
        assert store.usage() == gp.Usage(2 * small, 2, 2)
        assert store.save("k3", note(8)).size == small  # fits exactly
        assert store.usage() == gp.Usage(limit, 3, 3)
        with pytest.raises(gp.QuotaExceeded) as full:
            store.save("k1", note(0))
        assert full.value.usage == limit
        assert _assert_exact(store).bytes == limit


def test_max_blob_bytes_boundary(place: Place, keyring: gp.KeyRing) -> None:
    sizes = _sizes(keyring, 8, 9)
    with _open(place, keyring, quota=gp.Quota(max_blob_bytes=sizes[8])) as store:
        before = place.snapshot()
        with pytest.raises(gp.QuotaExceeded) as refused:
            store.save("k", note(9))
        _assert_refusal(
            refused.value, limit="max_blob_bytes", maximum=sizes[8], usage=0, requested=sizes[9]
        )
        assert place.snapshot() == before
        assert store.usage() == gp.Usage()
        for _ in range(3):  # a per-blob limit, not a total
            assert store.save("k", note(8)).size == sizes[8]
        assert _assert_exact(store) == gp.Usage(3 * sizes[8], 3, 1)


def test_max_records_boundary(place: Place, keyring: gp.KeyRing) -> None:
    with _open(place, keyring, quota=gp.Quota(max_records=3)) as store:
        store.save("k1", note(1))
        store.save("k1", note(1))
        store.save("k2", note(1))  # the third record fits exactly
        before = place.snapshot()
        for key in ("k1", "k3"):
            with pytest.raises(gp.QuotaExceeded) as refused:
                store.save(key, note(1))
            _assert_refusal(refused.value, limit="max_records", maximum=3, usage=3, requested=1)
        assert place.snapshot() == before
        assert store.delete("k1", version=1) == 1
        assert store.save("k3", note(1)).version == 1
        assert _assert_exact(store).records == 3


def test_max_keys_boundary(place: Place, keyring: gp.KeyRing) -> None:
    with _open(place, keyring, quota=gp.Quota(max_keys=2)) as store:
        store.save("k1", note(1))
        store.save("k2", note(1))  # the second key fits exactly
        store.save("k1", note(1))  # more versions of a counted key: no new key
        before = place.snapshot()
        with pytest.raises(gp.QuotaExceeded) as refused:
            store.save("k3", note(1))
        _assert_refusal(refused.value, limit="max_keys", maximum=2, usage=2, requested=1)
        assert place.snapshot() == before
        assert store.keys() == ["k1", "k2"]
        store.delete("k2")
        assert store.save("k3", note(1)).version == 1
        with pytest.raises(gp.QuotaExceeded):
            store.save("k2", note(1))  # deleted keys come back as new keys
        assert _assert_exact(store).keys == 2


def test_max_versions_per_key_reject_boundary(place: Place, keyring: gp.KeyRing) -> None:
    with _open(place, keyring, quota=gp.Quota(max_versions_per_key=2)) as store:
        store.save("k1", note(1))
        store.save("k1", note(1))  # the second version fits exactly
        before = place.snapshot()
        with pytest.raises(gp.QuotaExceeded) as refused:
            store.save("k1", note(1))
        _assert_refusal(
            refused.value, limit="max_versions_per_key", maximum=2, usage=2, requested=1
        )
        assert place.snapshot() == before
        assert [ref.version for ref in store.versions("k1")] == [1, 2]
        store.save("k2", note(1))  # per key
        store.save("k2", note(1))
        store.delete("k1", version=1)
        assert store.save("k1", note(1)).version == 3
        assert [ref.version for ref in store.versions("k1")] == [2, 3]
        _assert_exact(store)


def test_refused_writes_leave_every_stored_byte_unchanged(
    any_place: Place, keyring: gp.KeyRing
) -> None:
    """New key, existing key, a write that pruned before it was refused, a machine."""
    sizes = _sizes(keyring, 8, 200)
    small, big = sizes[8], sizes[200]
    assert big > 2 * small
    quota = gp.Quota(
        max_bytes=4 * small, max_keys=2, max_versions_per_key=2, retention="prune-oldest"
    )
    with _open(any_place, keyring, quota=quota) as store:
        store.save("k1", note(8))
        store.save("k1", note(8))
        store.save("k2", note(8))
        before = any_place.snapshot()
        usage = store.usage()
        assert usage == gp.Usage(3 * small, 3, 2)

        with pytest.raises(gp.QuotaExceeded) as new_key:
            store.save("k3", note(8))
        assert new_key.value.limit == "max_keys"
        assert any_place.snapshot() == before
        # Retention would prune k1's oldest version first: still 3s - s + big > 4s.
        with pytest.raises(gp.QuotaExceeded) as pruning:
            store.save("k1", note(200))
        _assert_refusal(
            pruning.value,
            limit="max_bytes",
            maximum=4 * small,
            usage=3 * small,
            requested=big - small,  # net of what pruning frees
        )
        assert any_place.snapshot() == before
        with pytest.raises(gp.QuotaExceeded) as existing:
            store.save("k2", note(200))
        assert existing.value.limit == "max_bytes"
        assert any_place.snapshot() == before
        store.set_quota(gp.Quota(max_bytes=usage.bytes))
        before = any_place.snapshot()
        with pytest.raises(gp.QuotaExceeded):
            store.save_machine("m", _machine())
        with pytest.raises(gp.QuotaExceeded):
            store.save("k1", note(8), expected_version=2)
        assert any_place.snapshot() == before
        assert store.usage() == usage
        assert [ref.version for ref in store.versions("k1")] == [1, 2]
        store.set_quota(quota)
        # No version number was used up by the refusals; retention now prunes v1.
        assert store.save("k1", note(8)).version == 3
        assert [ref.version for ref in store.versions("k1")] == [2, 3]
        assert _assert_exact(store) == usage


# 4. Lowering a limit below current usage.


def test_lowering_a_limit_below_usage_refuses_writes_and_deletes_nothing(
    place: Place, keyring: gp.KeyRing
) -> None:
    small = _sizes(keyring, 8)[8]
    with _open(place, keyring) as store:
        for key in ("k1", "k1", "k2", "k3"):
            store.save(key, note(8))
        usage = store.usage()
        assert usage == gp.Usage(4 * small, 4, 3)
        store.set_quota(gp.Quota(max_bytes=2 * small, max_versions_per_key=1))
        assert store.usage() == usage
        before = place.snapshot()
        for key in ("k1", "k2", "k4"):
            with pytest.raises(gp.QuotaExceeded) as refused:
                store.save(key, note(8))
            _assert_refusal(
                refused.value,
                limit="max_bytes",
                maximum=2 * small,
                usage=4 * small,
                requested=small,
            )
        assert [ref.version for ref in store.versions("k1")] == [1, 2]
        assert store.keys() == ["k1", "k2", "k3"]
        assert _assert_exact(store) == usage
    with _open(place, keyring) as store:  # persisted: another store refuses too
        with pytest.raises(gp.QuotaExceeded):
            store.save("k4", note(8))
        assert place.snapshot() == before
        assert store.delete("k1") == 2  # deleting is always allowed and frees usage
        assert store.usage() == gp.Usage(2 * small, 2, 2)
        with pytest.raises(gp.QuotaExceeded):
            store.save("k4", note(8))  # at the limit now: still nothing fits
        store.delete("k2")
        assert store.save("k1", note(8)).version == 3  # numbers are never reused
        assert _assert_exact(store) == gp.Usage(2 * small, 2, 2)


def test_a_lowered_limit_binds_a_store_opened_before(
    place: Place, keyring: gp.KeyRing, request: pytest.FixtureRequest
) -> None:
    small = _sizes(keyring, 8)[8]
    with _open(place, keyring) as early, _open(place, keyring) as admin:
        early.save("k", note(8))
        admin.set_quota(gp.Quota(max_bytes=small))
        with pytest.raises(gp.QuotaExceeded):
            early.save("k", note(8))
        assert early.usage().bytes <= small


def test_over_a_lowered_limit_only_writes_that_need_more_are_refused(
    place: Place, keyring: gp.KeyRing
) -> None:
    """A pruning write that frees at least what it adds passes; one that needs more does not."""
    sizes = _sizes(keyring, 8, 200)
    small, big = sizes[8], sizes[200]
    retention = gp.Quota(max_versions_per_key=2, retention="prune-oldest")
    with _open(place, keyring, quota=retention) as store:
        store.save("k", note(200))
        store.save("k", note(200))
        store.save("j", note(8))
        usage = store.usage()
        assert usage == gp.Usage(2 * big + small, 3, 2)
        lowered = gp.Quota(
            max_bytes=small, max_records=1, max_versions_per_key=2, retention="prune-oldest"
        )
        store.set_quota(lowered)
        before = place.snapshot()
        with pytest.raises(gp.QuotaExceeded) as refused:
            store.save("j", note(8))  # nothing to prune: needs more bytes
        _assert_refusal(
            refused.value, limit="max_bytes", maximum=small, usage=usage.bytes, requested=small
        )
        assert place.snapshot() == before
        assert store.save("k", note(8)).version == 3  # frees a big version for a small one
        assert store.save("k", note(200)).version == 4  # frees big for big: needs nothing
        assert [ref.size for ref in store.versions("k")] == [small, big]
        over = store.usage()
        assert over == gp.Usage(big + 2 * small, 3, 2)  # still over every lowered limit
        before = place.snapshot()
        with pytest.raises(gp.QuotaExceeded) as needs_more:
            store.save("k", note(200))  # frees small for big
        _assert_refusal(
            needs_more.value,
            limit="max_bytes",
            maximum=small,
            usage=over.bytes,
            requested=big - small,
        )
        assert place.snapshot() == before
        assert _assert_exact(store) == over


# 5. Retention.


def test_prune_oldest_keeps_exactly_the_newest_versions(place: Place, keyring: gp.KeyRing) -> None:
    quota = gp.Quota(max_versions_per_key=3, retention="prune-oldest")
    with _open(place, keyring, quota=quota) as store:
        store.save("other", note(5))
        refs = [store.save("k", note(10 * version)) for version in range(1, 8)]
        assert [ref.version for ref in refs] == list(range(1, 8))
        kept = store.versions("k")
        assert [ref.version for ref in kept] == [5, 6, 7]
        assert [ref.size for ref in kept] == [ref.size for ref in refs[4:]]
        assert store.load("k", version=5) == note(50)
        with pytest.raises(gp.NotFound):
            store.load("k", version=4)
        assert [ref.version for ref in store.versions("other")] == [1]
        usage = _assert_exact(store)
        assert usage.records == 4
        assert usage.bytes == sum(ref.size for ref in kept) + store.versions("other")[0].size
        for _ in range(4):  # machines too
            store.save_machine("m", _machine())
        assert [ref.version for ref in store.versions("m")] == [2, 3, 4]
        # Lowering the limit: the next write trims all the excess at once.
        store.set_quota(gp.Quota(max_versions_per_key=1, retention="prune-oldest"))
        assert store.save("k", note(1)).version == 8
        assert [ref.version for ref in store.versions("k")] == [8]
        assert [ref.version for ref in store.versions("m")] == [2, 3, 4]
        assert _assert_exact(store).records == 1 + 1 + 3


def test_reject_refuses_the_version_after_the_limit(place: Place, keyring: gp.KeyRing) -> None:
    with _open(place, keyring, quota=gp.Quota(max_versions_per_key=3, retention="reject")) as store:
        for _ in range(3):
            store.save("k", note(5))
        with pytest.raises(gp.QuotaExceeded) as refused:
            store.save("k", note(5))
        _assert_refusal(
            refused.value, limit="max_versions_per_key", maximum=3, usage=3, requested=1
        )
        assert [ref.version for ref in store.versions("k")] == [1, 2, 3]
        store.delete("k", version=1)
        assert store.save("k", note(5)).version == 4
        assert [ref.version for ref in store.versions("k")] == [2, 3, 4]
        _assert_exact(store)


# 6. Processes racing against one limit.


def test_racing_processes_never_overshoot_max_bytes(sql_place: Place, keyring: gp.KeyRing) -> None:
    workers, attempts = 4, 12
    sizes = _sizes(keyring, *RACE_LENGTHS)
    attempted = sum(
        sizes[RACE_LENGTHS[(w + a) % len(RACE_LENGTHS)]]
        for w in range(workers)
        for a in range(attempts)
    )
    limit = attempted * 2 // 5
    with _open(sql_place, keyring, quota=gp.Quota(max_bytes=limit)):
        pass  # schema and quota exist before the race, as in a deployment
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=race_writer,
            args=(sql_place.url, keyring.export(), NAMESPACE, barrier, w, attempts, results),
        )
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    reports = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert [error for *_, error in reports if error] == []
    assert [proc.exitcode for proc in procs] == [0] * workers
    stored = {ref for _, refs, _, _ in reports for ref in refs}
    refused = sum(count for _, _, count, _ in reports)
    assert refused > 0, "the limit was never reached: the race tested nothing"
    with _open(sql_place, keyring) as store:
        _assert_key_counts_exact(sql_place.url, NAMESPACE)
        usage = _assert_exact(store)
        listed = {
            (ref.key, ref.version, ref.size) for k in store.keys() for ref in store.versions(k)
        }
    assert usage.bytes <= limit
    assert listed == stored  # every reported save is stored, nothing refused is
    assert usage.bytes == sum(size for _, _, size in stored)
    assert _blob_bytes(sql_place.url, NAMESPACE) == (usage.bytes, usage.bytes)


# 7. A writer killed in the middle of a write.


def _wait_for_sessions_to_end(url: str) -> None:
    """PostgreSQL: the killed writer's sessions are gone (their transactions ended)."""
    deadline = time.monotonic() + 30
    while _sql_rows(
        url,
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()",
    ) != [(0,)]:
        assert time.monotonic() < deadline, "the killed writer's sessions did not end"
        time.sleep(0.05)


#: Test-only triggers that make every insert and delete of a blob row take tens
#: of milliseconds inside its transaction (as a big blob on a slow disk would),
#: so that a kill lands inside a write transaction rather than between writes.
_SLOW_WRITES = {
    "sqlite": [
        f"CREATE TRIGGER gsp_test_slow_{event} AFTER {event} ON gotstate_persist_records "
        "BEGIN SELECT COUNT(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
        "SELECT x + 1 FROM c WHERE x < 200000) SELECT x FROM c); END"
        for event in ("INSERT", "DELETE")
    ],
    "postgresql": [
        "CREATE FUNCTION gsp_test_slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.02); RETURN NULL; END $$",
        "CREATE TRIGGER gsp_test_slow AFTER INSERT OR DELETE ON gotstate_persist_records "
        "FOR EACH ROW EXECUTE FUNCTION gsp_test_slow()",
    ],
}


def test_sigkill_mid_write_leaks_no_usage(sql_place: Place, keyring: gp.KeyRing) -> None:
    quota = gp.Quota(max_bytes=KILLED_LENGTH * 5, max_versions_per_key=2, retention="prune-oldest")
    with _open(sql_place, keyring, quota=quota):
        pass
    engine = throwaway_engine(sql_place.url)
    with engine.begin() as conn:
        for statement in _SLOW_WRITES[sql_place.kind]:
            conn.exec_driver_sql(statement)
    engine.dispose()
    ctx = multiprocessing.get_context("spawn")
    # Killed at different points of a save: sealing, the charge, pruning, the insert.
    for warm_up, delay in ((6, 0.0), (8, 0.015), (10, 0.04)):
        about_to_write = ctx.Event()
        proc = ctx.Process(
            target=killed_writer,
            args=(sql_place.url, keyring.export(), NAMESPACE, about_to_write, warm_up),
        )
        proc.start()
        try:
            assert about_to_write.wait(timeout=120), "the writer made no progress"
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        finally:
            proc.join(timeout=60)
        assert proc.exitcode == -signal.SIGKILL
        if sql_place.kind == "postgresql":
            _wait_for_sessions_to_end(sql_place.url)
        _assert_key_counts_exact(sql_place.url, NAMESPACE)
        with _open(sql_place, keyring) as store:
            usage = _assert_exact(store)
            assert usage.records > 0
            assert usage.bytes <= quota.max_bytes  # type: ignore[operator]
            assert all(len(store.versions(key)) <= 2 for key in store.keys())
        assert _blob_bytes(sql_place.url, NAMESPACE) == (usage.bytes, usage.bytes)


# 8. Counters equal a recount after any sequence of operations.

_LENGTHS = (1, 30, 120, 400)
_KEYS = ("a", "b")
_QUOTAS = st.builds(
    gp.Quota,
    max_bytes=st.none() | st.integers(1, 3_000),
    max_records=st.none() | st.integers(1, 8),
    max_keys=st.none() | st.integers(1, 2),
    max_versions_per_key=st.none() | st.integers(1, 3),
    retention=st.sampled_from(["reject", "prune-oldest"]),
)


@pytest.fixture(scope="module")
def schema_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite store with the current schema, copied for each example."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    with gp.open_store(f"sqlite:///{path}", keyring=gp.KeyRing.generate()):
        pass
    assert not Path(f"{path}-wal").exists()
    return path


def test_counters_equal_a_recount_after_any_operations(
    schema_template: Path, tmp_path: Path, keyring: gp.KeyRing
) -> None:
    sizes = _sizes(keyring, *_LENGTHS)
    examples = iter(range(10**6))

    class Operations(RuleBasedStateMachine):
        """Random saves, deletes and quota changes, checked against a model after each."""

        def __init__(self) -> None:
            super().__init__()
            self.path = tmp_path / f"example-{next(examples)}.db"
            shutil.copy(schema_template, self.path)
            self.url = f"sqlite:///{self.path}"
            self.store = gp.open_store(
                self.url, namespace=NAMESPACE, keyring=keyring, formats=formats()
            )
            self.quota: gp.Quota | None = None
            self.stored: dict[str, list[tuple[int, int]]] = {}  # key -> [(version, size)]
            self.last: dict[str, int] = {}

        def teardown(self) -> None:
            self.store.close()

        def _usage(self) -> tuple[int, int, int]:
            entries = [entry for versions in self.stored.values() for entry in versions]
            keys = sum(1 for versions in self.stored.values() if versions)
            return sum(size for _, size in entries), len(entries), keys

        def _fits(self, key: str, size: int) -> tuple[bool, int]:
            """Whether the quota admits the write, and how many old versions it prunes."""
            quota = self.quota or gp.Quota()
            stored = self.stored.get(key, [])
            most = quota.max_versions_per_key
            pruned = 0
            if most is not None and quota.retention == "prune-oldest":
                pruned = max(0, len(stored) + 1 - most)
            # A limit binds only a write that needs more of it, net of what
            # retention frees (so a pruning write may run over a lowered limit).
            grow = size - sum(size for _, size in stored[:pruned])
            more = 1 - pruned
            used, records, keys = self._usage()
            fits = (
                (quota.max_bytes is None or grow <= 0 or used + grow <= quota.max_bytes)
                and (quota.max_records is None or more <= 0 or records + more <= quota.max_records)
                and (quota.max_keys is None or bool(stored) or keys + 1 <= quota.max_keys)
                and (most is None or len(stored) - pruned + 1 <= most)
            )
            return fits, pruned

        @rule(
            key=st.sampled_from(_KEYS),
            lengths=st.lists(st.sampled_from(_LENGTHS), min_size=1, max_size=4),
        )
        def save(self, key: str, lengths: list[int]) -> None:
            for length in lengths:
                self._save(key, length)

        def _save(self, key: str, length: int) -> None:
            fits, pruned = self._fits(key, sizes[length])
            try:
                ref = self.store.save(key, note(length))
            except gp.QuotaExceeded:
                assert not fits, "refused a write the quota admits"
                event("refused")
                return
            assert fits, "admitted a write the quota refuses"
            event(f"saved, pruning {pruned}")
            version = self.last.get(key, 0) + 1
            assert (ref.version, ref.size) == (version, sizes[length])
            self.last[key] = version
            self.stored[key] = [*self.stored.get(key, [])[pruned:], (version, ref.size)]

        @rule(key=st.sampled_from(_KEYS))
        def delete_key(self, key: str) -> None:
            stored = self.stored.get(key, [])
            if not stored:
                with pytest.raises(gp.NotFound):
                    self.store.delete(key)
                return
            assert self.store.delete(key) == len(stored)
            self.stored[key] = []

        @rule(key=st.sampled_from(_KEYS), pick=st.integers(0, 5))
        def delete_version(self, key: str, pick: int) -> None:
            stored = self.stored.get(key, [])
            if stored:
                version, _ = stored[pick % len(stored)]
                assert self.store.delete(key, version=version) == 1
                self.stored[key] = [entry for entry in stored if entry[0] != version]

        @initialize(quota=_QUOTAS)
        def first_quota(self, quota: gp.Quota) -> None:
            self.set_quota(quota)

        @rule(quota=st.none() | _QUOTAS)
        def set_quota(self, quota: gp.Quota | None) -> None:
            self.store.set_quota(quota)
            self.quota = quota

        @invariant()
        def counters_are_exact(self) -> None:
            kept = self.store.usage()
            _assert_key_counts_exact(self.url, NAMESPACE)  # before recount repairs them
            assert (kept.bytes, kept.records, kept.keys) == self._usage()
            recounted = self.store.usage(recount=True)
            assert recounted.drift is None
            assert recounted == kept
            listed = {
                key: [(ref.version, ref.size) for ref in self.store.versions(key)] for key in _KEYS
            }
            assert listed == {key: self.stored.get(key, []) for key in _KEYS}

    run_state_machine_as_test(
        Operations, settings=settings(max_examples=25, stateful_step_count=15)
    )


# 9. Rate limits, under a frozen clock.


def _moving_window_case(traveller: Any, operation: Callable[[], object]) -> None:
    """1 operation at t=0 and 2 at t=0.9; at t=1.05 only one more may run.

    A fixed one-second window, whether it starts with the first operation or
    with the clock's second, has started afresh at t=1.05 and would allow 3.
    """
    operation()
    traveller.shift(0.9)
    operation()
    operation()
    traveller.shift(0.15)
    operation()  # the t=0 operation left the window
    with pytest.raises(gp.RateLimited) as refused:
        operation()
    assert refused.value.retry_after == pytest.approx(0.85, abs=1e-3)


def test_the_scenario_separates_moving_from_fixed_windows() -> None:
    """The reference: the ``limits`` library's fixed window allows what ours refuses."""
    from limits import RateLimitItemPerSecond, storage, strategies

    item = RateLimitItemPerSecond(3)
    with time_machine.travel(START, tick=False) as traveller:
        fixed = strategies.FixedWindowRateLimiter(storage.MemoryStorage())
        moving = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        allowed: dict[str, list[bool]] = {"fixed": [], "moving": []}
        for shift, hits in ((0.0, 1), (0.9, 2), (0.15, 2)):
            traveller.shift(shift)
            for _ in range(hits):
                allowed["fixed"].append(fixed.hit(item, "x"))
                allowed["moving"].append(moving.hit(item, "x"))
    assert allowed == {"fixed": [True] * 5, "moving": [True] * 4 + [False]}


def test_write_rate_limit(local_place: Place, keyring: gp.KeyRing) -> None:
    with time_machine.travel(START, tick=False) as traveller:
        quota = gp.Quota(max_writes_per_second=3)
        with _open(local_place, keyring, quota=quota) as store:
            for _ in range(3):
                store.save("k", note(5))
            before, usage = local_place.snapshot(), store.usage()
            with pytest.raises(gp.RateLimited) as refused:
                store.save("k", note(5))
            exc = refused.value
            assert isinstance(exc, gp.QuotaExceeded)
            assert 0 < exc.retry_after <= 1
            assert (exc.limit, exc.maximum) == ("max_writes_per_second", 3)
            assert "set_quota" in str(exc)
            with pytest.raises(gp.RateLimited):
                store.delete("k", version=1)  # deleting is writing
            for _ in range(5):
                assert store.load("k") == note(5)  # reads are not limited by it
            assert local_place.snapshot() == before
            assert store.usage() == usage
            traveller.shift(0.5)
            with pytest.raises(gp.RateLimited) as again:
                store.save("k", note(5))
            assert 0 < again.value.retry_after <= 0.5
            traveller.shift(0.501)
            assert store.save("k", note(5)).version == 4
            traveller.shift(10)
            _moving_window_case(traveller, lambda: store.save("k", note(5)))
            assert [ref.version for ref in store.versions("k")] == list(range(1, 9))
            _assert_exact(store)


def test_read_rate_limit(local_place: Place, keyring: gp.KeyRing) -> None:
    machine = _machine()
    with time_machine.travel(START, tick=False) as traveller:
        quota = gp.Quota(max_reads_per_second=3)
        with _open(local_place, keyring, quota=quota) as store:
            store.save_machine("m", machine)
            for _ in range(5):  # writes are not reads
                store.save("n", note(5))
            fresh = build_order_machine()
            store.restore_machine("m", fresh)
            assert fresh.current_state.name == "cart"
            assert store.load("n") == note(5)
            assert store.load("n", version=1) == note(5)
            untouched = build_order_machine()
            state = untouched.current_state
            with pytest.raises(gp.RateLimited) as refused:
                store.restore_machine("m", untouched)
            assert untouched.current_state is state
            with pytest.raises(gp.RateLimited):
                store.load("n")
            exc = refused.value
            assert 0 < exc.retry_after <= 1
            assert (exc.limit, exc.maximum) == ("max_reads_per_second", 3)
            traveller.shift(0.5)
            with pytest.raises(gp.RateLimited):
                store.load("n")
            traveller.shift(0.501)
            store.restore_machine("m", untouched)
            assert untouched.current_state.name == "cart"
            traveller.shift(10)
            _moving_window_case(traveller, lambda: store.load("n"))


def test_retrying_after_retry_after_succeeds(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with time_machine.travel(START, tick=False) as traveller:
        quota = gp.Quota(max_writes_per_second=3)
        with gp.open_store(sqlite_url, keyring=keyring, formats=formats(), quota=quota) as store:
            for _ in range(3):
                store.save("k", note(5))
            with pytest.raises(gp.RateLimited) as refused:
                store.save("k", note(5))
            traveller.shift(refused.value.retry_after)
            store.save("k", note(5))


def test_rate_limit_holds_per_process_not_per_store(sqlite_url: str, keyring: gp.KeyRing) -> None:
    """Every Store of a process on one storage and namespace shares the allowance."""
    quota = gp.Quota(max_writes_per_second=3)

    def open_store(namespace: str = NAMESPACE) -> gp.Store:
        return gp.open_store(sqlite_url, namespace=namespace, keyring=keyring, formats=formats())

    with gp.open_store(sqlite_url, namespace="other", keyring=keyring, quota=quota):
        pass
    with time_machine.travel(START, tick=False) as traveller:
        with (
            gp.open_store(
                sqlite_url, namespace=NAMESPACE, keyring=keyring, formats=formats(), quota=quota
            ) as one,
            open_store() as two,
        ):
            one.save("k", note(5))
            two.save("k", note(5))
            one.save("k", note(5))
            with pytest.raises(gp.RateLimited):
                two.save("k", note(5))
        traveller.shift(2)
        for _ in range(3):  # a store opened per operation, as a request handler might
            with open_store() as store:
                store.save("k", note(5))
        with open_store() as store, pytest.raises(gp.RateLimited):
            store.save("k", note(5))
        with open_store("other") as other:  # per namespace
            for _ in range(3):
                other.save("k", note(5))


def test_a_rate_limit_binds_a_store_opened_before(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with (
        time_machine.travel(START, tick=False),
        gp.open_store(sqlite_url, keyring=keyring, formats=formats()) as early,
        gp.open_store(sqlite_url, keyring=keyring, formats=formats()) as admin,
    ):
        early.save("k", note(5))
        admin.set_quota(gp.Quota(max_writes_per_second=1))
        early.save("k", note(5))  # (reading early.quota here would refresh its cache)
        with pytest.raises(gp.RateLimited):
            early.save("k", note(5))


# 10. Upgrading an older database.

_LEGACY_ROWS = (  # namespace, key, version, size
    ("legacy", "gappy", 2, 100),
    ("legacy", "gappy", 5, 250),
    ("legacy", "single", 1, 40),
)
_LEGACY_KEYS = (  # namespace, key, last_version, newest, kind
    ("legacy", "gappy", 6, 5, "note"),
    ("legacy", "single", 1, 1, "note"),
    ("legacy", "gone", 3, 0, None),
    ("msgpack", "gone-too", 2, 0, None),
)


@pytest.fixture(params=SQL_KINDS)
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database at schema revision v0.1.0.a with deleted keys and version gaps."""
    if request.param == "sqlite":
        path = tmp_path / "old.sqlite"
        shutil.copy(FIXTURES / "golden_db" / "v0.1.0.a.sqlite", path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_url")
    from alembic import command

    engine = throwaway_engine(url)
    try:
        with engine.begin() as conn:
            if request.param == "postgresql":
                command.upgrade(alembic_config(conn), "v0.1.0.a")
            for namespace, key, version, size in _LEGACY_ROWS:
                conn.execute(
                    sa.text(
                        'INSERT INTO gotstate_persist_records (namespace, "key", version, kind, '
                        "format_version, size, created_at_us, blob) VALUES "
                        "(:ns, :key, :version, 'note', 1, :size, 0, :blob)"
                    ).bindparams(sa.bindparam("blob", type_=sa.LargeBinary)),
                    {
                        "ns": namespace,
                        "key": key,
                        "version": version,
                        "size": size,
                        "blob": os.urandom(size),
                    },
                )
            for namespace, key, last, newest, kind in _LEGACY_KEYS:
                conn.execute(
                    sa.text(
                        'INSERT INTO gotstate_persist_keys (namespace, "key", last_version, '
                        "newest, kind) VALUES (:ns, :key, :last, :newest, :kind)"
                    ),
                    {"ns": namespace, "key": key, "last": last, "newest": newest, "kind": kind},
                )
    finally:
        engine.dispose()
    return url


def test_upgraded_database_starts_with_exact_counters(
    old_database: str, keyring: gp.KeyRing
) -> None:
    url = old_database
    expected = {
        namespace: (int(total), int(records), int(keys))
        for namespace, total, records, keys in _sql_rows(
            url,
            'SELECT namespace, SUM(size), COUNT(*), COUNT(DISTINCT "key") '
            "FROM gotstate_persist_records GROUP BY namespace",
        )
    }
    assert expected["legacy"] == (390, 3, 2)
    with pytest.raises(gp.SchemaOutdated):
        gp.open_store(url, keyring=keyring)
    assert cli(["db", "upgrade", url]) == 0
    for namespace in expected:
        _assert_key_counts_exact(url, namespace)
    for namespace, counts in expected.items():
        with gp.open_store(url, namespace=namespace, keyring=keyring) as store:
            kept = store.usage()
            assert (kept.bytes, kept.records, kept.keys) == counts
            recounted = store.usage(recount=True)
            assert recounted.drift is None
            assert recounted == kept
    # The per-key counts are live: the quota's limits see them.
    quota = gp.Quota(max_versions_per_key=2, max_keys=3)
    with gp.open_store(
        url, namespace="legacy", keyring=keyring, formats=formats(), quota=quota
    ) as store:
        with pytest.raises(gp.QuotaExceeded) as refused:
            store.save("gappy", note(1))
        assert (refused.value.limit, refused.value.usage) == ("max_versions_per_key", 2)
        assert store.save("single", note(1)).version == 2
        assert store.save("gone", note(1)).version == 4  # a deleted key is a new key
        with pytest.raises(gp.QuotaExceeded) as keys:
            store.save("fourth", note(1))
        assert (keys.value.limit, keys.value.usage) == ("max_keys", 3)
        assert store.usage(recount=True).drift is None


# 11. Object stores without a catalog.


def test_object_store_stores_of_one_process_share_enforcement(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    small = _sizes(keyring, 50)[50]
    place = Place("file", f"file://{tmp_path / 'objects'}", root=tmp_path / "objects")
    quota = gp.Quota(max_bytes=10 * small + small // 2)  # room for exactly 10
    threads, attempts = 4, 8
    barrier = threading.Barrier(threads)
    outcomes: list[str] = []
    failures: list[BaseException] = []

    def writer(store: gp.Store, index: int) -> None:
        try:
            barrier.wait(timeout=30)
            for attempt in range(attempts):
                try:
                    store.save(f"t{index}-{attempt % 2}", note(50))
                except gp.QuotaExceeded:
                    outcomes.append("refused")
                else:
                    outcomes.append("stored")
        except BaseException as exc:
            failures.append(exc)

    with _open(place, keyring, quota=quota) as one, _open(place, keyring, quota=quota) as two:
        workers = [
            threading.Thread(target=writer, args=((one, two)[index % 2], index))
            for index in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert failures == []
        assert outcomes.count("stored") == 10
        assert outcomes.count("refused") == threads * attempts - 10
        for store in (one, two):
            usage = _assert_exact(store)
            assert (usage.bytes, usage.records) == (10 * small, 10)


def test_object_store_recount_reports_what_another_process_wrote(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    lengths = [60, 70, 80]
    sizes = _sizes(keyring, 50, *lengths)
    child_bytes = sum(sizes[length] for length in lengths)
    place = Place("file", f"file://{tmp_path / 'objects'}", root=tmp_path / "objects")
    limit = sizes[50] + child_bytes + sizes[50] - 1  # room for one more in our own view only
    with _open(place, keyring, quota=gp.Quota(max_bytes=limit)) as store:
        store.save("parent", note(50))
        believed = store.usage()
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(
            target=object_writer, args=(place.url, keyring.export(), NAMESPACE, lengths)
        )
        child.start()
        child.join(timeout=120)
        assert child.exitcode == 0
        # This process has not seen the other one's writes: documented, per process.
        assert store.usage() == believed
        recounted = store.usage(recount=True)
        assert (recounted.bytes, recounted.records, recounted.keys) == _listed(store)
        assert recounted.drift == gp.Usage(child_bytes, 3, 2)
        assert store.usage() == gp.Usage(recounted.bytes, recounted.records, recounted.keys)
        assert store.usage(recount=True).drift is None
        # Enforcement now uses the repaired numbers.
        with pytest.raises(gp.QuotaExceeded) as refused:
            store.save("parent", note(50))
        _assert_refusal(
            refused.value,
            limit="max_bytes",
            maximum=limit,
            usage=recounted.bytes,
            requested=sizes[50],
        )
        assert store.usage().bytes <= limit
