"""Machine adapter: capture/apply exactness, differential behaviour, atomic failure."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation, localcontext
from uuid import UUID

import msgspec
import pytest
from gotstate.core.events import Event
from gotstate.core.states import State
from gotstate.core.transitions import Transition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from machines import (
    build_composite_machine,
    build_ring_machine,
    observe,
    set_data,
    state_named,
)
from order_workflow import build_order_machine, get_data

import gotstate_persist as gp
from gotstate_persist import machine as adapter
from gotstate_persist.formats import FormatRegistry, MachineSnapshot


class Money(msgspec.Struct, frozen=True):
    amount: Decimal
    currency: str


FORMATS = FormatRegistry()
FORMATS.register(Money, kind="money", version=1)

EVENTS = ["next", "jump", "home", "bogus"]


def _roundtrip(store: gp.Store, machine: object, fresh: object, key: str = "m") -> gp.SnapshotRef:
    store.save_machine(key, machine)
    return store.restore_machine(key, fresh)


@pytest.fixture
def fstore(sqlite_url: str, keyring: gp.KeyRing):  # type: ignore[no-untyped-def]
    with gp.open_store(sqlite_url, keyring=keyring, formats=FORMATS) as opened:
        yield opened


def test_order_machine_round_trip_continues_where_it_was(store: gp.Store) -> None:
    machine = build_order_machine()
    machine.start()
    for name in ("start", "checkout"):
        assert machine.process_event(Event(name))
    set_data(machine, "payment", "total", Decimal("59.90"))

    entered: list[str] = []
    fresh = build_order_machine(entered)
    ref = _roundtrip(store, machine, fresh, "order-42")

    assert ref.version == 1
    assert ref.kind == "gotstate.machine"
    assert fresh.current_state.name == "payment"
    assert get_data(fresh, "payment") == {"total": Decimal("59.90")}
    assert entered == [], "restore must not run entry actions"
    assert fresh.process_event(Event("pay"))
    assert fresh.current_state.name == "picking"
    assert "fulfilment" in entered and "picking" in entered


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
    st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-5))])),
    st.dates(),
    st.times(),
    st.timedeltas(),
    st.uuids(),
    st.decimals(allow_nan=False),
    st.builds(Money, st.decimals(allow_nan=False, allow_infinity=False), st.text()),
)
HASHABLE = st.one_of(
    st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=5), st.uuids(), st.dates()
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.sets(HASHABLE, max_size=4),
        st.frozensets(HASHABLE, max_size=4),
        st.dictionaries(HASHABLE, inner, max_size=4),
    ),
    max_leaves=12,
)


def _typed(value: object) -> object:
    """A structure that compares equal only if types match too (1 != True, () != [])."""
    if isinstance(value, dict):
        return ("dict", sorted(((repr(_typed(k)), _typed(v)) for k, v in value.items()), key=repr))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_typed(v) for v in value])
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted(repr(_typed(v)) for v in value))
    if isinstance(value, Decimal):
        return ("Decimal", str(value))  # Decimal("1.0") == Decimal("1.00") hides precision
    if isinstance(value, (datetime, time)):
        return (type(value).__name__, value.isoformat(), value.fold, str(value.tzinfo))
    return (type(value).__name__, repr(value))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=VALUES)
def test_every_supported_type_round_trips_exactly(fstore: gp.Store, value: object) -> None:
    machine = build_order_machine()
    set_data(machine, "cart", "value", value)
    fresh = build_order_machine()
    _roundtrip(fstore, machine, fresh, "types")
    restored = get_data(fresh, "cart")["value"]
    assert _typed(restored) == _typed(value)


@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_special_values_round_trip_on_both_codecs(
    sqlite_url: str, keyring: gp.KeyRing, codec: str
) -> None:
    values = {
        "tuple": (1, "a", (2.5,)),
        "bytes": b"\x00\xff",
        "nan": float("nan"),
        "inf": float("-inf"),
        "when": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        "naive": datetime(2026, 1, 2, 3, 4, 5, fold=1),
        "day": date(2026, 1, 2),
        "clock": time(23, 59, 59, 999999),
        "span": timedelta(days=-3, microseconds=7),
        "id": UUID(int=12345),
        "money": Money(Decimal("1.10"), "EUR"),
        "frozen": frozenset({1, 2}),
        "keys": {(1, 2): "tuple key", 3: "int key", None: "none key"},
        "big": 2**63 - 1,
    }
    with gp.open_store(sqlite_url, keyring=keyring, formats=FORMATS, codec=codec) as s:
        machine = build_order_machine()
        for k, v in values.items():
            set_data(machine, "payment", k, v)
        fresh = build_order_machine()
        _roundtrip(s, machine, fresh, "special")
    restored = get_data(fresh, "payment")
    nan = restored.pop("nan")
    assert nan != nan
    values.pop("nan")
    assert {k: _typed(v) for k, v in restored.items()} == {k: _typed(v) for k, v in values.items()}


class Opaque:
    pass


class CustomZone(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


@pytest.mark.parametrize(
    "bad",
    [Opaque(), 2**64, {1, Opaque()}, [Opaque()], datetime(2026, 1, 1, tzinfo=CustomZone())],
)
def test_unsupported_data_is_refused_naming_state_and_key(store: gp.Store, bad: object) -> None:
    machine = build_order_machine()
    set_data(machine, "payment", "good", 1)
    set_data(machine, "payment", "evil-key", bad)
    with pytest.raises(gp.FormatError, match=r"state 'payment', data key 'evil-key'"):
        store.save_machine("bad", machine)
    assert store.versions("bad") == []


@pytest.mark.parametrize("trap", [True, False], ids=["trapping", "quiet-context"])
@pytest.mark.parametrize(
    "bad",
    [
        Decimal("sNaN"),
        Decimal("-sNaN12"),
        [Decimal(1), Decimal("sNaN")],
        {"nested": (Decimal("sNaN"),)},
        Money(Decimal("sNaN"), "EUR"),
    ],
    ids=["plain", "negative-with-payload", "in-a-list", "in-a-tuple-in-a-dict", "in-a-struct"],
)
def test_signaling_nan_is_refused_before_anything_is_written(
    sqlite_url: str, keyring: gp.KeyRing, bad: object, trap: bool
) -> None:
    """A signaling NaN raises on every comparison, so it is no value to store; whatever
    the application's decimal context, it is a FormatError naming the state and key."""
    with gp.open_store(sqlite_url, keyring=keyring, formats=FORMATS) as s:
        s.save_machine("m", build_order_machine())
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
            before = list(conn.iterdump())
        machine = build_order_machine()
        set_data(machine, "cart", "price", bad)
        with localcontext() as context:
            context.traps[InvalidOperation] = trap
            for key in ("m", "new"):
                with pytest.raises(
                    gp.FormatError,
                    match=r"state 'cart', data key 'price': .*signaling NaN.*Decimal\('NaN'\)",
                ):
                    s.save_machine(key, machine)
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
            assert list(conn.iterdump()) == before  # nothing written


