"""Journal + recover reproduces the original machine, whatever the events (issue 15).

Random event sequences (accepted and refused, with metadata the machine's
actions turn into state data) go through an attachment with a random
``snapshot_every``; then a fresh machine recovered from storage must equal the
original field by field, on SQLite, PostgreSQL and local files. And a process
SIGKILLed between a journal append and the periodic snapshot after it loses
nothing: the journal is the commit.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from _places import Place, make_place
from _runtime_helpers import (
    NAMESPACE,
    SUBPROCESS_TIMEOUT_S,
    TALLY_EVENTS,
    captured,
    check_journal_chain,
    open_place,
    run_worker,
    snapshot_seqs,
    sqlite_place,
    tally,
    tally_event,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gotstate_persist as gp

Events = list[tuple[str, int]]

events_strategy = st.lists(
    st.tuples(st.sampled_from(TALLY_EVENTS), st.integers(-(2**40), 2**40)), max_size=25
)


@pytest.fixture(params=["sqlite", "postgresql", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path, keyring: gp.KeyRing) -> gp.Store:
    where = make_place(request.param, request, tmp_path, database="props.db", cls=Place)
    opened = open_place(where, keyring)
    request.addfinalizer(opened.close)
    return opened


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=events_strategy, every=st.integers(1, 6), detach=st.booleans())
def test_recover_equals_the_original(
    store: gp.Store, events: Events, every: int, detach: bool
) -> None:
    key = f"k-{uuid.uuid4().hex}"
    attached = store.open_machine(
        key, lambda: tally(start=False), journal=True, snapshot_every=every
    )
    machine = attached.machine
    accepted = 0
    for name, amount in events:
        took = attached.process_event(tally_event(name, amount), meta={"amount": amount})
        assert took == (name != "noop")
        accepted += took
    if detach:
        attached.detach()
    entries = store.journal(key)
    check_journal_chain(entries)
    assert len(entries) == accepted
    fresh = tally(start=False)
    if not accepted:  # attaching wrote nothing, so there is nothing to recover
        with pytest.raises(gp.NotFound):
            store.recover(key, fresh)
        return
    head = store.recover(key, fresh)
    assert head.journal_seq == accepted
    assert captured(fresh) == captured(machine)
    reopened = store.open_machine(key, lambda: tally(start=False), journal=True)
    assert captured(reopened.machine) == captured(machine)


def test_sigkill_between_the_append_and_the_snapshot_loses_nothing(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where = sqlite_place(tmp_path)
    key = "killed-1"
    worker = run_worker(f"kill_between_append_and_snapshot({where.url!r}, {key!r})", keyring)
    out, err = worker.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    assert out.split() == ["killed"], err
    assert worker.returncode == -9
    expected = tally()
    for name, amount in (("next", 1), ("next", 2), ("stay", 3)):
        assert expected.process_event(tally_event(name, amount))
    with open_place(where, keyring) as store:
        assert [e.seq for e in store.journal(key)] == [1, 2, 3]
        assert snapshot_seqs(store, key) == [1]  # the snapshot after entry 3 never landed
        fresh = tally(start=False)
        assert store.recover(key, fresh) == gp.Head(1, 3)
        assert captured(fresh) == captured(expected)
        with store.open_machine(key, lambda: tally(start=False), journal=True) as reopened:
            assert captured(reopened.machine) == captured(expected)
        assert snapshot_seqs(store, key) == [1, 3]  # detach covered what the journal held
    assert NAMESPACE
