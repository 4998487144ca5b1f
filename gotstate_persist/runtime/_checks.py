"""What ``attach`` and ``open_machine`` accept, checked once for the sync and asyncio runtimes.

Why it exists apart from the package's ``__init__``: both attachments (the
sync :class:`~._attached.Attached` behind ``Store.attach`` and the asyncio
one behind ``AsyncStore.attach``) refuse the same options, keys and
machines with the same messages, so the checks live here and both import
them.

It also owns the one rule that separates them: a gotstate
``AsyncStateMachine`` (or ``AsyncCompositeStateMachine``) starts and
processes events as coroutines, which only an event loop can drive. The sync
runtime refuses one (:func:`refuse_async`) and says to use
``gp.open_async_store``; the asyncio runtime drives it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gotstate.runtime.async_support import AsyncStateMachine

from .. import machine as _machine
from .._names import printable
from ..errors import FormatError, InvalidArgument, NotFound
from ..formats.machine import MACHINE_KIND
from ._head import Head, read_head
from ._journal import journal_key

if TYPE_CHECKING:
    from .._pipeline import RecordPipeline
    from ..extensions import BoundMachine

__all__ = [
    "ASYNC_MACHINE",
    "check_attachable",
    "check_build",
    "check_journal_option",
    "check_key",
    "check_options",
    "check_recoverable",
    "is_async_machine",
    "refuse_async",
    "unwrap",
]

#: Why the sync runtime refuses an async machine, and what to use instead.
ASYNC_MACHINE = (
    "this is a gotstate AsyncStateMachine: its start() and process_event() are coroutines, "
    "which the sync Store cannot drive; open the store with gp.open_async_store(...) and "
    "await astore.attach / open_machine / recover / restore_machine(at=) instead"
)


def is_async_machine(machine: object) -> bool:
    """Whether ``machine`` is one of gotstate's asyncio machines (its events are coroutines)."""
    return isinstance(machine, AsyncStateMachine)


def refuse_async(machine: object) -> None:
    """``InvalidArgument`` (use ``gp.open_async_store``) for an async machine."""
    if is_async_machine(machine):
        raise InvalidArgument(ASYNC_MACHINE)


def check_options(snapshot_every: object, journal: object, extensions: object) -> tuple[str, ...]:
    """The extension names, once the three attach options are valid."""
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


def check_build(build: object) -> None:
    """``open_machine``'s ``build`` must be callable."""
    if not callable(build):
        raise InvalidArgument("build must be a callable returning a new machine")


def unwrap(machine: Any) -> tuple[Any, BoundMachine | None]:
    """The bare machine and its binding, for the sync runtime (async machines refused)."""
    from ..extensions import BoundMachine

    if isinstance(machine, BoundMachine):
        refuse_async(machine.machine)
        return machine.machine, machine
    _machine.machine_type(machine)  # InvalidArgument for anything else
    refuse_async(machine)
    return machine, None


def check_key(pipeline: RecordPipeline, key: str, *, journal: bool) -> Head:
    """The key's head, if a machine may be attached to it in this mode.

    The key must leave room for its journal's system key (journaled), hold
    machine snapshots if it holds anything, and a key that keeps a journal
    needs ``journal=True``.
    """
    if journal:
        journal_key(key)  # the key must leave room for its journal's system key
    newest = pipeline.backend.head(pipeline.namespace, key)
    if newest.newest and newest.kind != MACHINE_KIND:
        raise FormatError(
            f"key {key!r} holds {printable(str(newest.kind))!r} records, not machine "
            "snapshots: attach the machine to a key of its own"
        )
    head = read_head(pipeline, key)
    check_journal_option(key, head, journal=journal)
    return head


def check_attachable(pipeline: RecordPipeline, key: str, bare: Any, *, journal: bool) -> Head:
    """The key's head, if the key and the (started) machine can be attached as they are."""
    head = check_key(pipeline, key, journal=journal)
    if not _machine.is_started(bare):
        raise InvalidArgument(
            "the machine is not started: restore or recover it first, or use "
            "store.open_machine(key, build)"
        )
    return head


def check_journal_option(key: str, head: Head, *, journal: bool) -> None:
    """A key that keeps a journal is attached or opened with ``journal=True`` only."""
    if not journal and head.journal_seq:
        raise InvalidArgument(
            f"key {key!r} keeps a journal: attach or open it with journal=True, or delete "
            "the key first"
        )


def check_recoverable(pipeline: RecordPipeline, key: str, *, journaled: bool) -> None:
    """An attachment can be brought to the key's head in place (``attached.recover()``)."""
    head = read_head(pipeline, key)
    if head == Head(0, 0):
        raise NotFound(
            f"key {key!r} has no snapshot or journal entry any more (it was "
            "deleted): detach this attachment and open the key again with "
            "store.open_machine(key, build), or attach a new machine"
        )
    if not journaled and head.journal_seq:
        raise InvalidArgument(
            f"key {key!r} keeps a journal now: this snapshot-only attachment "
            "cannot follow it; attach again with journal=True (store.open_machine)"
        )
    if head.snapshot_version == 0 and head.journal_seq:
        raise InvalidArgument(
            f"key {key!r} has journal entries but no snapshot yet, so this "
            "machine cannot be brought to its head in place; open it again with "
            "store.open_machine(key, build)"
        )