def test_odd_but_comparable_decimals_round_trip_exactly(fstore: gp.Store) -> None:
    odd = [
        Decimal("NaN"),
        Decimal("-NaN7"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        Decimal("-0"),
        Decimal("0E-30"),
        Decimal("1E+999999999"),
        Decimal("1.000"),
    ]
    machine = build_order_machine()
    set_data(machine, "cart", "odd", odd)
    set_data(machine, "cart", "money", [Money(value, "EUR") for value in odd])
    fresh = build_order_machine()
    _roundtrip(fstore, machine, fresh, "odd")
    restored = get_data(fresh, "cart")
    assert repr(restored["odd"]) == repr(odd)
    assert repr(restored["money"]) == repr([Money(value, "EUR") for value in odd])


def test_subclasses_are_refused_rather_than_changed(store: gp.Store) -> None:
    class Flag(int):
        pass

    machine = build_order_machine()
    set_data(machine, "cart", "flag", Flag(3))
    with pytest.raises(gp.FormatError, match="Flag"):
        store.save_machine("sub", machine)


def test_unregistered_struct_is_refused(store: gp.Store) -> None:
    machine = build_order_machine()
    set_data(machine, "cart", "money", Money(Decimal(1), "EUR"))
    with pytest.raises(gp.FormatError, match="not a registered record format"):
        store.save_machine("m", machine)


def test_too_deep_data_is_refused_at_save(store: gp.Store) -> None:
    deep: object = 1
    for _ in range(70):
        deep = [deep]
    machine = build_order_machine()
    set_data(machine, "cart", "deep", deep)
    with pytest.raises(gp.FormatError, match=r"state 'cart', data key 'deep'.*deep"):
        store.save_machine("deep", machine)
    assert store.keys() == []


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.lists(st.sampled_from(EVENTS), max_size=25),
    after=st.lists(st.sampled_from(EVENTS), max_size=25),
    started=st.booleans(),
)
def test_differential_restored_machine_behaves_like_original(
    store: gp.Store, before: list[str], after: list[str], started: bool
) -> None:
    original = build_ring_machine(20)
    if started:
        original.start()
    for i, name in enumerate(before):
        original.process_event(Event(name))
        set_data(original, "start", f"seen-{i % 3}", (name, i))
    fresh = build_ring_machine(20)
    _roundtrip(store, original, fresh, "ring")
    assert observe(fresh) == observe(original)
    for name in after:
        assert fresh.process_event(Event(name)) == original.process_event(Event(name))
        assert observe(fresh) == observe(original)


