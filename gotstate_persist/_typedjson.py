"""Stored values as JSON that keeps their exact types: one tagging rule for every reader.

The command line's ``--json`` documents and the web inspector show decoded
records; JSON has no Decimal, tuple, set, bytes or datetime, and a Python
``repr`` is no format another program can read. Every value that JSON cannot
carry exactly becomes a one-key object whose key starts with ``$``::

    {"$decimal": "19.99"}          {"$tuple": [1, 2]}
    {"$set": [...]}                {"$frozenset": [...]}
    {"$bytes": "AAH+/w=="}         {"$float": "nan"}
    {"$datetime": "2026-01-02T03:04:05+00:00"}   (``"fold": 1`` beside it when set)
    {"$date": "..."}  {"$time": "..."}  {"$uuid": "..."}  {"$int": "18446744073709551616"}
    {"$timedelta": {"days": 0, "seconds": 5, "microseconds": 0}}
    {"$dict": [[key, value], ...]}   (a mapping whose keys are not all plain strings)
    {"$struct": {"kind": "order", "version": 2, "fields": {...}}}
    {"$enum": {"type": "Color", "value": ...}}
    {"$undecodable": {"reason": "...", "kind": "order", "version": 3}}
    {"$secret": "**********"}

A plain JSON object therefore never has a key that starts with ``$``: such a
mapping is written as ``$dict`` pairs, so no stored string can pass for a
tag. Integers outside JSON's exactly representable range (±2**53) are
``$int`` text, so ``jq`` and JavaScript never round them.

:func:`tagged_json` reads state data in its stored, tagged form leniently:
a Struct this reader cannot decode (kind not registered, newer version,
malformed bytes) becomes ``$undecodable`` in place and hides only itself.
The shape is versioned by :data:`JSON_SHAPE_VERSION`; documents carry it.

:func:`from_typed_json` reads the tags back, so a program that consumes a
document gets the exact values again (``$struct``, ``$enum`` and ``$secret``
name things no reader can rebuild from JSON alone; ``$undecodable`` comes
back as :class:`Undecodable`).
"""

from __future__ import annotations

import base64
import binascii
import enum
import math
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

import msgspec

from .config._secret import REDACTED, Secret, decode_untyped
from .errors import FormatError, PersistError
from .formats._values import StructType, UnsupportedValue, decode_tagged
from .formats.config import ConfigValue

__all__ = [
    "JSON_SHAPE_VERSION",
    "MAX_READ_DEPTH",
    "Undecodable",
    "from_typed_json",
    "record_fields",
    "tagged_json",
    "typed_json",
]

#: Version of the documented shape of every ``--json`` document and inspector API answer.
#: Bump it when a document changes incompatibly (a key removed or retyped).
JSON_SHAPE_VERSION: Final = 1
#: How deep :func:`from_typed_json` follows nesting: far deeper than stored data may be
#: (the codec's limit), shallow enough for Python's recursion.
MAX_READ_DEPTH: Final = 200
#: Integers beyond this magnitude lose precision as IEEE doubles (jq, JavaScript).
_SAFE_INT: Final = 2**53


class Undecodable(msgspec.Struct, frozen=True):
    """A value this reader could not decode, standing in for it where it was stored."""

    reason: str
    kind: str | None = None
    version: int | None = None


class _KnownStruct(msgspec.Struct, frozen=True):
    """A decoded embedded Struct, with the kind and version it was stored under."""

    kind: str
    version: int
    value: Any


def tagged_json(value: object, struct_type: StructType) -> Any:
    """A state's data from its stored tagged form to typed JSON, each Struct decoded if it can be.

    ``struct_type`` returns the registered type of a ``(kind, version)``; a
    Struct it cannot provide or decode becomes ``$undecodable`` alone. A
    malformed tagged form as a whole is one ``$undecodable``.
    """

    def lenient(kind: str, version: int, encoded: bytes) -> msgspec.Struct:
        try:
            decoded = msgspec.msgpack.decode(encoded, type=struct_type(kind, version))
        except PersistError as exc:
            return Undecodable(str(exc), kind, version)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Undecodable(f"malformed {type(exc).__name__}", kind, version)
        return _KnownStruct(kind, version, decoded)

    try:
        return typed_json(decode_tagged(value, lenient))
    except UnsupportedValue as exc:
        return typed_json(Undecodable(str(exc)))


