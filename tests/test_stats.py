"""``Store.stats()``: exact counts after known operations, on a real SQLite store.

Every figure is checked against what the operations returned (sizes from the
``SnapshotRef``s, outcomes from the raised errors); durations are only
checked to be consistent with each other, never against the clock.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import time_machine
from gotstate.core.events import Event

import gotstate_persist as gp
from gotstate_persist._metrics import LATENCY_BUCKETS_S, Latency, Metrics
from tests.machines import build_ring_machine

SAMPLES = Path(__file__).parent / "ext_samples"
GUARDED = f"{SAMPLES / 'guarded.py'}:Guarded"


class Note(msgspec.Struct, frozen=True):
    text: str


def _formats() -> gp.FormatRegistry:
    formats = gp.FormatRegistry()
    formats.register(Note, kind="note", version=1)
    return formats


@pytest.fixture
def counted(sqlite_url: str, keyring: gp.KeyRing) -> Iterator[gp.Store]:
    with gp.open_store(sqlite_url, namespace="orders", keyring=keyring, formats=_formats()) as s:
        yield s


def _machine() -> object:
    machine = build_ring_machine()
    machine.start()
    machine.process_event(Event("next"))
    return machine


def _consistent(latency: Latency) -> None:
    assert sum(latency.buckets) == latency.count
    assert len(latency.buckets) == len(LATENCY_BUCKETS_S) + 1
    assert 0.0 <= latency.max_s <= latency.total_s
    assert latency.failures <= latency.count


def test_a_fresh_store_counts_nothing(counted: gp.Store) -> None:
    stats = counted.stats()
    assert stats.namespace == "orders"
    assert stats.save_machine == Latency() and stats.load == Latency()
    assert stats.records_written == stats.bytes_written == stats.bytes_read == 0
    assert stats.failures == {}


def test_saves_restores_and_loads_are_counted_exactly(counted: gp.Store) -> None:
    machine = _machine()
    refs = [counted.save_machine(f"order-{i % 3}", machine) for i in range(7)]
    notes = [counted.save("note", Note(f"n{i}")) for i in range(4)]
    restored = counted.restore_machine("order-1", build_ring_machine())
    counted.restore_machine("order-2", build_ring_machine(), version=1)
    loaded = counted.load("note")
    assert loaded == Note("n3")

    stats = counted.stats()
    assert stats.save_machine.count == 7 and stats.save.count == 4
    assert stats.restore_machine.count == 2 and stats.load.count == 1
    for latency in (stats.save_machine, stats.save, stats.restore_machine, stats.load):
        _consistent(latency)
        assert latency.failures == 0
    assert stats.records_written == 11
    assert stats.bytes_written == sum(ref.size for ref in refs + notes)
    version_one = counted.versions("order-2")[0]
    assert stats.records_read == 3
    assert stats.bytes_read == restored.size + version_one.size + notes[-1].size
    assert stats.version_conflicts == stats.append_retries == 0
    assert stats.failures == {}


def test_a_snapshot_is_immutable_and_does_not_move(counted: gp.Store) -> None:
    before = counted.stats()
    counted.save("note", Note("x"))
    assert before.save.count == 0 and counted.stats().save.count == 1
    with pytest.raises(AttributeError):
        before.save = Latency()  # type: ignore[misc]
    assert msgspec.to_builtins(before)["namespace"] == "orders"


def test_a_forced_version_conflict_is_counted(counted: gp.Store) -> None:
    machine = _machine()
    counted.save_machine("order", machine)
    counted.save_machine("order", machine)
    with pytest.raises(gp.VersionConflict):
        counted.save_machine("order", machine, expected_version=1)
    with pytest.raises(gp.NotFound):
        counted.load("missing")
    stats = counted.stats()
    assert stats.version_conflicts == 1 and stats.append_retries == 0
    assert stats.save_machine.count == 3 and stats.save_machine.failures == 1
    assert stats.load.count == 1 and stats.load.failures == 1
    assert stats.records_written == 2
    assert stats.failures == {"NotFound": 1, "VersionConflict": 1}


def test_quota_refusals_are_counted(sqlite_url: str, keyring: gp.KeyRing) -> None:
    quota = gp.Quota(max_records=2)
    with gp.open_store(sqlite_url, keyring=keyring, formats=_formats(), quota=quota) as store:
        store.save("a", Note("1"))
        store.save("b", Note("2"))
        with pytest.raises(gp.QuotaExceeded):
            store.save("c", Note("3"))
        stats = store.stats()
    assert stats.quota_refusals == 1 and stats.rate_refusals == 0
    assert stats.records_written == 2 and stats.save.failures == 1
    assert stats.failures == {"QuotaExceeded": 1}


def test_rate_refusals_are_counted_apart(sqlite_url: str, keyring: gp.KeyRing) -> None:
    quota = gp.Quota(max_writes_per_second=2, max_reads_per_second=1)
    with (
        time_machine.travel(1_800_000_000.0, tick=False),
        gp.open_store(sqlite_url, keyring=keyring, formats=_formats(), quota=quota) as store,
    ):
        store.save("a", Note("1"))
        store.save("a", Note("2"))
        with pytest.raises(gp.RateLimited):
            store.save("a", Note("3"))
        store.load("a")
        with pytest.raises(gp.RateLimited):
            store.load("a")
        stats = store.stats()
    assert stats.rate_refusals == 2 and stats.quota_refusals == 0
    assert stats.failures == {"RateLimited": 2}


def test_threads_add_up_exactly() -> None:
    """Per-thread shards: no update is lost however the threads interleave."""
    metrics = Metrics()
    threads, per_thread = 8, 20_000
    start = threading.Barrier(threads)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:

        def count() -> None:
            start.wait()
            for _ in range(per_thread):
                metrics.wrote(3)
                metrics.finished("save", 0.0, None)

        workers = [threading.Thread(target=count) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(switch)
    stats = metrics.snapshot("ns")
    assert stats.records_written == threads * per_thread
    assert stats.bytes_written == 3 * threads * per_thread
    assert stats.save.count == threads * per_thread == stats.save.buckets[0]
    # the ended threads' shards were folded into one
    assert metrics.snapshot("ns") == stats


def test_threads_saving_through_one_store_add_up(counted: gp.Store) -> None:
    threads, saves = 6, 15
    refs: list[list[gp.SnapshotRef]] = [[] for _ in range(threads)]

    def work(index: int) -> None:
        machine = _machine()
        for i in range(saves):
            # half the threads share one key: they race for its versions
            key = "shared" if index % 2 else f"own-{index}"
            refs[index].append(counted.save_machine(key, machine))
            if i % 5 == 0:
                counted.restore_machine(key, build_ring_machine())

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stats = counted.stats()
    every = [ref for row in refs for ref in row]
    assert stats.save_machine.count == stats.records_written == threads * saves
    assert stats.bytes_written == sum(ref.size for ref in every)
    assert stats.restore_machine.count == stats.records_read == threads * 3
    assert stats.version_conflicts == stats.append_retries  # every lost race was retried
    assert stats.failures == {}
    assert sorted(ref.version for ref in every if ref.key == "shared") == list(range(1, 46))


def test_reseal_progress_is_counted(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with gp.open_store(sqlite_url, keyring=keyring, formats=_formats()) as store:
        for i in range(5):
            store.save(f"k{i}", Note(str(i)))
        keyring.rotate()
        report = store.reseal()
        stats = store.stats()
    assert report.migrated == 5
    assert stats.resealed == 5 and stats.migrated == 0
    assert stats.records_written == 5  # the saves; rewrites count as resealed


class NoteV2(msgspec.Struct, frozen=True):
    text: str
    words: int


def test_migrate_progress_is_counted(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with gp.open_store(sqlite_url, keyring=keyring, formats=_formats()) as store:
        for i in range(3):
            store.save(f"k{i}", Note("a b"))
    formats = _formats()
    formats.register(
        NoteV2, kind="note", version=2, upcast=lambda old: {**old, "words": len(old["text"])}
    )
    with gp.open_store(sqlite_url, keyring=keyring, formats=formats) as store:
        written_before = store.stats().bytes_written
        report = store.migrate("note")
        stats = store.stats()
    assert report.migrated == 3
    assert stats.migrated == 3 and stats.resealed == 0
    assert written_before == 0 < stats.bytes_written


def _release_guarded() -> None:
    for module in list(sys.modules.values()):
        release = getattr(module, "RELEASE", None)
        if release is not None and getattr(module, "Guarded", None) is not None:
            release.set()


def test_extension_calls_failures_and_timeouts_are_counted(counted: gp.Store) -> None:
    exts = counted.extensions
    exts.register(
        GUARDED,
        isolation="in-process",
        limits=gp.ResourceLimits(timeout_s=0.3, max_failures=10),
    )
    exts.activate("guarded")
    try:
        bound = exts.bind(_fresh_machine(), "guarded")
        assert bound.process_event(Event("next"))
        with pytest.raises(gp.ExtensionFailed):
            bound.process_event(Event("raise"))
        with pytest.raises(gp.ExtensionTimeout):
            bound.process_event(Event("hang"))
    finally:
        _release_guarded()
    stats = counted.stats()
    assert (stats.extension_calls, stats.extension_failures, stats.extension_timeouts) == (3, 2, 1)


def _fresh_machine() -> object:
    machine = build_ring_machine()
    machine.start()
    return machine


def test_stats_off_counts_nothing(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with gp.open_store(sqlite_url, keyring=keyring, stats=False) as store:
        store.save_machine("k", _machine())
        assert store.pipeline.metrics is None
        with pytest.raises(gp.InvalidArgument, match="stats=False"):
            store.stats()


def test_operations_take_their_arguments_by_keyword_too(counted: gp.Store) -> None:
    ref = counted.save_machine(key="k", machine=_machine())
    counted.restore_machine(key="k", machine=build_ring_machine(), version=ref.version)
    counted.save(key="n", record=Note("x"))
    assert counted.load(key="n") == Note("x")
    stats = counted.stats()
    counts = (stats.save_machine, stats.restore_machine, stats.save, stats.load)
    assert [latency.count for latency in counts] == [1, 1, 1, 1]
