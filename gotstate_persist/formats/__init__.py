"""Record formats: the registry, the built-in machine snapshot format, structure migrations."""

from __future__ import annotations

from ._registry import FormatRegistry
from .machine import (
    MACHINE_FORMAT_VERSION,
    MACHINE_KIND,
    MachineSnapshot,
    Structure,
    SubmachineSnapshot,
)
from .structure import StructureMigration, StructureMigrations

__all__ = [
    "MACHINE_FORMAT_VERSION",
    "MACHINE_KIND",
    "FormatRegistry",
    "MachineSnapshot",
    "Structure",
    "StructureMigration",
    "StructureMigrations",
    "SubmachineSnapshot",
]
