"""How the looking-back commands lay out a key's history: log rows, journal entries, diffs.

Kept apart from the commands (``_history``) so that each thing is printed one
way in every command that shows it: a moment is ISO 8601 in UTC to the
microsecond with a ``Z`` (the form ``show --at`` takes back), a journal
entry's event metadata and caller ``meta`` are user data printed as ``show``
prints state data (typed JSON, ``_typedjson``), and every name read from a store
passes through :func:`~gotstate_persist._names.printable` before a table
sees it. JSON documents are escaped when they are written.

The diff of two machine snapshots is computed here too: what a person asks
of it is which state the machine moved to and which data changed, so it
walks the snapshot (current state, history, each state's data key by key,
submachines) rather than comparing documents as text. Values are compared
exactly (a ``Decimal('1.10')`` is not ``Decimal('1.1')``, dicts regardless
of key order) and reported as ``show`` prints them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import msgspec

from .._names import printable
from .._typedjson import typed_json
from ..formats import MachineSnapshot, SubmachineSnapshot
from ..formats._registry import FormatRegistry
from ..formats.machine import MACHINE_KIND
from ..runtime import JournalEntry
from ..store import SnapshotRef
from ._configview import shown
from ._quota import human_size
from ._recordview import shown_data, state_data

__all__ = [
    "ABSENT",
    "ARROW",
    "Change",
    "change_json",
    "change_row",
    "entry_json",
    "journal_row",
    "log_items",
    "log_json",
    "log_row",
    "moment_text",
    "snapshot_changes",
]

#: Between an entry's source and target state.
ARROW = "→"
#: A cell with nothing to show (no actor, no sequence, a side of a diff that lacks the path).
ABSENT = "-"
#: What a journal entry's ``meta`` names the caller by (shown when it is a str).
ACTOR_FIELD = "actor"

LogItem = SnapshotRef | JournalEntry
ChangeKind = Literal["added", "removed", "changed"]


def moment_text(moment: datetime) -> str:
    """``moment`` in UTC, ISO 8601 to the microsecond, ending in ``Z``."""
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.removesuffix("+00:00") + "Z"


def _state(name: str | None) -> str:
    return "(none)" if name is None else printable(name)


def _actor(entry: JournalEntry) -> str | None:
    actor = entry.meta.get(ACTOR_FIELD)
    return actor if isinstance(actor, str) else None


# The log: snapshots and journal entries, merged.


def _log_order(item: LogItem) -> tuple[datetime, int, int, int]:
    # By time; at the same microsecond, causally: an entry records the newest
    # snapshot there was when it was appended, so snapshot v comes after every
    # entry that names an older one and before every entry that names v or newer.
    if isinstance(item, JournalEntry):
        return (item.at, item.snapshot_version, 1, item.seq)
    return (item.created_at, item.version, 0, 0)


def log_items(snapshots: Iterable[SnapshotRef], entries: Iterable[JournalEntry]) -> list[LogItem]:
    """Snapshots and journal entries of one key, oldest first."""
    return sorted([*snapshots, *entries], key=_log_order)


def _record_name(ref: SnapshotRef) -> str:
    return f"{'snapshot' if ref.kind == MACHINE_KIND else 'record'} v{ref.version}"


def log_row(item: LogItem) -> list[str]:
    """``TIME (UTC), SEQ, WHAT, DETAIL, ACTOR`` of one snapshot or journal entry."""
    if isinstance(item, JournalEntry):
        return [
            moment_text(item.at),
            str(item.seq),
            printable(item.event.name),
            f"{_state(item.source)} {ARROW} {_state(item.target)}",
            printable(_actor(item) or ABSENT),
        ]
    detail = f"{human_size(item.size)}, format {item.format_version}"
    if item.kind != MACHINE_KIND:
        detail += f", kind {printable(item.kind)}"
    return [moment_text(item.created_at), ABSENT, _record_name(item), detail, ABSENT]


def log_json(item: LogItem) -> dict[str, Any]:
    """One snapshot or journal entry of the log as a JSON object."""
    if isinstance(item, JournalEntry):
        return {
            "at": moment_text(item.at),
            "type": "entry",
            "seq": item.seq,
            "event": item.event.name,
            "source": item.source,
            "target": item.target,
            "actor": _actor(item),
        }
    return {
        "at": moment_text(item.created_at),
        "type": "snapshot" if item.kind == MACHINE_KIND else "record",
        "version": item.version,
        "kind": item.kind,
        "format_version": item.format_version,
        "size": item.size,
    }


# The journal, in full.


def entry_json(entry: JournalEntry) -> dict[str, Any]:
    """Every field of a journal entry; metadata and meta as ``show`` prints state data."""
    return {
        "seq": entry.seq,
        "at": moment_text(entry.at),
        "event": {
            "name": entry.event.name,
            "priority": entry.event.priority,
            "metadata": typed_json(entry.event.metadata),
        },
        "source": entry.source,
        "target": entry.target,
        "meta": typed_json(entry.meta),
        "snapshot_version": entry.snapshot_version,
    }


def journal_row(entry: JournalEntry) -> list[str]:
    """``SEQ, TIME (UTC), EVENT, PRIORITY, SOURCE, TARGET, SNAPSHOT, METADATA, META``."""
    return [
        str(entry.seq),
        moment_text(entry.at),
        printable(entry.event.name),
        str(entry.event.priority),
        _state(entry.source),
        _state(entry.target),
        f"v{entry.snapshot_version}" if entry.snapshot_version else ABSENT,
        shown(typed_json(entry.event.metadata)),
        shown(typed_json(entry.meta)),
    ]


# The diff of two machine snapshots.


class Change(NamedTuple):
    """One difference: where, what kind, and both sides as ``show`` prints them (None: absent)."""

    path: str
    change: ChangeKind
    old: Any
    new: Any


def change_row(change: Change) -> list[str]:
    """``PATH, CHANGE, OLD, NEW`` (a side without the path: ``-``)."""
    return [
        printable(change.path),
        change.change,
        ABSENT if change.change == "added" else shown(change.old),
        ABSENT if change.change == "removed" else shown(change.new),
    ]


def change_json(change: Change) -> dict[str, Any]:
    """One difference as a JSON object."""
    return change._asdict()


def same(old: Any, new: Any) -> bool:
    """Whether two decoded values are exactly equal: same types all the way down."""
    if type(old) is not type(new):
        return False
    if isinstance(old, dict):
        return old.keys() == new.keys() and all(same(old[k], new[k]) for k in old)
    if isinstance(old, (list, tuple)):
        return len(old) == len(new) and all(map(same, old, new))
    if isinstance(old, (set, frozenset)):
        return sorted(map(repr, old)) == sorted(map(repr, new))
    if isinstance(old, msgspec.Struct):
        return same(msgspec.structs.asdict(old), msgspec.structs.asdict(new))
    # scalars: repr tells 1.10 from 1.1, -0.0 from 0.0, and NaN equals NaN
    return repr(old) == repr(new)


def _name(key: object) -> str:
    """A mapping key in a path: a string as it is, another key as its typed JSON text."""
    return key if isinstance(key, str) else json.dumps(typed_json(key), ensure_ascii=False)


def _compare(
    path: str,
    old: dict[Any, Any],
    new: dict[Any, Any],
    out: list[Change],
    *,
    equal: Callable[[Any, Any], bool] = same,
    show: Callable[[Any], Any] = typed_json,
) -> None:
    """A change per key added to, removed from or changed between two mappings."""
    for key in [*old, *(k for k in new if k not in old)]:
        where = f"{path}.{_name(key)}"
        if key not in new:
            out.append(Change(where, "removed", show(old[key]), None))
        elif key not in old:
            out.append(Change(where, "added", None, show(new[key])))
        elif not equal(old[key], new[key]):
            out.append(Change(where, "changed", show(old[key]), show(new[key])))


def _by_key(value: Any) -> bool:
    """Whether a state's data can be compared key by key (decoded, or absent on that side)."""
    return value is None or isinstance(value, dict)


