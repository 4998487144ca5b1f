"""A key's head: the newest snapshot version and journal sequence, read in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from ._journal import journal_key_or_none

if TYPE_CHECKING:
    from .._pipeline import RecordPipeline

__all__ = ["Head", "journal_seq", "read_head"]


class Head(msgspec.Struct, frozen=True):
    """Where a key stands: newest snapshot version and newest journal sequence (0: none)."""

    snapshot_version: int
    journal_seq: int


def read_head(pipeline: RecordPipeline, key: str, *, journal: bool = True) -> Head:
    """The key's head as stored now (the journal part is 0 when not asked for, or when
    the key is too long to have a journal)."""
    snapshot = pipeline.backend.head(pipeline.namespace, key).newest
    return Head(snapshot, journal_seq(pipeline, key) if journal else 0)


def journal_seq(pipeline: RecordPipeline, key: str) -> int:
    """The newest journal sequence of ``key`` alone (0: none): one read where a save needs
    no more (its own append reads the snapshot head)."""
    jkey = journal_key_or_none(key)
    return pipeline.backend.head(pipeline.namespace, jkey).newest if jkey is not None else 0
