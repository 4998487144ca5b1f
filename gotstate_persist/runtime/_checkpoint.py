"""Temporary: the attachment's in-memory checkpoint, by full capture (to be replaced)."""

from __future__ import annotations

from typing import Any

from .. import machine as _machine
from ..formats import FormatRegistry

__all__ = ["checkpoint"]

_FORMATS = FormatRegistry()


class _Capture:
    def __init__(self, machine: Any) -> None:
        self._machine = machine
        self._snapshot = _machine.capture(machine, struct_kind=_FORMATS.kind_of, max_depth=64)
        self._closed = False

    def rollback(self) -> None:
        if not self._closed:
            _machine.apply(
                self._machine,
                self._snapshot,
                struct_type=_FORMATS.type_for,
                migrations=_FORMATS.structure_migrations,
            )
        self._closed = True

    def close(self) -> None:
        self._closed = True


def checkpoint(machine: Any) -> _Capture:
    return _Capture(machine)
