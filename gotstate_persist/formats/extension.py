"""The built-in record format of an extension registration (kind ``gotstate.extension``).

A registration is an ordinary sealed, versioned record of its namespace, so
everything the store already guarantees (authentication, compare-and-set,
history, upcasting, every backend, quotas) holds for it without a second
storage path. These Structs are a stored format: a new field or meaning is a
new format version with an upcaster, never an edit of version 1.

:class:`ResourceLimits` and :class:`ExtensionStats` live here rather than
with the registry because they are stored inside the record; the registry
layer above builds its public :class:`Registration` view from
:class:`RegistrationRecord` and the store version that holds it.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Literal

import msgspec

from ..errors import InvalidArgument

__all__ = [
    "CATEGORIES",
    "EXTENSION_FORMAT_VERSION",
    "EXTENSION_KIND",
    "ISOLATIONS",
    "STATUSES",
    "Category",
    "CodeLocation",
    "ExtensionStats",
    "Isolation",
    "RegistrationRecord",
    "RegistrationRecordV1",
    "ResourceLimits",
    "Status",
    "limit_problems",
    "upcast_registration_v1",
]

EXTENSION_KIND = "gotstate.extension"
#: The newest format version of a registration (version 1 had no settings fields).
EXTENSION_FORMAT_VERSION = 2

Category = Literal["event_processing", "state_behavior", "persistence", "configuration"]
Isolation = Literal["worker", "in-process"]
Status = Literal["registered", "active", "inactive", "failed", "unregistered"]
CATEGORIES: tuple[Category, ...] = (
    "event_processing",
    "state_behavior",
    "persistence",
    "configuration",
)
ISOLATIONS: tuple[Isolation, ...] = ("worker", "in-process")
STATUSES: tuple[Status, ...] = ("registered", "active", "inactive", "failed", "unregistered")

_GIB = 1 << 30
_MIB = 1 << 20
# Integer fields that must be positive when set, and the float ones.
_POSITIVE_INTS = (
    "memory_bytes",
    "max_input_bytes",
    "max_output_bytes",
    "max_events",
    "max_concurrency",
    "max_failures",
    "file_size_bytes",
    "open_files",
    "burst",
)
_POSITIVE_FLOATS = ("timeout_s", "start_timeout_s", "cpu_s", "rate_per_s")
#: Bounds that keep a limit meaningful (a queue of 10**9 waiting calls is a typo).
_MAX_QUEUE = 1_000_000
_MAX_CONCURRENCY = 256


class ResourceLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one extension may use; persisted with its registration.

    Every field is optional. ``memory_bytes`` (address space, ``RLIMIT_AS``),
    ``cpu_s``, ``file_size_bytes`` and ``open_files`` hold in worker isolation
    only: an in-process extension shares the host's process and can be bounded
    in time (the caller stops waiting) but not in memory or CPU. Libraries of
    the numpy class reserve a lot of address space at import: give them
    ``memory_bytes`` of at least 1 GiB.
    """

    timeout_s: float = 10.0
    start_timeout_s: float = 30.0
    cpu_s: float | None = None
    memory_bytes: int | None = _GIB
    max_input_bytes: int = 16 * _MIB
    max_output_bytes: int = 16 * _MIB
    max_events: int = 64
    max_concurrency: int = 1
    max_queue: int = 64
    rate_per_s: float | None = None
    burst: int | None = None
    max_failures: int = 5
    file_size_bytes: int | None = 64 * _MIB
    open_files: int | None = 64

    def __post_init__(self) -> None:
        problems = limit_problems(self)
        if problems:
            raise InvalidArgument("invalid ResourceLimits: " + "; ".join(problems))


def limit_problems(limits: ResourceLimits) -> list[str]:
    """Every reason ``limits`` is not usable (empty when it is)."""
    problems: list[str] = []
    for name in _POSITIVE_INTS:
        value = getattr(limits, name)
        if value is not None and (type(value) is not int or value < 1):
            problems.append(f"{name} must be a positive int or None, got {value!r}")
    for name in _POSITIVE_FLOATS:
        value = getattr(limits, name)
        if value is None:
            continue
        if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
            problems.append(f"{name} must be a positive finite number or None, got {value!r}")
    if type(limits.max_queue) is not int or not 0 <= limits.max_queue <= _MAX_QUEUE:
        problems.append(f"max_queue must be an int from 0 to {_MAX_QUEUE}")
    if type(limits.max_concurrency) is int and limits.max_concurrency > _MAX_CONCURRENCY:
        problems.append(f"max_concurrency must be at most {_MAX_CONCURRENCY}")
    if limits.burst is not None and limits.rate_per_s is None:
        problems.append("burst needs rate_per_s")
    return problems


class ExtensionStats(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Counters of one active extension in one process, and its latency percentiles.

    ``rejected`` counts refusals by cause (``rate``, ``size``, ``concurrency``,
    ``invalid_output``); only invalid outputs are also failures.
    """

    calls: int = 0
    ok: int = 0
    failures: int = 0
    timeouts: int = 0
    crashes: int = 0
    restarts: int = 0
    rejected: dict[str, int] = msgspec.field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_rss_bytes: int | None = None
    stuck: int = 0


class CodeLocation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where an extension's code is, exactly enough for a worker to load it.

    ``kind`` is ``module`` (import ``module`` with ``path_entry`` prepended to
    ``sys.path``), ``file`` (load ``file`` alone) or ``package`` (load the
    package whose ``__init__.py`` is ``file``). Pinned file paths are relative
    to ``root``.
    """

    kind: Literal["module", "file", "package"]
    module: str
    path_entry: str
    file: str
    attr: str
    root: str
    distribution: str
    target: str


class RegistrationRecordV1(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Version 1 of the stored registration (the store version is its revision). Frozen."""

    name: str
    category: Category
    version: str
    target: str
    isolation: Isolation
    limits: ResourceLimits
    code_sha256: str
    files: dict[str, str]
    interface: tuple[str, ...]
    status: Status
    reason: str
    changed_at: datetime
    location: CodeLocation
    requires: str = ""
    states: tuple[str, ...] = ()
    stats: ExtensionStats | None = None


class RegistrationRecord(RegistrationRecordV1, frozen=True, forbid_unknown_fields=True):
    """Version 2 of the stored registration: version 1 plus the extension's settings.

    ``has_settings`` says the class declares a ``Settings`` Struct;
    ``settings_fields`` names its fields and ``secret_fields`` those typed
    ``gp.Secret`` (both as a throwaway worker inspected them at registration,
    so the host never imports the class to know them). ``secrets`` names the
    secret fields this registration was granted: the only ones the extension
    receives in clear.
    """

    has_settings: bool = False
    settings_fields: tuple[str, ...] = ()
    secret_fields: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()


def upcast_registration_v1(data: dict[str, object]) -> dict[str, object]:
    """Version 1 data as version 2: a registration from before settings has none."""
    return {
        **data,
        "has_settings": False,
        "settings_fields": [],
        "secret_fields": [],
        "secrets": [],
    }
