"""Checking a configuration candidate against its schema, and the security policy.

msgspec stops at the first error and may quote the offending value in its
message; a refused configuration change must list *every* problem and never
a value (config.md, "Validate, then commit"). So this module walks the
schema's fields itself — missing, unknown, then each present field converted
on its own, recursing into nested Structs (also inside Optional, lists and
dicts) so that paths are precise — and rewrites msgspec's messages into
reasons that hold no value (:func:`reason_for`). Only when every field passed
is the whole value converted, which runs what is left: each Struct's
``__post_init__``.

It also owns the security policy (:func:`policy_problems`): credential-like
field names must be typed :class:`Secret`, and secrets need a keyring that
encrypts. Pure functions: nothing here stores or logs anything.

Structs that sit elsewhere than directly, in an Optional, a list or a dict
value (say, in a union of two Structs) are converted as a whole by msgspec:
their own ``forbid_unknown_fields`` decides about unknown fields there.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec
import msgspec.inspect as mi

from gotstate_persist._wire import AES_256_GCM, CHACHA20_POLY1305
from gotstate_persist.config._secret import NotASecret, Secret, encode_config, secret_hooks
from gotstate_persist.errors import InvalidArgument

if TYPE_CHECKING:
    from gotstate_persist._keyring import KeyRing

__all__ = [
    "ENCRYPTING_ALGORITHMS",
    "SENSITIVE_WORDS",
    "check_candidate",
    "check_definition",
    "is_sensitive_name",
    "keyring_encrypts",
    "policy_problems",
    "reason_for",
]

S = TypeVar("S", bound=msgspec.Struct)
#: Schemas and annotations whose inspection is kept (introspection evaluates
#: string annotations, far slower than a check).
_CACHED_TYPES: Final = 1024

#: Sealing algorithms that encrypt; the others (HMAC, Ed25519) only sign.
ENCRYPTING_ALGORITHMS: Final = frozenset({AES_256_GCM.name, CHACHA20_POLY1305.name})
#: Whole words of a field name that mark a credential.
SENSITIVE_WORDS: Final = frozenset(
    {"password", "passwd", "token", "secret", "credential", "apikey"}
)
#: Consecutive word pairs that mark a credential.
SENSITIVE_PAIRS: Final = frozenset({("api", "key"), ("private", "key")})
ROOT: Final = "$"
_POST_INIT: Final = "refused by the schema's __post_init__ check"

_WORD: Final = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_AT: Final = re.compile(r" - at `([^`]*)`(?: in `([^`]*)`)?$")
_EXPECTED: Final = re.compile(r"^Expected `[^`'\"]*`[^'\"]*$")
_REGEX: Final = re.compile(r"^Expected `str` matching regex .*$", re.DOTALL)
_MISSING: Final = re.compile(r"^Object missing required field `([^`]*)`$")
_UNKNOWN: Final = re.compile(r"^Object contains unknown field `([^`]*)`$")
_SAFE_INVALID: Final = re.compile(r"^Invalid [A-Za-z0-9 ]*[A-Za-z]$")
_ENUM: Final = re.compile(r"^Invalid (enum )?value")  # enum, literal or tag: may quote it


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def reason_for(error: msgspec.ValidationError, fallback: str) -> tuple[str, str]:
    """``(subpath, reason)`` of a msgspec validation error, the reason holding no value.

    ``subpath`` is msgspec's own path relative to what was converted (``""``
    for the value itself, ``".a[0]"`` below it). msgspec's own messages are
    reworded (those that quote a value lose it); an error caused by user code
    — a ``__post_init__`` or a hook, whose text may quote the value and may
    even look like msgspec's — is told apart by its ``__cause__`` and becomes
    ``fallback``.
    """
    message = str(error)
    subpath = ""
    match = _AT.search(message)
    if match:
        message = message[: match.start()]
        subpath = match.group(1).removeprefix(ROOT)
        if match.group(2) is not None:  # "- at `key` in `$.a`": a dict key was wrong
            subpath = match.group(2).removeprefix(ROOT) + "[key]"
    if error.__cause__ is not None:
        if isinstance(error.__cause__, NotASecret):
            return subpath, "expected Secret (given as str)"
        return subpath, fallback
    if _ENUM.match(message):
        return subpath, "not one of the allowed values"
    if _REGEX.match(message):
        return subpath, "expected str matching the field's pattern"
    if _EXPECTED.match(message):
        return subpath, _lower_first(message.replace("`", ""))
    missing = _MISSING.match(message)
    if missing:
        return f"{subpath}.{missing.group(1)}", "required field is missing"
    unknown = _UNKNOWN.match(message)
    if unknown:
        return f"{subpath}.{unknown.group(1)}", "unknown field"
    if _SAFE_INVALID.match(message):
        return subpath, _lower_first(message)
    return subpath, fallback


_ENC_HOOK, _DEC_HOOK, _EXT_HOOK = secret_hooks()


def _convert(value: Any, annotation: Any) -> Any:
    return msgspec.convert(value, annotation, strict=True, dec_hook=_DEC_HOOK)


def _convert_problem(value: Any, annotation: Any, path: str, fallback: str) -> str | None:
    """Convert ``value``; the problem (no value in it) if that fails, else None."""
    try:
        _convert(value, annotation)
    except msgspec.ValidationError as exc:
        subpath, reason = reason_for(exc, fallback)
        return f"{path}{subpath}: {reason}"
    except (TypeError, ValueError):
        return f"{path}: {fallback}"
    return None


def _struct_info(annotation: Any) -> mi.StructType | None:
    """The Struct a field holds directly, through Annotated or through Optional."""
    info = _info(annotation)
    if isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.UnionType):
        structs = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if len(structs) == 1 and len(info.types) == 2:
            info = structs[0]
    return info if isinstance(info, mi.StructType) else None


def _info(annotation: Any) -> mi.Type | None:
    try:
        return _type_info(annotation)
    except (TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=_CACHED_TYPES)
def _type_info(annotation: Any) -> mi.Type:
    """``msgspec.inspect.type_info``, once per annotation: it evaluates string annotations."""
    return mi.type_info(annotation)


@functools.lru_cache(maxsize=_CACHED_TYPES)
def _field_types(cls: type[msgspec.Struct]) -> dict[str, Any]:
    """A Struct's field annotations by attribute name, resolved once."""
    return {field.name: field.type for field in msgspec.structs.fields(cls)}


