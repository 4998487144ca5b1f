"""What the host and a worker process say to each other, and the bounds on it.

Both sides import this module (the worker imports nothing of the host's
process machinery), so the message tags, the configuration a worker is
started with and the report a throwaway worker sends back are defined once.

Every message is one msgpack array whose first item is a tag:

host -> worker::

    [mode, WorkerConfig, cpu_lifetime_s]     first frame; mode "serve", "inspect" or
                                              "check_settings" (validate config.settings
                                              against the class's Settings: a report)
    ["call", method, [wire arg, ...]]         args in the wire form of ``_views``
    ["stop"]                                  call the extension's stop(), then exit

worker -> host::

    ["report", InterfaceReport]               inspect mode: the answer, then exit
    ["ready"]                                 serve mode: instantiated, waiting for calls
    ["code_changed", [changed], [removed]]    a pinned file differs; nothing was imported
    ["failed", stage, type name]              import/lookup/instantiation raised (stage:
                                              "import", "attribute", "instantiate",
                                              "configure")
    ["ok", wire value]                        the call's result
    ["raised", type name]                     the call raised (any BaseException)
    ["invalid_output", reason]                the result cannot cross (WireError)
    ["resource", limit name]                  memory_bytes or max_output_bytes
    ["recycle"]                               CPU lifetime cap near: restart me, then resend
    ["stopped", type name or ""]              stop() returned (or raised that type)
    ["bad_request", reason]                   the call's args are not in the wire form

Everything a worker sends is untrusted: the host reads it through the bounded
frame reader and checks its shape; :class:`InterfaceReport` carries msgspec
length constraints that a typed conversion enforces.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec

from ..formats.extension import CodeLocation, ResourceLimits

__all__ = [
    "BAD_REQUEST",
    "CALL",
    "CHECK_SETTINGS",
    "CODE_CHANGED",
    "FAILED",
    "INSPECT",
    "INVALID_OUTPUT",
    "MAX_ITEMS",
    "MAX_METHODS",
    "MAX_NAME_CHARS",
    "MAX_PARAMETERS",
    "MAX_PROBLEMS",
    "MAX_PROBLEM_CHARS",
    "MAX_TEXT_CHARS",
    "OK",
    "PRIVATE_DIR_PREFIX",
    "RAISED",
    "READY",
    "RECYCLE",
    "REPORT",
    "REPORTED_ATTRIBUTES",
    "RESOURCE",
    "SERVE",
    "SETTINGS_ATTRIBUTE",
    "STOP",
    "STOPPED",
    "AttributeInfo",
    "InterfaceReport",
    "MethodInfo",
    "SettingsInfo",
    "WorkerConfig",
]

SERVE: Final = "serve"
INSPECT: Final = "inspect"
CHECK_SETTINGS: Final = "check_settings"
CALL: Final = "call"
STOP: Final = "stop"
REPORT: Final = "report"
READY: Final = "ready"
CODE_CHANGED: Final = "code_changed"
FAILED: Final = "failed"
OK: Final = "ok"
RAISED: Final = "raised"
INVALID_OUTPUT: Final = "invalid_output"
RESOURCE: Final = "resource"
RECYCLE: Final = "recycle"
BAD_REQUEST: Final = "bad_request"
STOPPED: Final = "stopped"

#: The name prefix of a worker's private working directory.
PRIVATE_DIR_PREFIX: Final = "gotstate-ext-"

#: The class attributes an inspection reports (when present).
REPORTED_ATTRIBUTES: Final = ("name", "version", "category", "requires", "states")

#: The class attribute naming an extension's settings Struct (optional).
SETTINGS_ATTRIBUTE: Final = "Settings"

#: Bounds on an InterfaceReport. The worker truncates to them; the host refuses
#: a report over them (only a worker that was tampered with sends one).
MAX_PROBLEMS: Final = 32
MAX_PROBLEM_CHARS: Final = 300
MAX_NAME_CHARS: Final = 200
MAX_TEXT_CHARS: Final = 1000
MAX_ITEMS: Final = 256
MAX_METHODS: Final = 256
MAX_PARAMETERS: Final = 64

_Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)]
_Problem = Annotated[str, msgspec.Meta(max_length=MAX_PROBLEM_CHARS)]
_Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]
_Items = Annotated[tuple[_Name, ...], msgspec.Meta(max_length=MAX_ITEMS)]
_Parameters = Annotated[tuple[_Name, ...], msgspec.Meta(max_length=MAX_PARAMETERS)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_PARAMETERS)]


class WorkerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything a worker needs to load one extension, checked and bounded.

    ``location`` says what to load: kind ``module`` prepends ``path_entry`` to
    ``sys.path`` (when set) and imports ``module``; ``file`` loads that file
    alone as a module named ``module`` (its directory is not added to
    ``sys.path``); ``package`` loads the package whose ``__init__.py`` is
    ``file``. ``files`` maps each pinned path, relative to ``location.root``,
    to its sha256 hex digest: the worker re-hashes them before importing, at
    every start and restart. ``prefix`` is an operator's sandbox command
    (``("bwrap", ...)``) the worker command is appended to.
    """

    name: str
    location: CodeLocation
    files: dict[str, str]
    limits: ResourceLimits
    prefix: tuple[str, ...] = ()
    #: The extension's own settings (serve: what it is configured with, granted secrets
    #: in clear; check_settings: the candidate). Never shown by ``repr``.
    settings: dict[str, Any] | None = None

    def __repr__(self) -> str:
        shown = "None" if self.settings is None else "<redacted>"
        return f"WorkerConfig(name={self.name!r}, settings={shown})"


class SettingsInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The extension's ``Settings`` Struct: its field names and the ``gp.Secret``-typed ones."""

    fields: _Items = ()
    secret_fields: _Items = ()


class AttributeInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One class attribute: its type's name, and its value when it is text or a set of text.

    ``text`` is set when the value is a str; ``items`` (sorted) when it is a
    set, frozenset, list or tuple of str.
    """

    type_name: _Name
    text: _Text | None = None
    items: _Items | None = None


class MethodInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The signature of one public callable of the class.

    ``parameters`` names the named parameters without ``self`` (or ``cls``)
    and without ``*args``/``**kwargs``; ``required`` counts the positional
    ones without a default; ``variadic`` says ``*args`` is present;
    ``required_keywords`` names keyword-only parameters without a default (a
    call passes views positionally, so any such parameter makes it fail).
    """

    parameters: _Parameters
    required: _Count
    variadic: bool
    is_async: bool
    required_keywords: _Parameters = ()


class InterfaceReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a throwaway worker found when it imported a target, without instantiating it.

    ``problems`` lists why the target could not be inspected (the import
    raised, the attribute is missing or not a class); ``attributes`` holds
    only the present ones of :data:`REPORTED_ATTRIBUTES`; ``methods`` every
    public callable of the class (names not starting with ``_``).
    """

    problems: Annotated[tuple[_Problem, ...], msgspec.Meta(max_length=MAX_PROBLEMS)] = ()
    class_name: _Name = ""
    attributes: Annotated[
        dict[_Name, AttributeInfo], msgspec.Meta(max_length=len(REPORTED_ATTRIBUTES))
    ] = msgspec.field(default_factory=dict)
    methods: Annotated[dict[_Name, MethodInfo], msgspec.Meta(max_length=MAX_METHODS)] = (
        msgspec.field(default_factory=dict)
    )
    #: The class's ``Settings`` Struct, when it declares one.
    settings: SettingsInfo | None = None
