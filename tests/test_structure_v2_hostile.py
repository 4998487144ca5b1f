"""Recorded state trees that lie, and properties of trees at random.

A snapshot's tree is read only to explain a refused restore, through the
bounded codec and then strictly. Whatever its bytes, the restore fails
cleanly (``StructureMismatch`` saying what to do, with the differences the
names alone show, or ``FormatError``) and the machine is untouched. At
random: a machine always restores its own snapshot (and one whose machine
gained transitions), and the message about two different trees does not
depend on the objects or the order the machines were built in.
"""

from __future__ import annotations

import random
from dataclasses import replace

import msgspec
import pytest
from _trees import (
    ORDER,
    SECRET,
    Edge,
    Spec,
    apply,
    at_paid,
    build,
    by_name,
    capture,
    refused,
    with_review,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from machines import observe

import gotstate_persist as gp
from gotstate_persist.codec import MAX_PAYLOAD_BYTES, MSGPACK
from gotstate_persist.formats.machine import (
    MachineSnapshot,
    MachineSnapshotV2,
    MachineTree,
    StateTree,
    decode_tree,
)
from gotstate_persist.machine._fingerprint import shape
from gotstate_persist.machine._gotstate import locked

WHAT_TO_DO = "Restore into a machine built like the saved one, or register a structure migration"


def _good() -> tuple[MachineSnapshotV2, MachineTree]:
    snapshot = capture(at_paid())
    assert isinstance(snapshot, MachineSnapshotV2)
    (record,) = MSGPACK.decode(snapshot.tree, StateTree).machines
    return snapshot, record


def _tree(**changes: object) -> bytes:
    _, record = _good()
    return MSGPACK.encode(StateTree(machines=[msgspec.structs.replace(record, **changes)]))


def _record() -> MachineTree:
    return _good()[1]


_DEGREES = _record().out_degree

#: (what, tree bytes, what the FormatError says)
HOSTILE: list[tuple[str, bytes, str]] = [
    ("truncated", _good()[0].tree[:-2], "truncated"),
    ("not msgpack", b"\xc1", "reserved byte"),
    ("not a tree", MSGPACK.encode({"machines": []}), "does not match StateTree"),
    ("no machines", MSGPACK.encode(StateTree(machines=[])), "records 0 machines"),
    (
        "one machine too many",
        MSGPACK.encode(StateTree(machines=[_record(), _record()])),
        "records 2 machines",
    ),
    ("initial too short", _tree(initial=_record().initial[:-1]), "lists do not match"),
    ("out-degree too long", _tree(out_degree=[*_DEGREES, 0]), "lists do not match"),
    ("priorities too short", _tree(priorities=_record().priorities[:-1]), "lists do not match"),
    (
        "degrees do not add up",
        _tree(out_degree=[_DEGREES[0] + 1, *_DEGREES[1:]]),
        "counts do not add up",
    ),
    (
        "a negative degree",
        _tree(out_degree=[-1, _DEGREES[1] + _DEGREES[0] + 1, *_DEGREES[2:]]),
        "counts do not add up",
    ),
    ("a huge degree", _tree(out_degree=[2**62, *_DEGREES[1:]]), "counts do not add up"),
    ("target out of range", _tree(targets=[7, *_record().targets[1:]]), "target is out of range"),
    ("negative target", _tree(targets=[-1, *_record().targets[1:]]), "target is out of range"),
    ("initial out of range", _tree(initial=[99, *_record().initial[1:]]), "initial state is out"),
    ("root initial out of range", _tree(root_initial=-2), "initial state is out of range"),
    ("deep nesting", b"\x91" * 100 + b"\xc0", "nested deeper than 64"),
    ("a list claiming 2**32 - 1 items", b"\x91\xdd\xff\xff\xff\xff", "claims more items"),
    ("a string where an int belongs", _tree(root_initial="idle"), "does not match StateTree"),
]


@pytest.mark.parametrize(
    ("tree", "reason"), [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE]
)
def test_a_hostile_tree_is_refused_cleanly(tree: bytes, reason: str) -> None:
    snapshot, _ = _good()
    hostile = msgspec.structs.replace(snapshot, tree=tree)
    with pytest.raises(gp.FormatError) as info:
        decode_tree(hostile)
    assert reason in str(info.value)
    smaller = build(ORDER.without("shipped"))
    error = refused(smaller, hostile)
    message = str(error)
    assert "the state tree the snapshot records cannot be read" in message
    assert reason in message
    assert WHAT_TO_DO in message
    # what the names alone show is still named
    assert error.differences == ("states only in the snapshot: 'shipped'",)
    assert snapshot.fingerprint in message


def test_a_tree_over_the_payload_limit_is_not_decoded() -> None:
    snapshot, _ = _good()
    hostile = msgspec.structs.replace(snapshot, tree=b"\x00" * (MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(gp.FormatError, match="payload limit"):
        decode_tree(hostile)
    error = refused(build(ORDER.without("shipped")), hostile)
    assert "payload limit" in str(error)


def test_a_hostile_tree_through_a_store(store: gp.Store) -> None:
    snapshot, _ = _good()
    store.save("m", msgspec.structs.replace(snapshot, tree=b"\x92\x01"))
    smaller = build(ORDER.without("shipped"))
    before = observe(smaller)
    with pytest.raises(gp.StructureMismatch, match="cannot be read") as info:
        store.restore_machine("m", smaller)
    assert observe(smaller) == before
    assert SECRET not in str(info.value)


def test_a_tree_is_not_read_when_the_state_tree_matches() -> None:
    """A transitions-only restore decides on the digest; a broken tree does not matter."""
    snapshot, _ = _good()
    hostile = msgspec.structs.replace(snapshot, tree=b"\xc1")
    deployed = build(ORDER.plus(edges=[("shipped", "idle", 0)]))
    apply(deployed, hostile)
    assert observe(deployed) == observe(at_paid())


def test_a_forged_states_fingerprint_still_cannot_restore_missing_states() -> None:
    snapshot, _ = _good()
    other = build(ORDER.without("paid"))
    forged = msgspec.structs.replace(
        snapshot, states_fingerprint=gp.fingerprint(other, part="states")
    )
    before = observe(other)
    with pytest.raises(gp.FormatError, match="absent from the machine"):
        apply(other, forged)
    assert observe(other) == before


def test_a_snapshot_without_a_digest_falls_back_to_names_parents_and_composite_ness() -> None:
    snapshot, _ = _good()
    untagged = msgspec.structs.replace(snapshot, states_fingerprint="")
    changed_initial = build(ORDER.with_initial("checkout", "payment"))
    apply(changed_initial, untagged)  # as for version 1: initial states are not compared
    assert observe(changed_initial) == observe(at_paid())


@settings(max_examples=60)
@given(tree=st.binary(max_size=64))
def test_random_tree_bytes_never_get_past_the_checks(tree: bytes) -> None:
    snapshot, _ = _good()
    hostile = msgspec.structs.replace(snapshot, tree=tree)
    try:
        views = decode_tree(hostile)
    except gp.FormatError:
        views = None
    if tree and views is not None:  # it happened to be a valid tree for this snapshot
        assert len(views) == 1 and len(views[0].initial) == len(views[0].names)
    smaller = build(ORDER.without("shipped"))
    error = refused(smaller, hostile)
    assert "states only in the snapshot: 'shipped'" in error.differences


# Properties.


@st.composite
def specs(draw: st.DrawFn, max_states: int = 9) -> Spec:
    """A machine of up to ``max_states`` states: random parents, composites, initials, edges."""
    size = draw(st.integers(1, max_states))
    rows: list[tuple[str, str | None, bool]] = []
    composites: list[str] = []
    for i in range(size):
        # the first state is the machine's initial state: at the top
        parent = draw(st.sampled_from([None, *composites])) if i else None
        composite = draw(st.booleans())
        rows.append((f"q{i}", parent, composite))
        if composite:
            composites.append(f"q{i}")
    initial: list[tuple[str | None, str]] = []
    for holder in composites:
        children = [name for name, parent, _ in rows if parent == holder]
        if children:
            initial.append((holder, draw(st.sampled_from(children))))
    names = [name for name, _, _ in rows]
    edges = draw(
        st.lists(
            st.tuples(st.sampled_from(names), st.sampled_from(names), st.integers(0, 2)),
            max_size=10,
        )
    )
    return Spec(states=tuple(rows), edges=tuple(edges), initial=tuple(initial))


def _with_data(spec: Spec) -> object:
    machine = build(spec)
    for name, _, _ in spec.states[::2]:
        state = next(s for s in machine.get_states() if s.name == name)
        machine._graph.set_state_data(state, "note", SECRET)
    return machine


def _reordered(spec: Spec, rng: random.Random) -> Spec:
    """The same machine with its states added in another order (parents still first)."""
    pending = list(spec.states[1:])
    placed = {spec.states[0][0]}
    order = [spec.states[0]]
    while pending:
        ready = [row for row in pending if row[1] is None or row[1] in placed]
        row = rng.choice(ready)
        pending.remove(row)
        placed.add(row[0])
        order.append(row)
    edges = list(spec.edges)
    rng.shuffle(edges)
    return replace(spec, states=tuple(order), edges=tuple(edges))


@settings(max_examples=80)
@given(
    spec=specs(),
    extra=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8), st.integers(0, 3)), max_size=4),
)
def test_a_machine_always_restores_its_own_snapshot(
    spec: Spec, extra: list[tuple[int, int, int]]
) -> None:
    machine = _with_data(spec)
    snapshot = capture(machine)
    tree = decode_tree(snapshot)
    with locked(machine):
        assert tree == shape(machine).tree()
    apply(machine, snapshot)
    fresh = build(spec)
    apply(fresh, snapshot)
    assert observe(fresh) == observe(machine)
    names = [name for name, _, _ in spec.states]
    added: list[Edge] = [(names[a % len(names)], names[b % len(names)], p) for a, b, p in extra]
    deployed = build(spec.plus(edges=added))
    apply(deployed, snapshot)
    assert observe(deployed) == observe(machine)


