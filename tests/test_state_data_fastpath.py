"""The unrolled state-data paths (formats/_state_data.py) agree with the general walk.

Every save tags each state's data with ``encode_items`` and every restore reads
it back with ``decode_items``; both exist only for speed, so they must give
exactly what ``encode_value``/``decode_tagged`` give: the same tagged form, the
same values of the same types, the same refusal with the same message, on
supported, unsupported, too deep, non-finite and hostile input.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from machines import build_ring_machine, set_data
from test_machine import FORMATS, HASHABLE, VALUES, _typed

from gotstate_persist import machine as adapter
from gotstate_persist.codec import JSON, MSGPACK, Codec
from gotstate_persist.errors import InvalidArgument
from gotstate_persist.formats._state_data import decode_items, encode_items
from gotstate_persist.formats._values import (
    TAG_DICT,
    UnsupportedValue,
    decode_tagged,
    encode_value,
)

KIND_OF = FORMATS.kind_of
STRUCTS = FORMATS.decode_struct


class Opaque:
    """A value of a type no store accepts."""


# what the fast path must refuse or hand on exactly as the general walk does
AWKWARD = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.just(Opaque()),
    st.just(Decimal("sNaN")),
    st.just(bytearray(b"x")),
)
ANY_VALUE = st.recursive(
    st.one_of(VALUES, AWKWARD),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(HASHABLE, inner, max_size=3),
    ),
    max_leaves=10,
)
ITEMS = st.lists(st.tuples(st.one_of(HASHABLE, AWKWARD), ANY_VALUE), max_size=5)


def _general(items: list[tuple[Any, Any]], depth: int) -> list[object]:
    out: list[object] = [TAG_DICT]
    for key, value in items:
        out.append(encode_value(key, depth, KIND_OF))
        out.append(encode_value(value, depth, KIND_OF))
    return out


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return ("ok", fn(*args))
    except (UnsupportedValue, InvalidArgument, TypeError) as exc:
        return (type(exc).__name__, str(exc))


def _same_tagged(a: object, b: object) -> bool:
    """Tagged forms equal, NaN included (nan != nan), types included."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(_same_tagged(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)  # type: ignore[arg-type]
    return a == b


@settings(max_examples=300, deadline=None)
@given(items=ITEMS, depth=st.integers(min_value=0, max_value=4))
def test_encode_items_gives_what_the_general_walk_gives(
    items: list[tuple[Any, Any]], depth: int
) -> None:
    fast, general = _outcome(encode_items, items, depth, KIND_OF), _outcome(_general, items, depth)
    assert fast[0] == general[0]
    if fast[0] == "ok":
        assert _same_tagged(fast[1], general[1])
    else:
        assert fast[1] == general[1]


@settings(max_examples=200, deadline=None)
@given(value=st.dictionaries(HASHABLE, VALUES, max_size=6))
def test_state_data_round_trips_exactly_through_the_fast_paths(value: dict[Any, Any]) -> None:
    tagged = encode_items(value.items(), 60, KIND_OF)
    assert _typed(decode_items(tagged, STRUCTS)) == _typed(value)


# Hostile tagged input: any nesting of lists of tags, scalars and junk.
TAGGED = st.recursive(
    st.one_of(
        st.integers(min_value=-2, max_value=15),
        st.booleans(),
        st.none(),
        st.text(max_size=3),
        st.floats(allow_nan=False),
        st.just({}),
    ),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None)
@given(tagged=TAGGED)
def test_decode_items_agrees_with_decode_tagged_on_any_input(tagged: object) -> None:
    fast = _outcome(decode_items, tagged, STRUCTS)
    general = _outcome(decode_tagged, tagged, STRUCTS)
    assert fast[0] == general[0]
    assert fast[0] != "TypeError", "a TypeError must never escape"
    if fast[0] == "ok":
        assert _typed(fast[1]) == _typed(general[1])
    else:
        assert fast[1] == general[1]


