"""The inspector's backend: the store's, with every write refused before it reaches storage.

The inspector only reads, but it reads through services (the configuration
log, the extension registry) that may write on their own to finish
someone else's interrupted work. A page must never do that, so every
method that would change storage raises :class:`BackendError` here, and
the reads go to the wrapped backend unchanged. An adapter, not a subclass
of any one backend: it wraps SQL, object stores and plugins alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..backends import Backend, VersionInfo
from ..backends.base import KeyHead, NewVersion, Replacement, Usage
from ..errors import BackendError
from ..quota import Quota

__all__ = ["ReadOnlyBackend"]

_REFUSED = "the inspector is read-only: it never writes to the store"


class ReadOnlyBackend(Backend):
    """Reads pass through to ``inner``; ``put``, ``delete`` and every other write raise."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.storage_identity = ("read-only", inner.storage_identity)

    def __repr__(self) -> str:
        return f"ReadOnlyBackend({self.inner!r})"

    def head(self, namespace: str, key: str) -> KeyHead:
        return self.inner.head(namespace, key)

    def get(
        self, namespace: str, key: str, version: int | None = None
    ) -> tuple[VersionInfo, bytes]:
        return self.inner.get(namespace, key, version)

    def versions(self, namespace: str, key: str) -> list[VersionInfo]:
        return self.inner.versions(namespace, key)

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        return self.inner.keys(namespace, prefix)

    def namespaces(self) -> list[str]:
        return self.inner.namespaces()

    def usage(self, namespace: str) -> Usage:
        return self.inner.usage(namespace)

    def load_quota(self, namespace: str) -> Quota | None:
        return self.inner.load_quota(namespace)

    def close(self) -> None:
        self.inner.close()

    # Writes: refused.

    def put(
        self,
        namespace: str,
        key: str,
        version: int,
        blob: bytes,
        *,
        kind: str,
        format_version: int,
        created_at_us: int,
        expected_newest: int | None = None,
    ) -> VersionInfo:
        raise BackendError(_REFUSED)

    def put_many(self, namespace: str, items: Sequence[NewVersion]) -> list[VersionInfo]:
        raise BackendError(_REFUSED)

    def delete(self, namespace: str, key: str, versions: Sequence[int] | None = None) -> int:
        raise BackendError(_REFUSED)

    def store_quota(self, namespace: str, quota: Quota | None, *, replace: bool) -> Quota | None:
        raise BackendError(_REFUSED)

    def replace(self, namespace: str, replacements: Sequence[Replacement]) -> list[bool]:
        raise BackendError(_REFUSED)

    def recount(self, namespace: str) -> Usage:
        raise BackendError(_REFUSED)

    def sweep(self, namespace: str) -> int:
        raise BackendError(_REFUSED)
