"""Typed, validated, versioned configuration stored as sealed records (``store.config``).

A configuration is a registered msgspec schema plus a history of sealed,
versioned records of it; see the README's "Configuration" section.
"""

from __future__ import annotations

__all__: list[str] = []