@settings(max_examples=80)
@given(old=specs(), new=specs(), rng=st.randoms(use_true_random=False))
def test_mismatch_messages_are_deterministic(old: Spec, new: Spec, rng: random.Random) -> None:
    snapshot = capture(_with_data(old))
    target = build(new)
    before = observe(target)
    try:
        apply(target, snapshot)
    except gp.StructureMismatch as error:
        first = error
    else:
        # restored: then the two state trees are the same
        assert gp.fingerprint(build(old), part="states") == gp.fingerprint(
            build(new), part="states"
        )
        return
    assert observe(target) == before
    assert SECRET not in str(first)
    again = refused(build(new), capture(_with_data(old)))
    assert (str(again), again.differences) == (str(first), first.differences)
    reordered = refused(build(_reordered(new, rng)), capture(_with_data(_reordered(old, rng))))
    assert (str(reordered), reordered.differences) == (str(first), first.differences)


def test_submachine_trees_round_trip() -> None:
    machine = with_review(extra="archived")
    snapshot = capture(machine)
    tree = decode_tree(snapshot)
    assert tree is not None
    with locked(machine):
        assert tree == shape(machine).tree()
    assert by_name(tree[1]) == ({None: "draft"}, [("draft", "approved", 0)])
    assert isinstance(snapshot, MachineSnapshot)
