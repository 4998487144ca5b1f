"""Built-in configuration validators: ranges, patterns, one-of and cross-field rules.

A validator is any callable ``(candidate, previous) -> list[str]`` given to
``cfg.define(..., validators=[...])``; it gets the decoded schema instances
(``previous`` is None for the first version) and returns every problem as
``"$.path: reason"``. The rules here cover the common cases so that users do
not each write (and get wrong) the same few lines — in particular the rule
that a problem never quotes the value, which may be a secret: a field typed
``gp.Secret`` is compared through ``reveal()`` but never shown.

A rule names its field by path (``"$.db.port"`` or ``"db.port"``). The schema
is unknown when the rule is built, so a path the candidate does not have is
reported as a problem at the first call rather than refused at build time.
A field that is None (an unset Optional) passes every single-field rule:
requiring it is the schema's business.
"""

from __future__ import annotations

import enum
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeAlias

import msgspec

from gotstate_persist.config._secret import Secret
from gotstate_persist.errors import InvalidArgument

__all__ = ["Validator", "cross_field", "in_range", "matches", "one_of"]

#: A configuration validator: ``(candidate, previous) -> problems``.
Validator: TypeAlias = Callable[[Any, Any], list[str]]

_ROOT: Final = "$"
_SEGMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_MISSING: Final = object()
#: Struct types whose field names are kept (introspection is slow, rules run on every put).
_CACHED_STRUCTS: Final = 256


def _parse_path(path: object) -> tuple[str, tuple[str, ...]]:
    """(canonical ``$.a.b`` form, segments) of a rule's path; InvalidArgument if malformed."""
    if not isinstance(path, str):
        raise InvalidArgument(
            f"a rule's path must be a str such as '$.db.port'; got {type(path).__name__}"
        )
    text = path.removeprefix(f"{_ROOT}.") if path.startswith(f"{_ROOT}.") else path
    segments = tuple(text.split("."))
    if not all(_SEGMENT.fullmatch(segment) for segment in segments):
        raise InvalidArgument(
            f"rule path {path!r} is malformed: write field names separated by dots, "
            "e.g. '$.db.port' or 'db.port'"
        )
    return f"{_ROOT}.{'.'.join(segments)}", segments


@functools.lru_cache(maxsize=_CACHED_STRUCTS)
def _attributes(cls: type[msgspec.Struct]) -> dict[str, str]:
    """Attribute name by field name and encoded name, once per Struct type."""
    found: dict[str, str] = {}
    for field in msgspec.structs.fields(cls):
        found[field.encode_name] = field.name
        found[field.name] = field.name
    return found


def _child(value: Any, segment: str) -> Any:
    if isinstance(value, msgspec.Struct):
        attribute = _attributes(type(value)).get(segment)
        return _MISSING if attribute is None else getattr(value, attribute)
    if isinstance(value, Mapping):
        return value.get(segment, _MISSING)
    return _MISSING


def _lookup(candidate: Any, segments: tuple[str, ...]) -> Any:
    value = candidate
    for segment in segments:
        if value is None:  # an unset Optional on the way: nothing below it to check
            return None
        value = _child(value, segment)
        if value is _MISSING:
            return _MISSING
    return value


def _not_in_schema(path: str) -> list[str]:
    return [f"{path}: the rule names a field the configuration does not have; fix the rule's path"]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def in_range(path: str, *, min: float | None = None, max: float | None = None) -> Validator:
    """The number at ``path`` lies within ``[min, max]`` (either bound may be left out)."""
    where, segments = _parse_path(path)
    for bound in (min, max):
        if bound is not None and (not _is_number(bound) or math.isnan(bound)):
            raise InvalidArgument("in_range bounds must be numbers (int or float, not NaN)")
    if min is None and max is None:
        raise InvalidArgument("in_range needs min=, max= or both")
    if min is not None and max is not None and min > max:
        raise InvalidArgument(f"in_range for {where}: min ({min}) is greater than max ({max})")
    wanted = " and ".join(
        part
        for part in (
            f">= {min}" if min is not None else "",
            f"<= {max}" if max is not None else "",
        )
        if part
    )

    def validate(candidate: Any, previous: Any) -> list[str]:
        value = _lookup(candidate, segments)
        if value is _MISSING:
            return _not_in_schema(where)
        if value is None:
            return []
        if not _is_number(value):
            return [f"{where}: expected a number {wanted}"]
        too_low = min is not None and not value >= min  # "not >=" also refuses NaN
        too_high = max is not None and not value <= max
        return [f"{where}: expected a number {wanted}"] if too_low or too_high else []

    return validate


