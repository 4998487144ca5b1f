"""Bounded msgspec codecs: the only place bytes become Python objects.

Everything gotstate-persist loads passes through :meth:`Codec.decode`, so this
is where hostile or damaged bytes are stopped. msgspec refuses truncated input
and eventually stops runaway recursion, but at a depth set by the
interpreter's recursion limit and the caller's stack, after it has already
built everything above that point. The design instead promises fixed limits
(size, nesting depth 64) checked before any work. So every decode first checks
the size, then walks the raw bytes once without recursion to prove the nesting
depth and the length prefixes are sane, and only then hands the bytes to
msgspec.

Encoding runs the very same checks on its own output, so a value that could
never be loaded is refused when it is saved, before anything is written.

Every failure is a :class:`~gotstate_persist.errors.FormatError` (or
:class:`~gotstate_persist.errors.InvalidArgument` for a caller mistake). The
messages never quote payload bytes: msgspec's own messages can contain field
values, so they survive only as the chained cause.
"""

from __future__ import annotations

import abc
import builtins
import re
import struct
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar, overload

import msgspec

from gotstate_persist.errors import FormatError, InvalidArgument

__all__ = [
    "DEFAULT_LIMITS",
    "JSON",
    "MAX_BLOB_BYTES",
    "MAX_DEPTH",
    "MAX_PAYLOAD_BYTES",
    "MSGPACK",
    "BytesLike",
    "Codec",
    "Limits",
    "codec_by_id",
    "codec_by_name",
]

T = TypeVar("T")

#: Anything with the buffer protocol that decode accepts. ``msgspec.Raw`` is
#: listed because other modules decode an outer record with a ``Raw`` field and
#: then decode that field's bytes in a second call.
BytesLike: TypeAlias = bytes | bytearray | memoryview | msgspec.Raw

MAX_BLOB_BYTES: Final = 16 * 1024 * 1024
MAX_PAYLOAD_BYTES: Final = 64 * 1024 * 1024
MAX_DEPTH: Final = 64


@dataclass(frozen=True, slots=True)
class Limits:
    """Decode limits, checked before any work is done on untrusted bytes.

    The defaults are hard ceilings from the envelope design. They can only be
    lowered: a raised ceiling would let one store accept blobs that another,
    correctly configured, store refuses, and would reopen the resource
    exhaustion the ceilings exist to prevent.
    """

    max_blob_bytes: int = MAX_BLOB_BYTES
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    max_depth: int = MAX_DEPTH

    def __post_init__(self) -> None:
        for name, ceiling in (
            ("max_blob_bytes", MAX_BLOB_BYTES),
            ("max_payload_bytes", MAX_PAYLOAD_BYTES),
            ("max_depth", MAX_DEPTH),
        ):
            value = getattr(self, name)
            # bool is an int subclass; Limits(max_depth=True) is surely a mistake.
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidArgument(
                    f"Limits.{name} must be an int from 1 to {ceiling}; "
                    f"got a {builtins.type(value).__name__}"
                )
            if not 1 <= value <= ceiling:
                raise InvalidArgument(
                    f"Limits.{name} must be an int from 1 to {ceiling} "
                    f"(limits can only be lowered, never raised); got {value}"
                )


DEFAULT_LIMITS: Final = Limits()


# --------------------------------------------------------------------------
# Pre-scan failures. Internal: decode and encode turn them into FormatErrors
# whose advice fits the side (load or save) that hit them.


