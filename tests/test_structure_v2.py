"""Snapshots of format version 2 record the state tree and transitions (runtime.md).

A refused restore of such a snapshot names every state, parent,
composite-ness, initial state, submachine and transition that differs; one
whose machine changed only its transitions still restores. Snapshots written
before (version 1, no tree) are compared and explained as they always were.
Hostile trees and the properties are in tests/test_structure_v2_hostile.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from _trees import (
    FORMATS,
    ORDER,
    SECRET,
    Spec,
    apply,
    at_paid,
    build,
    by_name,
    capture,
    nested,
    refused,
    submachine,
    with_review,
)
from gotstate.core.events import Event
from gotstate.core.transitions import Transition
from machines import observe, state_named

import gotstate_persist as gp
from gotstate_persist import machine as adapter
from gotstate_persist.formats import MACHINE_KIND, StructureMigrations
from gotstate_persist.formats import machine as snapshot_formats
from gotstate_persist.formats.machine import MachineSnapshot, MachineSnapshotV2, decode_tree
from gotstate_persist.machine._fingerprint import shape
from gotstate_persist.machine._gotstate import locked

RELEASED = snapshot_formats.SNAPSHOT_FORMATS
ADVICE = "Restore into a machine built like the saved one, or register a structure migration"


@pytest.fixture
def saved_as_v1(
    sqlite_url: str, keyring: gp.KeyRing, monkeypatch: pytest.MonkeyPatch
) -> Callable[[Any], MachineSnapshot]:
    """Save a machine with code that writes version 1; load it with today's (upcast)."""

    def saved(machine: Any) -> MachineSnapshot:
        monkeypatch.setattr(snapshot_formats, "SNAPSHOT_FORMATS", RELEASED[:1])
        with gp.open_store(sqlite_url, keyring=keyring) as store:
            assert store.save_machine("v1", machine).format_version == 1
        monkeypatch.setattr(snapshot_formats, "SNAPSHOT_FORMATS", RELEASED)
        with gp.open_store(sqlite_url, keyring=keyring) as store:
            loaded = store.load("v1")
        assert isinstance(loaded, MachineSnapshotV2)
        assert (loaded.states_fingerprint, loaded.tree) == ("", b"")
        assert decode_tree(loaded) is None
        return loaded

    return saved


# What a version 2 snapshot records.


def test_save_records_the_state_tree_and_transitions(store: gp.Store) -> None:
    machine = build(ORDER.with_initial("checkout", "payment"))
    machine.start()
    ref = store.save_machine("m", machine)
    assert (ref.kind, ref.format_version) == (MACHINE_KIND, 2)
    loaded = store.load("m")
    assert isinstance(loaded, MachineSnapshotV2)
    assert loaded.states_fingerprint == gp.fingerprint(machine, part="states")
    tree = decode_tree(loaded)
    assert tree is not None and len(tree) == 1
    assert by_name(tree[0]) == (
        {None: "idle", "checkout": "payment"},
        sorted(ORDER.edges),
    )
    with locked(machine):
        assert tree == shape(machine).tree()


def test_submachines_trees_are_recorded_in_snapshot_order() -> None:
    machine = nested()
    snapshot = capture(machine)
    tree = decode_tree(snapshot)
    assert tree is not None
    assert [view.path for view in tree] == [(), ("review",), ("review", "legal")]
    assert [tuple(sub.path) for sub in snapshot.submachines] == [view.path for view in tree[1:]]
    assert by_name(tree[2]) == ({None: "check"}, [("check", "signed", 0)])
    assert by_name(tree[1])[0] == {None: "desk", "desk": "draft", "legal": "check"}


def test_later_snapshot_versions_record_the_tree_too() -> None:
    class Next(MachineSnapshotV2, frozen=True, forbid_unknown_fields=True):
        origin: str = "captured"

    machine = at_paid()
    snapshot = capture(machine, Next)
    assert isinstance(snapshot, Next)
    assert snapshot.states_fingerprint == gp.fingerprint(machine, part="states")
    assert decode_tree(snapshot) == decode_tree(capture(machine))
    # and version 1 records none
    assert not hasattr(capture(machine, MachineSnapshot), "tree")


def test_a_machine_without_transitions_records_an_empty_list() -> None:
    snapshot = capture(build(Spec(states=(("only", None, False),))))
    tree = decode_tree(snapshot)
    assert tree is not None
    assert by_name(tree[0]) == ({None: "only"}, [])


# Every kind of difference, named.

