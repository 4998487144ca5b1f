"""Hostile review of what callers hand an attached machine: meta, events, keys (runtime.md).

Meta and event metadata follow the exact-type rules of state data: what is
journaled comes back with the same types, under either codec; what cannot
is refused while nothing has moved, or (when only the codec can tell) the
event is undone and nothing is written. No refusal ever shows the value
(a canary stands for a secret), and keys at the byte limits keep their
journals. Real stores only (SQLite files).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from _runtime_helpers import (
    CANARY,
    captured,
    open_place,
    ring,
    ring_after,
    sqlite_place,
)
from gotstate.core.events import Event
from gotstate.core.state_machine import StateMachine
from gotstate.core.states import State
from gotstate.core.transitions import Transition

import gotstate_persist as gp

KEY = "review-3"
JOURNAL_PREFIX_BYTES = len(b"\x1fgotstate/journal/")
MAX_KEY_BYTES = 255
#: Nesting depths of meta values tried: around the codec's limit of 64.
DEPTHS = range(56, 68)


class Parcel(msgspec.Struct, frozen=True):
    id: str
    grams: int
    price: Decimal
    tags: tuple[str, ...] = ()


def _formats() -> gp.FormatRegistry:
    formats = gp.FormatRegistry()
    formats.register(Parcel, kind="parcel", version=1)
    return formats


EXACT: dict[str, Any] = {
    "parcel": Parcel("p-1", 250, Decimal("1.10"), ("fragile",)),
    "parcels": (Parcel("p-2", 1, Decimal("0E-3")), [Parcel("p-3", 2, Decimal("-0"))]),
    "amount": Decimal("-0.000"),
    "raw": b"\x00\xff",
    "odd keys": {b"k": 1, (1, "t"): frozenset({2}), None: {3}, 4.5: date(2024, 1, 1)},
    "inf": float("-inf"),
    "neg zero": -0.0,
    "edges": (-(2**63), 2**63 - 1),
    "clock": time(1, 2, 3, 4),
    "span": timedelta(days=-1, microseconds=5),
    "id": uuid.UUID(int=1),
    "when": datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    "naive": datetime(2024, 1, 1, 12),
    "nested": [[{"x": (None, True, "")}]],
}


def exact(value: Any) -> Any:
    """``value`` with each leaf as (type, repr): equal only if types and values agree."""
    if isinstance(value, msgspec.Struct):
        fields = msgspec.structs.asdict(value)
        return (type(value), {name: exact(item) for name, item in fields.items()})
    if isinstance(value, dict):
        return (type(value), sorted((repr(k), exact(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (type(value), [exact(item) for item in value])
    if isinstance(value, set | frozenset):
        return (type(value), sorted(repr(item) for item in value))
    return (type(value), repr(value))


@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_meta_and_metadata_come_back_exactly(
    tmp_path: Path, keyring: gp.KeyRing, codec: str
) -> None:
    with open_place(sqlite_place(tmp_path), keyring, formats=_formats(), codec=codec) as store:
        machine = ring()
        attached = store.attach(machine, KEY, journal=True, snapshot_every=10)
        event = Event("next", priority=-(2**63))
        event.metadata.update(EXACT)
        meta = {"actor": "api", **EXACT}
        assert attached.process_event(event, meta=meta)
        assert attached.process_event(Event("next"), meta=meta)  # replayed after the snapshot
        first, second = store.journal(KEY)
        assert exact(first.meta) == exact(meta) == exact(second.meta)
        assert exact(first.event.metadata) == exact(EXACT)
        assert first.event.priority == -(2**63)
        fresh = ring(start=False)
        assert store.recover(KEY, fresh) == gp.Head(1, 2)
        assert captured(fresh) == captured(machine)


def _nested(depth: int, container: Callable[[Any], Any]) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = container(value)
    return value


@pytest.mark.parametrize(
    "container",
    [lambda v: [v], lambda v: (v,), lambda v: {"k": v}],
    ids=["list", "tuple", "dict"],
)
def test_meta_at_the_depth_limit_is_journaled_exactly_or_refused_cleanly(
    tmp_path: Path, keyring: gp.KeyRing, container: Callable[[Any], Any]
) -> None:
    where = sqlite_place(tmp_path)
    accepted: list[int] = []
    with open_place(where, keyring) as store:
        for depth in DEPTHS:
            key = f"{KEY}-{depth}"
            machine = ring()
            attached = store.attach(machine, key, journal=True)
            stored = where.snapshot()
            meta = {"deep": _nested(depth, container)}
            try:
                assert attached.process_event(Event("next"), meta=meta)
            except (gp.InvalidArgument, gp.FormatError) as exc:
                assert "nest" in str(exc) or "depth" in str(exc), exc
                assert captured(machine) == captured(ring())  # undone, or never moved
                assert where.snapshot() == stored
                continue
            accepted.append(depth)
            [entry] = store.journal(key)  # what was written can be read back
            assert entry.meta == meta
            fresh = ring(start=False)
            store.recover(key, fresh)
            assert captured(fresh) == captured(machine)
    # a contiguous run of depths is accepted, then everything deeper is refused
    assert accepted and accepted == list(range(DEPTHS[0], accepted[-1] + 1))
    assert accepted[-1] < DEPTHS[-1]


class _Leaky:
    """An object whose every text form is the canary."""

    def __repr__(self) -> str:
        return CANARY

    __str__ = __repr__


class _Text(str):
    """A str subclass: not an exact type."""


class _Unregistered(msgspec.Struct):
    token: str


HOSTILE_META: list[tuple[str, Callable[[], dict[Any, Any]]]] = [
    ("object", lambda: {"x": _Leaky()}),
    ("object as dict key", lambda: {"x": {_Leaky(): 1}}),
    ("str subclass", lambda: {"x": _Text(CANARY)}),
    ("str subclass as meta key", lambda: {_Text(CANARY): 1}),
    ("unregistered Struct", lambda: {"x": _Unregistered(CANARY)}),
    ("Secret", lambda: {CANARY: gp.Secret(CANARY)}),
    ("object in a list", lambda: {"x": [{CANARY: _Leaky()}]}),
    ("int over 64 bits", lambda: {CANARY: 2**64}),
    ("signaling NaN", lambda: {CANARY: Decimal("sNaN")}),
]


@pytest.mark.parametrize("journal", [False, True], ids=["snapshots", "journal"])
@pytest.mark.parametrize(("label", "make"), HOSTILE_META, ids=[label for label, _ in HOSTILE_META])
def test_hostile_meta_is_refused_before_the_machine_moves_and_never_leaks(
    tmp_path: Path,
    keyring: gp.KeyRing,
    caplog: pytest.LogCaptureFixture,
    journal: bool,
    label: str,
    make: Callable[[], dict[Any, Any]],
) -> None:
    caplog.set_level(logging.DEBUG, logger="gotstate_persist")
    where = sqlite_place(tmp_path)
    entered: list[str] = []
    with open_place(where, keyring) as store:
        machine = ring(entered)
        attached = store.attach(machine, KEY, journal=journal)
        stored, actions = where.snapshot(), list(entered)
        with pytest.raises(gp.InvalidArgument) as caught:
            attached.process_event(Event("next"), meta=make())
        assert list(entered) == actions  # no action ran: refused before the machine moved
        assert captured(machine) == captured(ring())
        assert where.snapshot() == stored
        texts = [str(caught.value), repr(caught.value), repr(attached), str(attached.head)]
        texts += [record.getMessage() for record in caplog.records]
        assert not [text for text in texts if CANARY in text], label


@pytest.mark.parametrize(
    ("label", "meta", "event"),
    [
        ("a lone surrogate in meta", {"note": "\ud800" + CANARY}, Event("next")),
        ("a priority over 64 bits", {}, Event("next", priority=2**64)),
    ],
    ids=["surrogate", "priority"],
)
def test_what_only_the_codec_refuses_undoes_the_event(
    tmp_path: Path, keyring: gp.KeyRing, label: str, meta: dict[str, Any], event: Event
) -> None:
    where = sqlite_place(tmp_path)
    with open_place(where, keyring) as store:
        machine = ring()
        attached = store.attach(machine, KEY, journal=True)
        stored = where.snapshot()
        with pytest.raises(gp.FormatError) as caught:
            attached.process_event(event, meta=meta)
        assert CANARY not in str(caught.value), label
        assert captured(machine) == captured(ring())
        assert where.snapshot() == stored
        assert attached.process_event(Event("next"))  # the head is unchanged
        assert attached.head == gp.Head(1, 1)


def test_a_raising_guard_refuses_the_event_without_a_trace(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    a, b = State("a"), State("b")
    machine = StateMachine(initial_state=a)
    machine.add_state(b)

    def guard(event: Event) -> bool:
        raise ValueError("guard failed")

    machine.add_transition(Transition(a, b, guards=[guard]))
    machine.start()
    where = sqlite_place(tmp_path)
    with open_place(where, keyring) as store:
        store.save_machine(KEY, machine)
        for journal in (False, True):
            attached = store.attach(machine, KEY, journal=journal)
            stored, before = where.snapshot(), captured(machine)
            assert not attached.process_event(Event("go"))  # gotstate: a failed guard refuses
            assert captured(machine) == before
            assert where.snapshot() == stored
            attached.detach()


def test_event_metadata_changed_by_an_action_is_journaled_as_received(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    """The journal keeps what the machine received; a replay hands the action the same."""
    a, b = State("a"), State("b")

    def build(*, start: bool = True) -> StateMachine:
        machine = StateMachine(initial_state=a)
        machine.add_state(b)

        def action(event: Event) -> None:
            items = event.metadata["items"]
            items.append("seen")  # changes the event's nested metadata in place
            machine._graph.set_state_data(b, "items", list(items))

        machine.add_transition(Transition(a, b, guards=[lambda e: True], actions=[action]))
        if start:
            machine.start()
        return machine

    with open_place(sqlite_place(tmp_path), keyring) as store:
        machine = build()
        store.save_machine(KEY, machine)
        attached = store.attach(machine, KEY, journal=True, snapshot_every=10)
        items = ["given"]
        event = Event("go")
        event.metadata["items"] = items
        meta: dict[str, Any] = {"tags": ["t"]}
        assert attached.process_event(event, meta=meta)
        meta["tags"].append("changed after the call")
        [entry] = store.journal(KEY)
        assert entry.event.metadata == {"items": ["given"]}
        assert entry.meta == {"tags": ["t"]}
        fresh = build(start=False)
        store.recover(KEY, fresh)
        assert captured(fresh) == captured(machine)


def test_keys_at_the_byte_limits_with_multibyte_characters(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    room = MAX_KEY_BYTES - JOURNAL_PREFIX_BYTES
    fits = "é" * (room // 2) + "k" * (room % 2)  # exactly room bytes, fewer characters
    over = "é" + "k" * (room - 1)  # room + 1 bytes in room characters
    longest = "€" * (MAX_KEY_BYTES // 3)  # 255 bytes: no room for a journal at all
    assert len(fits.encode()) == room and len(over.encode()) == room + 1
    assert len(longest.encode()) == MAX_KEY_BYTES
    with open_place(sqlite_place(tmp_path), keyring) as store:
        with store.attach(ring(), fits, journal=True, snapshot_every=3) as attached:
            for _ in range(4):
                assert attached.process_event(Event("next"))
        assert [e.seq for e in store.journal(fits)] == [1, 2, 3, 4]
        for key in (over, longest):
            with pytest.raises(gp.InvalidArgument, match=f"at most {room} bytes"):
                store.attach(ring(), key, journal=True)
            with store.attach(ring(), key) as plain:  # snapshots need no journal key
                assert plain.process_event(Event("next"))
            assert store.journal(key) == []
        assert store.keys() == sorted([fits, over, longest])
        assert store.keys(prefix=fits[:-1]) == [fits]
        for key, steps in ((fits, 4), (over, 1), (longest, 1)):
            fresh = ring(start=False)
            store.recover(key, fresh)
            assert captured(fresh) == captured(ring_after(steps)), key
        assert store.delete(fits) == 4 + 2  # entries and the snapshots after 1 and 4
        assert store.keys() == sorted([over, longest])
