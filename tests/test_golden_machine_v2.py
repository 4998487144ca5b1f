"""The machine snapshot format, version 2 (journal sequence, state tree), is frozen.

tests/fixtures/golden_machine_v2.msgpack was written once by
tests/fixtures/make_golden_machine_v2.py. These bytes must decode, restore
and explain a mismatch forever; a change that alters what they mean is a
version 3 with an upcaster, never an edit of version 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from gotstate.core.events import Event
from gotstate.core.transitions import Transition

import gotstate_persist as gp
from gotstate_persist import machine as adapter
from gotstate_persist.codec import MSGPACK
from gotstate_persist.formats import FormatRegistry
from gotstate_persist.formats.machine import (
    MACHINE_KIND,
    MachineSnapshot,
    MachineSnapshotV2,
    SubmachineSnapshot,
    TreeView,
    decode_structure,
    decode_tree,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import make_golden_machine_v2 as golden  # noqa: E402

GOLDEN = FIXTURES / "golden_machine_v2.msgpack"
FORMATS = FormatRegistry()

# What the golden tree says, by name (the stored form holds indexes).
ROOT_INITIAL = {None: "order", "order": "idle", "checkout": "payment", "review": "draft"}
ROOT_TRANSITIONS = [
    ("cart", "payment", 0),
    ("checkout", "idle", 0),
    ("draft", "approved", 0),  # gotstate merges the submachine's without its priority
    ("idle", "checkout", 0),
    ("paid", "review", 0),
    ("paid", "review", 0),
    ("payment", "paid", 2),
    ("review", "shipped", 0),
]
DESK_INITIAL = {None: "draft"}
DESK_TRANSITIONS = [("draft", "approved", 1)]


def _decoded() -> MachineSnapshotV2:
    kind, version, body = msgspec.msgpack.decode(
        GOLDEN.read_bytes(), type=tuple[str, int, msgspec.Raw]
    )
    assert (kind, version) == (MACHINE_KIND, 2)
    record_type = FORMATS.type_for(kind, version)
    assert record_type is MachineSnapshotV2
    snapshot: MachineSnapshotV2 = MSGPACK.decode(body, record_type)
    return snapshot


def _by_name(view: TreeView) -> tuple[dict[str | None, str], list[tuple[str, str, int]]]:
    names = view.names
    initial: dict[str | None, str] = {
        names[i]: names[target] for i, target in enumerate(view.initial) if target >= 0
    }
    initial[None] = names[view.root_initial]
    edges = sorted(
        (names[s], names[t], p)
        for s, t, p in zip(view.sources, view.targets, view.priorities, strict=True)
    )
    return initial, edges


def _relations(owner: MachineSnapshot | SubmachineSnapshot) -> list[tuple[str, str | None, bool]]:
    structure = decode_structure(owner)
    names = structure.names
    return sorted(
        (name, names[parent] if parent >= 0 else None, composite)
        for name, parent, composite in zip(
            names, structure.parents, structure.composite, strict=True
        )
    )


def _comparable(snapshot: MachineSnapshotV2) -> dict[str, Any]:
    """Everything a snapshot says, with the process-dependent state order taken out."""
    tree = decode_tree(snapshot)
    assert tree is not None
    owners: list[MachineSnapshot | SubmachineSnapshot] = [snapshot, *snapshot.submachines]
    return {
        "fields": msgspec.structs.replace(
            snapshot,
            structure=b"",
            tree=b"",
            submachines=[msgspec.structs.replace(s, structure=b"") for s in snapshot.submachines],
        ),
        "structures": [_relations(owner) for owner in owners],
        "trees": [(view.path, *_by_name(view)) for view in tree],
    }


def test_the_newest_snapshot_version_is_2() -> None:
    assert FORMATS.newest_version(MACHINE_KIND) == 2


def test_version_2_bytes_decode_and_re_encode_to_themselves() -> None:
    snapshot = _decoded()
    assert MSGPACK.encode((MACHINE_KIND, 2, snapshot)) == GOLDEN.read_bytes()
    assert snapshot.journal_seq == golden.JOURNAL_SEQ
    assert snapshot.states_fingerprint.startswith("sha256:")
    assert snapshot.tree


def test_the_golden_tree_reads_back_by_name() -> None:
    tree = decode_tree(_decoded())
    assert tree is not None
    assert [view.path for view in tree] == [(), ("review",)]
    assert _by_name(tree[0]) == (ROOT_INITIAL, ROOT_TRANSITIONS)
    assert _by_name(tree[1]) == (DESK_INITIAL, DESK_TRANSITIONS)


def test_the_code_still_captures_what_the_golden_snapshot_says() -> None:
    assert _comparable(golden.captured()) == _comparable(_decoded())
    # the state-tree digest recipe is stored now: it must not change either
    machine = golden.build_machine()
    assert _decoded().states_fingerprint == gp.fingerprint(machine, part="states")
    assert _decoded().fingerprint == gp.fingerprint(machine)


def _check_restored(machine: Any) -> None:
    desk = machine._submachines[next(s for s in machine.get_states() if s.name == "review")]
    assert machine.current_state.name == "draft"  # the merged copy holds the outer machine
    assert desk.current_state.name == "approved"
    paid = next(s for s in machine.get_states() if s.name == "paid")
    assert machine._graph.get_state_data(paid) == {"total": 5990, "items": ["book", 2]}
    approved = next(s for s in desk.get_states() if s.name == "approved")
    assert desk._graph.get_state_data(approved) == {"by": "alice"}
    assert desk.process_event(Event("approve")) is False


def test_version_2_restores() -> None:
    fresh = golden.build_machine()
    adapter.apply(fresh, _decoded(), struct_type=FORMATS.type_for)
    _check_restored(fresh)


def test_version_2_restores_through_a_store(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with gp.open_store(sqlite_url, keyring=keyring) as store:
        ref = store.save("order-42", _decoded())
        assert (ref.kind, ref.format_version) == (MACHINE_KIND, 2)
        fresh = golden.build_machine()
        store.restore_machine("order-42", fresh)
        _check_restored(fresh)


def test_version_2_restores_into_a_machine_whose_transitions_changed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deployed = golden.build_machine()
    states = {s.name: s for s in deployed.get_states()}
    deployed.add_transition(Transition(states["shipped"], states["idle"], priority=31))
    with caplog.at_level(logging.INFO, logger="gotstate_persist"):
        adapter.apply(deployed, _decoded(), struct_type=FORMATS.type_for)
    _check_restored(deployed)
    assert any("state tree matches" in r.getMessage() for r in caplog.records)


def test_version_2_names_what_differs() -> None:
    changed = golden.build_machine()
    states = {s.name: s for s in changed.get_states()}
    changed._graph.set_initial_state(states["checkout"], states["cart"])
    changed.add_transition(Transition(states["shipped"], states["idle"]))
    with pytest.raises(gp.StructureMismatch) as info:
        adapter.apply(changed, _decoded(), struct_type=FORMATS.type_for)
    assert info.value.differences == (
        "initial state of 'checkout' is 'payment' in the snapshot, 'cart' in the machine",
    )
    assert "transitions only in the machine: 'shipped' -> 'idle'." in str(info.value)
    assert "transitions only in the snapshot" not in str(info.value)
    assert info.value.snapshot_fingerprint == _decoded().fingerprint
