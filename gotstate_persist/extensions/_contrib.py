"""What an active ``persistence`` extension contributes: backends and record formats.

A persistence extension runs in-process (its backends are objects the host
calls), so its ``backends()`` and ``formats()`` return host objects rather
than values, and cannot cross the wire form. They are checked here instead,
completely, before anything is registered: a scheme name and a callable
factory per backend, a :class:`FormatSpec` per format. A backend registered
this way is opened like any other, so it sits behind the quota adapter and
sees only sealed bytes.

Contributions last for the life of the process: a record format registered
with a store's :class:`~gotstate_persist.FormatRegistry` cannot be taken back
(records may already have been read with it), and a backend scheme stays
registered until the process ends (deactivating only stops the extension's
own calls).

The backend registry is process-wide, so who contributed a scheme is
recorded process-wide too: the same extension with the same pinned code may
contribute its scheme again from any store of the process (a second
namespace, a store closed and opened again), while another extension, or
other code under the same name, is refused the scheme.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from ..backends import register_backend
from ..errors import ExtensionFailed, PersistError
from ..formats import FormatRegistry

__all__ = ["FormatSpec", "contribute"]

_SCHEME = re.compile(r"[a-z][a-z0-9+]{0,31}")
_MAX_CONTRIBUTIONS = 64
# scheme -> (extension name, code_sha256) of the activation that registered it in this process
_scheme_owners: dict[str, tuple[str, str]] = {}
_owners_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class FormatSpec:
    """A record format a persistence extension contributes (as ``FormatRegistry.register``)."""

    kind: str
    type: type[msgspec.Struct]
    version: int = 1
    upcast: Callable[[Any], Any] | None = None


def _invalid(name: str, what: str) -> ExtensionFailed:
    return ExtensionFailed(
        f"persistence extension {name!r} returned {what}; nothing was registered. Fix the "
        "extension",
        cause="invalid_output",
    )


def _checked_backends(name: str, found: object) -> dict[str, Callable[..., Any]]:
    if type(found) is not dict or len(found) > _MAX_CONTRIBUTIONS:
        raise _invalid(
            name,
            f"from backends() something other than a dict of at most {_MAX_CONTRIBUTIONS} schemes",
        )
    for scheme, factory in found.items():
        if type(scheme) is not str or not _SCHEME.fullmatch(scheme):
            raise _invalid(name, "a backend scheme that is not 1-32 of a-z, 0-9, '+'")
        if not callable(factory):
            raise _invalid(name, f"a backend factory for {scheme!r} that is not callable")
    return found


def _checked_formats(name: str, found: object) -> list[FormatSpec]:
    if type(found) is not list or len(found) > _MAX_CONTRIBUTIONS:
        raise _invalid(name, "from formats() something other than a list of FormatSpec")
    if not all(type(spec) is FormatSpec for spec in found):
        raise _invalid(name, "from formats() an item that is not a gotstate_persist.FormatSpec")
    return found


def contribute(
    name: str,
    call: Callable[[str], object],
    interface: tuple[str, ...],
    formats: FormatRegistry,
    *,
    owned_schemes: set[str],
    code_sha256: str = "",
) -> None:
    """Ask the extension for its backends and formats, check them all, then register them.

    ``call(method)`` runs a method of the extension under its guard.
    ``owned_schemes`` holds the schemes this extension registered before in
    this process through the same registry (an activation after a
    deactivation replaces its own, even with upgraded code); a scheme that
    ``name`` with the same ``code_sha256`` registered through any registry
    of the process is replaced too.
    """
    backends = _checked_backends(name, call("backends")) if "backends" in interface else {}
    specs = _checked_formats(name, call("formats")) if "formats" in interface else []
    try:
        for spec in specs:
            formats.register(spec.type, kind=spec.kind, version=spec.version, upcast=spec.upcast)
        for scheme, factory in backends.items():
            owner = (name, code_sha256)
            with _owners_lock:
                ours = scheme in owned_schemes or _scheme_owners.get(scheme) == owner
                register_backend(scheme, factory, clobber=ours)
                _scheme_owners[scheme] = owner
            owned_schemes.add(scheme)
    except PersistError as exc:
        raise ExtensionFailed(
            f"persistence extension {name!r} contributed something the host refused "
            f"({type(exc).__name__}: {exc})",
            cause="invalid_output",
        ) from None
