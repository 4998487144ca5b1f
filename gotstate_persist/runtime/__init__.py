"""Machines that persist themselves: attachments, the journal, recovery, looking back.

``Store.attach``/``open_machine``/``recover``/``journal`` and
``restore_machine(at=)`` are thin calls into this package. It owns the
commit protocol of an attached machine (:mod:`._attached`), the journal's
keys and entries (:mod:`._journal`) and recovery (:mod:`._recover`); the
machine package does capture, apply and the in-memory checkpoint, and the
record pipeline does sealing and compare-and-set, as for every record.
``AsyncStore``'s twins drive gotstate's async machines with
:mod:`._async_attached` and :mod:`._async_recover` on the same core; what
both accept is :mod:`._checks`'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import machine as _machine
from ..errors import InvalidArgument
from ._attached import Attached
from ._checks import check_attachable, check_build, check_journal_option, check_options, unwrap
from ._head import Head, read_head
from ._journal import (
    JournalEntry,
    journal_key,
    journal_key_or_none,
    journal_prefix,
    read_journal,
)
from ._recover import Recovered, check_moment, recover

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
]

#: Binds a machine to named active extensions (``store.extensions.bind``).
Bind = Callable[..., "BoundMachine"]


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
    names = check_options(snapshot_every, journal, extensions)
    bare, bound = unwrap(machine)
    if bound is not None and names:
        raise InvalidArgument("pass either a BoundMachine or extensions=, not both")
    check_attachable(pipeline, key, bare, journal=journal)
    owns = False
    if names:
        bound, owns = bind(bare, *names, key=key), True
    return _attached(pipeline, key, bare, bound, owns, snapshot_every, journal)


def _attached(
    pipeline: RecordPipeline,
    key: str,
    bare: Any,
    bound: BoundMachine | None,
    owns: bool,
    snapshot_every: int,
    journal: bool,
    recovered: Recovered | None = None,
) -> Attached:
    return Attached(
        pipeline,
        key,
        bare,
        snapshot_every=snapshot_every,
        journal=journal,
        bound=bound,
        owns_binding=owns,
        head=None if recovered is None else recovered.head(),
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
    names = check_options(snapshot_every, journal, extensions)
    check_build(build)
    built = build()
    bare, bound = unwrap(built)
    owns = False
    if names and bound is None:
        bound, owns = bind(bare, *names, key=key), True
    try:
        head = read_head(pipeline, key)
        recovered: Recovered | None = None
        if head.snapshot_version or head.journal_seq:
            check_journal_option(key, head, journal=journal)
            feed = None if bound is None else (lambda view: bound.feed(view)[0])
            behaviors = () if bound is None else bound.behavior_names
            recovered = recover(pipeline, key, bare, feed=feed, behaviors=behaviors)
        elif not _machine.is_started(bare):
            bare.start()
        if recovered is None:
            check_attachable(pipeline, key, bare, journal=journal)
        elif journal:
            journal_key(key)
        # the head recovery reached, not one read again now: an entry another
        # writer appended since is not in the machine (the next commit conflicts)
        return _attached(pipeline, key, bare, bound, owns, snapshot_every, journal, recovered)
    except BaseException:
        if owns and bound is not None:
            bound.unbind()
        raise
