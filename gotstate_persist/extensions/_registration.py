"""``gp.Registration``: what users and tools see of one stored registration revision.

The stored record (:class:`~gotstate_persist.formats.extension.RegistrationRecord`)
cannot hold its own revision: the revision is the store version the record
lands at, fixed by the compare-and-set after the record was encoded. This
view joins the two, so a ``Registration`` always says which revision a
change must name as ``expected_version``.
"""

from __future__ import annotations

from ..formats.extension import (
    RegistrationRecord,
)

__all__ = ["Registration", "registration_of"]


class Registration(RegistrationRecord, frozen=True, forbid_unknown_fields=True):
    """One revision of a registered extension: the stored record and its ``revision``.

    ``revision`` is the store version holding it (what a change passes as
    ``expected_version``). A subclass rather than a copy of the fields, so
    the view can never drift from the stored format.
    """

    revision: int = 0

    def record(self, **changes: object) -> RegistrationRecord:
        """The stored record of this registration with ``changes`` applied (no revision)."""
        fields = {f: getattr(self, f) for f in RegistrationRecord.__struct_fields__}
        fields.update(changes)
        return RegistrationRecord(**fields)


def registration_of(record: RegistrationRecord, revision: int) -> Registration:
    """The public view of ``record`` stored as ``revision``."""
    fields = {f: getattr(record, f) for f in RegistrationRecord.__struct_fields__}
    return Registration(revision=revision, **fields)
