"""Process targets for tests/test_quota.py (importable by ``spawn`` children).

Every worker opens its own store from a URL and an exported keyring, as a
separate program would, and never opens it with ``quota=``: the quota the
parent persisted is the one in force.
"""

from __future__ import annotations

import traceback
from contextlib import suppress
from typing import Any

import msgspec

import gotstate_persist as gp


class Note(msgspec.Struct, frozen=True):
    text: str


def formats() -> gp.FormatRegistry:
    registry = gp.FormatRegistry()
    registry.register(Note, kind="note", version=1)
    return registry


def note(length: int, fill: str = "x") -> Note:
    return Note(fill * length)


#: Text lengths the racing writers cycle through (several sizes, so that
#: writes that no longer fit alternate with smaller ones that still do).
RACE_LENGTHS = (40, 700, 150, 1500, 300)


def race_writer(
    url: str,
    keys_text: str,
    namespace: str,
    barrier: Any,
    worker: int,
    attempts: int,
    results: Any,
) -> None:
    """Save ``attempts`` records after the barrier; report what was stored and refused."""
    try:
        keyring = gp.KeyRing.load(keys_text)
        stored: list[tuple[str, int, int]] = []
        refused = 0
        with gp.open_store(url, namespace=namespace, keyring=keyring, formats=formats()) as store:
            store.versions("warm-up")  # connect before the race, not during it
            barrier.wait(timeout=60)
            for attempt in range(attempts):
                key = "shared" if attempt % 2 else f"own-{worker}"
                length = RACE_LENGTHS[(worker + attempt) % len(RACE_LENGTHS)]
                try:
                    ref = store.save(key, note(length, fill=str(worker)))
                except gp.QuotaExceeded as exc:
                    assert type(exc) is gp.QuotaExceeded and exc.limit == "max_bytes", exc
                    refused += 1
                else:
                    stored.append((ref.key, ref.version, ref.size))
        results.put((worker, stored, refused, None))
    except BaseException:
        results.put((worker, [], 0, traceback.format_exc()))
        raise


#: Text length of the records the killed writer saves: big enough that most
#: of its time is spent inside a write (sealing, the transaction, fsync).
KILLED_LENGTH = 150_000


def killed_writer(
    url: str, keys_text: str, namespace: str, about_to_write: Any, warm_up: int
) -> None:
    """Save, delete and (by retention) prune forever, until the parent kills us.

    After ``warm_up`` operations ``about_to_write`` is set right before a save
    starts, so that the parent's SIGKILL lands inside a write.
    """
    keyring = gp.KeyRing.load(keys_text)
    with gp.open_store(url, namespace=namespace, keyring=keyring, formats=formats()) as store:
        operation = 0
        while True:
            operation += 1
            key = f"k{operation % 3}"
            if operation % 7 == 0:
                with suppress(gp.NotFound):
                    store.delete(key)
                continue
            if operation >= warm_up:
                about_to_write.set()
            try:
                store.save(key, note(KILLED_LENGTH + operation % 5))
            except gp.QuotaExceeded:
                with suppress(gp.NotFound):
                    store.delete(key)


def object_writer(url: str, keys_text: str, namespace: str, lengths: list[int]) -> None:
    """Another process writing to an object store without catalog."""
    keyring = gp.KeyRing.load(keys_text)
    with gp.open_store(url, namespace=namespace, keyring=keyring, formats=formats()) as store:
        for index, length in enumerate(lengths):
            store.save(f"child-{index % 2}", note(length))
