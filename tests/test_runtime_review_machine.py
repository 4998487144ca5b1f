"""Hostile review of what an attached machine does to itself, and to whom it is attached.

The commit protocol of runtime.md seen from the machine's side: an event
the machine refuses leaves no trace; a machine's own actions failing, or
re-entering ``process_event``, never leave memory and storage apart; one
machine shared by two attachments, a key holding another record kind and a
backend dying at detach are all answered without a silent divergence. Real
stores only (SQLite files, local object files). ``xfail(strict=True)``
marks a bug found by this review; its reason names the code and the
expected behaviour.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from _places import Place
from _runtime_helpers import (
    RENAMER_SOURCE,
    captured,
    check_journal_chain,
    in_process_extension,
    open_place,
    order,
    ring,
    ring_after,
    snapshot_seqs,
    sqlite_place,
    state_name,
)
from gotstate.core.events import Event
from gotstate.core.state_machine import StateMachine
from gotstate.core.states import State
from gotstate.core.transitions import Transition
from order_workflow import get_data

import gotstate_persist as gp

KEY = "review-4"


# Refused events and the machine's own actions.


class _Swallow:
    """A gotstate error recovery strategy: a failing transition returns False quietly."""

    def recover(self, error: Exception, state_machine: StateMachine) -> None:
        return None


def _charging_machine() -> StateMachine:
    """``go`` runs an action that records a charge in ``a``'s data, then fails."""
    a, b = State("a"), State("b")
    machine = StateMachine(initial_state=a, error_recovery=_Swallow())
    machine.add_state(b)

    def charge(event: Event) -> None:
        graph = machine._graph
        graph.set_state_data(a, "charged", graph.get_state_data(a).get("charged", 0) + 1)
        raise RuntimeError("payment gateway down")

    machine.add_transition(Transition(a, b, guards=[lambda e: e.name == "go"], actions=[charge]))
    machine.start()
    return machine


@pytest.mark.parametrize("journal", [False, True], ids=["snapshots", "journal"])
def test_a_refused_event_leaves_no_trace_in_memory(
    tmp_path: Path, keyring: gp.KeyRing, journal: bool
) -> None:
    where = sqlite_place(tmp_path)
    with open_place(where, keyring) as store:
        machine = _charging_machine()
        store.save_machine(KEY, machine)
        attached = store.attach(machine, KEY, journal=journal)
        stored, before = where.snapshot(), captured(machine)
        assert not attached.process_event(Event("go"))
        assert where.snapshot() == stored
        assert captured(machine) == before


def _counting_ring(fail_at: int | None) -> StateMachine:
    """Three states in a ring on "next"; the transitions' action raises at its ``fail_at``-th run.

    An action with a side effect that refuses to happen twice (a card charged twice).
    """
    states = [State(name) for name in ("a", "b", "c")]
    machine = StateMachine(initial_state=states[0])
    for state in states[1:]:
        machine.add_state(state)
    runs: list[int] = []

    def action(event: Event) -> None:
        runs.append(len(runs) + 1)
        if runs[-1] == fail_at:
            raise RuntimeError("the side effect refuses to happen twice")

    for i, state in enumerate(states):
        machine.add_transition(
            Transition(
                state, states[(i + 1) % 3], guards=[lambda e: e.name == "next"], actions=[action]
            )
        )
    machine.start()
    return machine


