"""What users get back for a stored version: :class:`SnapshotRef`.

Its own module so that every service that hands out references (``Store``,
``AsyncStore``, the CLI) builds them the one way, from a backend's
``VersionInfo``, without importing the store.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from ._names import DEFAULT_NAMESPACE
from .backends import VersionInfo

__all__ = ["SnapshotRef", "snapshot_ref"]


class SnapshotRef(msgspec.Struct, frozen=True):
    """Where a saved record lives, and what it is.

    ``version`` starts at 1 and grows by one per save; ``size`` is the stored
    (sealed) size in bytes; ``kind``/``format_version`` name the record format.
    """

    key: str
    version: int
    size: int
    created_at: datetime
    kind: str
    format_version: int
    namespace: str = DEFAULT_NAMESPACE


def snapshot_ref(info: VersionInfo, namespace: str) -> SnapshotRef:
    """The public description of a stored version (what tools print and users get)."""
    return SnapshotRef(
        key=info.key,
        version=info.version,
        size=info.size,
        created_at=info.created_at,
        kind=info.kind,
        format_version=info.format_version,
        namespace=namespace,
    )
