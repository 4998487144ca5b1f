"""Exact, type-preserving encoding of free-form state data.

msgpack and JSON have one array type and (for JSON) no bytes, so a tuple would
come back a list and a Decimal a string. State data therefore goes through
this small tagged form: scalars (None, bool, int, float, str) stay as they are
and every other value becomes an array whose first element is a tag number::

    [TAG_LIST, item, ...]        [TAG_DICT, key, value, key, value, ...]
    [TAG_TUPLE, item, ...]       [TAG_DECIMAL, "1.10"]   ...

Only the exact types listed in design.md are accepted (``type(v) is T``, so a
subclass such as an IntEnum or OrderedDict is refused rather than silently
changed into its base type). The tag numbers are part of the stored format:
never renumber them; add new ones at the end.

Bytes travel as base64 text, ``[TAG_BYTES, "AAH+/w=="]``. Registered msgspec
Structs travel as ``[TAG_STRUCT, kind, version, base64 of their msgpack]``
and are rebuilt only through the registry: a stored name never chooses a
class that the application did not register. The tag keeps the format
version a Struct was written with; how it comes back is the caller's
:data:`StructDecoder`: ``FormatRegistry.decode_struct`` upcasts an older
version through its kind's chain to the newest registered one, exactly as a
top-level record is upcast on load (:func:`decode_tagged`), while
:func:`decode_value` decodes each Struct as the type registered for its
stored version. :func:`rewrite_structs` is the walk ``migrate`` uses to
rewrite embedded Structs in place, without decoding the rest.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any
from uuid import UUID

import msgspec

from ..codec import MSGPACK
from ..errors import FormatError

__all__ = [
    "FINAL_TYPES",
    "SEQUENCE_TAGS",
    "StructDecoder",
    "StructRewrite",
    "UnsupportedValue",
    "comes_back_exactly",
    "decode_tagged",
    "decode_value",
    "encode_value",
    "rewrite_structs",
    "typed_structs",
]

TAG_LIST = 0
TAG_TUPLE = 1
TAG_SET = 2
TAG_FROZENSET = 3
TAG_DICT = 4
TAG_BYTES = 5
TAG_FLOAT = 6  # non-finite floats, which JSON cannot carry
TAG_DATETIME = 7
TAG_DATE = 8
TAG_TIME = 9
TAG_TIMEDELTA = 10
TAG_UUID = 11
TAG_DECIMAL = 12
TAG_STRUCT = 13

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

StructKind = Callable[[msgspec.Struct], tuple[str, int]]
#: The Struct type registered for a stored ``(kind, version)``.
StructType = Callable[[str, int], type[msgspec.Struct]]
#: Rebuilds one embedded Struct from its kind, the format version it was
#: written with and its msgpack bytes (``FormatRegistry.decode_struct``
#: returns the newest version, upcast); raises ``FormatError``.
StructDecoder = Callable[[str, int, bytes], msgspec.Struct]
#: ``rewrite(version, encoded)`` of one embedded Struct of the kind being
#: rewritten: None keeps it, ``(new_version, new_encoded)`` replaces it.
StructRewrite = Callable[[int, bytes], tuple[int, bytes] | None]


class UnsupportedValue(Exception):
    """Internal: a value cannot be stored; the caller adds state/key context."""


#: What is refused, and why, wherever it occurs (state data or a Struct field).
SIGNALING_NAN = (
    "a signaling NaN (Decimal('sNaN')), which raises decimal.InvalidOperation on every "
    "comparison, so no store can check that it comes back exactly; store Decimal('NaN') "
    "or None instead"
)


def comes_back_exactly(back: object, value: object) -> bool:
    """Whether ``back``, decoded from the encoding of ``value``, equals it exactly.

    ``repr`` settles what ``==`` cannot: NaN fields compare unequal to
    themselves. A signaling NaN Decimal anywhere in ``value`` raises
    ``InvalidOperation`` on comparison (under the caller's decimal context it
    might instead compare unequal and pass on repr): the comparison runs under
    a context that always traps it, and the value is refused with
    :class:`UnsupportedValue`, whatever the application's decimal context.
    """
    with localcontext() as context:
        context.traps[InvalidOperation] = True
        try:
            return back == value or repr(back) == repr(value)
        except InvalidOperation:
            pass
    raise UnsupportedValue(SIGNALING_NAN)


def _check_tz(value: datetime | time) -> None:
    tz = value.tzinfo
    if tz is None:
        return
    offset = value.utcoffset()
    if (
        type(tz) is not timezone
        or offset is None
        or tz != timezone(offset)
        or (str(tz) != str(timezone(offset)))
    ):
        raise UnsupportedValue(
            f"{type(value).__name__} with tzinfo {type(tz).__name__} cannot be stored exactly; "
            "use datetime.timezone.utc or a fixed datetime.timezone offset"
        )


def encode_value(value: object, max_depth: int, struct_kind: StructKind) -> object:
    """Turn ``value`` into the tagged form, refusing anything not exactly supported."""
    return _encode(value, max_depth, struct_kind)


def _encode(value: object, depth: int, struct_kind: StructKind) -> object:
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        if not INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
            raise UnsupportedValue("int outside the 64-bit range; store it as a str or Decimal")
        return value
    if t is float and math.isfinite(value):  # type: ignore[arg-type]
        return value
    # Everything below becomes a tagged array: one level of nesting.
    if depth <= 0:
        raise UnsupportedValue("value is nested too deeply; flatten it")
    depth -= 1
    if t is float:
        return [TAG_FLOAT, repr(value)]
    # Containers inline the check for the plain scalars that make up most data:
    # a set lookup is several times cheaper than a recursive call.
    if t is dict:
        out: list[object] = [TAG_DICT]
        append = out.append
        for k, v in value.items():  # type: ignore[attr-defined]
            append(k if type(k) in _PLAIN else _encode(k, depth, struct_kind))
            append(v if type(v) in _PLAIN else _encode(v, depth, struct_kind))
        return out
    if t is list or t is tuple or t is set or t is frozenset:
        out = [SEQUENCE_TAGS[t]]
        out.extend(
            [
                item if type(item) in _PLAIN else _encode(item, depth, struct_kind)
                for item in value  # type: ignore[attr-defined]
            ]
        )
        return out
    if t is bytes:
        # base64 text: keeps the tagged form free of a bytes type, so every
        # codec carries it alike and the schema can bound its depth (see
        # formats.machine: msgspec unions cannot mix str and bytes)
        return [TAG_BYTES, base64.b64encode(value).decode("ascii")]  # type: ignore[arg-type]
    if t is datetime:
        _check_tz(value)  # type: ignore[arg-type]
        return [TAG_DATETIME, value.isoformat(), value.fold]  # type: ignore[attr-defined]
    if t is date:
        return [TAG_DATE, value.isoformat()]  # type: ignore[attr-defined]
    if t is time:
        _check_tz(value)  # type: ignore[arg-type]
        return [TAG_TIME, value.isoformat(), value.fold]  # type: ignore[attr-defined]
    if t is timedelta:
        return [TAG_TIMEDELTA, value.days, value.seconds, value.microseconds]  # type: ignore[attr-defined]
    if t is UUID:
        return [TAG_UUID, value.hex]  # type: ignore[attr-defined]
    if t is Decimal:
        if value.is_snan():  # type: ignore[attr-defined]
            raise UnsupportedValue(f"it holds {SIGNALING_NAN}")
        return [TAG_DECIMAL, str(value)]
    if isinstance(value, msgspec.Struct):
        kind, version = struct_kind(value)
        return [TAG_STRUCT, kind, version, base64.b64encode(encode_struct(value)).decode("ascii")]
    raise UnsupportedValue(
        f"values of type {t.__module__}.{t.__qualname__} cannot be stored; use None, bool, "
        "int, float, str, bytes, datetime, date, time, timedelta, UUID, Decimal, list, "
        "tuple, set, frozenset, dict or a registered msgspec Struct"
    )


# Values stored as they are, with nothing to check (ints and floats are not
# here: they need a range or finiteness check).
_PLAIN = frozenset({str, bool, type(None)})
#: The types a decoder hands back that are already final values.
FINAL_TYPES = frozenset({str, int, bool, float, type(None)})

#: The tag of each sequence type.
SEQUENCE_TAGS: dict[type, int] = {
    list: TAG_LIST,
    tuple: TAG_TUPLE,
    set: TAG_SET,
    frozenset: TAG_FROZENSET,
}


def encode_struct(value: msgspec.Struct) -> bytes:
    """Encode a registered Struct so that it comes back exactly, or refuse it.

    A Struct travels as its own msgpack bytes, checked by the same bounded,
    strict, typed decode a load will run, and compared with the original: a
    field holding a value of the wrong type, or one its annotation cannot
    carry exactly (a tuple in an ``object`` field comes back a list), is
    refused at save time instead of failing or changing at restore.
    """
    name = type(value).__qualname__
    try:
        encoded = MSGPACK.encode(value)
        back = MSGPACK.decode(encoded, type(value))
    except FormatError:
        raise UnsupportedValue(
            f"{name} does not match its own field types, or is nested too deeply; "
            "fix the values of its fields"
        ) from None
    try:
        exact = comes_back_exactly(back, value)
    except UnsupportedValue as exc:
        raise UnsupportedValue(f"a field of {name} holds {exc}") from None
    if not exact:
        raise UnsupportedValue(
            f"{name} would not come back exactly (a field holds a value its annotation "
            "cannot carry, such as a tuple or set in a list or object field); "
            "annotate the field with the exact type"
        )
    return encoded


def typed_structs(struct_type: StructType) -> StructDecoder:
    """A decoder that rebuilds each Struct as the type registered for its stored version."""

    def decode(kind: str, version: int, encoded: bytes) -> msgspec.Struct:
        # its own bounded, strict, typed decode: the class comes from the registry
        return MSGPACK.decode(encoded, struct_type(kind, version))

    return decode


def decode_value(value: object, struct_type: StructType) -> Any:
    """Rebuild a value from its tagged form, each Struct as its stored version's type.

    For tools that show stored data as it is; a restore upcasts instead
    (:func:`decode_tagged` with ``FormatRegistry.decode_struct``).
    """
    return decode_tagged(value, typed_structs(struct_type))


def decode_tagged(value: object, structs: StructDecoder) -> Any:
    """Rebuild a value from its tagged form; raise UnsupportedValue if malformed.

    Each embedded Struct is rebuilt by ``structs`` (whose ``FormatError``
    propagates). Depth is already bounded by the codec's pre-scan, so
    recursion here is safe.
    """
    t = type(value)
    if t is str or t is int or t is bool or t is float or value is None:
        return value
    if t is not list or not value:
        raise UnsupportedValue(f"malformed state data: unexpected {t.__name__}")
    tag = value[0]  # type: ignore[index]
    if type(tag) is not int or tag < 0:
        raise UnsupportedValue("malformed state data: missing tag")
    items: list[object] = value[1:]  # type: ignore[index]
    try:
        if tag <= TAG_DICT:
            # inline the check for final scalars: far cheaper than a call each
            final = FINAL_TYPES
            decoded = [
                item if type(item) in final else decode_tagged(item, structs) for item in items
            ]
            if tag == TAG_LIST:
                return decoded
            if tag == TAG_TUPLE:
                return tuple(decoded)
            if tag == TAG_SET:
                return set(decoded)
            if tag == TAG_FROZENSET:
                return frozenset(decoded)
            if tag == TAG_DICT and not len(decoded) % 2:
                it = iter(decoded)
                return dict(zip(it, it, strict=True))
        return _decode_scalar(tag, items, structs)
    except TypeError as exc:  # unhashable dict key or set member in hostile data
        raise UnsupportedValue(f"malformed state data: {exc}") from None


def rewrite_structs(value: object, kind: str, rewrite: StructRewrite) -> object:
    """The tagged ``value`` with each embedded Struct of ``kind`` passed through ``rewrite``.

    Only the Structs' nodes change (a new version, new bytes); everything
    else, other kinds' Structs included, stays as stored. Returns ``value``
    itself when nothing changed, so the caller can tell by identity. Raises
    UnsupportedValue if the tagged form is malformed; ``rewrite``'s errors
    propagate.
    """
    if type(value) in FINAL_TYPES:
        return value
    if type(value) is not list or not value:
        raise UnsupportedValue(f"malformed state data: unexpected {type(value).__name__}")
    tag = value[0]
    if type(tag) is not int or tag < 0:
        raise UnsupportedValue("malformed state data: missing tag")
    items: list[object] = value[1:]
    if tag <= TAG_DICT:
        out: list[object] = [tag]
        changed = False
        for item in items:
            new = item if type(item) in FINAL_TYPES else rewrite_structs(item, kind, rewrite)
            changed = changed or new is not item
            out.append(new)
        return out if changed else value
    if tag != TAG_STRUCT or not items or items[0] != kind:
        return value
    try:
        _kind, version, encoded = _struct_parts(items)
    except ValueError:
        raise UnsupportedValue("malformed state data: bad struct") from None
    replaced = rewrite(version, encoded)
    if replaced is None:
        return value
    new_version, new_encoded = replaced
    return [TAG_STRUCT, kind, new_version, base64.b64encode(new_encoded).decode("ascii")]


def _struct_parts(items: list[object]) -> tuple[str, int, bytes]:
    """Kind, stored version and msgpack bytes of a struct node's items."""
    if len(items) != 3 or type(items[0]) is not str or type(items[1]) is not int:
        raise UnsupportedValue("malformed state data: bad struct")
    if type(items[2]) is not str:
        raise UnsupportedValue("malformed state data: bad struct")
    return items[0], items[1], base64.b64decode(items[2], validate=True)


