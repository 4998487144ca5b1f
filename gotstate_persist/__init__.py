"""gotstate-persist: safe snapshot, restore and pluggable persistence for gotstate.

Nothing is ever unpickled: records are msgspec Structs, every stored blob is
sealed (encrypted or signed) and bound to its namespace, key and version, and
every decode is bounded. Start with :func:`open_store`.
"""

from __future__ import annotations

from ._migrate import MigrationFailure, MigrationReport
from .backends import register_backend
from .backends.base import Usage
from .codec import Limits
from .errors import (
    BackendError,
    FormatError,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PersistError,
    QuotaExceeded,
    RateLimited,
    SchemaError,
    SchemaOutdated,
    SchemaTooNew,
    StructureMismatch,
    VersionConflict,
)
from .formats import FormatRegistry, MachineSnapshot
from .machine import fingerprint
from .quota import Quota
from .sealing import KeyRing
from .store import SnapshotRef, Store, open_store

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "FormatError",
    "FormatRegistry",
    "IntegrityError",
    "InvalidArgument",
    "KeyRing",
    "Limits",
    "MachineSnapshot",
    "MigrationFailure",
    "MigrationReport",
    "NotFound",
    "PersistError",
    "Quota",
    "QuotaExceeded",
    "RateLimited",
    "SchemaError",
    "SchemaOutdated",
    "SchemaTooNew",
    "SnapshotRef",
    "Store",
    "StructureMismatch",
    "Usage",
    "VersionConflict",
    "__version__",
    "fingerprint",
    "open_store",
    "register_backend",
]
