"""The one exception tree of gotstate-persist.

Every failure the library reports is a :class:`PersistError`. Errors from the
libraries underneath (SQLAlchemy, cryptography, msgspec, the file system) are
mapped here at the boundary where they happen and chained with
``raise ... from exc`` so the cause survives while the type is ours::

    PersistError
    ├── IntegrityError          blob failed authentication / was moved / unknown key id
    ├── FormatError             not a valid envelope or record, over a decode limit,
    │                           written by a newer format, or a value that cannot be saved
    ├── StructureMismatch       snapshot restored into a differently built machine
    ├── VersionConflict         expected_version did not match / version already exists
    ├── QuotaExceeded           a write would cross a limit (nothing was written)
    │   └── RateLimited         too many operations per second; retry later
    ├── NotFound                key or version does not exist
    ├── SchemaError
    │   ├── SchemaOutdated      database schema older than this code
    │   └── SchemaTooNew        database schema newer than this code
    ├── BackendError            the storage failed or refused
    ├── InvalidArgument         (also a ValueError) bad key, namespace, URL, keyring...
    │   └── ConfigInvalid       a configuration refused; every problem by path, no values
    └── ExtensionError          an extension could not be registered, activated or called
        ├── ExtensionInvalid        (also an InvalidArgument) every problem in ``problems``
        ├── ExtensionCodeChanged    (also an IntegrityError) files differ from the pin
        ├── ExtensionTimeout        a call ran past its deadline
        ├── ExtensionResourceError  memory, CPU, input/output or file size over its limit
        ├── ExtensionBusy           every slot in use and the queue full
        ├── ExtensionFailed         the extension raised or returned nonsense, or its worker died
        └── ExtensionUnavailable    not active, deactivated, or circuit open

Messages say what happened and what to do. They never contain key material,
plaintext payloads or credentials. Authentication failures are deliberately
opaque (as ``cryptography.fernet.InvalidToken`` is): telling an attacker which
check failed helps only the attacker.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConfigInvalid",
    "ExtensionBusy",
    "ExtensionCodeChanged",
    "ExtensionError",
    "ExtensionFailed",
    "ExtensionInvalid",
    "ExtensionResourceError",
    "ExtensionTimeout",
    "ExtensionUnavailable",
    "FormatError",
    "IntegrityError",
    "InvalidArgument",
    "NotFound",
    "PersistError",
    "QuotaExceeded",
    "RateLimited",
    "ReplayDiverged",
    "SchemaError",
    "SchemaOutdated",
    "SchemaTooNew",
    "StructureMismatch",
    "VersionConflict",
]


class PersistError(Exception):
    """Base class of every error raised by gotstate-persist."""


class IntegrityError(PersistError):
    """A sealed blob failed authentication, was moved, or names an unknown key."""


class FormatError(PersistError):
    """Bytes are not a valid envelope/record, exceed a limit, or cannot be saved."""


class StructureMismatch(PersistError):
    """A snapshot was restored into a machine whose structure differs.

    ``snapshot_fingerprint`` and ``machine_fingerprint`` let the caller register
    a structure migration; ``differences`` lists human-readable differences.
    """

    def __init__(
        self,
        message: str,
        *,
        snapshot_fingerprint: str = "",
        machine_fingerprint: str = "",
        differences: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.snapshot_fingerprint = snapshot_fingerprint
        self.machine_fingerprint = machine_fingerprint
        self.differences = differences


class ReplayDiverged(PersistError):
    """Replaying a key's journal did not take the machine where it went when written.

    The machine's transitions, guards or actions changed since (or the
    journal was written by another machine); the machine is left as it was
    before the recovery. ``seq`` is the first entry that replayed differently.
    """

    def __init__(self, message: str, *, seq: int = 0) -> None:
        super().__init__(message)
        self.seq = seq


class VersionConflict(PersistError):
    """``expected_version`` did not match, or the version already exists."""

    def __init__(self, message: str, *, expected: int | None = None, actual: int | None = None):
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class QuotaExceeded(PersistError):
    """A write would cross a quota limit; nothing was written.

    ``limit`` names the limit (a :class:`~gotstate_persist.Quota` field),
    ``maximum`` is its value, ``usage`` what is in use and ``requested`` what
    the write needed on top.
    """

    def __init__(
        self,
        message: str,
        *,
        limit: str | None = None,
        maximum: int | None = None,
        usage: int | None = None,
        requested: int | None = None,
    ):
        super().__init__(message)
        self.limit = limit
        self.maximum = maximum
        self.usage = usage
        self.requested = requested


class RateLimited(QuotaExceeded):
    """Too many operations in the rate-limit window; ``retry_after`` seconds until one frees."""

    def __init__(
        self,
        message: str,
        *,
        limit: str | None = None,
        maximum: int | None = None,
        usage: int | None = None,
        requested: int | None = None,
        retry_after: float = 0.0,
    ):
        super().__init__(message, limit=limit, maximum=maximum, usage=usage, requested=requested)
        self.retry_after = retry_after


class NotFound(PersistError):
    """The key or version does not exist."""


class SchemaError(PersistError):
    """The SQL schema does not match this version of gotstate-persist."""


class SchemaOutdated(SchemaError):
    """The SQL schema is older than the code; the message names the upgrade command."""


class SchemaTooNew(SchemaError):
    """The SQL schema is newer than the code; upgrade gotstate-persist."""


class BackendError(PersistError):
    """The storage failed or refused the operation; the cause is chained."""


class InvalidArgument(PersistError, ValueError):
    """An argument is outside its allowed form (key, namespace, URL, keyring...)."""


class ConfigInvalid(InvalidArgument):
    """A configuration change refused by its schema, validators or security policy.

    ``problems`` lists every one as ``"$.path: reason"``; no problem ever
    quotes a value (they may be secrets). Nothing was written.
    """

    def __init__(self, message: str, *, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class ExtensionError(PersistError):
    """An extension could not be registered, activated or called."""


class ExtensionInvalid(ExtensionError, InvalidArgument):
    """An extension's target, interface or limits are not acceptable.

    ``problems`` lists every one.
    """

    def __init__(self, message: str, *, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class ExtensionCodeChanged(ExtensionError, IntegrityError):
    """An extension's files differ from the ones pinned at registration."""

    def __init__(
        self,
        message: str,
        *,
        changed: tuple[str, ...] = (),
        added: tuple[str, ...] = (),
        removed: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.changed = changed
        self.added = added
        self.removed = removed


class ExtensionTimeout(ExtensionError):
    """A call to an extension ran past its deadline; the worker was killed and respawns."""


class ExtensionResourceError(ExtensionError):
    """An extension went over a resource limit: memory, CPU, input/output size or file size.

    ``resource`` names the limit (a :class:`~gotstate_persist.ResourceLimits` field).
    """

    def __init__(self, message: str, *, resource: str = "") -> None:
        super().__init__(message)
        self.resource = resource


class ExtensionBusy(ExtensionError):
    """Every slot of the extension is in use and its queue of waiting calls is full."""


class ExtensionFailed(ExtensionError):
    """The extension raised, returned an invalid output, or its worker died.

    The message names the extension and the exception type, never its data.
    ``cause`` is ``"raised"``, ``"crashed"`` (the worker died) or
    ``"invalid_output"``.
    """

    def __init__(self, message: str, *, cause: str = "raised") -> None:
        super().__init__(message)
        self.cause = cause


class ExtensionUnavailable(ExtensionError):
    """The extension is not active: never activated, deactivated, or its circuit is open."""
