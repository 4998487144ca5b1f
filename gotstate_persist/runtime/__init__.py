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
from ._checks import check_attachable, check_build, check_key, check_options, unwrap
from ._head import Head, journal_seq, read_head
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
    "journal_seq",
    "open_machine",
    "read_head",
    "read_journal",
    "recover",
    "user_keys",
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
    head = check_attachable(pipeline, key, bare, journal=journal)
    owns = False
    if names:
        bound, owns = bind(bare, *names, key=key), True
    try:
        return _attached(pipeline, key, bare, bound, owns, snapshot_every, journal, head=head)
    except BaseException:
        if owns and bound is not None:
            bound.unbind()
        raise


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
    names = check_options(snapshot_every, journal, extensions)
    check_build(build)
    built = build()
    bare, bound = unwrap(built)
    if bound is not None and names:
        raise InvalidArgument("build() returned a BoundMachine: pass extensions= or bind, not both")
    owns = False
    if names:
        bound, owns = bind(bare, *names, key=key), True
    try:
        head = check_key(pipeline, key, journal=journal)
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
