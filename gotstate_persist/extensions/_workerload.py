"""Inside the worker: verify the pinned files, load the target, describe its class.

This runs in a worker process (``_worker``): the host must not import
extension code, so everything that touches it (the import, the attribute
lookup, reading signatures and class attributes) is here, on the far side
of the process boundary. The one exception is in-process isolation, where
the host is by choice the extension's process: the guard loads through the
same functions, so both modes run exactly the bytes that were verified.

Verification re-hashes every pinned file before anything is imported and
reports the changed and the removed ones (the host's pin check at activation
also names added files: it knows how the file set was enumerated; here the
pin is the list). Loading follows :class:`~._protocol.WorkerConfig`'s
``location``: a file target is executed from the bytes that were just
verified, so it cannot be swapped between the check and the import.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import types
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from ..config._schema import check_candidate
from ..config._secret import Secret
from ..formats.extension import CodeLocation
from ._protocol import (
    MAX_ITEMS,
    MAX_METHODS,
    MAX_NAME_CHARS,
    MAX_PARAMETERS,
    MAX_PROBLEM_CHARS,
    MAX_PROBLEMS,
    MAX_TEXT_CHARS,
    REPORTED_ATTRIBUTES,
    SETTINGS_ATTRIBUTE,
    AttributeInfo,
    InterfaceReport,
    MethodInfo,
    SettingsInfo,
)

__all__ = [
    "LoadProblem",
    "SettingsRefused",
    "check_settings",
    "configure_instance",
    "describe",
    "find_class",
    "import_target",
    "settings_class",
    "verify_pins",
]

_READ_CHUNK: Final = 1 << 20
_SEQUENCES: Final = (set, frozenset, list, tuple)


class LoadProblem(Exception):
    """The module loaded but its attribute is missing or not a class (text for the report)."""


class SettingsRefused(Exception):
    """The stored settings no longer fit the class's ``Settings`` (reported by type only)."""


def _sha256(path: str) -> tuple[str, bytes]:
    digest = hashlib.sha256()
    parts = []
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
            parts.append(chunk)
    return digest.hexdigest(), b"".join(parts)


def verify_pins(root: str, files: dict[str, str]) -> tuple[list[str], list[str], dict[str, bytes]]:
    """(changed, removed, verified contents by absolute path) of the pinned files."""
    changed: list[str] = []
    removed: list[str] = []
    contents: dict[str, bytes] = {}
    for relative, pinned in sorted(files.items()):
        path = os.path.join(root, relative)
        try:
            digest, data = _sha256(path)
        except (FileNotFoundError, NotADirectoryError):
            removed.append(relative)
            continue
        except OSError:  # unreadable now: not the file that was pinned
            changed.append(relative)
            continue
        if digest != pinned:
            changed.append(relative)
        else:
            contents[os.path.abspath(path)] = data
    return changed, removed, contents


