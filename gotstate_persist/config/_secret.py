"""Secrets in configuration values, and the one payload codec that carries them.

A configuration field that holds a credential is typed :class:`Secret`, so
that the value cannot leak by accident: its ``repr``, ``str`` and ``format``
are redacted, it refuses to be pickled, and only :meth:`Secret.reveal` hands
out the text. This module owns that type and everything that has to know what
a secret looks like inside a value:

* the configuration payload codec (:func:`encode_config`,
  :func:`decode_config`, :func:`decode_untyped`): always msgpack, whatever
  codec the store uses for records, because a secret must survive the trip as
  a secret — it travels as a msgpack extension (:data:`SECRET_EXT_CODE`), never
  as a plain string that a schema-less reader (the CLI) would print;
* builtins for display and for validators (:func:`to_plain`), secrets
  redacted unless asked;
* scrubbing free text that may have picked a secret up (:func:`secret_values`,
  :func:`scrub`).

The payload itself is only ever stored inside a sealed record; whether the
keyring encrypts is the security policy's business (``config._schema``).
Errors here never echo a value: they name types and paths only.
"""

from __future__ import annotations

import functools
import hmac
import re
from collections.abc import Iterable
from typing import Any, Final, NoReturn, TypeVar, final

import msgspec

from gotstate_persist.errors import FormatError, InvalidArgument

__all__ = [
    "REDACTED",
    "SECRET_EXT_CODE",
    "NotASecret",
    "Secret",
    "decode_config",
    "decode_untyped",
    "encode_config",
    "scrub",
    "secret_hooks",
    "secret_values",
    "to_plain",
]

#: What a secret shows as everywhere. Constant length: the mask tells nothing about the value.
REDACTED: Final = "**********"
#: The msgpack extension code a :class:`Secret` travels as inside a configuration payload.
SECRET_EXT_CODE: Final = 1
#: How many schemas keep a ready-built decoder (decoders are cheap but not free to build).
_DECODER_CACHE_SIZE: Final = 256
#: The path msgspec appends to its messages: `` - at `$.a.b` ``.
_ERROR_PATH: Final = re.compile(r" - at `(\$[^`]*)`$")

T = TypeVar("T")


@final
class Secret:
    """A credential inside a configuration value: redacted everywhere but :meth:`reveal`.

    Immutable, hashable and equal by value (compared in constant time), so a
    schema can use it as a frozen field and a diff can tell a changed secret
    from an unchanged one without printing either. It is never equal to a
    plain ``str``, and it refuses to be pickled: a pickle would hold the
    value in clear.
    """

    __slots__ = ("_value",)

    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise InvalidArgument(
                f"Secret holds a str; got a value of type {type(value).__name__}: "
                "pass the credential as text"
            )
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """The credential in clear; call it only where the value is really needed."""
        return self._value

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("a Secret is immutable: build a new one instead")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("a Secret is immutable: build a new one instead")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode("utf-8"), other._value.encode("utf-8"))

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, format_spec: str) -> str:
        return format(REDACTED, format_spec)

    def __copy__(self) -> Secret:
        return self  # immutable: a copy may be the same object

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled: the pickle would hold the credential in clear")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("a Secret cannot be pickled: the pickle would hold the credential in clear")


def _unsupported(value: object) -> InvalidArgument:
    return InvalidArgument(
        f"a configuration value holds an object of type {type(value).__qualname__}, which "
        "configurations cannot store: use builtins, msgspec Structs, enums, datetimes "
        "or gp.Secret"
    )


def _encode_hook(value: object) -> Any:
    if isinstance(value, Secret):
        return msgspec.msgpack.Ext(SECRET_EXT_CODE, value.reveal().encode("utf-8"))
    raise _unsupported(value)


def _ext_hook(code: int, data: memoryview) -> Secret:
    if code != SECRET_EXT_CODE:
        raise FormatError(
            f"configuration payload holds an unknown msgpack extension (code {code}): "
            "it was not written by this library"
        )
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        text = None  # raised below, outside the handler: the error holds the bytes
    if text is None:
        raise FormatError(
            "configuration payload holds a secret that is not UTF-8: the record is damaged"
        )
    return Secret(text)


class NotASecret(TypeError):
    """Raised by the decode hook for a Secret field given something that is not text.

    A class of its own so that schema checking can tell it from a ``__post_init__``'s
    error (whose message may quote the value) by type, not by message.
    """


def _decode_hook(kind: type, value: Any) -> Any:
    if kind is Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value)
        raise NotASecret("Expected `Secret` (given as `str`)")
    raise TypeError(f"configurations cannot hold values of type {kind.__qualname__}")