def _one(items: list[object], expected: type) -> Any:
    if len(items) != 1 or type(items[0]) is not expected:
        raise UnsupportedValue("malformed state data: bad scalar")
    return items[0]


def _decode_scalar(tag: object, items: list[object], structs: StructDecoder) -> object:
    try:
        if tag == TAG_BYTES:
            return base64.b64decode(_one(items, str), validate=True)
        if tag == TAG_FLOAT:
            text = _one(items, str)
            if text not in ("nan", "inf", "-inf"):
                raise UnsupportedValue("malformed state data: bad float")
            return float(text)
        if tag in (TAG_DATETIME, TAG_TIME):
            if len(items) != 2 or type(items[0]) is not str or items[1] not in (0, 1):
                raise UnsupportedValue("malformed state data: bad datetime")
            cls = datetime if tag == TAG_DATETIME else time
            return cls.fromisoformat(items[0]).replace(fold=items[1])
        if tag == TAG_DATE:
            return date.fromisoformat(_one(items, str))
        if tag == TAG_TIMEDELTA:
            if len(items) != 3 or any(type(i) is not int for i in items):
                raise UnsupportedValue("malformed state data: bad timedelta")
            return timedelta(days=items[0], seconds=items[1], microseconds=items[2])  # type: ignore[arg-type]
        if tag == TAG_UUID:
            return UUID(hex=_one(items, str))
        if tag == TAG_DECIMAL:
            return Decimal(_one(items, str))
        if tag == TAG_STRUCT:
            return structs(*_struct_parts(items))
    except (ValueError, OverflowError, InvalidOperation, msgspec.ValidationError) as exc:
        raise UnsupportedValue(f"malformed state data: {type(exc).__name__}") from None
    raise UnsupportedValue(f"malformed state data: unknown tag {tag!r}")