def test_restore_into_running_machine_replaces_state_without_actions(store: gp.Store) -> None:
    original = build_ring_machine(20)
    original.start()
    original.process_event(Event("next"))
    set_data(original, "s-0-0", "count", 1)
    store.save_machine("ring", original)

    entered: list[str] = []
    running = build_ring_machine(20, entered=entered)
    running.start()
    for _ in range(4):
        running.process_event(Event("jump"))
    set_data(running, "start", "stale", True)
    entered.clear()
    store.restore_machine("ring", running)
    assert entered == []
    assert observe(running) == observe(original)


def test_stopped_snapshot_restores_stopped(store: gp.Store) -> None:
    original = build_ring_machine(20)
    fresh = build_ring_machine(20)
    fresh.start()
    _roundtrip(store, original, fresh)
    assert fresh._started is False
    assert fresh.process_event(Event("next")) is False


def test_composite_machine_with_submachine_round_trips(store: gp.Store) -> None:
    original = build_composite_machine()
    original.start()
    for name in ("go", "next", "next"):
        original.process_event(Event(name))
    set_data(original, "step-a", "k", [1, 2])
    sub = original._submachines[state_named(original, "review")]
    sub.start()
    sub.process_event(Event("approve"))
    sub._graph.set_state_data(state_named(sub, "approved"), "by", "alice")

    entered: list[str] = []
    fresh = build_composite_machine(entered)
    _roundtrip(store, original, fresh)
    assert observe(fresh) == observe(original)
    assert entered == []
    fresh_sub = fresh._submachines[state_named(fresh, "review")]
    assert fresh_sub.current_state.name == "approved"
    for name in ("stop", "go", "next"):
        assert fresh.process_event(Event(name)) == original.process_event(Event(name))
        assert observe(fresh) == observe(original)