def typed_json(value: object) -> Any:
    """A decoded Python value as typed JSON builtins (see the module docstring)."""
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -_SAFE_INT <= value <= _SAFE_INT else {"$int": str(value)}  # type: ignore[operator]
    if t is float:
        return value if math.isfinite(value) else {"$float": repr(value)}  # type: ignore[arg-type]
    if t is list:
        return [typed_json(item) for item in value]  # type: ignore[attr-defined]
    if t is dict:
        return _mapping(value)  # type: ignore[arg-type]
    if t is tuple:
        return {"$tuple": [typed_json(item) for item in value]}  # type: ignore[attr-defined]
    if t is set or t is frozenset:
        items = sorted((typed_json(item) for item in value), key=_order)  # type: ignore[attr-defined]
        return {f"${t.__name__}": items}
    return _scalar(value)


def _mapping(value: dict[Any, Any]) -> Any:
    if all(type(k) is str and not k.startswith("$") for k in value):
        return {k: typed_json(v) for k, v in value.items()}
    return {"$dict": [[typed_json(k), typed_json(v)] for k, v in value.items()]}


def _order(item: Any) -> str:
    """A stable order for set members (a set has none of its own)."""
    return msgspec.json.encode(item, order="sorted").decode()


def _scalar(value: object) -> Any:
    if isinstance(value, Undecodable):
        shown: dict[str, Any] = {"reason": value.reason}
        if value.kind is not None:
            shown.update(kind=value.kind, version=value.version)
        return {"$undecodable": shown}
    if isinstance(value, _KnownStruct):
        fields = typed_json(msgspec.structs.asdict(value.value))
        return {"$struct": {"kind": value.kind, "version": value.version, "fields": fields}}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime | time):  # datetime before date: it is one
        key = "$datetime" if isinstance(value, datetime) else "$time"
        return {key: value.isoformat(), "fold": 1} if value.fold else {key: value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, timedelta):
        parts = {"days": value.days, "seconds": value.seconds, "microseconds": value.microseconds}
        return {"$timedelta": parts}
    if isinstance(value, UUID):
        return {"$uuid": str(value)}
    if isinstance(value, enum.Enum):
        return {"$enum": {"type": type(value).__name__, "value": typed_json(value.value)}}
    if isinstance(value, Secret):  # never its text
        return {"$secret": REDACTED}
    if isinstance(value, msgspec.Struct):
        return {"$struct": {"type": type(value).__name__, "fields": record_fields(value)}}
    if isinstance(value, (int, float, str, list, tuple, dict, set, frozenset)):
        return typed_json(_base(value))  # a subclass (IntEnum, OrderedDict): as its base
    return {"$undecodable": {"reason": f"no JSON form for {type(value).__name__}"}}


def record_fields(record: msgspec.Struct) -> Any:
    """A record's fields as typed JSON; a configuration's payload decoded, its secrets masked.

    A configuration value stores its payload as msgpack bytes in which each
    secret is an extension value: shown as ``$bytes`` they would hand the
    secret to anyone who decodes base64, so the payload is shown decoded
    instead, each secret as ``$secret``, and a payload that does not decode
    as ``$undecodable`` (never its bytes).
    """
    fields = msgspec.structs.asdict(record)
    if isinstance(record, ConfigValue):
        try:
            fields["payload"] = decode_untyped(record.payload)
        except PersistError as exc:
            fields["payload"] = Undecodable(str(exc))
    return typed_json(fields)


def _base(value: Any) -> Any:
    bases: tuple[Any, ...] = (bool, int, float, str, list, tuple, dict, frozenset, set)
    for base in bases:
        if isinstance(value, base):
            return base(value)
    return None  # pragma: no cover - the caller checked one of them matches


# Reading typed JSON back.


