"""Properties of the configuration value layer, over generated values of a few schemas.

Any valid value round-trips the payload codec exactly and passes the schema
check as builtins; any one corrupted field is exactly one problem, at that
field, quoting no value.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from gotstate_persist.config._schema import check_candidate
from gotstate_persist.config._secret import Secret, decode_config, encode_config, to_plain

CANARY = "sk-canary-prop-55xQ"


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Flat(msgspec.Struct, frozen=True):
    count: int
    ratio: float
    name: str
    enabled: bool
    region: Literal["eu", "us"]
    colour: Colour
    limit: int | None
    token: Secret
    ports: list[int]
    weights: dict[str, float]


class Inner(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str
    port: int = 5432
    password: Secret | None = None


class Outer(msgspec.Struct, frozen=True):
    db: Inner
    replicas: list[Inner]
    shards: dict[str, Inner]
    fallback: Inner | None = None


_floats = st.floats(allow_nan=False, allow_infinity=False)
_secrets = st.text().map(Secret)
_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)

flat = st.builds(
    Flat,
    count=_ints,
    ratio=_floats,
    name=st.text(),
    enabled=st.booleans(),
    region=st.sampled_from(["eu", "us"]),
    colour=st.sampled_from(Colour),
    limit=st.none() | _ints,
    token=_secrets,
    ports=st.lists(_ints, max_size=5),
    weights=st.dictionaries(st.text(), _floats, max_size=5),
)
inner = st.builds(Inner, host=st.text(), port=_ints, password=st.none() | _secrets)
outer = st.builds(
    Outer,
    db=inner,
    replicas=st.lists(inner, max_size=3),
    shards=st.dictionaries(st.text(), inner, max_size=3),
    fallback=st.none() | inner,
)
values = flat | outer

#: For each field, a value of a type it never accepts (holding the canary where it can).
CORRUPTIONS: dict[type, dict[str, Any]] = {
    Flat: {
        "count": CANARY,
        "ratio": CANARY,
        "name": [CANARY],
        "enabled": CANARY,
        "region": CANARY,
        "colour": CANARY,
        "limit": CANARY,
        "token": [CANARY],
        "ports": CANARY,
        "weights": CANARY,
    },
    Outer: {"db": CANARY, "replicas": CANARY, "shards": CANARY, "fallback": CANARY},
}


@settings(max_examples=200, deadline=None)
@given(values)
def test_valid_values_round_trip_and_pass_the_check(value: Flat | Outer) -> None:
    schema = type(value)
    assert decode_config(encode_config(value), schema) == value
    assert check_candidate(schema, to_plain(value, reveal=True)) == (value, [])
    assert check_candidate(schema, value) == (value, [])


@settings(max_examples=200, deadline=None)
@given(values, st.data())
def test_one_corrupted_field_is_one_problem_at_that_field(
    value: Flat | Outer, data: st.DataObject
) -> None:
    schema = type(value)
    corruptions = CORRUPTIONS[schema]
    field = data.draw(st.sampled_from(sorted(corruptions)))
    candidate = to_plain(value, reveal=True)
    candidate[field] = corruptions[field]
    result, problems = check_candidate(schema, candidate)
    assert result is None
    assert len(problems) == 1
    assert problems[0].startswith(f"$.{field}: ")
    assert CANARY not in problems[0]


@settings(max_examples=100, deadline=None)
@given(outer, st.data())
def test_a_corrupted_nested_port_is_named_precisely(value: Outer, data: st.DataObject) -> None:
    candidate = to_plain(value, reveal=True)
    places: list[tuple[str, dict[str, Any]]] = [("$.db", candidate["db"])]
    places += [(f"$.replicas[{i}]", item) for i, item in enumerate(candidate["replicas"])]
    places += [(f"$.shards.{key}", item) for key, item in candidate["shards"].items()]
    path, target = data.draw(st.sampled_from(places))
    target["port"] = CANARY
    result, problems = check_candidate(Outer, candidate)
    assert result is None
    assert problems == [f"{path}.port: expected int, got str"]
