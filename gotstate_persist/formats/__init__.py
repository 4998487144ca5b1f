"""Record formats: the registry and the built-in machine snapshot format."""

from __future__ import annotations

from ._registry import FormatRegistry
from .machine import (
    MACHINE_FORMAT_VERSION,
    MACHINE_KIND,
    MachineSnapshot,
    Structure,
    SubmachineSnapshot,
)

__all__ = [
    "MACHINE_FORMAT_VERSION",
    "MACHINE_KIND",
    "FormatRegistry",
    "MachineSnapshot",
    "Structure",
    "SubmachineSnapshot",
]
