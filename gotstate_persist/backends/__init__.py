"""Backends and the URL-scheme registry that picks one for ``open_store``.

The registry is lazy, as fsspec's is: built-in schemes map to a dotted path
that is imported on first use, so importing gotstate_persist never imports a
database driver. Third-party backends register through the
``gotstate_persist.backends`` entry-point group (name = URL scheme), read at
lookup time, or at run time with :func:`register_backend`.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import threading
from collections.abc import Callable, Mapping
from importlib import import_module
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

from .._names import is_system_key
from .._redact import mask_url
from ..errors import InvalidArgument
from .base import Backend, Capabilities, KeyHead, ReadFailure, Usage, VersionInfo

# is_system_key: for a backend that counts usage itself (a system key is no key).
__all__ = [
    "Backend",
    "BackendFactory",
    "Capabilities",
    "KeyHead",
    "ReadFailure",
    "Usage",
    "VersionInfo",
    "is_system_key",
    "known_schemes",
    "open_backend",
    "register_backend",
]

BackendFactory = Callable[..., Backend]
ENTRY_POINT_GROUP = "gotstate_persist.backends"

# scheme -> (dotted path "module:attribute", install hint)
_BUILTIN: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "sqlite": ("gotstate_persist.backends.sql:SQLBackend", "built in"),
        "postgresql": (
            "gotstate_persist.backends.sql:SQLBackend",
            "pip install 'gotstate-persist[postgres]'",
        ),
        "file": ("gotstate_persist.backends.catalog:open_object_store", "built in"),
        "memory": ("gotstate_persist.backends.catalog:open_object_store", "built in"),
        "s3": (
            "gotstate_persist.backends.catalog:open_object_store",
            "pip install 'gotstate-persist[s3]'",
        ),
    }
)
_OBJECT_STORE = "gotstate_persist.backends.catalog:open_object_store"
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")
#: Longer than any usable store URL (a local path is at most PATH_MAX, 4096 bytes,
#: with the store's own names still to go below it; an S3 key at most 1024), and
#: short enough that no message quoting one is swamped by it.
_MAX_URL_CHARS = 4096
_registered: dict[str, BackendFactory] = {}
_registry_lock = threading.Lock()


def register_backend(scheme: str, factory: BackendFactory, *, clobber: bool = False) -> None:
    """Make ``open_store`` use ``factory(url, **options)`` for URLs of ``scheme``.

    Refuses to replace an existing registration unless ``clobber=True``, so two
    plugins cannot silently fight over one scheme; registering the very same
    factory again is a no-op.
    """
    if not isinstance(scheme, str) or not scheme.isascii() or not scheme.replace("+", "").isalnum():
        raise InvalidArgument(f"backend scheme must be ASCII letters/digits, got {scheme!r}")
    if not callable(factory):
        raise InvalidArgument("backend factory must be callable as factory(url, **options)")
    scheme = scheme.lower()
    with _registry_lock:
        if _registered.get(scheme) is factory:
            return  # registering the same factory again replaces nothing
        if scheme in _registered and not clobber:
            raise InvalidArgument(
                f"a backend for {scheme!r} is already registered; pass clobber=True to replace it"
            )
        _registered[scheme] = factory


def known_schemes() -> list[str]:
    """Every scheme that can be opened now (built in, registered, entry points)."""
    names = set(_BUILTIN) | set(_registered)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def _scheme_of(url: str) -> str:
    if not isinstance(url, str) or ("://" not in url and not url.startswith("sqlite:")):
        # never echo it: a URL without '://' may be a password pasted in the wrong place
        raise InvalidArgument(
            f"store URL {mask_url(url)} has no scheme; use e.g. 'sqlite:///path/state.db'. "
            f"Known schemes: {', '.join(known_schemes())}"
        )
    scheme = url.split(":", 1)[0].lower()
    # SQLAlchemy URLs name a driver after '+': postgresql+psycopg://
    return scheme.split("+", 1)[0]


def _resolve(scheme: str) -> BackendFactory:
    with _registry_lock:
        factory = _registered.get(scheme)
    if factory is not None:
        return factory
    if scheme in _BUILTIN:
        target, _hint = _BUILTIN[scheme]
        module_name, attribute = target.split(":")
        loaded: BackendFactory = getattr(import_module(module_name), attribute)
        return loaded
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=scheme):
        plugin: BackendFactory = ep.load()
        return plugin
    if _is_fsspec_protocol(scheme):
        module_name, attribute = _OBJECT_STORE.split(":")
        fallback: BackendFactory = getattr(import_module(module_name), attribute)
        return fallback
    raise InvalidArgument(
        f"no storage backend for URL scheme {scheme!r}. Known schemes: "
        f"{', '.join(known_schemes())}. Install a plugin that provides it (an entry point "
        f"in group {ENTRY_POINT_GROUP!r}) or call gotstate_persist.register_backend()."
    )


def _is_fsspec_protocol(scheme: str) -> bool:
    """Any protocol fsspec knows (gcs, az, sftp, ...) is served by the object store."""
    try:
        from fsspec.registry import known_implementations, registry
    except ImportError:  # pragma: no cover - fsspec is a dependency
        return False
    return scheme in known_implementations or scheme in registry


def open_backend(url: str, **options: Any) -> Backend:
    """Open the backend for ``url`` exactly as ``open_store`` does."""
    if isinstance(url, str) and len(url) > _MAX_URL_CHARS:
        raise InvalidArgument(
            f"the store URL is {len(url)} characters long, more than any store can use "
            f"(at most {_MAX_URL_CHARS}); check where the URL was built"
        )
    if isinstance(url, str) and _CONTROL_CHARACTER.search(url):
        # Never legitimate (URLs percent-encode them), refused by some drivers and
        # silently truncated by others; the URL itself is not echoed.
        raise InvalidArgument(
            "the store URL contains a control character (such as a NUL byte or a newline); "
            "percent-encode it, or check where the URL was built"
        )
    scheme = _scheme_of(url)
    factory = _resolve(scheme)
    try:
        inspect.signature(factory).bind(url, **options)
    except TypeError:
        # name the options, never their values: they may hold credentials
        raise InvalidArgument(
            f"the {scheme!r} backend does not accept the option(s) "
            f"{', '.join(sorted(options)) or '(none)'}; check their spelling and the "
            "backend's documentation"
        ) from None
    except ValueError:  # pragma: no cover - a builtin without a signature
        pass
    backend = factory(url, **options)
    if not isinstance(backend, Backend):
        raise InvalidArgument(
            f"the backend factory for {url.split(':', 1)[0]!r} returned "
            f"{type(backend).__name__}, not a gotstate_persist.backends.Backend"
        )
    if backend.storage_identity is None:
        # The same class opened on the same URL is the same storage. A digest,
        # so that no credential in the URL is kept beside the backend.
        digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()
        backend.storage_identity = (type(backend), digest)
    return backend
