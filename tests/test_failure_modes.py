"""Failures that must leave the store and the machine exactly as they were."""

from __future__ import annotations

import gc
import sqlite3
import threading
import time

import msgspec
import pytest
from gotstate.core.events import Event
from gotstate.core.state_machine import StateMachine
from gotstate.core.states import State
from machines import build_ring_machine, observe, set_data

import gotstate_persist as gp


class Order(msgspec.Struct, frozen=True):
    id: str
    total: int


class Loose(msgspec.Struct, frozen=True):
    anything: object


def _formats() -> gp.FormatRegistry:
    formats = gp.FormatRegistry()
    formats.register(Order, kind="order", version=1)
    formats.register(Loose, kind="loose", version=1)
    return formats


@pytest.fixture
def fstore(sqlite_url: str, keyring: gp.KeyRing):  # type: ignore[no-untyped-def]
    with gp.open_store(sqlite_url, keyring=keyring, formats=_formats()) as opened:
        yield opened


def test_record_that_load_would_refuse_is_refused_at_save(fstore: gp.Store) -> None:
    with pytest.raises(gp.FormatError, match="does not match its annotation"):
        fstore.save("o", Order("o", "30"))  # type: ignore[arg-type]
    with pytest.raises(gp.FormatError, match="cannot carry"):
        fstore.save("l", Loose((1, b"x")))
    assert fstore.keys() == []
    fstore.save("l", Loose([1, "x", float("nan")]))  # exact, NaN included
    assert repr(fstore.load("l")) == repr(Loose([1, "x", float("nan")]))


def test_struct_in_state_data_that_would_change_is_refused(fstore: gp.Store) -> None:
    machine = build_ring_machine(20)
    set_data(machine, "start", "loose", Loose({1, 2}))
    with pytest.raises(gp.FormatError, match=r"state 'start', data key 'loose'.*exactly"):
        fstore.save_machine("m", machine)
    set_data(machine, "start", "loose", Order("o", "x"))  # type: ignore[arg-type]
    with pytest.raises(gp.FormatError, match=r"data key 'loose'.*field types"):
        fstore.save_machine("m", machine)
    assert fstore.keys() == []


def test_tampered_timestamp_fails_before_the_machine_changes(
    store: gp.Store, sqlite_url: str
) -> None:
    original = build_ring_machine(20)
    original.start()
    original.process_event(Event("next"))
    store.save_machine("m", original)
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE gotstate_persist_records SET created_at_us = ?", (2**62,))
    target = build_ring_machine(20)
    target.start()
    before = observe(target)
    with pytest.raises(gp.IntegrityError, match="timestamp"):
        store.restore_machine("m", target)
    assert observe(target) == before
    with pytest.raises(gp.IntegrityError):
        _ = store.versions("m")[0].created_at


def test_capture_while_another_thread_writes_state_data(store: gp.Store) -> None:
    machine = build_ring_machine(20)
    state = next(s for s in machine.get_states() if s.name == "start")
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            machine._graph.set_state_data(state, f"k{i % 500}", i)
            if i % 500 == 499:
                with machine._graph._data_locks[state]:
                    machine._graph._state_data[state].clear()
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(30):
            store.save_machine("busy", machine)
    finally:
        stop.set()
        thread.join()
    assert len(store.versions("busy")) == 30


def test_unusable_names_are_invalid_arguments(store: gp.Store) -> None:
    with pytest.raises(gp.InvalidArgument):
        store.keys("\ud800")
    with pytest.raises(gp.InvalidArgument):
        store.keys(42)  # type: ignore[arg-type]
    odd = StateMachine(initial_state=State(7))  # type: ignore[arg-type]
    with pytest.raises(gp.InvalidArgument, match="state names must be str"):
        store.save_machine("odd", odd)
    with pytest.raises(gp.InvalidArgument, match="state names must be str"):
        gp.fingerprint(odd)


def test_garbage_collector_runs_while_waiting_for_a_machine(store: gp.Store) -> None:
    machine = build_ring_machine(20)
    store.save_machine("m", machine)
    target = build_ring_machine(20)
    target._transition_lock.acquire()
    worker = threading.Thread(target=store.restore_machine, args=("m", target))
    worker.start()
    try:
        time.sleep(0.2)
        assert worker.is_alive()
        assert gc.isenabled(), "waiting for a lock must not pause the collector"
    finally:
        target._transition_lock.release()
        worker.join(timeout=10)
    assert gc.isenabled()


def test_a_restore_pauses_the_collector_once_from_decode_to_apply(store: gp.Store) -> None:
    """The decoded snapshot is freed before the collector can scan it.

    With a pause for the decode and another for the apply, the first
    collection after decoding traversed the whole decoded snapshot (two per
    restore here); one pause over both leaves at most the collection of what
    the restore kept, which may run after it returns.
    """
    machine = build_ring_machine(2_000)
    machine.start()
    leaves = [s.name for s in machine.get_states() if s.name.startswith("s-")]
    for i, name in enumerate(leaves):
        set_data(machine, name, "item", {"n": i, "tags": ["a", "b"], "pair": (i, None)})
    store.save_machine("big", machine)
    target = build_ring_machine(2_000)
    started: list[int] = []
    counting = [False]

    def count(phase: str, info: dict[str, int]) -> None:
        if counting[0] and phase == "start":
            started.append(info["generation"])

    restores = 5
    gc.callbacks.append(count)
    try:
        for _ in range(restores):
            counting[0] = True
            store.restore_machine("big", target)
            counting[0] = False
    finally:
        gc.callbacks.remove(count)
    assert len(started) <= restores, f"collections during {restores} restores: {started}"
    assert gc.isenabled()

    def data(m: StateMachine) -> dict[str, dict[object, object]]:
        return {s.name: dict(d) for s, d in m._graph._state_data.items() if d}

    assert data(target) == data(machine) and len(data(target)) == len(leaves)


def test_lowered_blob_limit_applies_on_load(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with gp.open_store(sqlite_url, keyring=keyring, formats=_formats()) as s:
        s.save("o", Order("o" * 2000, 1))
    small = gp.Limits(max_blob_bytes=1000)
    with (
        gp.open_store(sqlite_url, keyring=keyring, formats=_formats(), limits=small) as s,
        pytest.raises(gp.FormatError, match="over this store's limit"),
    ):
        s.load("o")
