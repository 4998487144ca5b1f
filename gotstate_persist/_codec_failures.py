"""What a codec failure may say and chain: messages that never carry the record.

A decode runs on decrypted plaintext, and msgspec's exceptions and messages may
quote it (field values, invalid enum members, the whole payload in a
``UnicodeDecodeError``). Every rule about which exception is caught, which
cause may be chained and which words a message may contain is kept here, in
one place, so the codec's fast path stays short and a new failure mode gets
the same scrutiny as the old ones.
"""

from __future__ import annotations

import builtins
import re
from typing import Any, Final

import msgspec

__all__ = [
    "DECODE_ERRORS",
    "ENCODE_ERRORS",
    "Unsupported",
    "decode_failure",
    "encode_failure",
    "refuse",
    "safe_cause",
    "type_name",
]

DECODE_ERRORS: Final = (
    msgspec.DecodeError,  # includes msgspec.ValidationError
    RecursionError,
    MemoryError,
    UnicodeDecodeError,
    ValueError,
    TypeError,
)


class Unsupported(Exception):
    """A value of a type msgspec cannot encode; raised by msgspec's ``enc_hook``.

    msgspec calls the hook for exactly those values (dict keys included), so
    the type is known from the value itself rather than parsed out of
    msgspec's message, whose wording is not a stable interface.
    """

    def __init__(self, value: object) -> None:
        self.type_name = builtins.type(value).__qualname__[:100]
        super().__init__(self.type_name)


def refuse(value: object) -> object:
    """``enc_hook``: whatever msgspec cannot encode natively is refused, never converted."""
    raise Unsupported(value)


ENCODE_ERRORS: Final = (
    Unsupported,
    msgspec.EncodeError,
    TypeError,
    OverflowError,
    RecursionError,
    ValueError,
    MemoryError,
)
# msgspec error messages may quote field names and values from the payload;
# only the location path is safe to repeat (it names schema fields and indices,
# and msgspec prints dict keys as ``[...]``).
_PATH_RE: Final = re.compile(r" - at `(\$[^`]{0,200})`$")


def type_name(tp: object) -> str:
    """A decode target as a message may name it: its qualified name, or a bounded repr."""
    if tp is Any:
        return "any value"
    name = getattr(tp, "__qualname__", None)
    if isinstance(tp, builtins.type) and isinstance(name, str):
        return name
    return repr(tp)[:200]


def safe_cause(exc: BaseException) -> BaseException | None:
    """The cause worth chaining: only errors known to carry none of the record.

    msgspec's validation messages can contain field names and values of the
    decrypted record (an invalid enum or literal value, say), and what msgspec
    raises for bad input differs between its releases: some raise
    ``UnicodeDecodeError`` for invalid UTF-8, whose ``object`` attribute holds
    the whole payload. A traceback must never carry plaintext, so only
    msgspec's own structural ``DecodeError`` (truncation, bad bytes, not a
    ``ValidationError``) and resource errors are chained; anything else is
    dropped. Our message says what happened either way.
    """
    if exc.__cause__ is not None or exc.__context__ is not None:
        return None  # whatever it wraps is not ours to vouch for
    if type(exc) is msgspec.DecodeError or isinstance(exc, (RecursionError, MemoryError)):
        return exc
    return None


def decode_failure(codec_name: str, exc: BaseException, tp: Any) -> str:
    """What a failed decode of a ``codec_name`` record as ``tp`` says: never the payload."""
    target = type_name(tp)
    if isinstance(exc, msgspec.ValidationError):
        where = _PATH_RE.search(str(exc))
        at = f" at {where.group(1)}" if where else ""
        return (
            f"{codec_name} record does not match {target}{at}; it was written by a "
            "different format or version, or is damaged"
        )
    if isinstance(exc, (RecursionError, MemoryError)):
        return (
            f"{codec_name} record is too large or too deeply nested to decode as {target}; "
            "it was not written by gotstate-persist"
        )
    # No exception type or text of msgspec here: they differ between its
    # releases (invalid UTF-8 was a UnicodeDecodeError, is now a DecodeError)
    # and may quote the payload.
    return (
        f"{codec_name} record is not valid {codec_name}; the stored bytes are damaged or "
        "were not written by gotstate-persist: restore the record from a backup or "
        "delete it"
    )


def encode_failure(codec_name: str, exc: BaseException, max_depth: int) -> str:
    """What a failed encode says: what to change, naming at most the offending type."""
    if isinstance(exc, OverflowError):
        return (
            f"value cannot be saved with the {codec_name} codec: it contains an integer "
            "outside the 64-bit range (-2**63 to 2**64 - 1); store such numbers as str "
            "or Decimal"
        )
    if isinstance(exc, RecursionError):
        return (
            f"value cannot be saved: it is nested far deeper than the "
            f"{max_depth} levels load allows (or contains itself); flatten the data"
        )
    if isinstance(exc, MemoryError):
        return "value cannot be saved: encoding it ran out of memory; store less per record"
    what = f"an object of type {exc.type_name}" if isinstance(exc, Unsupported) else "a value"
    return (
        f"value cannot be saved with the {codec_name} codec: it contains {what} that "
        "msgspec cannot encode; convert it to supported types (None, bool, int, float, "
        "str, bytes, list, tuple, dict, datetime, UUID, Decimal, msgspec.Struct, ...)"
    )