def matches(path: str, pattern: str | re.Pattern[str]) -> Validator:
    """The string (or revealed secret) at ``path`` matches ``pattern`` in full."""
    where, segments = _parse_path(path)
    if isinstance(pattern, re.Pattern):
        compiled = pattern
    elif isinstance(pattern, str):
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            failure = str(exc)
        else:
            failure = ""
        if failure:
            raise InvalidArgument(f"matches for {where}: the pattern does not compile: {failure}")
    else:
        raise InvalidArgument(f"matches for {where}: the pattern must be a str or re.Pattern")

    def validate(candidate: Any, previous: Any) -> list[str]:
        value = _lookup(candidate, segments)
        if value is _MISSING:
            return _not_in_schema(where)
        if value is None:
            return []
        if isinstance(value, Secret):
            if compiled.fullmatch(value.reveal()):
                return []
            return [f"{where}: the secret does not have the required form"]
        if not isinstance(value, str):
            return [f"{where}: expected a string for this pattern rule"]
        if compiled.fullmatch(value):
            return []
        return [f"{where}: does not match the pattern {compiled.pattern!r}"]

    return validate


def one_of(path: str, choices: Iterable[Any]) -> Validator:
    """The value (or revealed secret) at ``path`` is one of ``choices``."""
    where, segments = _parse_path(path)
    if isinstance(choices, str | bytes):
        raise InvalidArgument(f"one_of for {where}: give the choices as a list, not one string")
    allowed = tuple(choices)
    if not allowed:
        raise InvalidArgument(f"one_of for {where}: give at least one choice")
    shown = ", ".join(repr(choice) for choice in allowed)

    def validate(candidate: Any, previous: Any) -> list[str]:
        value = _lookup(candidate, segments)
        if value is _MISSING:
            return _not_in_schema(where)
        if value is None:
            return []
        if isinstance(value, Secret):
            if value.reveal() in allowed:
                return []
            return [f"{where}: the secret is not one of the allowed values"]
        if value in allowed or (isinstance(value, enum.Enum) and value.value in allowed):
            return []
        return [f"{where}: not one of {shown}"]

    return validate


def cross_field(check: Callable[[Any], bool], *, paths: Iterable[str], message: str) -> Validator:
    """``check(candidate)`` holds; otherwise one problem naming ``paths`` with ``message``.

    ``message`` is the user's own text, shown as given: it must not quote values.
    A ``check`` that raises is reported as a problem (its error, which may
    quote a value, is not repeated).
    """
    if not callable(check):
        raise InvalidArgument("cross_field needs a callable check(candidate) -> bool")
    parsed = [_parse_path(path) for path in ([paths] if isinstance(paths, str) else paths)]
    if not parsed:
        raise InvalidArgument("cross_field needs paths=: the fields the rule is about")
    if not isinstance(message, str) or not message:
        raise InvalidArgument("cross_field needs message=: what is wrong, without values")
    where = ", ".join(canonical for canonical, _ in parsed)

    def validate(candidate: Any, previous: Any) -> list[str]:
        missing = [
            canonical for canonical, segments in parsed if _lookup(candidate, segments) is _MISSING
        ]
        if missing:
            return [problem for canonical in missing for problem in _not_in_schema(canonical)]
        try:
            held = bool(check(candidate))
        except Exception as exc:  # the user's code: any failure is a refusal, not a crash
            failure: str | None = type(exc).__name__
        else:
            failure = None
        if failure is not None:
            return [f"{where}: the cross-field check raised {failure}"]
        return [] if held else [f"{where}: {message}"]

    return validate
