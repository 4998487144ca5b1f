"""The hot paths of every save and restore: one state's data dict, tagged and back.

A state's data is a dict, usually of plain scalars with the odd list, tuple or
dict of scalars inside. The general walk of :mod:`._values` makes a Python
call per container and per int or float (their range and finiteness need a
check); on a machine with thousands of states holding data those calls are
most of the time a save or a restore takes. The two functions here unroll
the first two levels of that walk into loops, with the scalar checks written
out inline, and hand anything else to the general walk, so they produce and
accept exactly what it does: the same tagged form, the same refusals with the
same messages, the same depth budget (tests hold the two to the same verdict
on arbitrary and malformed input).

The scalar check is spelled out in each loop on purpose: a helper function
would cost the call these loops exist to avoid.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._values import (
    FINAL_TYPES,
    INT64_MAX,
    INT64_MIN,
    SEQUENCE_TAGS,
    TAG_DICT,
    TAG_LIST,
    TAG_TUPLE,
    StructDecoder,
    StructKind,
    UnsupportedValue,
    decode_tagged,
    encode_value,
)

__all__ = ["decode_items", "encode_items"]

_LIST_OR_TUPLE = frozenset({TAG_LIST, TAG_TUPLE})


def encode_items(
    items: Iterable[tuple[object, object]], depth: int, struct_kind: StructKind
) -> list[object]:
    """The tagged dict of ``items``, each key and value given ``depth`` levels.

    Equal to ``[TAG_DICT, encode_value(k, depth, ...), encode_value(v, depth, ...), ...]``;
    raises ``UnsupportedValue`` (or the ``InvalidArgument`` of an unregistered
    Struct) exactly where that would.
    """
    out: list[object] = [TAG_DICT]
    append = out.append
    inner_depth = depth - 1
    for k, v in items:
        append(k if type(k) is str else encode_value(k, depth, struct_kind))
        t = type(v)
        if (
            t is str
            or t is bool
            or v is None
            or (t is int and INT64_MIN <= v <= INT64_MAX)  # type: ignore[operator]
            or (t is float and v - v == 0.0)  # type: ignore[operator]  # finite
        ):
            append(v)
        elif t is dict and depth > 0:
            append(_dict_level(v, inner_depth, struct_kind))  # type: ignore[arg-type]
        elif t in SEQUENCE_TAGS and depth > 0:
            append(_sequence_level(v, SEQUENCE_TAGS[t], inner_depth, struct_kind))  # type: ignore[arg-type]
        else:
            append(encode_value(v, depth, struct_kind))
    return out


def _dict_level(value: dict[Any, Any], depth: int, struct_kind: StructKind) -> list[object]:
    """A nested dict (one level already spent), its sequences of scalars inlined."""
    out: list[object] = [TAG_DICT]
    append = out.append
    for k, v in value.items():
        append(k if type(k) is str else encode_value(k, depth, struct_kind))
        t = type(v)
        if (
            t is str
            or t is bool
            or v is None
            or (t is int and INT64_MIN <= v <= INT64_MAX)
            or (t is float and v - v == 0.0)  # finite
        ):
            append(v)
        elif t in SEQUENCE_TAGS and depth > 0:
            append(_sequence_level(v, SEQUENCE_TAGS[t], depth - 1, struct_kind))
        else:
            append(encode_value(v, depth, struct_kind))
    return out


def _sequence_level(
    value: Iterable[object], tag: int, depth: int, struct_kind: StructKind
) -> list[object]:
    """A list, tuple, set or frozenset (its level already spent): scalars as they are."""
    out: list[object] = [tag]
    append = out.append
    for v in value:
        t = type(v)
        if (
            t is str
            or t is bool
            or v is None
            or (t is int and INT64_MIN <= v <= INT64_MAX)  # type: ignore[operator]
            or (t is float and v - v == 0.0)  # type: ignore[operator]  # finite
        ):
            append(v)
        else:
            append(encode_value(v, depth, struct_kind))
    return out


def decode_items(tagged: object, structs: StructDecoder) -> Any:
    """``decode_tagged(tagged, structs)``, faster when ``tagged`` is a tagged dict.

    Same result, same ``UnsupportedValue`` on malformed input.
    """
    if not _is_tagged_dict(tagged):
        return decode_tagged(tagged, structs)
    out: dict[Any, Any] = {}
    final = FINAL_TYPES
    items = iter(tagged)  # type: ignore[call-overload]
    next(items)  # the tag
    try:
        for stored_key in items:
            v = next(items)
            k = stored_key if type(stored_key) in final else decode_tagged(stored_key, structs)
            if type(v) in final:
                out[k] = v
            elif (  # _is_tagged_dict inlined: this runs for every value of every state
                type(v) is list and len(v) % 2 == 1 and type(v[0]) is int and v[0] == TAG_DICT
            ):
                out[k] = _decode_dict_level(v, structs)
            else:
                out[k] = _decode_sequence(v, structs)
    except TypeError as exc:  # an unhashable key in hostile data, as decode_tagged says
        raise UnsupportedValue(f"malformed state data: {exc}") from None
    return out


def _is_tagged_dict(value: object) -> bool:
    """A tagged dict: ``[TAG_DICT, k, v, ...]`` with a key for every value."""
    return (
        type(value) is list
        and len(value) % 2 == 1
        and type(value[0]) is int
        and value[0] == TAG_DICT
    )


def _decode_dict_level(tagged: list[object], structs: StructDecoder) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    final = FINAL_TYPES
    items = iter(tagged)
    next(items)
    for stored_key in items:
        v = next(items)
        k = stored_key if type(stored_key) in final else decode_tagged(stored_key, structs)
        out[k] = v if type(v) in final else _decode_sequence(v, structs)
    return out


def _decode_sequence(tagged: object, structs: StructDecoder) -> Any:
    """A tagged list or tuple of final scalars without a call per item; else the general walk."""
    if type(tagged) is list and tagged:
        tag = tagged[0]
        if type(tag) is int and tag in _LIST_OR_TUPLE:
            items = tagged[1:]
            if set(map(type, items)) <= FINAL_TYPES:
                return items if tag == TAG_LIST else tuple(items)
    return decode_tagged(tagged, structs)
