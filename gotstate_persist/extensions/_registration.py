"""``gp.Registration``: what users and tools see of one stored registration revision.

The stored record (:class:`~gotstate_persist.formats.extension.RegistrationRecord`)
cannot hold its own revision: the revision is the store version the record
lands at, fixed by the compare-and-set after the record was encoded. This
view joins the two, so a ``Registration`` always says which revision a
change must name as ``expected_version``.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from ..formats.extension import (
    Category,
    CodeLocation,
    ExtensionStats,
    Isolation,
    RegistrationRecord,
    ResourceLimits,
    Status,
)

__all__ = ["Registration", "registration_of"]


class Registration(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One revision of a registered extension (``revision`` is its store version)."""

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
    revision: int
    changed_at: datetime
    location: CodeLocation
    requires: str = ""
    states: tuple[str, ...] = ()
    stats: ExtensionStats | None = None

    def record(self, **changes: object) -> RegistrationRecord:
        """The stored record of this registration with ``changes`` applied (no revision)."""
        fields = {f: getattr(self, f) for f in RegistrationRecord.__struct_fields__}
        fields.update(changes)
        return RegistrationRecord(**fields)


def registration_of(record: RegistrationRecord, revision: int) -> Registration:
    """The public view of ``record`` stored as ``revision``."""
    fields = {f: getattr(record, f) for f in RegistrationRecord.__struct_fields__}
    return Registration(revision=revision, **fields)
