"""An attached machine's journal: where it lives, how entries are built and read.

The journal of user key ``K`` is the system key ``system_key("journal", K)``:
invisible to ``store.keys()`` listings of system keys, yet counted in the
namespace's bytes and records, and never in its keys, versions per key or
retention (the one system-key rule of the quota layer). Each entry is one
sealed version, so an entry is bound to its key and sequence number like
any record, and a moved or replayed entry fails authentication.

Entries are validated before the machine sees the event: a value the tagged
form cannot carry exactly (an object, a subclass, a 65-level nesting) is
refused while nothing has changed yet.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from .._names import MAX_NAME_BYTES, check_name, is_system_key, system_area_prefix, system_key
from ..errors import FormatError, InvalidArgument
from ..extensions._views import EventView
from ..formats._values import StructDecoder, UnsupportedValue, decode_tagged, encode_value
from ..formats.journal import JOURNAL_KIND, JournalRecord

if TYPE_CHECKING:
    from .._pipeline import RecordPipeline
    from ..backends.base import Backend

__all__ = [
    "JOURNAL_AREA",
    "JournalEntry",
    "entry_from_record",
    "journal_key",
    "journal_key_or_none",
    "journal_prefix",
    "read_journal",
    "tagged_mapping",
    "user_keys",
]

#: The system-key area holding journals.
JOURNAL_AREA = "journal"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class JournalEntry(msgspec.Struct, frozen=True):
    """One accepted event of an attached machine, as ``store.journal()`` returns it.

    ``seq`` never repeats for a key; ``source``/``target`` name the innermost
    active state before and after the event; ``meta`` is what the caller
    passed to ``process_event(meta=...)``; ``snapshot_version`` is the newest
    snapshot of the key when the event was committed; ``behaviors`` the state
    behaviors (extensions) bound when it ran, which a replay must run too.
    """

    seq: int
    event: EventView
    source: str | None
    target: str | None
    meta: dict[str, Any]
    at: datetime
    snapshot_version: int
    behaviors: tuple[str, ...] = ()


def user_keys(backend: Backend, namespace: str, prefix: str = "") -> list[str]:
    """The user keys of ``namespace`` with a snapshot or journal entries, sorted.

    A key exists when it has either (runtime.md), so a key whose snapshot
    write failed after its first journal entry is listed too.
    """
    found = {key for key in backend.keys(namespace, prefix) if not is_system_key(key)}
    journals = journal_prefix()
    found.update(key[len(journals) :] for key in backend.keys(namespace, journals + prefix))
    return sorted(found)


def journal_prefix() -> str:
    """The key prefix every journal's system key starts with."""
    return system_area_prefix(JOURNAL_AREA)


def journal_key(key: str) -> str:
    """The system key of ``key``'s journal; ``InvalidArgument`` if ``key`` is too long for one."""
    check_name(key, "key")
    return system_key(JOURNAL_AREA, key)


def journal_key_or_none(key: str) -> str | None:
    """The system key of ``key``'s journal, or None if ``key`` is too long to have one."""
    check_name(key, "key")
    if len((journal_prefix() + key).encode("utf-8")) > MAX_NAME_BYTES:
        return None
    return system_key(JOURNAL_AREA, key)


def tagged_mapping(
    value: object, what: str, max_depth: int, struct_kind: Callable[[msgspec.Struct], Any]
) -> object:
    """``value`` (a dict with str keys) in the tagged form, or ``InvalidArgument``."""
    if type(value) is not dict:
        raise InvalidArgument(f"{what} must be a dict (got {type(value).__name__})")
    for name in value:
        if type(name) is not str:
            raise InvalidArgument(f"{what} keys must be str")
    try:
        return encode_value(value, max_depth, struct_kind)
    except UnsupportedValue as exc:
        raise InvalidArgument(f"{what} cannot be journaled: {exc}") from None
    except RecursionError:
        raise InvalidArgument(f"{what} is nested too deeply to be journaled") from None


def _mapping(tagged: object, what: str, structs: StructDecoder) -> dict[str, Any]:
    try:
        value = decode_tagged(tagged, structs)
    except UnsupportedValue as exc:
        raise FormatError(f"journal entry {what}: {exc}") from None
    if type(value) is not dict:
        raise FormatError(f"journal entry {what} is not a map")
    return value


def entry_from_record(seq: int, record: JournalRecord, structs: StructDecoder) -> JournalEntry:
    """The public form of a stored entry (tagged values decoded)."""
    event = EventView(record.event, record.priority, _mapping(record.metadata, "metadata", structs))
    return JournalEntry(
        seq=seq,
        event=event,
        source=record.source,
        target=record.target,
        meta=_mapping(record.meta, "meta", structs),
        at=_EPOCH + timedelta(microseconds=record.at_us),
        snapshot_version=record.snapshot_version,
        behaviors=record.behaviors,
    )


def read_journal(
    pipeline: RecordPipeline,
    key: str,
    *,
    since: int = 0,
    until: datetime | None = None,
    structs: StructDecoder | None = None,
) -> list[JournalEntry]:
    """Entries of ``key`` with ``seq > since`` (and ``at <= until``), oldest first.

    Each entry is fetched, authenticated and decoded like any record; a
    damaged one raises (``IntegrityError``/``FormatError``) rather than
    being skipped, since a gap would replay a different history. ``structs``
    rebuilds embedded Structs (default: the store's formats, upcasting).
    """
    jkey = journal_key_or_none(key)
    if jkey is None:
        return []
    if structs is None:
        structs = pipeline.formats.decode_struct
    found: list[JournalEntry] = []
    for info in pipeline.backend.versions(pipeline.namespace, jkey):
        if info.version <= since:
            continue
        _info, record = pipeline.load(jkey, info.version)
        if not isinstance(record, JournalRecord):
            raise FormatError(
                f"the journal of key {key!r} holds a {_info.kind!r} record at sequence "
                f"{info.version}, not a {JOURNAL_KIND!r} entry; run `gotstate-persist verify`"
            )
        entry = entry_from_record(info.version, record, structs)
        if until is not None and entry.at > until:
            break
        found.append(entry)
    return found
