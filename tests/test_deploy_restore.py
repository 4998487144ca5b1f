"""Deploys that only change transitions keep restoring (issue 15, runtime.md).

What a snapshot must match is the state tree (names, parents, composite-ness,
initial states, submachines), digested by ``gp.fingerprint(m, part="states")``;
the full fingerprint (transitions included) is unchanged.
"""

from __future__ import annotations

import logging

import pytest
from gotstate.core.events import Event
from gotstate.core.state_machine import StateMachine
from gotstate.core.states import State
from gotstate.core.transitions import Transition
from machines import (
    build_composite_machine,
    build_ring_machine,
    observe,
    on,
    set_data,
    state_named,
)

import gotstate_persist as gp


def with_extra_transition(machine: StateMachine) -> StateMachine:
    """The machine plus one transition between existing states (a transitions-only deploy)."""
    machine.add_transition(
        Transition(state_named(machine, "start"), state_named(machine, "group-2"), guards=[on("x")])
    )
    return machine


def test_state_tree_fingerprint_ignores_transitions_only() -> None:
    a, b = build_ring_machine(20), with_extra_transition(build_ring_machine(20))
    assert gp.fingerprint(a) != gp.fingerprint(b)
    assert gp.fingerprint(a, part="states") == gp.fingerprint(b, part="states")
    assert gp.fingerprint(a, part="states").startswith("sha256:")
    assert gp.fingerprint(a, part="states") != gp.fingerprint(a)
    assert gp.fingerprint(a, part=None) == gp.fingerprint(a)
    # a state more, a different parent or a different initial state is a different tree
    assert gp.fingerprint(build_ring_machine(24), part="states") != gp.fingerprint(a, part="states")
    c = build_ring_machine(20)
    c.add_state(State("extra"))
    assert gp.fingerprint(c, part="states") != gp.fingerprint(a, part="states")
    other_initial = StateMachine(initial_state=State("b"))
    other_initial.add_state(State("a"))
    same_states = StateMachine(initial_state=State("a"))
    same_states.add_state(State("b"))
    assert gp.fingerprint(other_initial, part="states") != gp.fingerprint(
        same_states, part="states"
    )


def test_state_tree_fingerprint_covers_submachines() -> None:
    a, b = build_composite_machine(), build_composite_machine()
    sub = b._submachines[state_named(b, "review")]
    sub.add_transition(
        Transition(state_named(sub, "approved"), state_named(sub, "draft"), guards=[on("undo")])
    )
    assert gp.fingerprint(a) != gp.fingerprint(b)
    assert gp.fingerprint(a, part="states") == gp.fingerprint(b, part="states")


def test_fingerprint_part_is_validated() -> None:
    with pytest.raises(gp.InvalidArgument, match="part must be"):
        gp.fingerprint(build_ring_machine(20), part="transitions")  # type: ignore[arg-type]


def saved_ring(store: gp.Store) -> StateMachine:
    original = build_ring_machine(20)
    original.start()
    for name in ("next", "next", "jump", "next"):
        assert original.process_event(Event(name))
    set_data(original, "s-1-1", "count", 3)
    set_data(original, "start", "note", "kept")
    store.save_machine("ring", original)
    return original