CASES: list[tuple[str, Spec, tuple[str, ...], tuple[str, ...]]] = [
    (
        "added state",
        ORDER.plus(("refunded", None, False), edges=[("paid", "refunded", 0)]),
        ("states only in the machine: 'refunded'",),
        ("transitions only in the machine: 'paid' -> 'refunded'",),
    ),
    (
        "removed state",
        ORDER.without("shipped"),
        ("states only in the snapshot: 'shipped'",),
        ("transitions only in the snapshot: 'paid' -> 'shipped'",),
    ),
    (
        "reparented state",
        ORDER.changed("paused", "checkout", False),
        ("state 'paused' has parent None in the snapshot, 'checkout' in the machine",),
        (),
    ),
    (
        "composite flipped",
        ORDER.changed("paused", None, True),
        ("state 'paused' is composite in the machine, not the snapshot",),
        (),
    ),
    (
        "initial state of a composite",
        ORDER.with_initial("checkout", "payment"),
        ("initial state of 'checkout' is 'cart' in the snapshot, 'payment' in the machine",),
        (),
    ),
    (
        "initial state of the machine",
        ORDER.with_initial(None, "paid"),
        ("initial state of the machine is 'idle' in the snapshot, 'paid' in the machine",),
        (),
    ),
    (
        "retargeted transitions next to a removed state",
        ORDER.without("paused").with_edges(
            *(e for e in ORDER.edges if e[0] not in ("paid", "paused")),
            ("paid", "idle", 0),
            ("paid", "idle", 0),
        ),
        ("states only in the snapshot: 'paused'",),
        (
            "transitions only in the snapshot: 'paid' -> 'paused', 'paid' -> 'shipped', "
            "'paused' -> 'paid'; transitions only in the machine: 'paid' -> 'idle' x2.",
        ),
    ),
    (
        "a priority changed next to an added state",
        ORDER.plus(("lost", None, False)).with_edges(
            *(e for e in ORDER.edges if e[0] != "payment"), ("payment", "paid", 5)
        ),
        ("states only in the machine: 'lost'",),
        (
            "transitions only in the snapshot: 'payment' -> 'paid' (priority 1); "
            "transitions only in the machine: 'payment' -> 'paid' (priority 5)",
        ),
    ),
]