def _nested(annotation: Any) -> tuple[str, Any] | None:
    """("list", item type) or ("dict", value type) when that element is a Struct."""
    origin = getattr(annotation, "__origin__", None)
    args: tuple[Any, ...] = tuple(getattr(annotation, "__args__", ()))
    if origin is list and len(args) == 1 and _struct_info(args[0]) is not None:
        return "list", args[0]
    if origin is dict and len(args) == 2 and _struct_info(args[1]) is not None:
        return "dict", args[1]
    return None


def _check_value(annotation: Any, value: Any, path: str, problems: list[str]) -> None:
    struct = _struct_info(annotation)
    if struct is not None and isinstance(value, Mapping):
        if _check_struct(struct, value, path, problems):
            problem = _convert_problem(value, annotation, path, _POST_INIT)
            if problem:
                problems.append(problem)
        return
    nested = _nested(annotation)
    if nested is not None:
        kind, element = nested
        if kind == "list" and isinstance(value, list):
            for index, item in enumerate(value):
                _check_value(element, item, f"{path}[{index}]", problems)
            return
        if kind == "dict" and isinstance(value, Mapping):
            key_type = annotation.__args__[0]
            for key, item in value.items():
                problem = _convert_problem(key, key_type, f"{path}[key]", "invalid key")
                if problem:
                    problems.append(problem)
                    continue
                _check_value(element, item, f"{path}.{key}", problems)
            return
    problem = _convert_problem(value, annotation, path, "invalid value")
    if problem:
        problems.append(problem)