def test_transitions_only_change_restores_state_and_data(
    store: gp.Store, caplog: pytest.LogCaptureFixture
) -> None:
    original = saved_ring(store)
    deployed = with_extra_transition(build_ring_machine(20))
    # a priority no other test uses: a fingerprint pair this process has not logged yet
    deployed.add_transition(
        Transition(state_named(deployed, "s-3-0"), state_named(deployed, "start"), priority=78)
    )
    assert gp.fingerprint(deployed) != gp.fingerprint(original)
    with caplog.at_level(logging.INFO, logger="gotstate_persist"):
        store.restore_machine("ring", deployed)
    assert observe(deployed) == observe(original)
    assert deployed.current_state.name == original.current_state.name
    # the restored machine runs on, with the new transition available
    assert deployed.process_event(Event("home"))
    assert deployed.process_event(Event("x"))
    assert deployed.current_state.name == "s-2-0"
    logged = [r for r in caplog.records if "state tree matches" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.INFO
    assert gp.fingerprint(original) in logged[0].getMessage()
    assert "kept" not in logged[0].getMessage()


def test_transitions_only_log_is_once_per_fingerprint_pair(
    store: gp.Store, caplog: pytest.LogCaptureFixture
) -> None:
    saved_ring(store)
    # a priority no other test uses: a fingerprint pair this process has not logged yet
    deployed = build_ring_machine(20)
    deployed.add_transition(
        Transition(state_named(deployed, "start"), state_named(deployed, "group-3"), priority=77)
    )
    with caplog.at_level(logging.INFO, logger="gotstate_persist"):
        for _ in range(3):
            store.restore_machine("ring", deployed)
            store.restore_machine("ring", with_extra_transition(build_ring_machine(20)))
    logged = [r for r in caplog.records if gp.fingerprint(deployed) in r.getMessage()]
    assert len(logged) == 1
    assert "state tree matches" in logged[0].getMessage()


def test_removed_state_is_still_a_structure_mismatch(store: gp.Store) -> None:
    saved_ring(store)
    # a ring of 19 has one leaf less in each group, and its transitions differ too
    smaller = build_ring_machine(16)
    smaller.start()
    before = observe(smaller)
    with pytest.raises(gp.StructureMismatch) as info:
        store.restore_machine("ring", smaller)
    assert "states only in the snapshot" in str(info.value)
    assert observe(smaller) == before


def test_changed_parent_is_still_a_structure_mismatch(store: gp.Store) -> None:
    saved_ring(store)
    moved = build_ring_machine(20)
    leaf = state_named(moved, "s-0-0")
    moved._graph._parent_map[leaf] = state_named(moved, "group-1")
    leaf.parent = state_named(moved, "group-1")
    if gp.fingerprint(moved, part="states") == gp.fingerprint(build_ring_machine(20), "states"):
        pytest.skip("this gotstate does not keep parents where the test moved one")
    with pytest.raises(gp.StructureMismatch, match="'s-0-0' has parent"):
        store.restore_machine("ring", moved)


def test_submachine_transitions_only_change_restores(store: gp.Store) -> None:
    original = build_composite_machine()
    original.start()
    original.process_event(Event("go"))
    sub = original._submachines[state_named(original, "review")]
    sub.start()
    sub.process_event(Event("approve"))
    sub._graph.set_state_data(state_named(sub, "approved"), "by", "alice")
    store.save_machine("c", original)

    deployed = build_composite_machine()
    deployed_sub = deployed._submachines[state_named(deployed, "review")]
    deployed_sub.add_transition(
        Transition(
            state_named(deployed_sub, "approved"),
            state_named(deployed_sub, "draft"),
            guards=[on("undo")],
        )
    )
    store.restore_machine("c", deployed)
    assert observe(deployed) == observe(original)
    assert deployed_sub.process_event(Event("undo"))
    assert deployed_sub.current_state.name == "draft"


def test_submachine_added_to_the_same_tree_is_a_mismatch(store: gp.Store) -> None:
    """Same state names everywhere, but one machine keeps 'review' as a submachine."""
    from test_structure_migrations import build_with_review

    old = build_with_review()
    old.start()
    store.save_machine("r", old)
    new = build_with_review(sub=False)
    new.add_state(State("approved"), parent=state_named(new, "review"))
    state_named(new, "approved").parent = state_named(new, "review")
    assert gp.fingerprint(old, part="states") != gp.fingerprint(new, part="states")
    with pytest.raises(gp.StructureMismatch) as info:
        store.restore_machine("r", new)
    assert "submachines differ" in str(info.value)
