"""A persistence extension: a ``scratch://`` store scheme and a ``Receipt`` record format.

``scratch://name`` opens a throwaway store in this process's memory (the
built-in ``memory://`` backend, under a prefix of its own so it never meets
the application's ``memory://`` stores): handy for previews, dry runs and
tests. Like every backend, it sits behind the quota adapter and only ever
sees sealed bytes.

``Receipt`` is a record format with two versions: version 1 had no currency;
the upcaster reads a stored version 1 as version 2 in euros, in memory (reads
never write; ``store.migrate("examples.receipt")`` rewrites them).

A persistence extension runs in-process: what ``backends()`` and
``formats()`` return are objects the host calls, not values, so they cannot
cross to a worker. What it contributes lasts for the life of the process.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gotstate_persist import FormatSpec
from gotstate_persist.backends import Backend, open_backend

SCHEME = "scratch"
RECEIPT_KIND = "examples.receipt"
#: Where scratch stores live inside fsspec's per-process memory filesystem.
MEMORY_ROOT = "memory://gotstate-persist-scratch/"


class ReceiptV1(msgspec.Struct, frozen=True):
    order: str
    total_cents: int


class Receipt(msgspec.Struct, frozen=True):
    order: str
    total_cents: int
    currency: str = "EUR"


def upcast_receipt(old: dict[str, Any]) -> dict[str, Any]:
    """Version-1 data (plain builtins) -> version-2 data: receipts before v2 were in euros."""
    return {**old, "currency": "EUR"}


def open_scratch(url: str, **options: Any) -> Backend:
    """``scratch://name`` -> the memory store ``name`` (options go to the memory backend)."""
    name = url.split("://", 1)[1].strip("/") or "default"
    return open_backend(MEMORY_ROOT + name, **options)


class Scratch:
    name = "scratch"
    version = "1.0.0"
    category = "persistence"

    def backends(self) -> dict[str, Any]:
        return {SCHEME: open_scratch}

    def formats(self) -> list[FormatSpec]:
        return [
            FormatSpec(RECEIPT_KIND, ReceiptV1, version=1),
            FormatSpec(RECEIPT_KIND, Receipt, version=2, upcast=upcast_receipt),
        ]