def _check_struct(
    info: mi.StructType, value: Mapping[Any, Any], path: str, problems: list[str]
) -> bool:
    """Check the fields of one Struct given as a mapping; True when none had a problem."""
    before = len(problems)
    annotations = _field_types(info.cls)
    known = {field.encode_name for field in info.fields}
    if info.tag_field is not None:
        known.add(info.tag_field)
    for key in value:
        if not isinstance(key, str):
            problems.append(f"{path}: field names must be strings")
        elif key not in known:
            problems.append(f"{path}.{key}: unknown field")
    for field in info.fields:
        where = f"{path}.{field.encode_name}"
        if field.encode_name not in value:
            if field.required:
                problems.append(f"{where}: required field is missing")
            continue
        _check_value(annotations[field.name], value[field.encode_name], where, problems)
    return len(problems) == before


def _builtins_keeping_secrets(instance: msgspec.Struct) -> Any:
    """An instance as builtins, with :class:`Secret` objects kept (a msgpack round trip)."""
    return msgspec.msgpack.decode(encode_config(instance), ext_hook=_EXT_HOOK)


def check_candidate(
    schema: type[S], candidate: S | Mapping[str, Any]
) -> tuple[S | None, list[str]]:
    """The candidate decoded as ``schema`` and ``[]``, or ``None`` and every problem.

    ``candidate`` is an instance (whose fields are checked too: an instance
    built with a wrong-typed field is caught) or a mapping as read from TOML
    or JSON. Unknown fields are always refused. Each problem is
    ``"$.path: reason"`` and no reason holds a value.
    """
    if not (isinstance(schema, type) and issubclass(schema, msgspec.Struct)):
        raise InvalidArgument("a configuration schema must be a msgspec.Struct subclass")
    info = _type_info(schema)
    assert isinstance(info, mi.StructType)
    if isinstance(candidate, msgspec.Struct):
        try:
            candidate = _builtins_keeping_secrets(candidate)
        except InvalidArgument:
            return None, [f"{ROOT}: holds a value of a type configurations cannot store"]
        # an instance has no unknown fields: when the whole value converts, there is
        # nothing for the field-by-field walk to find (it runs only to list problems)
        try:
            return _convert(candidate, schema), []
        except (msgspec.ValidationError, TypeError, ValueError):
            pass
    if not isinstance(candidate, Mapping):
        return None, [f"{ROOT}: expected a {schema.__qualname__} or a mapping of its fields"]
    candidate = dict(candidate)  # msgspec converts dicts, not every Mapping
    problems: list[str] = []
    if _check_struct(info, candidate, ROOT, problems):
        try:
            return _convert(candidate, schema), []
        except msgspec.ValidationError as exc:
            subpath, reason = reason_for(exc, _POST_INIT)
            problems.append(f"{ROOT}{subpath}: {reason}")
        except (TypeError, ValueError):
            problems.append(f"{ROOT}: refused by the schema's checks")
    return None, problems


# -- the security policy ----------------------------------------------------


def is_sensitive_name(name: str) -> bool:
    """Whether a field name names a credential (whole snake_case or camelCase words)."""
    words = [word.lower() for word in _WORD.findall(name)]
    if any(word in SENSITIVE_WORDS for word in words):
        return True
    return any(pair in SENSITIVE_PAIRS for pair in itertools.pairwise(words))


def _is_secret(info: mi.Type) -> bool:
    return isinstance(info, mi.CustomType) and info.cls is Secret


def _secret_typed(info: mi.Type) -> bool:
    """Secret, Optional[Secret], or a list/tuple/set/dict whose elements are that."""
    if isinstance(info, mi.Metadata):
        return _secret_typed(info.type)
    if _is_secret(info):
        return True
    if isinstance(info, mi.UnionType):
        others = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return len(others) == 1 and _secret_typed(others[0])
    if isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return _secret_typed(info.item_type)
    if isinstance(info, mi.DictType):
        return _secret_typed(info.value_type)
    return False


def _children(info: mi.Type) -> Iterator[mi.Type]:
    if isinstance(info, mi.Metadata):
        yield info.type
    elif isinstance(info, mi.UnionType):
        yield from info.types
    elif isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        yield info.item_type
    elif isinstance(info, mi.TupleType):
        yield from info.item_types
    elif isinstance(info, mi.DictType):
        yield info.key_type
        yield info.value_type