def secret_hooks() -> tuple[Any, Any, Any]:
    """``(enc_hook, dec_hook, ext_hook)`` for msgspec, as the payload codec uses them.

    Exposed so that schema checking converts exactly the way decoding does.
    """
    return _encode_hook, _decode_hook, _ext_hook


_ENCODER: Final = msgspec.msgpack.Encoder(enc_hook=_encode_hook)
_UNTYPED: Final = msgspec.msgpack.Decoder(ext_hook=_ext_hook)


@functools.lru_cache(maxsize=_DECODER_CACHE_SIZE)
def _decoder(schema: type[Any]) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(schema, ext_hook=_ext_hook, dec_hook=_decode_hook)


# Every error below is raised after its handler has ended, never inside it: an
# exception raised in a handler keeps the caught one as ``__context__`` (even
# ``from None`` only hides it), and msgspec's may quote the value.


def _encode(value: object) -> bytes:
    try:
        return _ENCODER.encode(value)
    except InvalidArgument:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        failure = type(exc).__name__
    raise InvalidArgument(
        f"configuration value cannot be encoded ({failure}): use builtins, "
        "msgspec Structs, enums, datetimes or gp.Secret"
    )


def encode_config(instance: msgspec.Struct) -> bytes:
    """The msgpack payload of one configuration value, secrets as :data:`SECRET_EXT_CODE`."""
    if not isinstance(instance, msgspec.Struct):
        raise InvalidArgument(
            f"a configuration value must be an instance of its msgspec schema; got "
            f"{type(instance).__qualname__}"
        )
    return _encode(instance)


def _error_path(message: str) -> str:
    match = _ERROR_PATH.search(message)
    return f" at {match.group(1)}" if match else ""


def decode_config(payload: bytes, schema: type[T]) -> T:
    """Decode a payload of :func:`encode_config` as ``schema``, strictly.

    A payload that does not fit is a :class:`FormatError` naming at most the
    path that failed: msgspec's own message may quote the value.
    """
    name = getattr(schema, "__qualname__", type(schema).__name__)
    try:
        decoder = _decoder(schema)  # type: ignore[arg-type]  # classes are hashable
    except TypeError:
        decoder = None
    if decoder is None:
        raise InvalidArgument(
            f"{name} cannot be a configuration schema: its field types are not supported"
        )
    try:
        return decoder.decode(payload)  # type: ignore[no-any-return]
    except FormatError:
        raise
    except (msgspec.DecodeError, InvalidArgument) as exc:
        where = _error_path(str(exc)) if isinstance(exc, msgspec.ValidationError) else ""
    raise FormatError(
        f"configuration payload does not decode as {name}{where}: it was "
        "written under another schema (define the configuration's current version with "
        "an upcaster) or the record is damaged"
    )


def decode_untyped(payload: bytes) -> Any:
    """Builtins of a payload, :class:`Secret` objects where secrets were (for the CLI)."""
    try:
        return _UNTYPED.decode(payload)
    except FormatError:
        raise
    except msgspec.DecodeError:
        pass
    raise FormatError("configuration payload is not valid msgpack: the record is damaged")


def to_plain(value: Any, *, reveal: bool = False) -> Any:
    """Builtins (``msgspec.to_builtins`` form) of a value, each secret :data:`REDACTED`.

    With ``reveal=True`` each secret is its text instead: only for a caller
    that was explicitly granted it.
    """

    def hook(item: object) -> Any:
        if isinstance(item, Secret):
            return item.reveal() if reveal else REDACTED
        raise _unsupported(item)

    try:
        return msgspec.to_builtins(value, enc_hook=hook)
    except InvalidArgument:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        failure = type(exc).__name__
    raise InvalidArgument(f"configuration value cannot be turned into builtins ({failure})")


def secret_values(value: Any) -> list[str]:
    """Every non-empty secret inside a value (Struct or builtins), revealed, each once.

    For scrubbing text that may have picked one up (:func:`scrub`).
    """
    found: dict[str, None] = {}

    def hook(item: object) -> Any:
        if isinstance(item, Secret):
            if item.reveal():
                found[item.reveal()] = None
            return None
        raise _unsupported(item)

    try:
        msgspec.to_builtins(value, enc_hook=hook)
    except InvalidArgument:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        failure: str | None = type(exc).__name__
    else:
        failure = None
    if failure is not None:
        raise InvalidArgument(f"configuration value cannot be searched for secrets ({failure})")
    return list(found)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret (raw or as ``repr`` escapes it) redacted.

    Longer secrets are replaced first, so one that contains another leaves no tail.
    """
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms.add(secret)
            escaped = repr(secret)[1:-1]
            if escaped:
                forms.add(escaped)
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text
