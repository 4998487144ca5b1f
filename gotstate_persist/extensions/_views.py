"""What an extension sees and returns: frozen views, and their one wire form.

An extension never receives the machine, the store, the keyring or any
gotstate object: only these views, built by the host from copies of the
values. Whatever an extension returns is decoded and validated by the host
before anything is applied, whether it ran in a worker process or in the
host's own (in-process calls go through the same wire form, so both modes
accept exactly the same outputs and an extension cannot hand the host a
live object).

The wire form is plain msgpack-able builtins: a view is a list starting
with its name (``"event"``, ``"state"``, ``"transition"``), a list of event
views is ``["events", [...]]``, and any other value is ``["value", tagged]``
with the exact-type tagging of state data (``formats._values``). The set of
view names is fixed here: a name on the wire never chooses a class beyond
these three.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..errors import InvalidArgument
from ..formats._values import UnsupportedValue, decode_value, encode_value

__all__ = [
    "MAX_VIEW_DEPTH",
    "EventView",
    "StateView",
    "TransitionView",
    "WireError",
    "copy_across",
    "from_wire",
    "gotstate_event",
    "to_wire",
    "view_of",
]

#: Nesting allowed in values passed to and from extensions (as for state data).
MAX_VIEW_DEPTH = 64


class EventView(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An event as an extension sees it; ``metadata`` values follow the state-data rules."""

    name: str
    priority: int = 0
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class StateView(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A state being entered or exited, with a copy of its data and the event."""

    state: str
    data: dict[str, Any]
    event: EventView
    machine_key: str = ""


class TransitionView(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A transition about to be taken (for ``allows``); ``data`` is the source state's."""

    source: str
    target: str
    event: EventView
    data: dict[str, Any] = msgspec.field(default_factory=dict)


def view_of(event: Any) -> EventView:
    """The view of a gotstate ``Event`` (its name, priority and a copy of its metadata)."""
    name = getattr(event, "name", None)
    priority = getattr(event, "priority", 0)
    metadata = getattr(event, "metadata", {})
    if type(name) is not str or type(priority) is not int or type(metadata) is not dict:
        raise InvalidArgument("process_event takes a gotstate Event")
    return EventView(name, priority, dict(metadata))


def gotstate_event(view: EventView) -> Any:
    """A new gotstate ``Event`` carrying what ``view`` says (its metadata copied)."""
    from gotstate.core.events import Event

    event = Event(view.name, priority=view.priority)
    event.metadata.update(view.metadata)
    return event


class WireError(Exception):
    """Internal: a value cannot cross to or from an extension; the caller adds context."""


def _no_structs(value: msgspec.Struct) -> tuple[str, int]:
    raise UnsupportedValue(
        f"{type(value).__qualname__} is a Struct; extensions exchange plain values only"
    )


def _refuse_struct_names(kind: str, version: int) -> type[msgspec.Struct]:
    raise UnsupportedValue("a Struct value cannot come back from an extension")


def _value(value: object) -> object:
    # a dict of str keys and final scalars travels as a msgpack map, as it is:
    # the tagged form is always a list or a scalar, so a map is unambiguous
    if type(value) is dict and _plain_dict(value):
        return value
    return encode_value(value, MAX_VIEW_DEPTH, _no_structs)


def _event(view: EventView) -> list[object]:
    if type(view) is not EventView:
        raise WireError("an event must be an EventView")
    return ["event", view.name, view.priority, _value(view.metadata)]


def to_wire(value: object) -> list[object]:
    """The wire form of a view, a list of event views, or an exact-type value."""
    try:
        if type(value) is EventView:
            return _event(value)
        if type(value) is StateView:
            return [
                "state",
                value.state,
                _value(value.data),
                _event(value.event),
                value.machine_key,
            ]
        if type(value) is TransitionView:
            return [
                "transition",
                value.source,
                value.target,
                _event(value.event),
                _value(value.data),
            ]
        if type(value) is list and value and all(type(item) is EventView for item in value):
            return ["events", [_event(item) for item in value]]
        return ["value", _value(value)]
    except UnsupportedValue as exc:
        raise WireError(str(exc)) from None
    except RecursionError:
        raise WireError("value is nested too deeply") from None


def _str(value: object, what: str) -> str:
    if type(value) is not str:
        raise WireError(f"{what} must be a str")
    return value


def _dict(value: object, what: str) -> dict[str, Any]:
    if type(value) is dict:
        if not _plain_dict(value):
            raise WireError(f"{what} is not a plain map")
        return value
    decoded = decode_value(value, _refuse_struct_names)
    if type(decoded) is not dict or any(type(k) is not str for k in decoded):
        raise WireError(f"{what} must be a dict with str keys")
    return decoded


def _event_from(items: object) -> EventView:
    if type(items) is not list or len(items) != 4 or items[0] != "event":
        raise WireError("malformed event view")
    _, name, priority, metadata = items
    if type(priority) is not int or not -(2**63) <= priority <= 2**63 - 1:
        raise WireError("an event's priority must be a 64-bit int")
    return EventView(_str(name, "an event's name"), priority, _dict(metadata, "metadata"))


def from_wire(obj: object) -> Any:
    """Rebuild what :func:`to_wire` produced, refusing any other shape with WireError."""
    try:
        if type(obj) is not list or not obj or type(obj[0]) is not str:
            raise WireError("malformed value")
        tag, rest = obj[0], obj[1:]
        if tag == "value" and len(rest) == 1:
            if type(rest[0]) is dict:
                return _dict(rest[0], "a value")
            return decode_value(rest[0], _refuse_struct_names)
        if tag == "event":
            return _event_from(obj)
        if tag == "events" and len(rest) == 1 and type(rest[0]) is list:
            return [_event_from(item) for item in rest[0]]
        if tag == "state" and len(rest) == 4:
            state, data, event, key = rest
            return StateView(
                _str(state, "state"), _dict(data, "data"), _event_from(event), _str(key, "key")
            )
        if tag == "transition" and len(rest) == 4:
            source, target, event, data = rest
            return TransitionView(
                _str(source, "source"),
                _str(target, "target"),
                _event_from(event),
                _dict(data, "data"),
            )
        raise WireError("malformed value")
    except UnsupportedValue as exc:
        raise WireError(str(exc)) from None
    except RecursionError:
        raise WireError("value is nested too deeply") from None


_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


_FINAL_TYPES = frozenset({str, bool, float, type(None), int})


def _plain_dict(value: dict[Any, Any]) -> bool:
    """Whether ``value`` holds only str keys and final scalars (nothing to tag or copy).

    Type sets are built by ``map`` in C: several times faster than a Python
    loop over the items, which matters on every in-process call.
    """
    if not value:
        return True
    if set(map(type, value)) != {str}:
        return False
    kinds = set(map(type, value.values()))
    if not kinds <= _FINAL_TYPES:
        return False
    if int in kinds:
        return all(_INT64_MIN <= v <= _INT64_MAX for v in value.values() if type(v) is int)
    return True


def _copied(value: dict[str, Any]) -> dict[str, Any]:
    if type(value) is dict and _plain_dict(value):
        return dict(value)
    copy = from_wire(["value", to_wire(value)[1]])
    if type(copy) is not dict:
        raise WireError("expected a dict")
    return copy


def _text(value: object, what: str) -> str:
    if type(value) is not str:
        raise WireError(f"{what} must be a str")
    return value


def _priority(value: object) -> int:
    if type(value) is not int or not _INT64_MIN <= value <= _INT64_MAX:
        raise WireError("an event's priority must be a 64-bit int")
    return value


def _event_copy(view: EventView) -> EventView:
    # a Struct built by extension code was never type-checked: check every field
    if type(view) is not EventView:
        raise WireError("an event must be an EventView")
    return EventView(
        _text(view.name, "an event's name"), _priority(view.priority), _copied(view.metadata)
    )


def copy_across(value: object) -> Any:
    """Exactly ``from_wire(to_wire(value))``, without the detour where nothing needs tagging.

    In-process isolation passes values this way: the same checks and the same
    copies as the worker's wire form (so both modes accept exactly the same
    values), but a view whose data holds only strings and numbers is copied
    with one ``dict()``, which is most events.
    """
    kind = type(value)
    try:
        if kind is EventView:
            return _event_copy(value)  # type: ignore[arg-type]
        if kind is StateView:
            return StateView(
                _text(value.state, "state"),  # type: ignore[attr-defined]
                _copied(value.data),  # type: ignore[attr-defined]
                _event_copy(value.event),  # type: ignore[attr-defined]
                _text(value.machine_key, "key"),  # type: ignore[attr-defined]
            )
        if kind is TransitionView:
            return TransitionView(
                _text(value.source, "source"),  # type: ignore[attr-defined]
                _text(value.target, "target"),  # type: ignore[attr-defined]
                _event_copy(value.event),  # type: ignore[attr-defined]
                _copied(value.data),  # type: ignore[attr-defined]
            )
        if kind is dict and _plain_dict(value):  # type: ignore[arg-type]
            return dict(value)  # type: ignore[call-overload]
    except UnsupportedValue as exc:
        raise WireError(str(exc)) from None
    return from_wire(to_wire(value))
