"""A persistence extension for the tests: one record format and one backend scheme."""

from __future__ import annotations

from typing import Any

import msgspec

from gotstate_persist import FormatSpec
from gotstate_persist.backends import open_backend


class Note(msgspec.Struct, frozen=True):
    text: str


def _open(url: str, **options: Any) -> Any:
    return open_backend("memory://" + url.split("://", 1)[1], **options)


class Notes:
    name = "notes"
    version = "1.0.0"
    category = "persistence"

    def formats(self) -> list[FormatSpec]:
        return [FormatSpec("sample.note", Note)]

    def backends(self) -> dict[str, Any]:
        return {"samplenotes": _open}


class BadContribution:
    name = "badcontrib"
    version = "1.0.0"
    category = "persistence"

    def backends(self) -> Any:
        return {"Not A Scheme!": _open}
