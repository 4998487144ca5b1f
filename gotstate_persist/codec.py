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

The walks themselves live in ``_prescan`` and the rules for what a failure
may say and chain in ``_codec_failures``; this module ties them to msgspec.
"""

from __future__ import annotations

import abc
import builtins
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar, overload

import msgspec

from gotstate_persist._codec_failures import (
    DECODE_ERRORS,
    ENCODE_ERRORS,
    Unsupported,
    decode_failure,
    encode_failure,
    refuse,
    safe_cause,
    type_name,
)
from gotstate_persist._prescan import ScanError, TooDeep, scan_json, scan_msgpack
from gotstate_persist._wire import MAX_BLOB_BYTES
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
# Codecs

# Enough for every record type a process defines; a caller that manufactures
# types on the fly must not grow the cache without bound.
_DECODER_CACHE_MAX: Final = 512


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
        """Raise a ``ScanError`` if ``data`` is malformed or too deep."""

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
        data = self._encode(obj, limits)
        if depth_checked:
            self._check_save_size(data, limits)
            return data
        try:
            self._check_bytes(data, limits)
        except TooDeep:
            raise FormatError(
                f"value cannot be saved: it is nested deeper than {limits.max_depth} levels, "
                "which load would refuse; flatten the data"
            ) from None
        except ScanError as exc:  # pragma: no cover - msgspec writes valid output
            raise FormatError(
                f"value cannot be saved: its {self.name} encoding {exc.problem}; "
                "this is a bug in gotstate-persist or msgspec, please report it"
            ) from None
        return data

    def encode_part(self, obj: object, *, limits: Limits = DEFAULT_LIMITS) -> msgspec.Raw:
        """Encode one part of a larger value now, to be embedded in it as is.

        A large record encoded part by part never holds all of its parts as
        Python objects at once (a machine's state data: each state's tagged
        form is dropped as soon as it is bytes). Only for parts the caller
        built under the depth limit; the size limit is checked when the whole
        value is encoded.
        """
        try:  # _encode inlined: this runs once per state of every save
            return msgspec.Raw(self._encoder.encode(obj))
        except ENCODE_ERRORS:
            pass
        return msgspec.Raw(self._encode(obj, limits))  # raises the FormatError

    def _encode(self, obj: object, limits: Limits) -> bytes:
        try:
            return self._encoder.encode(obj)
        except ENCODE_ERRORS as exc:
            # not chained: the hook's error holds the value, a UnicodeEncodeError the string
            cause = None if isinstance(exc, (Unsupported, UnicodeError)) else exc
            raise FormatError(encode_failure(self.name, exc, limits.max_depth)) from cause

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
        except DECODE_ERRORS as exc:
            failure: BaseException = exc
        # Raised outside the handler, so that not even ``__context__`` links to a
        # cause that safe_cause drops.
        raise FormatError(decode_failure(self.name, failure, tp)) from safe_cause(failure)

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
        except TooDeep:
            raise FormatError(
                f"{self.name} record is nested deeper than {limits.max_depth} levels; "
                f"{self._raise_or_refuse('max_depth', limits)}"
            ) from None
        except ScanError as exc:
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
                f"{type_name(tp)} cannot be used as a decode type: msgspec does not support "
                "it; use a msgspec.Struct, a builtin container or Any"
            ) from exc


class _MsgpackCodec(Codec):
    __slots__ = ()

    def _make_decoder(self, tp: Any) -> msgspec.msgpack.Decoder[Any]:
        return msgspec.msgpack.Decoder(tp, strict=True)

    def _scan(self, data: bytes, max_depth: int) -> None:
        scan_msgpack(data, max_depth)


class _JsonCodec(Codec):
    __slots__ = ()

    def _make_decoder(self, tp: Any) -> msgspec.json.Decoder[Any]:
        return msgspec.json.Decoder(tp, strict=True)

    def _scan(self, data: bytes, max_depth: int) -> None:
        scan_json(data, max_depth)


MSGPACK: Final[Codec] = _MsgpackCodec(1, "msgpack", msgspec.msgpack.Encoder(enc_hook=refuse))
JSON: Final[Codec] = _JsonCodec(2, "json", msgspec.json.Encoder(enc_hook=refuse))

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