@pytest.mark.parametrize(
    ("changed", "differences", "transitions"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_every_difference_is_named(
    store: gp.Store, changed: Spec, differences: tuple[str, ...], transitions: tuple[str, ...]
) -> None:
    old = at_paid()
    store.save_machine("m", old)
    new = build(changed)  # not started: some of these machines would not validate
    before = observe(new)
    with pytest.raises(gp.StructureMismatch) as info:
        store.restore_machine("m", new)
    error = info.value
    assert observe(new) == before
    assert error.differences == differences
    message = str(error)
    assert message.startswith(f"the snapshot does not fit this machine: {differences[0]}")
    for text in transitions:
        assert text in message
    if not transitions:
        assert "Transitions differ" not in message
    else:
        assert "Transitions differ too (on their own they would not refuse the restore)" in message
    assert (
        error.snapshot_fingerprint == gp.fingerprint(old) and error.snapshot_fingerprint in message
    )
    assert error.machine_fingerprint == gp.fingerprint(new) and error.machine_fingerprint in message
    assert ADVICE in message
    assert SECRET not in message


def test_many_differences_are_bounded_per_kind() -> None:
    wide = Spec(
        states=(("top", None, True), *((f"s{i:02}", "top", False) for i in range(30))),
        edges=tuple((f"s{i:02}", f"s{i + 1:02}", 0) for i in range(29)),
    )
    moved = Spec(
        states=(
            ("top", None, True),
            ("other", None, True),
            *((f"s{i:02}", "other", False) for i in range(30)),
            *((f"t{i:02}", "top", False) for i in range(25)),
        )
    )
    error = refused(build(moved), capture(build(wide)))
    message = str(error)
    assert "'s19' has parent 'top'" in message and "'s20' has parent" not in message
    assert "... and 10 more parent differences" in message
    assert "states only in the machine: 'other', 't00'" in message and "and 6 more;" in message
    assert "'s19' -> 's20' and 9 more." in message
    # ``differences`` keeps them all
    assert sum("has parent" in d for d in error.differences) == 30


# Submachines.


def test_a_submachine_added_or_removed_is_named() -> None:
    plain, held = with_review(sub=False), with_review()
    gone = refused(plain, capture(held))
    assert "submachines differ: 'review' holds one only in the snapshot" in gone.differences
    assert "transitions only in the snapshot: 'draft' -> 'approved'" in str(gone)
    added = refused(with_review(), capture(with_review(sub=False)))
    assert "submachines differ: 'review' holds one only in the machine" in added.differences


def test_a_difference_inside_a_submachine_is_named_with_its_path() -> None:
    error = refused(with_review(extra="archived"), capture(with_review()))
    assert error.differences == (
        "states only in the machine: 'archived'",
        "in submachine 'review': states only in the machine: 'archived'",
    )
    # changed after the merge: only the submachine's own tree shows it
    later = with_review()
    inner = submachine(later, "review")
    inner._graph.set_initial_state(None, state_named(inner, "approved"))
    error = refused(later, capture(with_review()))
    assert error.differences == (
        "in submachine 'review': initial state of the machine is 'draft' in the snapshot, "
        "'approved' in the machine",
    )


def test_nested_submachines_are_named_by_path() -> None:
    error = refused(nested(extra="void"), capture(nested()))
    assert "in submachine 'review/legal': states only in the machine: 'void'" in error.differences
    error = refused(nested(innermost=False), capture(nested()))
    assert "submachines differ: 'review/legal' holds one only in the snapshot" in error.differences
    # the innermost one is not named again on its own
    assert not any("'review/legal/" in d for d in error.differences)


# What still restores, what no longer does.

TRANSITION_CHANGES: list[tuple[str, Spec]] = [
    ("added", ORDER.plus(edges=[("shipped", "idle", 0)])),
    ("removed", ORDER.with_edges(*(e for e in ORDER.edges if e != ("paid", "shipped", 0)))),
    ("retargeted", ORDER.with_edges(*ORDER.edges[:-1], ("checkout", "paid", 0))),
    ("priority", ORDER.with_edges(*ORDER.edges[:2], ("payment", "paid", 9), *ORDER.edges[3:])),
]


@pytest.mark.parametrize(
    "changed", [c[1] for c in TRANSITION_CHANGES], ids=[c[0] for c in TRANSITION_CHANGES]
)
def test_transitions_only_changes_still_restore(store: gp.Store, changed: Spec) -> None:
    old = at_paid()
    store.save_machine("m", old)
    new = build(changed)
    assert gp.fingerprint(new) != gp.fingerprint(old)
    assert gp.fingerprint(new, part="states") == gp.fingerprint(old, part="states")
    store.restore_machine("m", new)
    assert observe(new) == observe(old)
    assert new.current_state.name == "paid"


def test_submachine_transitions_only_change_restores() -> None:
    old = with_review()
    old.start()
    inner = submachine(old, "review")
    inner.start()
    inner.process_event(Event("approve"))
    snapshot = capture(old)
    new = with_review()
    new_inner = submachine(new, "review")
    new_inner.add_transition(
        Transition(state_named(new_inner, "approved"), state_named(new_inner, "draft"))
    )
    apply(new, snapshot)
    assert observe(new) == observe(old)


def test_an_initial_state_change_refuses_v2_but_a_migration_restores_it() -> None:
    old = at_paid()
    snapshot = capture(old)
    assert isinstance(snapshot, MachineSnapshotV2)
    new = build(ORDER.with_initial("checkout", "payment"))
    assert gp.fingerprint(new, part="states") != snapshot.states_fingerprint
    refused(new, snapshot)
    migrations = StructureMigrations()
    migrations.register(from_fingerprint=snapshot.fingerprint)
    adapter.apply(new, snapshot, struct_type=FORMATS.type_for, migrations=migrations)
    assert observe(new) == observe(old)


# Snapshots written before: compared and explained as they always were.

V1_ADVICE = (
    "Restore into a machine built like the saved one, or register a structure migration: "
    "formats.register_structure_migration(from_fingerprint=<the snapshot fingerprint>, "
    "renames={old: new}, removed={old: destination})."
)


def _v1_message(shown: str, old: Any, new: Any) -> str:
    return (
        f"the snapshot does not fit this machine: {shown}. Snapshot fingerprint "
        f"{gp.fingerprint(old)}, machine fingerprint {gp.fingerprint(new)}. {V1_ADVICE}"
    )


def test_v1_messages_are_unchanged(saved_as_v1: Callable[[Any], MachineSnapshot]) -> None:
    old = at_paid()
    snapshot = saved_as_v1(old)
    renamed = build(
        ORDER.without("paid").plus(
            ("settled", None, False), edges=[("payment", "settled", 1), ("settled", "idle", 0)]
        )
    )
    error = refused(renamed, snapshot)
    assert str(error) == _v1_message(
        "states only in the snapshot: 'paid'; states only in the machine: 'settled'", old, renamed
    )
    assert error.differences == (
        "states only in the snapshot: 'paid'",
        "states only in the machine: 'settled'",
    )
    moved = build(ORDER.changed("paused", "checkout", False).changed("shipped", None, True))
    error = refused(moved, snapshot)
    assert str(error) == _v1_message(
        "state 'paused' has parent None in the snapshot, 'checkout' in the machine; "
        "state 'shipped' is composite in only one of them",
        old,
        moved,
    )


def test_v1_submachine_difference_message_is_unchanged(
    saved_as_v1: Callable[[Any], MachineSnapshot],
) -> None:
    old = with_review()
    snapshot = saved_as_v1(old)
    new = with_review(sub=False)
    error = refused(new, snapshot)
    assert str(error) == _v1_message("initial states, transitions or submachines differ", old, new)


def test_v1_snapshots_still_compare_names_parents_and_composite_ness_only(
    saved_as_v1: Callable[[Any], MachineSnapshot],
) -> None:
    old = at_paid()
    snapshot = saved_as_v1(old)
    # version 1 recorded no initial states: a change there still restores
    new = build(ORDER.with_initial("checkout", "payment").plus(edges=[("shipped", "idle", 0)]))
    apply(new, snapshot)
    assert observe(new) == observe(old)
    # while the same change refuses a snapshot that records its tree
    refused(build(ORDER.with_initial("checkout", "payment")), capture(old))
