"""Loading an extension's class from a pinned :class:`CodeLocation`.

One loader for both places code runs: the worker child (after it lowered
its limits and re-verified the pinned files) and the host in in-process
isolation. Only the location recorded in an authenticated registration is
loaded, and only in the way the location says: a ``file`` target is executed
from that file alone (its directory is not put on ``sys.path``), a
``package`` target from its ``__init__.py``, a ``module`` target is imported
with exactly its recorded ``sys.path`` entry in front.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

from ..formats.extension import CodeLocation

__all__ = ["load_class"]


def _load_module(location: CodeLocation) -> Any:
    if location.kind == "module":
        if location.path_entry and location.path_entry not in sys.path:
            sys.path.insert(0, location.path_entry)
        return importlib.import_module(location.module)
    name = location.module  # a private name for file and package targets (_target)
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    search = None
    if location.kind == "package":
        search = [os.path.dirname(location.file)]
    spec = importlib.util.spec_from_file_location(
        name, location.file, submodule_search_locations=search
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {location.kind} target")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_class(location: CodeLocation) -> Any:
    """Import the target and return the object its attribute path names."""
    found: Any = _load_module(location)
    for part in location.attr.split("."):
        found = getattr(found, part)
    return found