class _ScanError(Exception):
    """The bytes are not one well-formed value; ``problem`` says how."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class _TooDeep(_ScanError):
    """Container nesting exceeds the depth limit."""


class _Unbalanced(_ScanError):
    """JSON brackets do not pair up (the JSON is invalid anyway)."""


# --------------------------------------------------------------------------
# msgpack pre-scan
#
# One table, built once, answers "what is an item starting with this byte?":
#   s > 0           a scalar whose whole encoding is s bytes (fixint, fixstr,
#                   nil, bools, floats, ints, fixext)
#   s == 0          0xc1, which the msgpack spec reserves ("never used")
#   -31 <= s <= -1  fixarray / fixmap holding (-1 - s) items (a map entry is
#                   two items: key and value)
#   s <= -100       a length or count follows in the next 1, 2 or 4 bytes
# Encoding all of that in one list lets the hot loop do a single lookup per
# item and branch on the sign.

_VAR8: Final = -100  # str8, bin8: 1-byte length, header 2
_EXT8: Final = -101  # ext8: 1-byte length + type byte, header 3
_VAR16: Final = -102  # str16, bin16: header 3
_EXT16: Final = -103  # ext16: header 4
_VAR32: Final = -104  # str32, bin32: header 5
_EXT32: Final = -105  # ext32: header 6
_ARRAY16: Final = -106
_MAP16: Final = -107  # odd codes are maps: the count is doubled
_ARRAY32: Final = -108
_MAP32: Final = -109


def _build_msgpack_table() -> list[int]:
    table = [0] * 256
    for b in range(0x00, 0x80):  # positive fixint
        table[b] = 1
    for b in range(0x80, 0x90):  # fixmap
        table[b] = -1 - 2 * (b & 0x0F)
    for b in range(0x90, 0xA0):  # fixarray
        table[b] = -1 - (b & 0x0F)
    for b in range(0xA0, 0xC0):  # fixstr
        table[b] = 1 + (b & 0x1F)
    for b in range(0xE0, 0x100):  # negative fixint
        table[b] = 1
    fixed = {
        0xC0: 1,  # nil
        0xC2: 1,  # false
        0xC3: 1,  # true
        0xCA: 5,  # float32
        0xCB: 9,  # float64
        0xCC: 2,  # uint8
        0xCD: 3,  # uint16
        0xCE: 5,  # uint32
        0xCF: 9,  # uint64
        0xD0: 2,  # int8
        0xD1: 3,  # int16
        0xD2: 5,  # int32
        0xD3: 9,  # int64
        0xD4: 3,  # fixext1 (type byte + 1)
        0xD5: 4,  # fixext2
        0xD6: 6,  # fixext4
        0xD7: 10,  # fixext8
        0xD8: 18,  # fixext16
    }
    special = {
        0xC4: _VAR8,
        0xD9: _VAR8,
        0xC7: _EXT8,
        0xC5: _VAR16,
        0xDA: _VAR16,
        0xC8: _EXT16,
        0xC6: _VAR32,
        0xDB: _VAR32,
        0xC9: _EXT32,
        0xDC: _ARRAY16,
        0xDE: _MAP16,
        0xDD: _ARRAY32,
        0xDF: _MAP32,
    }
    for b, size in fixed.items():
        table[b] = size
    for b, code in special.items():
        table[b] = code
    table[0xC1] = 0
    return table


_MP_TABLE: Final = _build_msgpack_table()
_U32: Final = struct.Struct(">I").unpack_from


def _scan_msgpack(data: bytes, max_depth: int) -> None:
    """Prove ``data`` is exactly one msgpack value nested at most ``max_depth`` deep.

    Iterative, allocation-free apart from a stack of at most ``max_depth``
    ints, and never trusts a length prefix further than the bytes that are
    actually there. It is written for speed because it runs on every load and
    every save: one table lookup per item, scalars skipped two at a time, and
    no function calls except on the rare container and long-string paths.
    """
    n = len(data)
    if not n:
        raise _ScanError("is empty")
    size = _MP_TABLE
    u32 = _U32
    pos = 0
    rem = 1  # items still due in the innermost open container (top level: 1)
    stack: list[int] = []  # ``rem`` of every enclosing container; depth == len
    push = stack.append
    pop = stack.pop
    s = 0
    try:
        while True:
            # Hot path: fixed-size scalars of the current container.
            while rem > 1:
                s = size[data[pos]]
                if s <= 0:
                    break
                pos += s
                s = size[data[pos]]
                if s <= 0:
                    rem -= 1
                    break
                pos += s
                rem -= 2
            else:
                if rem:
                    s = size[data[pos]]
                    if s > 0:
                        pos += s
                        rem = 0
                if not rem:
                    if not stack:
                        break
                    rem = pop()
                    continue
            # data[pos] starts a container, a length-prefixed item or 0xc1.
            rem -= 1
            if s > _VAR8:
                if not s:
                    raise _ScanError(f"uses the reserved byte 0xc1 at offset {pos}")
                pos += 1
                if len(stack) >= max_depth:
                    raise _TooDeep(f"is nested deeper than {max_depth} levels")
                if s != -1:
                    push(rem)
                    rem = -1 - s
            elif s >= _EXT32:
                start = pos
                if s == _VAR8:
                    pos += 2 + data[pos + 1]
                elif s == _EXT8:
                    pos += 3 + data[pos + 1]
                elif s == _VAR16:
                    pos += 3 + (data[pos + 1] << 8 | data[pos + 2])
                elif s == _EXT16:
                    pos += 4 + (data[pos + 1] << 8 | data[pos + 2])
                elif s == _VAR32:
                    pos += 5 + u32(data, pos + 1)[0]
                else:
                    pos += 6 + u32(data, pos + 1)[0]
                if pos > n:
                    raise _ScanError(
                        f"has a length prefix at offset {start} that claims "
                        f"{pos - n} more bytes than the data holds"
                    )
            else:
                start = pos
                if s <= _ARRAY32:
                    count = u32(data, pos + 1)[0]
                    pos += 5
                else:
                    count = data[pos + 1] << 8 | data[pos + 2]
                    pos += 3
                if s & 1:  # map: key and value are two items
                    count *= 2
                # Every item takes at least one byte, so a count larger than
                # what is left is a lie; refuse it before looping over it.
                if count > n - pos:
                    raise _ScanError(
                        f"has a container at offset {start} that claims more items "
                        "than the remaining bytes could hold"
                    )
                if len(stack) >= max_depth:
                    raise _TooDeep(f"is nested deeper than {max_depth} levels")
                if count:
                    push(rem)
                    rem = count
    except (IndexError, struct.error):
        # A read ran past the end: an item's header or body is cut off.
        raise _ScanError("is truncated (it ends in the middle of a value)") from None
    if pos > n:
        raise _ScanError("is truncated (its last value runs past the end)")
    if pos < n:
        raise _ScanError(f"has {n - pos} byte(s) of trailing data after the value")


# --------------------------------------------------------------------------
# JSON pre-scan
#
# Depth in JSON is bracket nesting outside string literals. Everything below
# is a C-speed bytes operation: no per-character Python code and no regex
# that could backtrack. (The textbook string regex ``"(?:[^"\\]|\\.)*"`` is
# quadratic on a run of escaped quotes with no closing quote: 20 KB of them
# take a second, a megabyte would take most of an hour.)

_JSON_KEEP: Final = b'"[]{}'
_JSON_DROP: Final = bytes(b for b in range(256) if b not in _JSON_KEEP)
_JSON_OPEN_CLOSE: Final = bytes.maketrans(b"{}", b"[]")


def _json_brackets(data: bytes) -> bytes:
    """Return the brackets of ``data`` that lie outside string literals."""
    if b"\\" in data:
        # In a valid document backslashes occur only inside strings and pair up
        # left to right, so deleting ``\\`` and then ``\"`` removes exactly the
        # escapes that could hide or fake a string delimiter.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Keep only quotes and brackets. An adjacent quote pair is either an empty
    # string or the end of one string touching the start of the next; either
    # way nothing outside strings lies between them, so dropping it in bulk is
    # safe and removes almost every string without a Python-level loop.
    kept = data.translate(None, _JSON_DROP).replace(b'""', b"")
    if b'"' in kept:
        # Strings that contain brackets remain: the pieces outside strings are
        # every other piece between quotes.
        kept = b"".join(kept.split(b'"')[::2])
    return kept.translate(_JSON_OPEN_CLOSE)


def _scan_json(data: bytes, max_depth: int) -> None:
    """Refuse JSON whose brackets nest deeper than ``max_depth`` or do not pair up.

    Syntax, UTF-8 and everything else are msgspec's job; this only has to make
    sure msgspec never recurses past the limit.
    """
    brackets = _json_brackets(data)
    if len(brackets) <= max_depth:
        return  # too few brackets to reach the limit
    # Deleting every innermost "[]" pair peels one nesting level per pass, so a
    # document of depth d is empty after d passes, at C speed; typical records
    # are a few levels deep and finish in a few passes.
    for _ in range(max_depth):
        peeled = brackets.replace(b"[]", b"")
        if len(peeled) == len(brackets):
            break
        brackets = peeled
        if not brackets:
            return
    if b"[]" in brackets:
        raise _TooDeep(f"is nested deeper than {max_depth} levels")
    # No pair is left but brackets remain, so they cannot balance: invalid
    # JSON whose unclosed openers could nest arbitrarily deep. Refuse it here
    # rather than let msgspec recurse into it.
    raise _Unbalanced("has brackets that do not pair up")


# --------------------------------------------------------------------------
# Codecs

_DECODE_ERRORS: Final = (
    msgspec.DecodeError,  # includes msgspec.ValidationError
    RecursionError,
    MemoryError,
    UnicodeDecodeError,
    ValueError,
    TypeError,
)


class _Unsupported(Exception):
    """A value of a type msgspec cannot encode; raised by msgspec's ``enc_hook``.

    msgspec calls the hook for exactly those values (dict keys included), so
    the type is known from the value itself rather than parsed out of
    msgspec's message, whose wording is not a stable interface.
    """

    def __init__(self, value: object) -> None:
        self.type_name = builtins.type(value).__qualname__[:100]
        super().__init__(self.type_name)


def _refuse(value: object) -> object:
    """``enc_hook``: whatever msgspec cannot encode natively is refused, never converted."""
    raise _Unsupported(value)


_ENCODE_ERRORS: Final = (
    _Unsupported,
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
# Enough for every record type a process defines; a caller that manufactures
# types on the fly must not grow the cache without bound.
_DECODER_CACHE_MAX: Final = 512


def _type_name(tp: object) -> str:
    if tp is Any:
        return "any value"
    name = getattr(tp, "__qualname__", None)
    if isinstance(tp, builtins.type) and isinstance(name, str):
        return name
    return repr(tp)[:200]


def _safe_cause(exc: BaseException) -> BaseException | None:
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


class Codec(abc.ABC):
    """One wire format (msgpack or JSON) with the limits enforced around it.

    Instances are shared, thread-safe singletons (:data:`MSGPACK`,
    :data:`JSON`): msgspec encoders and decoders are thread-safe and building
    them is the expensive part, so they are created once and decoders are
    cached per target type.
    """

    id: int
    name: str

    __slots__ = ("_decoders", "_encoder", "id", "name")

    def __init__(
        self, codec_id: int, name: str, encoder: msgspec.msgpack.Encoder | msgspec.json.Encoder
    ) -> None:
        self.id = codec_id
        self.name = name
        self._encoder = encoder
        self._decoders: dict[object, msgspec.msgpack.Decoder[Any] | msgspec.json.Decoder[Any]] = {}

    def __repr__(self) -> str:
        return f"<Codec {self.name} (id {self.id})>"

    # -- subclass hooks ----------------------------------------------------

    @abc.abstractmethod
    def _make_decoder(self, tp: Any) -> msgspec.msgpack.Decoder[Any] | msgspec.json.Decoder[Any]:
        """Build a strict decoder for ``tp``."""

    @abc.abstractmethod
    def _scan(self, data: bytes, max_depth: int) -> None:
        """Raise a ``_ScanError`` if ``data`` is malformed or too deep."""

    # -- public API --------------------------------------------------------

    def encode(
        self, obj: object, *, limits: Limits = DEFAULT_LIMITS, depth_checked: bool = False
    ) -> bytes:
        """Encode ``obj``, refusing anything :meth:`decode` would refuse.

        The output is checked with the same size limit and depth pre-scan as
        a load, so a save can never produce a record that cannot be read back.
        ``depth_checked=True`` skips only the depth pre-scan, for callers that
        built ``obj`` under the same depth limit themselves (the machine adapter
        does, and a test holds it to the pre-scan's verdict).
        """
        try:
            data = self._encoder.encode(obj)
        except _ENCODE_ERRORS as exc:
            # not chained: the hook's error holds the value, a UnicodeEncodeError the string
            cause = None if isinstance(exc, (_Unsupported, UnicodeError)) else exc
            raise FormatError(self._encode_failure(exc, limits)) from cause
        if depth_checked:
            self._check_save_size(data, limits)
            return data
        try:
            self._check_bytes(data, limits)
        except _TooDeep:
            raise FormatError(
                f"value cannot be saved: it is nested deeper than {limits.max_depth} levels, "
                "which load would refuse; flatten the data"
            ) from None
        except _ScanError as exc:  # pragma: no cover - msgspec writes valid output
            raise FormatError(
                f"value cannot be saved: its {self.name} encoding {exc.problem}; "
                "this is a bug in gotstate-persist or msgspec, please report it"
            ) from None
        return data

    @overload
    def decode(
        self,
        data: BytesLike,
        type: builtins.type[T],
        *,
        limits: Limits = ...,
        type_bounds_depth: bool = ...,
    ) -> T: ...

    @overload
    def decode(
        self,
        data: BytesLike,
        type: Any = ...,
        *,
        limits: Limits = ...,
        type_bounds_depth: bool = ...,
    ) -> Any: ...

    def decode(
        self,
        data: BytesLike,
        type: Any = Any,
        *,
        limits: Limits = DEFAULT_LIMITS,
        type_bounds_depth: bool = False,
    ) -> Any:
        """Decode ``data`` as ``type`` (strictly: no str-to-int coercion).

        Size and nesting are checked on the raw bytes before msgspec sees them.
        ``type`` may be ``Any``, a ``msgspec.Struct`` subclass or any type
        msgspec understands, such as ``tuple[str, int, msgspec.Raw]``.

        ``type_bounds_depth=True`` is the caller's promise that ``type`` itself
        cannot hold anything nested deeper than ``limits.max_depth`` (no
        ``Any``, no recursion: the machine snapshot schema is built that way).
        msgspec's typed decode then refuses deeper input the moment it reaches
        it, in C, and the Python pre-scan would only repeat that check; the
        size limit still applies.
        """
        if type_bounds_depth:
            raw = self._load_bytes(data, limits, scan=False)
        else:
            raw = self._load_bytes(data, limits)
        return self._run(self._decoder(type), raw, type)

    def decode_inner(self, raw: msgspec.Raw, type: Any) -> Any:
        """Decode a ``msgspec.Raw`` that an outer :meth:`decode` of this codec produced.

        The outer decode already size-checked and pre-scanned every byte of
        the enclosing payload, this slice included (one level shallower), so
        scanning it again would only double the cost of every load. Only a
        ``Raw`` can be passed, and the only ``Raw`` objects gotstate-persist
        holds come from such outer decodes.
        """
        if not isinstance(raw, msgspec.Raw):
            raise InvalidArgument("decode_inner takes the msgspec.Raw of an outer decode")
        return self._run(self._decoder(type), raw, type)

    def check(self, data: BytesLike, *, limits: Limits = DEFAULT_LIMITS) -> None:
        """Run only the size and depth checks that :meth:`decode` runs first.

        For callers that must vet bytes (for example before storing them
        verbatim) without paying for building the objects.
        """
        self._load_bytes(data, limits)

    # -- internals ---------------------------------------------------------

    def _run(
        self,
        decoder: msgspec.msgpack.Decoder[Any] | msgspec.json.Decoder[Any],
        raw: bytes | msgspec.Raw,
        tp: Any,
    ) -> Any:
        """Decode, mapping every failure to a FormatError that chains no plaintext."""
        try:
            return decoder.decode(raw)
        except _DECODE_ERRORS as exc:
            failure: BaseException = exc
        # Raised outside the handler, so that not even ``__context__`` links to a
        # cause that _safe_cause drops.
        raise FormatError(self._decode_failure(failure, tp)) from _safe_cause(failure)

    def _load_bytes(self, data: BytesLike, limits: Limits, *, scan: bool = True) -> bytes:
        """Size-check, freeze and pre-scan ``data``, mapping failures for a load."""
        if isinstance(data, bytes):
            self._check_load_size(len(data), limits)
            raw = data
        else:
            try:
                view = memoryview(data)
            except TypeError as exc:
                raise InvalidArgument(
                    f"data to decode must be bytes-like, not {builtins.type(data).__name__}"
                ) from exc
            self._check_load_size(view.nbytes, limits)
            # Copy anything mutable into immutable bytes *before* checking it,
            # so nobody can change the buffer between the pre-scan and decode.
            raw = view.tobytes()
        if not scan:
            return raw
        try:
            self._scan(raw, limits.max_depth)
        except _TooDeep:
            raise FormatError(
                f"{self.name} record is nested deeper than {limits.max_depth} levels; "
                f"{self._raise_or_refuse('max_depth', limits)}"
            ) from None
        except _ScanError as exc:
            raise FormatError(
                f"{self.name} record {exc.problem}; the stored bytes are damaged or were "
                "not written by gotstate-persist: restore the record from a backup or delete it"
            ) from None
        return raw

    def _check_load_size(self, size: int, limits: Limits) -> None:
        if size > limits.max_payload_bytes:
            raise FormatError(
                f"{self.name} record is {size} bytes, over the {limits.max_payload_bytes}-byte "
                f"payload limit; {self._raise_or_refuse('max_payload_bytes', limits)}"
            )

    def _check_bytes(self, data: bytes, limits: Limits) -> None:
        """The save-side twin of :meth:`_load_bytes` for freshly encoded bytes."""
        self._check_save_size(data, limits)
        self._scan(data, limits.max_depth)

    def _check_save_size(self, data: bytes, limits: Limits) -> None:
        if len(data) > limits.max_payload_bytes:
            raise FormatError(
                f"value cannot be saved: it encodes to {len(data)} bytes of {self.name}, "
                f"over the {limits.max_payload_bytes}-byte payload limit that load enforces; "
                "store less data per record"
            )

    @staticmethod
    def _raise_or_refuse(field: str, limits: Limits) -> str:
        """Advice for a limit hit on load: raise a lowered limit, never the ceiling."""
        value = getattr(limits, field)
        ceiling = getattr(DEFAULT_LIMITS, field)
        if value < ceiling:
            return (
                f"if the record is legitimate, load it with a higher Limits.{field} "
                f"(at most {ceiling})"
            )
        return "raise nothing: this blob is not one gotstate-persist would write"

    def _decoder(self, tp: Any) -> msgspec.msgpack.Decoder[Any] | msgspec.json.Decoder[Any]:
        cache = self._decoders
        try:
            return cache[tp]
        except KeyError:
            pass
        except TypeError:  # unhashable typing construct: build one, do not cache
            return self._new_decoder(tp)
        decoder = self._new_decoder(tp)
        if len(cache) < _DECODER_CACHE_MAX:
            cache[tp] = decoder
        return decoder

    def _new_decoder(self, tp: Any) -> msgspec.msgpack.Decoder[Any] | msgspec.json.Decoder[Any]:
        try:
            return self._make_decoder(tp)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(
                f"{_type_name(tp)} cannot be used as a decode type: msgspec does not support "
                "it; use a msgspec.Struct, a builtin container or Any"
            ) from exc

    def _decode_failure(self, exc: BaseException, tp: Any) -> str:
        target = _type_name(tp)
        if isinstance(exc, msgspec.ValidationError):
            where = _PATH_RE.search(str(exc))
            at = f" at {where.group(1)}" if where else ""
            return (
                f"{self.name} record does not match {target}{at}; it was written by a "
                "different format or version, or is damaged"
            )
        if isinstance(exc, (RecursionError, MemoryError)):
            return (
                f"{self.name} record is too large or too deeply nested to decode as {target}; "
                "it was not written by gotstate-persist"
            )
        # No exception type or text of msgspec here: they differ between its
        # releases (invalid UTF-8 was a UnicodeDecodeError, is now a DecodeError)
        # and may quote the payload.
        return (
            f"{self.name} record is not valid {self.name}; the stored bytes are damaged or "
            "were not written by gotstate-persist: restore the record from a backup or "
            "delete it"
        )

    def _encode_failure(self, exc: BaseException, limits: Limits) -> str:
        if isinstance(exc, OverflowError):
            return (
                f"value cannot be saved with the {self.name} codec: it contains an integer "
                "outside the 64-bit range (-2**63 to 2**64 - 1); store such numbers as str "
                "or Decimal"
            )
        if isinstance(exc, RecursionError):
            return (
                f"value cannot be saved: it is nested far deeper than the "
                f"{limits.max_depth} levels load allows (or contains itself); flatten the data"
            )
        if isinstance(exc, MemoryError):
            return "value cannot be saved: encoding it ran out of memory; store less per record"
        what = f"an object of type {exc.type_name}" if isinstance(exc, _Unsupported) else "a value"
        return (
            f"value cannot be saved with the {self.name} codec: it contains {what} that "
            "msgspec cannot encode; convert it to supported types (None, bool, int, float, "
            "str, bytes, list, tuple, dict, datetime, UUID, Decimal, msgspec.Struct, ...)"
        )


class _MsgpackCodec(Codec):
    __slots__ = ()

    def _make_decoder(self, tp: Any) -> msgspec.msgpack.Decoder[Any]:
        return msgspec.msgpack.Decoder(tp, strict=True)

    def _scan(self, data: bytes, max_depth: int) -> None:
        _scan_msgpack(data, max_depth)


class _JsonCodec(Codec):
    __slots__ = ()

    def _make_decoder(self, tp: Any) -> msgspec.json.Decoder[Any]:
        return msgspec.json.Decoder(tp, strict=True)

    def _scan(self, data: bytes, max_depth: int) -> None:
        _scan_json(data, max_depth)


MSGPACK: Final[Codec] = _MsgpackCodec(1, "msgpack", msgspec.msgpack.Encoder(enc_hook=_refuse))
JSON: Final[Codec] = _JsonCodec(2, "json", msgspec.json.Encoder(enc_hook=_refuse))

_BY_NAME: Final[dict[str, Codec]] = {c.name: c for c in (MSGPACK, JSON)}
_BY_ID: Final[dict[int, Codec]] = {c.id: c for c in (MSGPACK, JSON)}


def codec_by_name(name: str) -> Codec:
    """Resolve a user-supplied codec name (``open_store(codec=...)``)."""
    codec = _BY_NAME.get(name) if isinstance(name, str) else None
    if codec is None:
        known = ", ".join(f'"{n}"' for n in _BY_NAME)
        raise InvalidArgument(f"unknown codec {name!r}; use one of {known}")
    return codec


def codec_by_id(codec_id: int) -> Codec:
    """Resolve the codec id read from an envelope header.

    Unknown ids are a property of the stored bytes, not of the caller, hence
    ``FormatError``.
    """
    codec = None if isinstance(codec_id, bool) else _BY_ID.get(codec_id)
    if codec is None:
        known = ", ".join(f"{c.id} ({c.name})" for c in _BY_ID.values())
        raise FormatError(
            f"envelope names codec id {codec_id!r}, which this version of gotstate-persist "
            f"does not know (known: {known}); the blob is damaged or was written by a newer "
            "version: upgrade gotstate-persist"
        )
    return codec