def test_structure_mismatch_names_differences_and_changes_nothing(store: gp.Store) -> None:
    original = build_order_machine()
    original.start()
    original.process_event(Event("start"))
    store.save_machine("o", original)

    changed = build_order_machine()
    refunded = State("refunded")
    changed.add_state(refunded)
    changed.add_transition(Transition(state_named(changed, "cancelled"), refunded))
    changed.start()
    before = observe(changed)
    with pytest.raises(gp.StructureMismatch) as info:
        store.restore_machine("o", changed)
    message = str(info.value)
    assert "'refunded'" in message and "only in the machine" in message
    assert info.value.snapshot_fingerprint == gp.fingerprint(original)
    assert info.value.machine_fingerprint == gp.fingerprint(changed)
    assert observe(changed) == before


def test_fingerprint_is_stable_and_structural() -> None:
    a, b = build_ring_machine(20), build_ring_machine(20)
    assert gp.fingerprint(a) == gp.fingerprint(b)
    b.start()
    b.process_event(Event("next"))
    set_data(b, "start", "x", 1)
    assert gp.fingerprint(a) == gp.fingerprint(b), "runtime state is not structure"
    c = build_ring_machine(20)
    c.add_transition(Transition(state_named(c, "start"), state_named(c, "group-1"), priority=5))
    assert gp.fingerprint(c) != gp.fingerprint(a)
    assert gp.fingerprint(build_ring_machine(24)) != gp.fingerprint(a)


def test_failed_apply_leaves_machine_untouched(store: gp.Store) -> None:
    original = build_ring_machine(20)
    original.start()
    original.process_event(Event("next"))
    set_data(original, "start", "fine", [1, 2, 3])
    snapshot = adapter.capture(original, struct_kind=FORMATS.kind_of, max_depth=64)
    # one state's data is malformed (a hostile but authenticated writer); the
    # other state's data is fine and must not be applied either
    data = dict(snapshot.data)
    data["s-3-2"] = [99, "unknown tag"]
    broken = msgspec.structs.replace(snapshot, data=data)

    target = build_ring_machine(20)
    target.start()
    for _ in range(3):
        target.process_event(Event("jump"))
    set_data(target, "s-0-1", "keep", "me")
    before = observe(target)
    with pytest.raises(gp.FormatError):
        adapter.apply(target, broken, struct_type=FORMATS.type_for)
    assert observe(target) == before


def test_capture_waits_for_the_transition_lock() -> None:
    machine = build_ring_machine(20)
    machine.start()
    machine._transition_lock.acquire()
    result: list[MachineSnapshot] = []
    worker = threading.Thread(
        target=lambda: result.append(
            adapter.capture(machine, struct_kind=FORMATS.kind_of, max_depth=64)
        )
    )
    worker.start()
    worker.join(timeout=0.2)
    assert worker.is_alive() and not result, "capture must block while a transition runs"
    machine._transition_lock.release()
    worker.join(timeout=10)
    assert len(result) == 1


class _V2(MachineSnapshot, frozen=True, forbid_unknown_fields=True):
    """A later version of the snapshot format: version 1 plus a defaulted field."""

    note: str = ""


def test_a_later_snapshot_version_is_captured_and_applied() -> None:
    original = build_composite_machine()
    original.start()
    for name in ("go", "next", "next"):
        original.process_event(Event(name))
    set_data(original, "step-a", "k", [1, 2])
    sub = original._submachines[state_named(original, "review")]
    sub.start()
    sub.process_event(Event("approve"))
    snapshot = adapter.capture(
        original, struct_kind=FORMATS.kind_of, max_depth=64, snapshot_type=_V2
    )
    assert type(snapshot) is _V2 and snapshot.note == ""
    assert snapshot.submachines and snapshot.fingerprint == gp.fingerprint(original)

    entered: list[str] = []
    fresh = build_composite_machine(entered)
    adapter.apply(fresh, msgspec.structs.replace(snapshot, note="v2"), struct_type=FORMATS.type_for)
    assert observe(fresh) == observe(original)
    assert entered == []


def test_not_a_machine_is_invalid_argument(store: gp.Store) -> None:
    with pytest.raises(gp.InvalidArgument):
        store.save_machine("x", object())
