"""Record formats and process targets for tests/test_migrate.py (importable by ``spawn`` children).

``order`` has two format versions (1 -> 2 by :func:`to_v2`); ``note`` is
another kind that no migration of ``order`` may touch. Every stored value is
a pure function of its key and version, so any process can say what a record
must hold without remembering what was written.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

import gotstate_persist as gp


class OrderV1(msgspec.Struct, frozen=True):
    id: str
    cents: int
    lines: list[str]


class OrderV2(msgspec.Struct, frozen=True):
    id: str
    cents: int
    items: dict[str, int]
    currency: str


class Note(msgspec.Struct, frozen=True):
    text: str


def to_v2(data: dict[str, Any]) -> dict[str, Any]:
    items: dict[str, int] = {}
    for sku in data["lines"]:
        items[sku] = items.get(sku, 0) + 1
    return {"id": data["id"], "cents": data["cents"], "items": items, "currency": "EUR"}


def formats(newest: int = 2) -> gp.FormatRegistry:
    registry = gp.FormatRegistry()
    registry.register(OrderV1, kind="order", version=1)
    if newest >= 2:
        registry.register(OrderV2, kind="order", version=2, upcast=to_v2)
    registry.register(Note, kind="note", version=1)
    return registry


def order_v1(key: str, version: int) -> OrderV1:
    """The version-1 record stored as ``version`` of ``key``."""
    return OrderV1(f"{key}/{version}", version * 100 + len(key), ["a", "b", "a"][: version % 3 + 1])


def order_v2(key: str, version: int) -> OrderV2:
    """What ``order_v1(key, version)`` reads as at version 2."""
    return msgspec.convert(to_v2(msgspec.to_builtins(order_v1(key, version))), OrderV2)


def note(key: str, version: int) -> Note:
    return Note(f"note {key}/{version}")


#: The killed-migration data set: key k0000 .. k0419, five versions each;
#: every 21st key holds notes (100 records), the others orders (2,000 records).
KILL_KEYS = [f"k{i:04d}" for i in range(420)]
KILL_VERSIONS = 5


def kill_kind(key: str) -> str:
    return "note" if int(key[1:]) % 21 == 0 else "order"


def seed_kill_data(store: gp.Store, keys: list[str]) -> None:
    for key in keys:
        for version in range(1, KILL_VERSIONS + 1):
            record = note(key, version) if kill_kind(key) == "note" else order_v1(key, version)
            ref = store.save(key, record)
            assert ref.version == version, ref


def migrate_until_killed(
    url: str,
    keys_text: str,
    namespace: str,
    batch_size: int,
    threshold: int,
    reached: Any,
    finished: Any,
) -> None:
    """Migrate ``order``; set ``reached`` once progress reports ``threshold`` records.

    If the run ends before the parent's SIGKILL, ``finished`` is set and the
    process waits to be killed, so the parent can tell the kill came too late.
    """

    def progress(done: int, total: int) -> None:
        if done >= threshold:
            reached.set()

    keyring = gp.KeyRing.load(keys_text)
    with gp.open_store(url, namespace=namespace, keyring=keyring, formats=formats()) as store:
        store.migrate("order", batch_size=batch_size, progress=progress)
    finished.set()
    reached.set()
    time.sleep(600)