def _walk(info: mi.Type, path: str, seen: set[type], out: list[tuple[str, str, mi.Type]]) -> None:
    """Every (path, field name, type) of the Structs reachable from ``info``."""
    if isinstance(info, mi.StructType):
        if info.cls in seen:
            return
        seen.add(info.cls)
        for field in info.fields:
            where = f"{path}.{field.encode_name}"
            out.append((where, field.name, field.type))
            _walk(field.type, where, seen, out)
        return
    for child in _children(info):
        _walk(child, path, seen, out)


def _contains_secret(info: mi.Type) -> bool:
    return _is_secret(info) or any(_contains_secret(child) for child in _children(info))


def policy_problems(schema: type[msgspec.Struct], *, keyring_encrypts: bool) -> list[str]:
    """Every way ``schema`` breaks the security policy of config.md, as ``"$.path: reason"``."""
    return list(_policy_problems(schema, keyring_encrypts))


@functools.lru_cache(maxsize=_CACHED_TYPES)
def _policy_problems(schema: type[msgspec.Struct], keyring_encrypts: bool) -> tuple[str, ...]:
    """Once per schema and keyring kind: a schema's policy problems never change."""
    fields: list[tuple[str, str, mi.Type]] = []
    _walk(_type_info(schema), ROOT, set(), fields)
    problems = []
    for path, name, info in fields:
        encode_name = path.rsplit(".", 1)[-1]
        sensitive = is_sensitive_name(name) or is_sensitive_name(encode_name)
        if sensitive and not _secret_typed(info):
            problems.append(
                f"{path}: the name says it holds a credential, so it must be typed gp.Secret "
                "(or Optional[gp.Secret])"
            )
    if not keyring_encrypts:
        for path, _name, info in fields:
            if _contains_secret(info) and not isinstance(info, mi.StructType):
                problems.append(
                    f"{path}: secrets need an encrypting keyring (aes-256-gcm or "
                    "chacha20-poly1305); this store's keyring only signs, so they would be "
                    "stored readable"
                )
    return tuple(problems)


def keyring_encrypts(keyring: KeyRing | None) -> bool:
    """Whether records sealed by ``keyring`` are encrypted (not only signed); None: no keyring."""
    return keyring is not None and keyring.can_seal and keyring.algorithm in ENCRYPTING_ALGORITHMS


def _custom_types(info: mi.Type, seen: set[type]) -> Iterator[type]:
    if isinstance(info, mi.StructType):
        if info.cls in seen:
            return
        seen.add(info.cls)
        for field in info.fields:
            yield from _custom_types(field.type, seen)
        return
    if isinstance(info, mi.CustomType):
        yield info.cls
    for child in _children(info):
        yield from _custom_types(child, seen)


def check_definition(schema: object) -> None:
    """Refuse (InvalidArgument) a schema that configurations cannot store or check."""
    if not (isinstance(schema, type) and issubclass(schema, msgspec.Struct)):
        raise InvalidArgument(
            "a configuration schema must be a msgspec.Struct subclass; got "
            f"{type(schema).__qualname__}"
        )
    name = schema.__qualname__
    try:
        msgspec.msgpack.Decoder(schema, dec_hook=_DEC_HOOK, ext_hook=_EXT_HOOK)
        info = mi.type_info(schema)
    except (TypeError, ValueError, NameError) as exc:
        failure: str | None = type(exc).__name__
    else:
        failure = None
    if failure is not None:
        raise InvalidArgument(
            f"{name} cannot be a configuration schema: msgspec cannot handle its field types "
            f"({failure}); use builtins, Structs, enums, datetimes and gp.Secret"
        )
    assert isinstance(info, mi.StructType)
    if info.array_like:
        raise InvalidArgument(
            f"{name} cannot be a configuration schema: array_like Structs cannot be read "
            "from TOML or JSON mappings; drop array_like=True"
        )
    for custom in _custom_types(info, set()):
        if custom is not Secret:
            raise InvalidArgument(
                f"{name} cannot be a configuration schema: field type {custom.__qualname__} "
                "is not supported; use builtins, Structs, enums, datetimes and gp.Secret"
            )
