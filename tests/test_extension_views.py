"""Views crossing to and from extensions: one wire form, and its in-process shortcut.

``copy_across`` must behave exactly as ``from_wire(to_wire(...))`` (same
result, same refusals), or the two isolations would accept different
outputs; and values must come back with their exact types.
"""

from __future__ import annotations

from datetime import UTC, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotstate_persist import EventView, StateView, TransitionView
from gotstate_persist.extensions._views import WireError, copy_across, from_wire, to_wire
from tests.test_machine import _typed

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),  # out of range ones are refused
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=3))])),
    st.dates(),
    st.timedeltas(),
    st.uuids(),
    st.decimals(allow_nan=False),
)
HASHABLE = st.one_of(st.none(), st.booleans(), st.integers(-9, 9), st.text(max_size=3))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.sets(HASHABLE, max_size=3),
        st.frozensets(HASHABLE, max_size=3),
        st.dictionaries(HASHABLE, inner, max_size=3),
    ),
    max_leaves=10,
)
DATA = st.dictionaries(st.text(max_size=5), VALUES, max_size=4)
EVENTS = st.builds(EventView, st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), DATA)
VIEWS = st.one_of(
    EVENTS,
    st.builds(StateView, st.text(max_size=5), DATA, EVENTS, st.text(max_size=5)),
    st.builds(TransitionView, st.text(max_size=5), st.text(max_size=5), EVENTS, DATA),
    st.lists(EVENTS, min_size=1, max_size=3),
    VALUES,
    DATA,
)


def _outcome(convert: Any, value: object) -> tuple[str, object]:
    try:
        return "ok", _typed_view(convert(value))
    except WireError:
        return "refused", None


def _typed_view(value: object) -> object:
    if isinstance(value, list) and value and all(type(v) is EventView for v in value):
        return [_typed_view(v) for v in value]
    if type(value) is EventView:
        return ("event", value.name, value.priority, _typed(value.metadata))
    if type(value) is StateView:
        return (
            "state",
            value.state,
            _typed(value.data),
            _typed_view(value.event),
            value.machine_key,
        )
    if type(value) is TransitionView:
        return (
            "transition",
            value.source,
            value.target,
            _typed_view(value.event),
            _typed(value.data),
        )
    return _typed(value)


@settings(max_examples=300, deadline=None)
@given(value=VIEWS)
def test_copy_across_is_the_wire_round_trip(value: object) -> None:
    wire = _outcome(lambda v: from_wire(to_wire(v)), value)
    assert _outcome(copy_across, value) == wire
    if wire[0] == "ok":
        assert wire[1] == _typed_view(value)  # exact types come back


@settings(max_examples=200, deadline=None)
@given(value=VIEWS)
def test_copies_share_no_mutable_container(value: object) -> None:
    try:
        copy = copy_across(value)
    except WireError:
        return
    metadata = getattr(value, "metadata", None)
    if type(metadata) is dict:
        assert copy.metadata is not metadata
    if type(value) is dict:
        assert copy is not value


@pytest.mark.parametrize(
    "forged",
    [
        EventView(5, 0, {}),  # type: ignore[arg-type]
        EventView("x", True, {}),  # type: ignore[arg-type]
        EventView("x", 2**70, {}),
        EventView("x", 0, []),  # type: ignore[arg-type]
        EventView("x", 0, {1: object()}),
        StateView("s", {}, "not an event", ""),  # type: ignore[arg-type]
        TransitionView("a", None, EventView("x"), {}),  # type: ignore[arg-type]
        [EventView("x"), "y"],
        object(),
    ],
)
def test_forged_outputs_are_refused_by_both_paths(forged: object) -> None:
    """Structs built by extension code are not type-checked by msgspec: we check them."""
    with pytest.raises(WireError):
        copy_across(forged)
    with pytest.raises(WireError):
        from_wire(to_wire(forged))


@pytest.mark.parametrize("junk", [[], ["event"], ["value"], ["events", [["event", 1, 0, 0]]], 7])
def test_malformed_wire_is_refused(junk: object) -> None:
    with pytest.raises(WireError):
        from_wire(junk)
