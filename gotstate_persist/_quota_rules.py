"""What a quota is and when it refuses a write: the rules, apart from who enforces them.

The value type (:class:`Quota`) and the limit rules are needed by every layer:
backends persist quotas and (on SQL) check them in the write's transaction, the
quota adapter checks them in front of other backends, the CLI shows them. They
live here, below all of those, so that a backend can use them without
importing the adapter that sits above it. This module may import only the
error types, msgspec and the standard library.

Each rule has one home: :func:`check_limits` states when a write crosses a
limit, :func:`versions_to_prune` how many versions retention removes. The SQL
backend repeats the limit rule as a conditional UPDATE (``backends.sql``'s
``_WITHIN_LIMITS``), because there the check must be the write itself;
tests/test_quota_rules.py proves that copy agrees with this one.

System keys (``_names.is_system_key``: the library's own records, such as
extension registrations) are records like any other for ``max_bytes``,
``max_records``, ``max_blob_bytes`` and ``usage().bytes``/``records``, but no
key for the per-key rules: they never count toward ``max_keys`` or
``usage().keys``, ``max_versions_per_key`` never refuses their writes and
retention never prunes them. :func:`per_key_charge` is that rule for a write;
the enforcers pass ``system=`` to the functions here, and leave system keys
out wherever they count keys.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from .errors import InvalidArgument, QuotaExceeded

__all__ = [
    "RETENTIONS",
    "Quota",
    "Retention",
    "UsageCounts",
    "check_limits",
    "check_replace",
    "check_write",
    "per_key_charge",
    "prune_count",
    "quota_exceeded",
    "versions_to_prune",
]

Retention = Literal["reject", "prune-oldest"]
RETENTIONS: tuple[str, ...] = ("reject", "prune-oldest")
#: Limits that bound stored amounts, in the order they are checked and reported.
_AMOUNT_LIMITS = ("max_blob_bytes", "max_bytes", "max_records", "max_keys", "max_versions_per_key")
_MAX_LIMIT = 2**63 - 1


class Quota(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A namespace's budget; every limit is optional (None: unlimited).

    ``max_versions_per_key`` with ``retention="reject"`` refuses a write that
    would keep more versions of a key; with ``"prune-oldest"`` the write
    succeeds and the oldest versions are deleted (in the same transaction on
    SQL). Rates are operations per second over a moving one-second window,
    per process.
    """

    max_bytes: int | None = None
    max_records: int | None = None
    max_keys: int | None = None
    max_blob_bytes: int | None = None
    max_versions_per_key: int | None = None
    retention: Retention = "reject"
    max_writes_per_second: int | None = None
    max_reads_per_second: int | None = None

    def __post_init__(self) -> None:
        for name in (*_AMOUNT_LIMITS, "max_writes_per_second", "max_reads_per_second"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not 1 <= value <= _MAX_LIMIT):
                raise InvalidArgument(
                    f"Quota.{name} must be None or an int from 1 to {_MAX_LIMIT}, got {value!r}"
                )
        if self.retention not in RETENTIONS:
            raise InvalidArgument(
                f"Quota.retention must be one of {', '.join(RETENTIONS)}, got {self.retention!r}"
            )

    @property
    def unlimited(self) -> bool:
        """Whether no limit is set at all (the same as having no quota)."""
        return self == Quota(retention=self.retention)

    def describe(self) -> str:
        """The set limits as ``name=value`` pairs (for messages and the CLI)."""
        parts = [
            f"{name}={value}"
            for name, value in msgspec.structs.asdict(self).items()
            if value is not None and name != "retention"
        ]
        if self.max_versions_per_key is not None:
            parts.append(f"retention={self.retention}")
        return ", ".join(parts) or "no limits"


class UsageCounts(Protocol):
    """What the rules read of a namespace's usage (``backends.base.Usage`` is one)."""

    @property
    def bytes(self) -> int: ...

    @property
    def records(self) -> int: ...

    @property
    def keys(self) -> int: ...


def quota_exceeded(
    limit: str, maximum: int, usage: int, requested: int, *, namespace: str
) -> QuotaExceeded:
    """The error for a write that would take ``limit`` from ``usage`` past ``maximum``."""
    option = "--" + limit.replace("_", "-")
    return QuotaExceeded(
        f"namespace {namespace!r}: the write needs {requested} more of {limit}={maximum} "
        f"({usage} in use); nothing was written. Free space with store.delete(), or raise "
        f"the limit with store.set_quota() or "
        f"'gotstate-persist quota set URL --namespace {namespace} {option} N'",
        limit=limit,
        maximum=maximum,
        usage=usage,
        requested=requested,
    )


