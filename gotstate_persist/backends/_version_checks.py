"""What a listing of a key directory decides for a plain object store's ``put``.

A plain store has no transaction to check a save in: ``put`` decides from
the names it lists, before creating anything and, under the claim protocol
(``backends.objectstore``), once more after its claim. The checks are pure
functions of those names, kept here so both listings are judged by the same
rules and the same messages.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import VersionConflict
from ._objectnames import KeySummary, StoredVersion, find_version
from .base import KeyHead, kind_mismatch, not_at_expected

__all__ = ["check_claimed", "check_put", "key_head"]


def key_head(summary: KeySummary) -> KeyHead:
    """The key's head as one listing shows it."""
    newest = summary.newest
    if newest is None:
        return KeyHead(last_version=summary.last_version)
    return KeyHead(summary.last_version, newest.version, newest.kind)


def check_put(
    key: str, version: int, kind: str, summary: KeySummary, expected_newest: int | None
) -> None:
    """Step 1: refuse a ``version`` the key already reached, or a mismatched newest or kind."""
    if version <= summary.last_version:
        raise VersionConflict(
            f"version {version} of key {key!r} cannot be created: the key already "
            f"reached version {summary.last_version}; retry the save",
            expected=version - 1,
            actual=key_head(summary).newest,
        )
    _check_newest(key, summary.newest, kind, expected_newest)


def check_claimed(
    key: str,
    version: int,
    kind: str,
    names: Sequence[str],
    after: KeySummary,
    expected_newest: int | None,
) -> None:
    """Step 3: after claiming ``version``, refuse if a delete or another writer got there.

    ``names`` are those listed after the claim, ``after`` their summary.
    """
    if after.last_tombstone >= version:
        raise VersionConflict(
            f"key {key!r} was deleted while version {version} was being saved; retry the save",
            expected=version - 1,
            actual=key_head(after).newest,
        )
    if find_version(names, version) is not None:
        raise VersionConflict(
            f"another writer created version {version} of key {key!r} meanwhile; retry the save",
            expected=version - 1,
            actual=key_head(after).newest,
        )
    _check_newest(key, after.newest, kind, expected_newest)


def _check_newest(
    key: str, newest: StoredVersion | None, kind: str, expected_newest: int | None
) -> None:
    newest_version = 0 if newest is None else newest.version
    if expected_newest is not None and newest_version != expected_newest:
        raise not_at_expected(key, expected_newest, newest_version)
    if newest is not None and newest.kind != kind:
        raise kind_mismatch(key, newest.kind, kind)
