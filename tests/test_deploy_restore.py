"""Deploys that only change transitions keep restoring (issue 15, runtime.md).

What a snapshot must match is the state tree (names, parents, composite-ness,
initial states, submachines), digested by ``gp.fingerprint(m, part="states")``;
the full fingerprint (transitions included) is unchanged.
"""

from __future__ import annotations

import pytest
from gotstate.core.state_machine import StateMachine
from gotstate.core.states import State
from gotstate.core.transitions import Transition
from machines import (
    build_composite_machine,
    build_ring_machine,
    on,
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
