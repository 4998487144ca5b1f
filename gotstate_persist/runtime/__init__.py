"""Machines that persist themselves: attachments, the journal, recovery, looking back.

``Store.attach``/``open_machine``/``recover``/``journal`` and
``restore_machine(at=)`` are thin calls into this package. It owns the
commit protocol of an attached machine (:mod:`._attached`), the journal's
keys and entries (:mod:`._journal`) and recovery (:mod:`._recover`); the
machine package does capture, apply and the in-memory checkpoint, and the
record pipeline does sealing and compare-and-set, as for every record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .. import machine as _machine
from .._names import printable
from ..errors import FormatError, InvalidArgument
from ..formats.machine import MACHINE_KIND
from ._attached import Attached
from ._head import Head, read_head
from ._journal import (
    JournalEntry,
    journal_key,
    journal_key_or_none,
    journal_prefix,
    read_journal,
    user_keys,
)
from ._recover import Recovered, bound_feed, check_moment, recover

if TYPE_CHECKING:
    from .._pipeline import RecordPipeline
    from ..extensions import BoundMachine

__all__ = [
    "Attached",
    "Head",
    "JournalEntry",
    "Recovered",
    "attach",
    "check_moment",
    "journal_key",
    "journal_key_or_none",
    "journal_prefix",
    "open_machine",
    "read_head",
    "read_journal",
    "recover",
    "user_keys",
]

#: Binds a machine to named active extensions (``store.extensions.bind``).
Bind = Callable[..., "BoundMachine"]


def _options(snapshot_every: object, journal: object, extensions: object) -> tuple[str, ...]:
    if type(snapshot_every) is not int or snapshot_every < 1:
        raise InvalidArgument("snapshot_every must be an int >= 1")
    if type(journal) is not bool:
        raise InvalidArgument("journal must be True or False")
    if snapshot_every > 1 and not journal:
        raise InvalidArgument(
            "snapshot_every > 1 needs journal=True: without a journal, the accepted events "
            "between snapshots would live only in memory"
        )
    if isinstance(extensions, str) or not isinstance(extensions, Iterable):
        raise InvalidArgument("extensions must be a tuple of extension names")
    names = tuple(extensions)
    if not all(type(name) is str for name in names):
        raise InvalidArgument("extensions must be a tuple of extension names")
    return names


def _unwrap(machine: Any) -> tuple[Any, BoundMachine | None]:
    from ..extensions import BoundMachine

    if isinstance(machine, BoundMachine):
        return machine.machine, machine
    _machine.machine_type(machine)  # InvalidArgument for anything else
    return machine, None


def attach(
    pipeline: RecordPipeline,
    machine: Any,
    key: str,
    *,
    snapshot_every: int,
    journal: bool,
    extensions: object,
    bind: Bind,
) -> Attached:
    """Attach ``machine`` (already in the state of ``key``'s head); writes nothing."""
    names = _options(snapshot_every, journal, extensions)
    bare, bound = _unwrap(machine)
    if bound is not None and names:
        raise InvalidArgument("pass either a BoundMachine or extensions=, not both")
    head = _check_key(pipeline, key, journal=journal)
    if not _machine.is_started(bare):
        raise InvalidArgument(
            "the machine is not started: restore or recover it first, or use "
            "store.open_machine(key, build)"
        )
    owns = False
    if names:
        bound, owns = bind(bare, *names, key=key), True
    try:
        return _attached(pipeline, key, bare, bound, owns, snapshot_every, journal, head=head)
    except BaseException:
        if owns and bound is not None:
            bound.unbind()
        raise


def _check_key(pipeline: RecordPipeline, key: str, *, journal: bool) -> Head:
    """The key's head, if a machine may be attached to it in this mode."""
    if journal:
        journal_key(key)  # the key must leave room for its journal's system key
    newest = pipeline.backend.head(pipeline.namespace, key)
    if newest.newest and newest.kind != MACHINE_KIND:
        raise FormatError(
            f"key {key!r} holds {printable(str(newest.kind))!r} records, not machine "
            "snapshots: attach the machine to a key of its own"
        )
    head = read_head(pipeline, key)
    if not journal and head.journal_seq:
        raise InvalidArgument(
            f"key {key!r} keeps a journal: attach with journal=True, or delete the key first"
        )
    return head


def _attached(
    pipeline: RecordPipeline,
    key: str,
    bare: Any,
    bound: BoundMachine | None,
    owns: bool,
    snapshot_every: int,
    journal: bool,
    recovered: Recovered | None = None,
    *,
    head: Head | None = None,
) -> Attached:
    return Attached(
        pipeline,
        key,
        bare,
        snapshot_every=snapshot_every,
        journal=journal,
        bound=bound,
        owns_binding=owns,
        head=head if recovered is None else recovered.head(),
        unsnapped=None if recovered is None else recovered.replayed,
    )


def open_machine(
    pipeline: RecordPipeline,
    key: str,
    build: Callable[[], Any],
    *,
    snapshot_every: int,
    journal: bool,
    extensions: object,
    bind: Bind,
) -> Attached:
    """Recover ``key`` into ``build()`` if it exists, else start ``build()``; then attach."""
    names = _options(snapshot_every, journal, extensions)
    if not callable(build):
        raise InvalidArgument("build must be a callable returning a new machine")
    built = build()
    bare, bound = _unwrap(built)
    if bound is not None and names:
        raise InvalidArgument("build() returned a BoundMachine: pass extensions= or bind, not both")
    owns = False
    if names:
        bound, owns = bind(bare, *names, key=key), True
    try:
        head = _check_key(pipeline, key, journal=journal)
        if not (head.snapshot_version or head.journal_seq):
            if not _machine.is_started(bare):
                bare.start()
            # the head read before starting: a writer creating the key since
            # makes this attachment's first commit a conflict, never a lost write
            return _attached(pipeline, key, bare, bound, owns, snapshot_every, journal, head=head)
        recovered = recover(
            pipeline,
            key,
            bare,
            feed=None if bound is None else bound_feed(bound),
            behaviors=() if bound is None else bound.behavior_names,
            started=_machine.is_started(bare),
        )
        # the head recovery reached, not one read again now: an entry another
        # writer appended since is not in the machine (the next commit conflicts)
        return _attached(pipeline, key, bare, bound, owns, snapshot_every, journal, recovered)
    except BaseException:
        if owns and bound is not None:
            bound.unbind()
        raise
