"""Save refuses exactly what load would refuse: the adapter's depth walk vs the pre-scan.

``save_machine`` skips the codec's depth pre-scan on its own output because the
adapter already built the snapshot under the same limit. These tests hold the
adapter to the pre-scan's verdict, so that shortcut can never let through a
record that load would refuse (or refuse one it would accept).
"""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from machines import build_composite_machine, set_data
from order_workflow import build_order_machine, get_data

import gotstate_persist as gp
from gotstate_persist import machine as adapter
from gotstate_persist.codec import JSON, MSGPACK, Limits
from gotstate_persist.formats import MACHINE_KIND, FormatRegistry, MachineSnapshot


class Box(msgspec.Struct):
    inner: object


class Deep(msgspec.Struct):
    inner: list[object]


FORMATS = FormatRegistry()
FORMATS.register(Box, kind="box", version=1)
FORMATS.register(Deep, kind="deep", version=1)
CONTAINERS = [lambda v: [v], lambda v: (v,), lambda v: {"k": v}, lambda v: {(1, 2): v}]
# Leaves: plain scalars, and scalars that travel as tagged arrays (one level more).
LEAVES = ["leaf", float("nan"), float("inf"), Decimal("1.5"), b"\x00", UUID(int=7), Box(1)]


def nest(depth: int, shapes: list[int], leaf: object = "leaf") -> object:
    value: object = leaf
    for i in range(depth):
        value = CONTAINERS[shapes[i % len(shapes)]](value)
    return value


def _verdicts(machine: object, limit: int) -> tuple[bool, bool]:
    """(adapter accepts at ``limit``, pre-scan accepts the payload at ``limit``)."""
    limits = Limits(max_depth=limit)
    try:
        adapter.capture(machine, struct_kind=FORMATS.kind_of, max_depth=limit)  # type: ignore[arg-type]
        walk_ok = True
    except gp.FormatError:
        walk_ok = False
    snapshot = adapter.capture(machine, struct_kind=FORMATS.kind_of, max_depth=64)  # type: ignore[arg-type]
    scan_ok = True
    for codec in (MSGPACK, JSON):
        payload = codec.encode((MACHINE_KIND, 1, snapshot))
        try:
            codec.check(payload, limits=limits)
        except gp.FormatError:
            scan_ok = False
    return walk_ok, scan_ok


@settings(max_examples=150, deadline=None)
@given(
    depth=st.integers(0, 40),
    limit=st.integers(4, 40),
    shapes=st.lists(st.integers(0, len(CONTAINERS) - 1), min_size=1, max_size=4),
    leaf=st.sampled_from(LEAVES),
)
def test_adapter_and_prescan_agree_on_depth(
    depth: int, limit: int, shapes: list[int], leaf: object
) -> None:
    machine = build_order_machine()
    set_data(machine, "cart", "value", nest(depth, shapes, leaf))
    walk_ok, scan_ok = _verdicts(machine, limit)
    assert walk_ok == scan_ok


@pytest.mark.parametrize("depth", range(10, 20))
def test_agreement_in_submachines(depth: int) -> None:
    machine = build_composite_machine()
    sub = next(iter(machine._submachines.values()))
    state = next(iter(sub._graph._nodes))
    sub._graph.set_state_data(state, "deep", nest(depth, [0]))
    walk_ok, scan_ok = _verdicts(machine, 20)
    assert walk_ok == scan_ok


def test_exact_boundary_at_the_default_limit(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with gp.open_store(sqlite_url, keyring=keyring) as store:
        machine = build_order_machine()
        set_data(machine, "cart", "v", nest(60, [0]))  # data at depth 4 + 60 = 64
        store.save_machine("ok", machine)
        assert store.versions("ok")[0].version == 1
        store.restore_machine("ok", build_order_machine())
        set_data(machine, "cart", "v", nest(61, [0]))
        with pytest.raises(gp.FormatError, match="nested too deeply"):
            store.save_machine("too-deep", machine)
        assert store.keys() == ["ok"]


def test_struct_holding_unstorable_value_is_refused(sqlite_url: str, keyring: gp.KeyRing) -> None:
    with gp.open_store(sqlite_url, keyring=keyring, formats=FORMATS) as store:
        machine = build_order_machine()
        set_data(machine, "cart", "boxed", Box((1, 2)))  # comes back a list: refused
        with pytest.raises(gp.FormatError, match=r"state 'cart', data key 'boxed'.*Box"):
            store.save_machine("m", machine)
        assert store.keys() == []


def test_struct_nested_too_deeply_inside_is_refused(sqlite_url: str, keyring: gp.KeyRing) -> None:
    """A Struct travels as its own msgpack bytes; their depth is checked on their own."""
    deep: object = 1
    for _ in range(70):
        deep = [deep]
    with gp.open_store(sqlite_url, keyring=keyring, formats=FORMATS) as store:
        machine = build_order_machine()
        set_data(machine, "cart", "deep", Deep([deep]))
        with pytest.raises(gp.FormatError, match=r"state 'cart', data key 'deep'.*Deep"):
            store.save_machine("m", machine)
        set_data(machine, "cart", "deep", Deep([[[1]]]))
        store.save_machine("m", machine)
        fresh = build_order_machine()
        store.restore_machine("m", fresh)
        assert get_data(fresh, "cart")["deep"] == Deep([[[1]]])


def _deep_payload(depth: int, where: str) -> bytes:
    """A raw msgpack machine-snapshot payload whose state data nests ``depth`` arrays.

    Built by splicing one-element array headers into an encoded payload: msgspec
    itself refuses to encode values this deep, as a hostile writer would not.
    """
    value = "@@DEEP@@"
    snapshot: dict[str, object] = {
        "machine_type": "StateMachine",
        "fingerprint": "sha256:x",
        "started": True,
        "current": None,
        "history": {},
        "structure": b"",
        "data": {},
        "submachines": [],
    }
    tagged = [4, "k", value]
    if where == "top":
        snapshot["data"] = {"s": tagged}
    else:
        sub = {k: v for k, v in snapshot.items() if k != "submachines"}
        sub["path"] = ["a", "b"]
        sub["data"] = {"s": tagged}
        snapshot["submachines"] = [sub]
    encoded = msgspec.msgpack.encode((MACHINE_KIND, 1, snapshot))
    marker = msgspec.msgpack.encode(value)
    assert encoded.count(marker) == 1
    return encoded.replace(marker, b"\x91" * depth + b"\x01")


@pytest.mark.parametrize("where", ["top", "sub"])
@pytest.mark.parametrize("depth", [*range(50, 66), 1000, 100_000])
def test_schema_bound_and_prescan_agree(where: str, depth: int) -> None:
    """The snapshot schema bounds depth exactly where the pre-scan does."""
    payload = _deep_payload(depth, where)
    try:
        MSGPACK.check(payload)
        scan_ok = True
    except gp.FormatError:
        scan_ok = False
    try:
        MSGPACK.decode(payload, tuple[str, int, MachineSnapshot], type_bounds_depth=True)
        typed_ok = True
    except gp.FormatError:
        typed_ok = False
    assert typed_ok == scan_ok
    assert scan_ok == (depth <= (60 if where == "top" else 58))