def test_a_failing_replay_of_a_cut_short_fan_out_never_forks_the_journal(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where = Place("file", f"file://{tmp_path / 'objects'}")
    with open_place(where, keyring) as store:
        in_process_extension(store, tmp_path, RENAMER_SOURCE, "Renamer")
        # runs: 1 ("next"), 2 and 3 (the fan-out), 4 (the replay of the entry that landed)
        machine = _counting_ring(fail_at=4)
        attached = store.attach(
            machine, KEY, journal=True, snapshot_every=100, extensions=("renamer",)
        )
        assert attached.process_event(Event("next"))
        store.set_quota(gp.Quota(max_records=store.usage().records + 1))  # room for one entry
        with pytest.raises((RuntimeError, gp.PersistError)):
            attached.process_event(Event("go"))  # entry 2 lands, entry 3 is refused
        store.set_quota(None)
        try:
            attached.process_event(Event("next"))
        except gp.VersionConflict:
            attached.recover()
        check_journal_chain(store.journal(KEY))
        fresh = _counting_ring(fail_at=None)
        store.recover(KEY, fresh)
        assert captured(fresh) == captured(machine)


class _Reenter(list[str]):
    """``entered`` of the order workflow whose entry into ``cart`` re-enters the attachment."""

    def __init__(self) -> None:
        super().__init__()
        self.attached: gp.Attached | None = None
        self.inner: tuple[BaseException, float] | None = None

    def append(self, name: str) -> None:
        super().append(name)
        if name == "cart" and self.attached is not None:
            started = time.monotonic()
            try:
                self.attached.process_event(Event("checkout"))
            except BaseException as exc:
                self.inner = (exc, time.monotonic() - started)
                raise


def _reentered(
    tmp_path: Path, keyring: gp.KeyRing, monkeypatch: pytest.MonkeyPatch, lock_timeout: float
) -> tuple[_Reenter, Any, Place]:
    monkeypatch.setattr("gotstate_persist.machine._gotstate.LOCK_TIMEOUT", lock_timeout)
    where = sqlite_place(tmp_path)
    entered = _Reenter()
    machine = order(entered)
    with open_place(where, keyring) as store:
        entered.attached = store.attach(machine, KEY, journal=True)
        stored = where.snapshot()
        with pytest.raises(gp.InvalidArgument):
            entered.attached.process_event(Event("start"))
        assert where.snapshot() == stored
    return entered, machine, where


def test_a_reentrant_process_event_is_refused_and_undone(
    tmp_path: Path, keyring: gp.KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, machine, _where = _reentered(tmp_path, keyring, monkeypatch, lock_timeout=0.2)
    assert entered.inner is not None and isinstance(entered.inner[0], gp.InvalidArgument)
    assert state_name(machine) == "idle"  # the outer event is undone too
    assert get_data(machine, "idle") == {}


def test_a_reentrant_process_event_is_refused_at_once(
    tmp_path: Path, keyring: gp.KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock_timeout = 2.0
    entered, _machine, _where = _reentered(tmp_path, keyring, monkeypatch, lock_timeout)
    assert entered.inner is not None
    error, waited = entered.inner
    assert "process_event" in str(error)
    assert waited < lock_timeout / 2  # refused without waiting for the lock


# Two attachments, one machine.


def test_two_attachments_of_one_key_sharing_a_machine_agree(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        machine = ring()
        first = store.attach(machine, KEY, journal=True, snapshot_every=3)
        second = store.attach(machine, KEY, journal=True, snapshot_every=3)
        assert first.process_event(Event("next"))
        with pytest.raises(gp.VersionConflict):
            second.process_event(Event("next"))
        assert captured(machine) == captured(ring_after(1))  # only second's event undone
        assert second.recover() == first.head
        assert second.process_event(Event("next"))
        with pytest.raises(gp.VersionConflict):
            first.process_event(Event("next"))
        assert captured(machine) == captured(ring_after(2))
        fresh = ring(start=False)
        store.recover(KEY, fresh)
        assert captured(fresh) == captured(machine)


def test_one_machine_attached_to_two_keys_never_diverges(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with open_place(sqlite_place(tmp_path), keyring) as store:
        machine = ring()
        first = store.attach(machine, "first", journal=True, snapshot_every=100)
        try:
            second = store.attach(machine, "second", journal=True, snapshot_every=100)
        except gp.InvalidArgument:
            return  # refused: nothing can diverge
        for _ in range(2):
            assert first.process_event(Event("next"))
            assert second.process_event(Event("next"))
        for key in ("first", "second"):
            fresh = ring(start=False)
            store.recover(key, fresh)
            assert captured(fresh) == captured(machine), key


# Keys that hold something else.


def test_a_journaled_attachment_to_another_records_key_is_refused(
    tmp_path: Path, keyring: gp.KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    import msgspec

    class Order(msgspec.Struct, frozen=True):
        id: str

    caplog.set_level(logging.WARNING, logger="gotstate_persist.runtime")
    formats = gp.FormatRegistry()
    formats.register(Order, kind="order", version=1)
    where = sqlite_place(tmp_path)
    with open_place(where, keyring, formats=formats) as store:
        store.save(KEY, Order("o-1"))
        stored = where.snapshot()
        machine = ring()
        with pytest.raises(gp.FormatError, match="order"):
            attached = store.attach(machine, KEY, journal=True)
            attached.process_event(Event("next"))
        assert captured(machine) == captured(ring_after(0))
        assert where.snapshot() == stored
        assert store.load(KEY) == Order("o-1")


# Letting go.


def test_detach_on_a_dead_backend_still_detaches(tmp_path: Path, keyring: gp.KeyRing) -> None:
    where = sqlite_place(tmp_path)
    store = open_place(where, keyring)
    machine = ring()
    attached = store.attach(machine, KEY, journal=True, snapshot_every=100)
    for _ in range(3):
        assert attached.process_event(Event("next"))
    store.backend.close()
    with pytest.raises(gp.BackendError):
        attached.detach()  # its flush cannot be written
    attached.detach()  # detached all the same: nothing more to do
    with pytest.raises(gp.InvalidArgument, match="detached"):
        attached.process_event(Event("next"))
    assert captured(machine) == captured(ring_after(3))
    with open_place(where, keyring) as again:
        assert snapshot_seqs(again, KEY) == [1]  # the flush never landed
        fresh = ring(start=False)
        assert again.recover(KEY, fresh) == gp.Head(1, 3)  # the journal holds it all
        assert captured(fresh) == captured(machine)