def from_typed_json(value: Any) -> Any:
    """The Python value :func:`typed_json` wrote as ``value`` (JSON builtins, e.g. ``json.loads``).

    Raises :class:`~gotstate_persist.errors.FormatError` for a malformed tag
    object and for ``$struct``, ``$enum`` and ``$secret``, which name values
    JSON alone cannot rebuild, and for nesting deeper than
    :data:`MAX_READ_DEPTH` (a document from elsewhere may nest without end).
    """
    return _read(value, 0)


def _read(value: Any, depth: int) -> Any:
    t = type(value)
    if value is None or t is bool or t is str or t is int or t is float:
        return value
    if depth >= MAX_READ_DEPTH:
        raise _malformed(f"nesting deeper than {MAX_READ_DEPTH} levels")
    depth += 1
    if t is list:
        return [_read(item, depth) for item in value]
    if t is not dict:
        raise FormatError(f"typed JSON holds a {t.__name__}, which JSON has no form for")
    tags = [key for key in value if key.startswith("$")]
    if not tags:
        return {key: _read(item, depth) for key, item in value.items()}
    if len(tags) != 1:
        raise _malformed(f"an object with several tags {sorted(tags)}")
    tag = tags[0]
    extra = set(value) - {tag}
    if extra - {"fold"} or (extra and tag not in ("$datetime", "$time")):
        raise _malformed(f"{tag} beside other keys {sorted(extra)}")
    try:
        return _untag(tag, value[tag], value.get("fold", 0), depth)
    except (ValueError, TypeError, ArithmeticError, binascii.Error) as exc:
        raise _malformed(f"{tag} holding a bad value ({type(exc).__name__})") from None


def _malformed(what: str) -> FormatError:
    return FormatError(f"malformed typed JSON: {what}; it was not written by typed_json")


def _items(body: Any, depth: int) -> list[Any]:
    if type(body) is not list:
        raise TypeError("not a list")
    return [_read(item, depth) for item in body]


def _text(body: Any) -> str:
    if type(body) is not str:
        raise TypeError("not a string")
    return body


def _untag(tag: str, body: Any, fold: Any, depth: int) -> Any:
    if tag in ("$tuple", "$set", "$frozenset"):
        return {"$tuple": tuple, "$set": set, "$frozenset": frozenset}[tag](_items(body, depth))
    if tag == "$dict":
        pairs = _items(body, depth)
        if any(type(pair) is not list or len(pair) != 2 for pair in pairs):
            raise TypeError("not key-value pairs")
        return {key: item for key, item in pairs}
    if tag in ("$datetime", "$time"):
        if fold not in (0, 1) or type(fold) is not int:
            raise ValueError("bad fold")
        cls = datetime if tag == "$datetime" else time
        return cls.fromisoformat(_text(body)).replace(fold=fold)
    scalars: dict[str, Any] = {
        "$decimal": Decimal,
        "$bytes": lambda text: base64.b64decode(text, validate=True),
        "$date": date.fromisoformat,
        "$uuid": UUID,
        "$int": _big_int,
        "$float": _special_float,
    }
    if tag in scalars:
        return scalars[tag](_text(body))
    if tag == "$timedelta":
        if type(body) is not dict or set(body) != {"days", "seconds", "microseconds"}:
            raise TypeError("not days, seconds and microseconds")
        if any(type(part) is not int for part in body.values()):
            raise TypeError("not whole numbers")
        return timedelta(**body)
    if tag == "$undecodable":
        if type(body) is not dict or type(body.get("reason")) is not str:
            raise TypeError("no reason")
        if set(body) - {"reason", "kind", "version"}:
            raise TypeError("unknown keys")
        if type(body.get("kind", "")) is not str or type(body.get("version", 0)) is not int:
            raise TypeError("kind not text or version not a whole number")
        return Undecodable(body["reason"], body.get("kind"), body.get("version"))
    if tag in ("$struct", "$enum", "$secret"):
        raise FormatError(f"typed JSON's {tag} names a value JSON alone cannot rebuild")
    raise _malformed(f"unknown tag {tag!r}")


def _big_int(text: str) -> int:
    if not text.lstrip("-").isdigit() or not text.isascii():
        raise ValueError("not a whole number")
    return int(text)


def _special_float(text: str) -> float:
    if text not in ("nan", "inf", "-inf"):
        raise ValueError("not nan, inf or -inf")
    return float(text)
