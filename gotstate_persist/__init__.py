"""gotstate-persist: safe snapshot, restore and pluggable persistence for gotstate.

Nothing is ever unpickled: records are msgspec Structs, every stored blob is
sealed (encrypted or signed) and bound to its namespace, key and version, and
every decode is bounded. Start with :func:`open_store`.
"""

from __future__ import annotations

from . import rules as rules  # built-in validators: a module, not a name in __all__
from ._async_store import AsyncAttached, AsyncStore, open_async_store
from ._metrics import Latency, StoreStats
from ._migrate import MigrationFailure, MigrationReport
from ._version import VERSION as __version__
from .backends import register_backend
from .backends.base import Usage
from .codec import Limits
from .config import (
    ConfigChange,
    ConfigField,
    ConfigRef,
    ConfigStore,
    ConfigTransaction,
    EnvProvider,
    ExtensionProvider,
    FileProvider,
    LiveConfig,
    Secret,
    StoreProvider,
)
from .errors import (
    BackendError,
    ConfigInvalid,
    ExtensionBusy,
    ExtensionCodeChanged,
    ExtensionError,
    ExtensionFailed,
    ExtensionInvalid,
    ExtensionResourceError,
    ExtensionTimeout,
    ExtensionUnavailable,
    FormatError,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PersistError,
    QuotaExceeded,
    RateLimited,
    ReplayDiverged,
    SchemaError,
    SchemaOutdated,
    SchemaTooNew,
    StructureMismatch,
    VersionConflict,
)
from .extensions import (
    ActiveExtension,
    BoundMachine,
    EventView,
    ExtensionRegistry,
    ExtensionStats,
    FormatSpec,
    Registration,
    ResourceLimits,
    StateView,
    TransitionView,
)
from .formats import FormatRegistry, MachineSnapshot
from .machine import fingerprint
from .quota import Quota
from .runtime import Attached, Head, JournalEntry
from .sealing import KeyRing
from .store import SnapshotRef, Store, open_store

__all__ = [
    "ActiveExtension",
    "AsyncAttached",
    "AsyncStore",
    "Attached",
    "BackendError",
    "BoundMachine",
    "ConfigChange",
    "ConfigField",
    "ConfigInvalid",
    "ConfigRef",
    "ConfigStore",
    "ConfigTransaction",
    "EnvProvider",
    "EventView",
    "ExtensionBusy",
    "ExtensionCodeChanged",
    "ExtensionError",
    "ExtensionFailed",
    "ExtensionInvalid",
    "ExtensionProvider",
    "ExtensionRegistry",
    "ExtensionResourceError",
    "ExtensionStats",
    "ExtensionTimeout",
    "ExtensionUnavailable",
    "FileProvider",
    "FormatError",
    "FormatRegistry",
    "FormatSpec",
    "Head",
    "IntegrityError",
    "InvalidArgument",
    "JournalEntry",
    "KeyRing",
    "Latency",
    "Limits",
    "LiveConfig",
    "MachineSnapshot",
    "MigrationFailure",
    "MigrationReport",
    "NotFound",
    "PersistError",
    "Quota",
    "QuotaExceeded",
    "RateLimited",
    "Registration",
    "ReplayDiverged",
    "ResourceLimits",
    "SchemaError",
    "SchemaOutdated",
    "SchemaTooNew",
    "Secret",
    "SnapshotRef",
    "StateView",
    "Store",
    "StoreProvider",
    "StoreStats",
    "StructureMismatch",
    "TransitionView",
    "Usage",
    "VersionConflict",
    "__version__",
    "fingerprint",
    "open_async_store",
    "open_store",
    "register_backend",
]