def check_limits(
    quota: Quota,
    usage: UsageCounts,
    *,
    namespace: str,
    size: int,
    grow: int,
    more: int,
    new_key: bool,
    key_versions: int,
) -> None:
    """Raise ``QuotaExceeded`` if a change to a namespace would cross a limit.

    The parameters are those of the SQL backend's conditional update: ``size``
    is the largest blob written, ``grow`` the bytes added and ``more`` the
    records added (both net of what retention frees), ``new_key`` whether a key
    that held no version gets one, ``key_versions`` how many versions the
    written key keeps afterwards (0: no version is added).
    """
    # (limit, in use, needed on top). A limit binds only a write that needs more
    # of it, net of what retention frees: after a limit was lowered below usage,
    # a write that prunes as much as it adds, or adds to an existing key, is not
    # refused by that limit. backends.sql._WITHIN_LIMITS states the same rules.
    checks = (
        ("max_blob_bytes", 0, size),
        ("max_bytes", usage.bytes, grow),
        ("max_records", usage.records, more),
        ("max_keys", usage.keys, 1 if new_key else 0),
        ("max_versions_per_key", key_versions - 1, 1),
    )
    for limit, used, requested in checks:
        maximum = getattr(quota, limit)
        if maximum is not None and requested > 0 and used + requested > maximum:
            raise quota_exceeded(limit, maximum, used, requested, namespace=namespace)


def per_key_charge(*, new_key: bool, key_versions: int, system: bool) -> tuple[bool, int]:
    """``(new_key, key_versions)`` as the per-key rules see a write to a key.

    A system key adds no key and no version the per-key rules govern:
    ``(False, 0)``, so ``max_keys`` and ``max_versions_per_key`` never bind it
    and retention prunes none of its versions. Any other key: unchanged.
    """
    return (False, 0) if system else (new_key, key_versions)


def check_write(
    quota: Quota,
    usage: UsageCounts,
    *,
    namespace: str,
    size: int,
    new_key: bool,
    key_versions: int,
    freed_bytes: int = 0,
    pruned: int = 0,
    system: bool = False,
) -> None:
    """Raise ``QuotaExceeded`` if one write of ``size`` bytes would cross a limit.

    ``key_versions`` is how many versions the key holds with the write;
    ``freed_bytes`` and ``pruned`` are what retention removes with it;
    ``system``: the key is a system key (see :func:`per_key_charge`).
    """
    new_key, key_versions = per_key_charge(
        new_key=new_key, key_versions=key_versions - pruned, system=system
    )
    check_limits(
        quota,
        usage,
        namespace=namespace,
        size=size,
        grow=size - freed_bytes,
        more=1 - pruned,
        new_key=new_key,
        key_versions=key_versions,
    )


def check_replace(
    quota: Quota, usage: UsageCounts, *, namespace: str, largest: int, grow: int
) -> None:
    """Raise ``QuotaExceeded`` if rewriting blobs in place would cross a limit.

    ``largest`` is the largest new blob, ``grow`` the batch's size difference;
    a rewrite adds no record, key or version.
    """
    check_limits(
        quota,
        usage,
        namespace=namespace,
        size=largest,
        grow=grow,
        more=0,
        new_key=False,
        key_versions=0,
    )


def versions_to_prune(quota: Quota | None, key_versions: int, *, system: bool = False) -> int:
    """How many of a key's oldest versions retention removes when it would hold ``key_versions``.

    None of a system key's (``system``, see :func:`per_key_charge`).
    """
    if quota is None:
        return 0
    return prune_count(quota.max_versions_per_key, quota.retention, key_versions, system=system)


def prune_count(
    most: int | None, retention: str, key_versions: int, *, system: bool = False
) -> int:
    """:func:`versions_to_prune` from the two settings alone (as a SQL row holds them)."""
    key_versions = per_key_charge(new_key=False, key_versions=key_versions, system=system)[1]
    if most is None or retention != "prune-oldest":
        return 0
    return max(0, key_versions - most)