def import_target(location: CodeLocation, verified: dict[str, bytes]) -> types.ModuleType:
    """Import the target's module as ``location`` says (its exceptions propagate)."""
    if location.kind == "module":
        if location.path_entry:
            sys.path.insert(0, location.path_entry)
        return importlib.import_module(location.module)
    if location.kind == "file":
        source = verified.get(os.path.abspath(location.file))
        if source is not None:  # run the very bytes that were hashed
            module = types.ModuleType(location.module)
            module.__file__ = location.file
            sys.modules[location.module] = module
            try:
                exec(compile(source, location.file, "exec"), module.__dict__)  # noqa: S102
            except BaseException:
                sys.modules.pop(location.module, None)
                raise
            return module
    search = [os.path.dirname(location.file)] if location.kind == "package" else None
    spec = importlib.util.spec_from_file_location(
        location.module, location.file, submodule_search_locations=search
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {location.file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[location.module] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(location.module, None)
        raise
    return module


def find_class(module: types.ModuleType, attr: str) -> type:
    """The class named by ``attr`` (dotted for nested classes) in ``module``."""
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadProblem(f"attribute '{attr}' not found") from None
        except Exception as exc:  # a hostile module __getattr__
            raise LoadProblem(f"looking up attribute '{attr}' raised {_type_name(exc)}") from None
    if not isinstance(obj, type):
        raise LoadProblem(f"'{attr}' is not a class")
    return obj


def _type_name(exc: BaseException) -> str:
    return type(exc).__qualname__[:MAX_NAME_CHARS]


def import_problem(exc: BaseException) -> str:
    """The report's line for an import that raised: type and (truncated) message."""
    try:
        message = str(exc)
    except Exception:
        message = "<message could not be printed>"
    text = f"importing the module raised {_type_name(exc)}"
    if message:
        text += f": {message}"
    return text[:MAX_PROBLEM_CHARS]


def _attribute(value: object) -> AttributeInfo:
    type_name = type(value).__qualname__[:MAX_NAME_CHARS]
    if type(value) is str:
        return AttributeInfo(type_name, text=value[:MAX_TEXT_CHARS])
    if type(value) in _SEQUENCES and all(type(item) is str for item in value):  # type: ignore[attr-defined]
        items = sorted(item[:MAX_NAME_CHARS] for item in value)  # type: ignore[attr-defined]
        return AttributeInfo(type_name, items=tuple(items[:MAX_ITEMS]))
    return AttributeInfo(type_name)


def _method(value: object, binds_first: bool) -> MethodInfo:
    try:
        signature = inspect.signature(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a builtin without a signature: accepts anything
        return MethodInfo((), 0, variadic=True, is_async=False)
    parameters = list(signature.parameters.values())
    if binds_first and parameters and parameters[0].kind in _POSITIONAL:
        parameters = parameters[1:]
    named = [p.name[:MAX_NAME_CHARS] for p in parameters if p.kind not in _VARIADIC]
    required = sum(1 for p in parameters if p.kind in _POSITIONAL and p.default is p.empty)
    keywords = [
        p.name[:MAX_NAME_CHARS]
        for p in parameters
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    ]
    return MethodInfo(
        tuple(named[:MAX_PARAMETERS]),
        min(required, MAX_PARAMETERS),
        variadic=any(p.kind is p.VAR_POSITIONAL for p in parameters),
        is_async=inspect.iscoroutinefunction(value),
        required_keywords=tuple(keywords[:MAX_PARAMETERS]),
    )


_POSITIONAL: Final = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
)
_VARIADIC: Final = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _methods(cls: type, problems: list[str]) -> dict[str, MethodInfo]:
    methods: dict[str, MethodInfo] = {}
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        try:
            raw = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        if isinstance(raw, staticmethod):
            function, binds_first = raw.__func__, False
        elif isinstance(raw, classmethod):
            function, binds_first = raw.__func__, True
        elif callable(raw):
            # functions and C method descriptors receive the instance; other callables do not
            function = raw
            binds_first = inspect.isfunction(raw) or inspect.ismethoddescriptor(raw)
        else:
            continue
        if len(methods) == MAX_METHODS:
            problems.append(f"the class has more than {MAX_METHODS} public callables")
            break
        methods[name[:MAX_NAME_CHARS]] = _method(function, binds_first)
    return methods


def describe(cls: type) -> InterfaceReport:
    """The class's reported attributes and public callables, without instantiating it."""
    problems: list[str] = []
    attributes: dict[str, AttributeInfo] = {}
    for name in REPORTED_ATTRIBUTES:
        try:
            value = getattr(cls, name)
        except AttributeError:
            continue
        except Exception as exc:
            problems.append(f"reading attribute '{name}' raised {_type_name(exc)}")
            continue
        attributes[name] = _attribute(value)
    methods = _methods(cls, problems)
    settings = None
    try:
        schema = settings_class(cls)
    except Exception as exc:
        problems.append(f"reading attribute '{SETTINGS_ATTRIBUTE}' raised {_type_name(exc)}")
    else:
        if schema is not None:
            settings = _describe_settings(schema, problems)
    return InterfaceReport(
        problems=tuple(p[:MAX_PROBLEM_CHARS] for p in problems[:MAX_PROBLEMS]),
        class_name=cls.__qualname__[:MAX_NAME_CHARS],
        attributes=attributes,
        methods=methods,
        settings=settings,
    )


# Settings: an extension class may declare ``Settings`` (a msgspec Struct) and
# ``configure(self, settings)``; these run in the worker (or the guard's thread).


def settings_class(cls: type) -> type[msgspec.Struct] | None:
    """The class's ``Settings`` Struct, None when it declares none; TypeError if not a Struct."""
    schema = inspect.getattr_static(cls, SETTINGS_ATTRIBUTE, None)
    if schema is None:
        return None
    if not (isinstance(schema, type) and issubclass(schema, msgspec.Struct)):
        raise TypeError(f"{SETTINGS_ATTRIBUTE} must be a msgspec.Struct subclass")
    return schema


def _is_secret(info: mi.Type) -> bool:
    while isinstance(info, mi.Metadata):
        info = info.type
    return isinstance(info, mi.CustomType) and info.cls is Secret


def _describe_settings(schema: type[msgspec.Struct], problems: list[str]) -> SettingsInfo | None:
    try:
        info = mi.type_info(schema)
    except Exception as exc:
        problems.append(f"{SETTINGS_ATTRIBUTE} cannot be inspected ({_type_name(exc)})")
        return None
    assert isinstance(info, mi.StructType)
    names = [f.encode_name[:MAX_NAME_CHARS] for f in info.fields]
    secrets = [f.encode_name[:MAX_NAME_CHARS] for f in info.fields if _is_secret(f.type)]
    if len(names) > MAX_ITEMS:
        problems.append(f"{SETTINGS_ATTRIBUTE} has more than {MAX_ITEMS} fields")
    return SettingsInfo(fields=tuple(names[:MAX_ITEMS]), secret_fields=tuple(secrets[:MAX_ITEMS]))


def check_settings(cls: type, candidate: dict[str, Any]) -> list[str]:
    """Every problem of ``candidate`` as the class's Settings ("$.path: reason", no values)."""
    try:
        schema = settings_class(cls)
    except Exception:
        return [f"$: the extension's {SETTINGS_ATTRIBUTE} is not a msgspec.Struct subclass"]
    if schema is None:
        return [f"$: the extension declares no {SETTINGS_ATTRIBUTE}; it takes no settings"]
    try:
        _value, problems = check_candidate(schema, candidate)
    except Exception as exc:  # the extension's own __post_init__ or hooks
        return [f"$: checking the settings raised {_type_name(exc)}"]
    return [p[:MAX_PROBLEM_CHARS] for p in problems[:MAX_PROBLEMS]]


def configure_instance(cls: type, instance: object, values: dict[str, Any] | None) -> None:
    """Hand ``values`` as the class's Settings to ``instance.configure`` (when both exist)."""
    if values is None:
        return
    schema = settings_class(cls)
    configure = getattr(instance, "configure", None)
    if schema is None or not callable(configure):
        return
    settings, problems = check_candidate(schema, values)
    if settings is None or problems:
        raise SettingsRefused(f"{len(problems)} problem(s)")
    configure(settings)