@pytest.mark.parametrize(
    "tagged",
    [
        [TAG_DICT, [0, 1], "v"],  # a list as a dict key: unhashable
        [TAG_DICT, "k", [TAG_DICT, [2, 1], "v"]],  # ... one level down
        [TAG_DICT, "k"],  # a key without a value
        [TAG_DICT, "k", [99, "x"]],  # an unknown tag
        [TAG_DICT, "k", [True, 1]],  # a bool is not a tag
    ],
)
def test_decode_items_refuses_malformed_data_as_decode_tagged_does(tagged: object) -> None:
    with pytest.raises(UnsupportedValue) as general:
        decode_tagged(tagged, STRUCTS)
    with pytest.raises(UnsupportedValue) as fast:
        decode_items(tagged, STRUCTS)
    assert str(fast.value) == str(general.value)


_AWKWARD_EXAMPLES = [
    2**63,
    -(2**63) - 1,
    2**63 - 1,
    float("inf"),
    float("nan"),
    -0.0,
    Opaque(),
    Decimal("sNaN"),
    bytearray(b"x"),
    True,
]


@pytest.mark.parametrize("value", _AWKWARD_EXAMPLES, ids=repr)
@pytest.mark.parametrize(
    "place",
    [
        lambda v: [("k", v)],
        lambda v: [("k", {"n": v})],
        lambda v: [("k", [v])],
        lambda v: [("k", {"n": [v]})],
        lambda v: [("k", {"n": (1, v)})],
        lambda v: [("k", {"n": {"m": v}})],
        lambda v: [(v, 1)] if not isinstance(v, bytearray) else [("k", {v.hex(): v})],
    ],
    ids=["top", "in dict", "in list", "in dict list", "in dict tuple", "two dicts down", "key"],
)
@pytest.mark.parametrize("depth", [0, 1, 2, 60])
def test_encode_items_agrees_at_every_unrolled_level(value: object, place: Any, depth: int) -> None:
    items = place(value)
    fast, general = _outcome(encode_items, items, depth, KIND_OF), _outcome(_general, items, depth)
    assert fast[0] == general[0]
    if fast[0] == "ok":
        assert _same_tagged(fast[1], general[1])
    else:
        assert fast[1] == general[1]


# A save encodes each state's data as soon as it is tagged (capture's
# encode_part): the payload must be byte for byte what encoding the whole
# snapshot at once gives, on both codecs.


@pytest.mark.parametrize("codec", [MSGPACK, JSON], ids=["msgpack", "json"])
@settings(max_examples=60, deadline=None)
@given(data=st.lists(st.dictionaries(st.text(max_size=4), VALUES, max_size=3), max_size=6))
def test_a_snapshot_encoded_part_by_part_is_the_same_bytes(
    codec: Codec, data: list[dict[str, Any]]
) -> None:
    machine = build_ring_machine(8, groups=2)
    machine.start()
    leaves = [s.name for s in machine.get_states() if s.name.startswith("s-")]
    for leaf, values in zip(leaves, data, strict=False):
        for key, value in values.items():
            set_data(machine, leaf, key, value)
    whole = adapter.capture(machine, struct_kind=KIND_OF, max_depth=64)
    parts = adapter.capture(
        machine, struct_kind=KIND_OF, max_depth=64, encode_part=codec.encode_part
    )
    assert codec.encode(("k", 1, parts), depth_checked=True) == codec.encode(
        ("k", 1, whole), depth_checked=True
    )


def test_a_part_that_cannot_be_encoded_is_refused_by_save_and_nothing_is_written(
    tmp_path: Any, keyring: Any
) -> None:
    import gotstate_persist as gp

    machine = build_ring_machine(8, groups=2)
    machine.start()
    leaf = next(s.name for s in machine.get_states() if s.name.startswith("s-"))
    set_data(machine, leaf, "note", "lone \ud800 surrogate")
    with gp.open_store(f"sqlite:///{tmp_path / 'x.db'}", keyring=keyring) as store:
        with pytest.raises(gp.FormatError) as caught:
            store.save_machine("m", machine)
        assert "\ud800" not in str(caught.value)  # the value never shows
        assert store.keys() == []
