"""Where an extension's code is, found without running any of it.

Registering an extension must not import it in the host: importing runs
arbitrary code (every parent package's ``__init__`` too) with the host's
memory, keys and open store. This module owns the one step that reads a
registration target string and answers "which file, loaded how" using only
the file system and installed metadata:

- ``"module.sub:Attr"``: a module importable from this interpreter's
  ``sys.path``. It is looked up with :class:`importlib.machinery.PathFinder`
  one component at a time (the top-level package on ``sys.path``, then each
  submodule inside its parent's directory), never with ``import_module`` or
  ``importlib.util.find_spec`` on a dotted name, both of which import the
  parents. Built-in, frozen and compiled (``.so``) modules, modules found only
  as bytecode or inside a zip archive, and namespace packages are refused:
  there is no source on disk to pin. A package whose ``__init__`` rewrites its
  own ``__path__`` at import time is located as its directory says, not as
  that code would. A module served only by another import hook (setuptools'
  strict editable finder) is not found: install it with
  ``--config-settings editable_mode=compat`` or name its package directory.
- ``"path/to/file.py:Attr"``: a source file; ``"path/to/pkgdir:Attr"``: a
  package directory with an ``__init__.py``. A target is read as a path when
  the part before the last ``:`` contains ``/`` (or the platform separator) or
  ends in ``.py``; write ``./pkgdir:Attr`` for a package directory in the
  current directory. Relative paths are taken from the current directory and
  stored absolute and resolved.
- ``"name"`` (no ``:``): an entry point in group ``gotstate_persist.extensions``;
  its value ``module:attr`` is located as above. Reading entry points reads
  metadata files only.

The answer is a :class:`Location`: what a worker process needs to load
exactly this code, and where the code pin (``_pin``) is rooted. Messages name
the target as written and the modules looked for, never ``sys.path`` entries
or other values that may come from the environment.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import json
import logging
import os
import re
from importlib.machinery import ModuleSpec
from pathlib import Path, PurePosixPath
from typing import Literal

from ..errors import ExtensionInvalid
from ..formats.extension import CodeLocation

__all__ = [
    "ENTRY_POINT_GROUP",
    "MODULE_NAME_PREFIX",
    "Location",
    "installed_distribution",
    "locate",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "gotstate_persist.extensions"
# File and package-directory targets are loaded under this prefix so that a
# file called ``json.py`` never shadows the standard library in the worker.
MODULE_NAME_PREFIX = "gotstate_persist_ext_"
SOURCE_SUFFIX = ".py"
PACKAGE_INIT = "__init__.py"
DIRECT_URL_FILE = "direct_url.json"
_NOT_IDENTIFIER = re.compile(r"\W")

Kind = Literal["module", "file", "package"]


#: A located target is the stored :class:`CodeLocation` (one definition, in
#: the record format): what a worker loads, and where its pin is rooted.
Location = CodeLocation


def locate(target: str) -> Location:
    """Resolve a registration ``target`` to a :class:`Location`, importing nothing.

    Raises :class:`~gotstate_persist.errors.ExtensionInvalid` listing every
    problem found (``problems``) when the target cannot be located.
    """
    if not isinstance(target, str) or not target.strip():
        raise _invalid(
            repr(target),
            "no target form could be understood",
            [
                "the target is empty; give 'module:Class', 'path/to/file.py:Class', "
                "'path/to/pkgdir:Class' or an entry-point name"
            ],
        )
    # Finders cache directory listings; a file written a moment ago must be seen.
    importlib.invalidate_caches()
    source, colon, attr = target.rpartition(":")
    if not colon:
        return _locate_entry_point(target)
    if _looks_like_path(source):
        return _locate_path(source, attr, target)
    understood = f"understood as module {source!r}, attribute {attr!r}"
    return _locate_module(source, attr, target, understood, distribution="")


def installed_distribution(location: Location) -> importlib.metadata.Distribution | None:
    """The installed distribution whose RECORD provides ``location``'s module, if any.

    Only a ``"module"`` location can come from one: the distribution must be
    installed in ``location.root`` (the same ``sys.path`` entry the module was
    found in), must not be an editable install (PEP 610 ``direct_url.json``
    says ``"editable": true``; its RECORD lists only the ``.pth``/finder that
    points at the real source), and its RECORD must list the located file.
    Anything else (a module shadowing an installed one, an editable install, a
    plain directory on ``sys.path``) is pinned from its files on disk instead.
    """
    if location.kind != "module" or not location.distribution:
        return None
    return _listing_distribution(location.distribution, location.root, location.file)


def _listing_distribution(
    name: str, root: str, file: str
) -> importlib.metadata.Distribution | None:
    """The non-editable distribution ``name`` installed in ``root`` whose RECORD lists ``file``."""
    try:
        relative = PurePosixPath(Path(file).relative_to(root).as_posix())
    except ValueError:
        return None
    wanted = _normalize(name)
    for dist in importlib.metadata.distributions(path=[root]):
        if _normalize(dist.name or "") != wanted or _is_editable(dist):
            continue
        if relative in {PurePosixPath(str(listed)) for listed in dist.files or ()}:
            return dist
    return None


def _looks_like_path(source: str) -> bool:
    return "/" in source or os.sep in source or source.endswith(SOURCE_SUFFIX)


def _locate_entry_point(name: str) -> Location:
    understood = f"no ':' in it, so it names an entry point in group {ENTRY_POINT_GROUP!r}"
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP).select(name=name)
    points = list(found)
    if not points:
        raise _invalid(
            name,
            understood,
            [
                f"no installed distribution declares entry point {name!r} in group "
                f"{ENTRY_POINT_GROUP!r}; install the distribution that provides it into this "
                "environment, or name the class directly as 'module:Class' or "
                "'path/to/file.py:Class'"
            ],
        )
    if len(points) > 1:
        owners = sorted(_dist_name(point) or "an unnamed distribution" for point in points)
        raise _invalid(
            name,
            understood,
            [
                f"entry point {name!r} is declared by {len(points)} distributions "
                f"({', '.join(owners)}); uninstall all but one, or name the class directly "
                "as 'module:Class'"
            ],
        )
    point = points[0]
    module, colon, attr = point.value.partition(":")
    attr = attr.split("[", 1)[0].strip()  # drop "[extras]"
    return _locate_module(
        module.strip(),
        attr,
        name,
        f"entry point {name!r} of distribution {_dist_name(point)!r} names {point.value!r}",
        distribution=_dist_name(point),
        attr_missing_hint="" if colon else "the entry point's value has no ':Class' part",
    )


def _locate_module(
    module: str,
    attr: str,
    target: str,
    understood: str,
    *,
    distribution: str,
    attr_missing_hint: str = "",
) -> Location:
    problems: list[str] = []
    parts = module.split(".")
    found = None
    if not module:
        problems.append("the module name before ':' is empty; write 'module:Class'")
    elif not all(part.isidentifier() for part in parts):
        problems.append(f"{module!r} is not a dotted module name (each part an identifier)")
    else:
        found = _find_module(parts, problems)
    problems += _attr_problems(attr, attr_missing_hint)
    if found is not None and not problems:
        path_entry, file = found
        if not distribution:
            distribution = _distribution_listing(parts[0], path_entry, file)
        logger.debug("located extension target %r as module %s", target, module)
        return Location(
            kind="module",
            module=module,
            path_entry=str(path_entry),
            file=str(file),
            attr=attr,
            root=str(path_entry),
            distribution=distribution,
            target=target,
        )
    raise _invalid(target, understood, problems)


def _find_module(parts: list[str], problems: list[str]) -> tuple[Path, Path] | None:
    """(sys.path entry, source file) of the dotted module ``parts``; appends problems."""
    top = parts[0]
    if importlib.machinery.BuiltinImporter.find_spec(top) is not None:
        problems.append(f"{top!r} is a built-in module: it has no source file to pin")
        return None
    if importlib.machinery.FrozenImporter.find_spec(top) is not None:
        problems.append(f"{top!r} is a frozen module: it has no source file to pin")
        return None
    spec = importlib.machinery.PathFinder.find_spec(top)
    if spec is None:
        hint = (
            f"; to load the package directory {top!r} here, write './{top}:...'"
            if Path(top, PACKAGE_INIT).is_file()
            else ""
        )
        problems.append(
            f"no module or package {top!r} on this interpreter's sys.path; install the "
            "extension's distribution into this environment, or name its file as "
            f"'path/to/file.py:Class'{hint}"
        )
        return None
    problem = _source_problem(spec, top)
    if problem:
        problems.append(problem)
        return None
    origin = Path(os.path.abspath(str(spec.origin)))
    entry = origin.parent.parent if spec.submodule_search_locations is not None else origin.parent
    for index in range(1, len(parts)):
        parent, name = ".".join(parts[:index]), ".".join(parts[: index + 1])
        if spec.submodule_search_locations is None:
            problems.append(f"{parent!r} is a module, not a package: it has no submodule {name!r}")
            return None
        search = list(spec.submodule_search_locations)
        child = importlib.machinery.PathFinder.find_spec(name, search)
        if child is None:
            problems.append(f"package {parent!r} has no submodule {parts[index]!r}")
            return None
        problem = _source_problem(child, name)
        if problem:
            problems.append(problem)
            return None
        spec = child
    source = Path(os.path.abspath(str(spec.origin)))
    resolved_entry = Path(os.path.realpath(entry))
    return resolved_entry, resolved_entry / source.relative_to(entry)


def _source_problem(spec: ModuleSpec, name: str) -> str:
    loader = spec.loader
    if spec.origin is None or (loader is None and spec.submodule_search_locations is not None):
        return (
            f"{name!r} is a namespace package (a directory without __init__.py): its code "
            "cannot be pinned; add an __init__.py or name a module inside it"
        )
    if isinstance(loader, importlib.machinery.ExtensionFileLoader):
        return f"{name!r} is a compiled extension module: it has no source file to pin"
    if isinstance(loader, importlib.machinery.SourcelessFileLoader):
        return f"{name!r} exists only as bytecode (.pyc): there is no source file to pin"
    if not isinstance(loader, importlib.machinery.SourceFileLoader):
        return (
            f"{name!r} is not a source file on disk (it is loaded by "
            f"{type(loader).__name__}, e.g. from a zip archive); install it unpacked"
        )
    return ""


def _locate_path(source: str, attr: str, target: str) -> Location:
    resolved = Path(os.path.realpath(Path.cwd() / source))
    problems: list[str] = []
    kind: Kind = "file"
    file = resolved
    if resolved.is_file():
        understood = f"understood as source file {source!r}, attribute {attr!r}"
        if resolved.suffix != SOURCE_SUFFIX:
            problems.append(f"{source!r} is not a Python source file (*.py)")
    elif resolved.is_dir():
        understood = f"understood as package directory {source!r}, attribute {attr!r}"
        kind, file = "package", resolved / PACKAGE_INIT
        if not file.is_file():
            problems.append(
                f"directory {source!r} has no {PACKAGE_INIT}: namespace packages cannot be "
                "pinned; add an __init__.py or name a .py file"
            )
    else:
        understood = f"understood as path {source!r}, attribute {attr!r}"
        problems.append(
            f"{source!r} is neither a regular file nor a directory"
            if resolved.exists()
            else f"no file or directory at {source!r} (relative paths are taken from the "
            "current directory)"
        )
    problems += _attr_problems(attr, "")
    if problems:
        raise _invalid(target, understood, problems)
    name = resolved.stem if kind == "file" else resolved.name
    return Location(
        kind=kind,
        module=MODULE_NAME_PREFIX + _NOT_IDENTIFIER.sub("_", name),
        path_entry="",
        file=str(file),
        attr=attr,
        root=str(resolved.parent),
        distribution="",
        target=target,
    )


def _attr_problems(attr: str, missing_hint: str) -> list[str]:
    if not attr:
        return [missing_hint or "nothing after ':'; name the extension class, e.g. 'module:Class'"]
    if not all(part.isidentifier() for part in attr.split(".")):
        return [
            f"attribute {attr!r} is not a dotted name of identifiers, e.g. 'Class' or 'Outer.Inner'"
        ]
    return []


def _distribution_listing(top: str, path_entry: Path, file: Path) -> str:
    """Name of the distribution installed in ``path_entry`` whose RECORD lists ``file``."""
    candidates = importlib.metadata.packages_distributions().get(top, [])
    for name in dict.fromkeys(candidates):
        if _listing_distribution(name, str(path_entry), str(file)) is not None:
            return name
    return ""


def _is_editable(dist: importlib.metadata.Distribution) -> bool:
    text = dist.read_text(DIRECT_URL_FILE)
    if not text:
        return False
    try:
        info = json.loads(text)
    except ValueError:
        return False
    dir_info = info.get("dir_info") if isinstance(info, dict) else None
    return isinstance(dir_info, dict) and dir_info.get("editable") is True


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_name(point: importlib.metadata.EntryPoint) -> str:
    dist = point.dist
    return dist.name if dist is not None else ""


def _invalid(target: str, understood: str, problems: list[str]) -> ExtensionInvalid:
    listed = "".join(f"\n  - {problem}" for problem in problems)
    return ExtensionInvalid(
        f"cannot locate extension target {target!r} ({understood}):{listed}",
        problems=tuple(problems),
    )