def _data_changes(
    old: MachineSnapshot | SubmachineSnapshot,
    new: MachineSnapshot | SubmachineSnapshot,
    formats: FormatRegistry,
    path: str,
    out: list[Change],
) -> None:
    """Each state's data key by key; a state this tool cannot decode as a whole."""
    old_data, new_data = state_data(old, formats), state_data(new, formats)
    for state in [*old_data, *(s for s in new_data if s not in old_data)]:
        before, after = old_data.get(state), new_data.get(state)
        where = f"{path}.{state}"
        if _by_key(before) and _by_key(after):
            _compare(where, before or {}, after or {}, out)
        elif after is None:
            out.append(Change(where, "removed", shown_data(before, formats), None))
        elif before is None:
            out.append(Change(where, "added", None, shown_data(after, formats)))
        elif old.data[state] != new.data[state]:  # compared as stored: exact, decoded or not
            out.append(
                Change(where, "changed", shown_data(before, formats), shown_data(after, formats))
            )


def _machine_changes(
    old: MachineSnapshot | SubmachineSnapshot,
    new: MachineSnapshot | SubmachineSnapshot,
    formats: FormatRegistry,
    prefix: str,
    out: list[Change],
) -> None:
    for field, name in (
        ("machine_type", "machine"),
        ("started", "started"),
        ("current", "current_state"),
    ):
        before, after = getattr(old, field), getattr(new, field)
        if before != after:
            out.append(Change(prefix + name, "changed", before, after))
    _compare(prefix + "history", old.history, new.history, out, equal=str.__eq__, show=str)
    _data_changes(old, new, formats, prefix + "state_data", out)
    if old.fingerprint != new.fingerprint:
        out.append(Change(prefix + "fingerprint", "changed", old.fingerprint, new.fingerprint))


def snapshot_changes(
    old: MachineSnapshot, new: MachineSnapshot, formats: FormatRegistry
) -> list[Change]:
    """What differs from ``old`` to ``new``: state, history, data, structure, submachines.

    Paths follow ``show``'s document: ``machine``, ``started``,
    ``current_state``, ``history.<composite>``, ``state_data.<state>.<key>``
    (the whole ``state_data.<state>`` when this tool cannot decode one side),
    ``fingerprint`` (the structure), and ``submachines.<path>`` (added or
    removed, shown by its current state) or ``submachines.<path>.current_state``
    and so on for a submachine in both.
    """
    out: list[Change] = []
    _machine_changes(old, new, formats, "", out)
    old_subs = {"/".join(sub.path): sub for sub in old.submachines}
    new_subs = {"/".join(sub.path): sub for sub in new.submachines}
    for path in [*old_subs, *(p for p in new_subs if p not in old_subs)]:
        where = f"submachines.{path}"
        if path not in new_subs:
            out.append(Change(where, "removed", old_subs[path].current, None))
        elif path not in old_subs:
            out.append(Change(where, "added", None, new_subs[path].current))
        else:
            _machine_changes(old_subs[path], new_subs[path], formats, where + ".", out)
    return out
