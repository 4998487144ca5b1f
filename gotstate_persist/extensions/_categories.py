"""The four extension categories: what a class must declare, and what its methods may return.

Registration checks a class against its category from the report of a
throwaway worker (the host never imports the code to check it), collecting
every problem so the author fixes them in one round. Calls check outputs
here, after they crossed the wire form and before anything is applied: an
output of the wrong shape changes nothing and counts as a failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from ..formats.extension import CATEGORIES
from ._views import EventView

__all__ = [
    "METHODS",
    "NAME_PATTERN",
    "OutputError",
    "Requirements",
    "check_output",
    "interface_problems",
]

NAME_PATTERN = re.compile(r"[a-z0-9_-]{1,64}")
_VERSION = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")
_MAX_TEXT = 200
_MAX_EVENT_NAME = 255

#: Per category: the methods it may define and how many arguments each takes;
#: at least one of them must be present.
METHODS: dict[str, dict[str, int]] = {
    "event_processing": {"process": 1},
    "state_behavior": {"on_enter": 1, "on_exit": 1, "allows": 1},
    "persistence": {"backends": 0, "formats": 0},
    "configuration": {"load": 1, "validate": 1},
}
#: Methods every category may define: called at deactivation.
_COMMON = {"stop": 0}


@dataclass(frozen=True, slots=True)
class Requirements:
    """What registration learned from a class's declarations (checked)."""

    name: str
    version: str
    category: str
    requires: str
    states: tuple[str, ...]
    interface: tuple[str, ...]


class OutputError(Exception):
    """Internal: an extension's output has the wrong shape; the caller adds context."""


def _text(report: Any, attribute: str) -> str | None:
    info = report.attributes.get(attribute)
    if info is None or info.text is None:
        return None
    return str(info.text)


def _shown(value: str) -> str:
    return repr(value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "...")


def _declared(report: Any, host_version: str, problems: list[str]) -> tuple[str, str, str, str]:
    name = _text(report, "name")
    if name is None:
        problems.append("class attribute 'name' is missing or not a str")
    elif not NAME_PATTERN.fullmatch(name):
        problems.append(f"name {_shown(name)} must be 1-64 characters of a-z, 0-9, '_' or '-'")
    version = _text(report, "version")
    if version is None:
        problems.append("class attribute 'version' is missing or not a str")
    elif not _VERSION.fullmatch(version):
        problems.append(f"version {_shown(version)} must look like MAJOR.MINOR.PATCH (e.g. 1.0.0)")
    category = _text(report, "category")
    if category is None:
        problems.append("class attribute 'category' is missing or not a str")
    elif category not in CATEGORIES:
        problems.append(f"unknown category {_shown(category)}; use one of {', '.join(CATEGORIES)}")
    requires = ""
    if "requires" in report.attributes:
        text = _text(report, "requires")
        if text is None:
            problems.append("class attribute 'requires' must be a str (a PEP 440 specifier)")
        else:
            requires = text
            try:
                if Version(host_version) not in SpecifierSet(text, prereleases=True):
                    problems.append(
                        f"requires {_shown(text)} is not satisfied by this host "
                        f"(gotstate-persist {host_version})"
                    )
            except InvalidSpecifier:
                problems.append(f"requires {_shown(text)} is not a PEP 440 version specifier")
    return name or "", version or "", category or "", requires


def _states(report: Any, category: str, problems: list[str]) -> tuple[str, ...]:
    info = report.attributes.get("states")
    if info is None:
        return ()
    if category != "state_behavior":
        problems.append("only state_behavior extensions may declare 'states'")
        return ()
    if info.items is None:
        problems.append("'states' must be a frozenset of state names (str)")
        return ()
    return tuple(sorted(info.items))


def _methods(report: Any, category: str, problems: list[str]) -> tuple[str, ...]:
    allowed = {**METHODS.get(category, {}), **_COMMON}
    found = []
    for method, arity in allowed.items():
        info = report.methods.get(method)
        if info is None:
            continue
        found.append(method)
        if info.is_async:
            problems.append(f"{method}() is a coroutine function; define it with plain def")
        takes = len(info.parameters)
        if info.required > arity or (takes < arity and not info.variadic):
            plural = "argument" if arity == 1 else "arguments"
            problems.append(
                f"{method}() must take {arity} {plural} besides self, "
                f"it takes {info.required} required of {takes}"
            )
    if category in METHODS and not any(method in found for method in METHODS[category]):
        problems.append(
            f"a {category} extension must define at least one of "
            f"{', '.join(m + '()' for m in METHODS[category])}"
        )
    return tuple(found)


def interface_problems(report: Any, host_version: str) -> tuple[Requirements, list[str]]:
    """Check a worker's report of a class against its category; every problem at once."""
    problems = [str(problem)[: _MAX_TEXT * 2] for problem in report.problems]
    if problems:
        return Requirements("", "", "", "", (), ()), problems
    name, version, category, requires = _declared(report, host_version, problems)
    states = _states(report, category, problems)
    interface = _methods(report, category, problems)
    return Requirements(name, version, category, requires, states, interface), problems


def _event_ok(view: EventView) -> EventView:
    if not 1 <= len(view.name) <= _MAX_EVENT_NAME:
        raise OutputError(f"an event name must be 1 to {_MAX_EVENT_NAME} characters")
    return view


def check_output(method: str, value: Any, *, max_events: int) -> Any:
    """Return ``value`` if it is what ``method`` may return, else raise OutputError."""
    if method == "process":
        if value is None:
            return []
        if type(value) is EventView:
            return [_event_ok(value)]
        if type(value) is list and all(type(item) is EventView for item in value):
            if len(value) > max_events:
                raise OutputError(f"{len(value)} events fanned out, over max_events={max_events}")
            return [_event_ok(item) for item in value]
        raise OutputError("process() must return an EventView, a list of them, or None")
    if method in ("on_enter", "on_exit"):
        if value is None:
            return {}
        if type(value) is dict and all(type(key) is str for key in value):
            return value
        raise OutputError(f"{method}() must return a dict with str keys, or None")
    if method == "allows":
        if type(value) is bool:
            return value
        raise OutputError("allows() must return True or False")
    if method == "load":
        if type(value) is dict and all(type(key) is str for key in value):
            return value
        raise OutputError("load() must return a dict with str keys")
    if method == "validate":
        if type(value) is list and all(type(item) is str for item in value):
            return value
        raise OutputError("validate() must return a list of problems (str)")
    return value
