"""Typed JSON: every supported value comes back exactly, and no stored string passes for a tag."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest
from gotstate.core.events import Event
from hypothesis import given
from hypothesis import strategies as st
from order_workflow import build_order_machine, set_data

import gotstate_persist as gp
from gotstate_persist._pipeline import RecordPipeline
from gotstate_persist._typedjson import Undecodable, from_typed_json, tagged_json, typed_json
from gotstate_persist.backends import open_backend
from gotstate_persist.config import Secret
from gotstate_persist.errors import FormatError

#: The one-key (``fold`` beside ``$datetime``/``$time``) objects typed JSON writes.
TAGS = {
    "$decimal",
    "$tuple",
    "$set",
    "$frozenset",
    "$bytes",
    "$float",
    "$datetime",
    "$date",
    "$time",
    "$uuid",
    "$int",
    "$timedelta",
    "$dict",
    "$struct",
    "$enum",
    "$undecodable",
    "$secret",
}

# Strategies: every type typed_json tags, nested.

offsets = st.builds(
    timezone,
    st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
        lambda minutes: timedelta(minutes=minutes)
    ),
)
zones = st.none() | st.just(UTC) | offsets
datetimes = st.builds(
    lambda moment, zone, fold: moment.replace(tzinfo=zone, fold=fold),
    st.datetimes(),
    zones,
    st.sampled_from([0, 1]),
)
times = st.builds(
    lambda moment, zone, fold: moment.replace(tzinfo=zone, fold=fold),
    st.times(),
    zones,
    st.sampled_from([0, 1]),
)
big_ints = st.integers(min_value=-(2**80), max_value=2**80) | st.sampled_from(
    [2**53, 2**53 + 1, -(2**53) - 1, 2**64, -(2**100)]
)
keys_like_tags = st.sampled_from(["$decimal", "$", "$dict", "$x", "fold"]) | st.text()
hashable = st.recursive(
    st.none()
    | st.booleans()
    | big_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | keys_like_tags
    | st.decimals(allow_nan=False, allow_infinity=True)  # a signalling NaN is not hashable
    | st.binary(max_size=16)
    | datetimes
    | st.dates()
    | times
    | st.timedeltas()
    | st.uuids(),
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)
values = st.recursive(
    hashable | st.sampled_from([Decimal("NaN"), Decimal("-sNaN1"), Decimal("-0.00")]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.sets(hashable, max_size=4)
        | st.frozensets(hashable, max_size=4)
        | st.dictionaries(keys_like_tags, inner, max_size=4)
        | st.dictionaries(hashable, inner, max_size=4)
    ),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Exactly equal: same types all the way down (1.10 is not 1.1, -0.0 not 0.0, NaN is NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(same(ka, kb) and same(va, vb) for kb, vb in b.items()) for ka, va in a.items()
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, (set, frozenset)):  # no order: each member matches one of the other's
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    return repr(a) == repr(b)


def check_tags(value: Any) -> None:
    """A ``$`` key appears only in a tag object; everything inside is checked the same way."""
    if isinstance(value, list):
        for item in value:
            check_tags(item)
    elif isinstance(value, dict):
        tagged = [key for key in value if key.startswith("$")]
        if tagged:
            assert len(tagged) == 1 and tagged[0] in TAGS, value
            assert set(value) - set(tagged) <= (
                {"fold"} if tagged[0] in ("$datetime", "$time") else set()
            )
        for item in value.values():
            check_tags(item)
    else:
        assert value is None or type(value) in (bool, int, float, str)
        if type(value) is float:
            assert math.isfinite(value)
        if type(value) is int:
            assert -(2**53) <= value <= 2**53


@given(values)
def test_every_value_comes_back_exactly_through_the_stdlib_json_module(value: Any) -> None:
    shown = typed_json(value)
    text = json.dumps(shown, allow_nan=False)  # no NaN/Infinity: always valid JSON
    check_tags(json.loads(text))
    assert same(from_typed_json(json.loads(text)), value)


def test_examples_of_each_tag() -> None:
    moment = datetime(2026, 11, 1, 1, 30, tzinfo=timezone(timedelta(hours=-4)), fold=1)
    value = {
        "price": Decimal("19.99"),
        "pair": (1, "a"),
        "big": 2**64,
        "nan": math.nan,
        "at": moment,
        "day": date(2026, 1, 2),
        "when": time(3, 4, 5),
        "wait": timedelta(seconds=5),
        "id": UUID(int=1),
        "raw": b"\x00\x01",
        "tags": {"b", "a"},
    }
    assert typed_json(value) == {
        "price": {"$decimal": "19.99"},
        "pair": {"$tuple": [1, "a"]},
        "big": {"$int": "18446744073709551616"},
        "nan": {"$float": "nan"},
        "at": {"$datetime": "2026-11-01T01:30:00-04:00", "fold": 1},
        "day": {"$date": "2026-01-02"},
        "when": {"$time": "03:04:05"},
        "wait": {"$timedelta": {"days": 0, "seconds": 5, "microseconds": 0}},
        "id": {"$uuid": "00000000-0000-0000-0000-000000000001"},
        "raw": {"$bytes": "AAE="},
        "tags": {"$set": ["a", "b"]},
    }
    assert typed_json({"$decimal": "1"}) == {"$dict": [["$decimal", "1"]]}  # not a tag
    assert typed_json({1: "a"}) == {"$dict": [[1, "a"]]}
    assert typed_json({"token": Secret("s3cret")}) == {"token": {"$secret": "**********"}}


@pytest.mark.parametrize(
    "bad",
    [
        {"$decimal": 1},
        {"$decimal": "x"},
        {"$nope": 1},
        {"$tuple": [1], "$set": [1]},
        {"$date": "2026-01-02", "fold": 1},
        {"$datetime": "2026-01-02T00:00:00", "fold": 2},
        {"$int": "12a"},
        {"$float": "1.5"},
        {"$bytes": "***"},
        {"$dict": [[1]]},
        {"$dict": [[[1], 2]]},
        {"$set": [[1]]},
        {"$timedelta": {"days": 1}},
        {"$struct": {"kind": "k", "version": 1, "fields": {}}},
        {"$secret": "**********"},
    ],
)
def test_malformed_or_unrebuildable_tags_are_a_format_error(bad: Any) -> None:
    with pytest.raises(FormatError):
        from_typed_json(bad)


def test_undecodable_comes_back_as_undecodable() -> None:
    shown = typed_json([Undecodable("why", "order", 3)])
    assert from_typed_json(shown) == [Undecodable("why", "order", 3)]


# tagged_json: the lenient reader of a snapshot's stored state data.


class Known(msgspec.Struct, frozen=True):
    total: Decimal


class Unknown(msgspec.Struct, frozen=True):
    secret_code: str


def test_an_unregistered_struct_hides_only_itself(
    sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path
) -> None:
    writer = gp.FormatRegistry()
    writer.register(Known, kind="test.known", version=1)
    writer.register(Unknown, kind="test.unknown", version=1)
    machine = build_order_machine()
    machine.start()
    machine.process_event(Event("start"))
    set_data(machine, "cart", "known", Known(Decimal("19.99")))
    set_data(machine, "cart", "unknown", Unknown("x"))
    set_data(machine, "cart", "note", ("gift", 2))
    with gp.Store(open_backend(sqlite_url), keyring=keyring, formats=writer) as store:
        store.save_machine("order-1", machine)
    reader = gp.FormatRegistry()
    reader.register(Known, kind="test.known", version=1)  # Unknown is not registered here
    backend = open_backend(sqlite_url)
    try:
        pipeline = RecordPipeline(backend, keyring=keyring, namespace="default", formats=reader)
        snapshot = pipeline.inspect("order-1", None).record
        shown = tagged_json(snapshot.data["cart"], reader.type_for)
    finally:
        backend.close()
    assert shown["known"] == {
        "$struct": {
            "kind": "test.known",
            "version": 1,
            "fields": {"total": {"$decimal": "19.99"}},
        }
    }
    hidden = shown["unknown"]["$undecodable"]
    assert (hidden["kind"], hidden["version"]) == ("test.unknown", 1)
    assert "test.unknown" in hidden["reason"]
    assert shown["note"] == {"$tuple": ["gift", 2]}
    json.dumps(shown, allow_nan=False)


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(lambda items: [st_tag(items), *items])
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


def st_tag(items: list[Any]) -> int:
    return len(items) % 16  # a small int where a tag goes: any tag number, valid or not


@given(junk)
def test_malformed_tagged_data_is_undecodable_never_an_exception(value: Any) -> None:
    registry = gp.FormatRegistry()
    shown = tagged_json(value, registry.type_for)
    json.dumps(shown, allow_nan=False)
    check_tags(shown)


@pytest.mark.parametrize(
    "value",
    [
        [99, "x"],
        ["not a tag"],
        [],
        {"a": 1},
        [13, "kind", 1, "!!!not base64"],
        [13, "kind", 1, "AAAA"],
    ],
)
def test_malformed_examples(value: Any) -> None:
    shown = tagged_json(value, gp.FormatRegistry().type_for)
    assert "$undecodable" in json.dumps(shown)


def test_reading_back_refuses_endless_nesting_and_mistyped_tags() -> None:
    """A document from elsewhere may nest without end or lie in a tag: a FormatError each."""
    from gotstate_persist._typedjson import MAX_READ_DEPTH

    deep: object = 1
    for _ in range(5 * MAX_READ_DEPTH):
        deep = {"$tuple": [deep]}
    with pytest.raises(FormatError, match="nesting deeper"):
        from_typed_json(deep)
    shallow: object = 1
    for _ in range(MAX_READ_DEPTH // 2 - 1):  # each $tuple level is two (object, list)
        shallow = {"$tuple": [shallow]}
    assert from_typed_json(shallow) is not None
    for body in (
        {"reason": "r", "kind": [1], "version": 1},
        {"reason": "r", "kind": "k", "version": "z"},
        {"reason": "r", "extra": 1},
    ):
        with pytest.raises(FormatError, match="malformed typed JSON"):
            from_typed_json({"$undecodable": body})
