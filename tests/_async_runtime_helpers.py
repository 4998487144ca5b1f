"""Shared pieces of the asyncio runtime tests (AsyncStore.attach, open_machine, recover).

The machine is the ring of ``tests/machines.py`` built as gotstate's
``AsyncStateMachine`` (or, for comparisons, as its sync twin): every "next"
runs a transition action that counts in the ``start`` state's data (awaited,
on an async machine, and able to stop half-way on a :class:`Gate`), so an
undone event has data to put back. pytest-asyncio is not installed: each
test drives its own loop with :func:`run`, which fails instead of hanging.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from _places import Place
from _runtime_helpers import NAMESPACE, RING_GROUPS, RING_STATES
from gotstate.core.events import Event
from gotstate.core.state_machine import StateMachine
from gotstate.core.states import CompositeState, State
from gotstate.core.transitions import Transition
from gotstate.runtime.async_support import AsyncStateMachine
from machines import on, set_data, state_named

import gotstate_persist as gp

T = TypeVar("T")
#: Seconds after which a scenario fails instead of hanging.
SCENARIO_LIMIT_S = 120.0
#: Seconds after which a safety net releases a held SQLite lock (below its 30 s busy timeout).
SAFETY_NET_S = 20.0
#: Ring events: three transitions and one that no state takes.
RING_EVENTS = ("next", "jump", "home", "nope")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, SCENARIO_LIMIT_S))


def open_async(place: Place, keyring: gp.KeyRing, **kwargs: Any) -> gp.AsyncStore:
    """An AsyncStore on ``place`` in the tests' namespace (opens when entered)."""
    kwargs.setdefault("namespace", NAMESPACE)
    return gp.open_async_store(place.url, keyring=keyring, **place.options, **kwargs)


class Gate:
    """Makes the ring's "next" action stop half-way, once armed, until opened."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def wait(self) -> None:
        if self.armed:
            self.entered.set()
            await self.opened.wait()


def ring(
    cls: type[StateMachine] = AsyncStateMachine,
    *,
    entered: list[str] | None = None,
    gate: Gate | None = None,
) -> Any:
    """The ring of ``machines.build_ring_machine`` (13 states, 3 groups) as ``cls``, not started.

    "next" and "jump" lead to the first leaf of the next group, not to its composite.

    Each "next" transition counts in ``start``'s data (``count``) and names
    its target (``last``); an async machine awaits that action (and ``gate``).
    """

    def actions(name: str) -> list[Callable[[], None]]:
        return [] if entered is None else [lambda: entered.append(name)]

    start = State("start", entry_actions=actions("start"))
    machine = cls(initial_state=start)

    def count(target: str) -> Callable[[Event], Any]:
        def change() -> None:
            data = machine._graph.get_state_data(start)
            set_data(machine, "start", "count", int(data.get("count", 0)) + 1)
            set_data(machine, "start", "last", target)

        if not issubclass(cls, AsyncStateMachine):
            return lambda event: change()

        async def action(event: Event) -> None:
            await asyncio.sleep(0)
            change()
            if gate is not None:
                await gate.wait()  # half-way: data changed, target not entered yet

        return action

    per_group = max(1, (RING_STATES - 1 - RING_GROUPS) // RING_GROUPS)
    composites = [
        CompositeState(f"group-{g}", entry_actions=actions(f"group-{g}"))
        for g in range(RING_GROUPS)
    ]
    leaves: list[list[State]] = []
    for g, composite in enumerate(composites):
        machine.add_state(composite)
        row = []
        for i in range(per_group):
            leaf = State(f"s-{g}-{i}", entry_actions=actions(f"s-{g}-{i}"))
            machine.add_state(leaf, parent=composite)
            leaf.parent = composite
            row.append(leaf)
        leaves.append(row)

    def step(source: State, target: State) -> Transition:
        return Transition(source, target, guards=[on("next")], actions=[count(target.name)])

    # every transition targets a leaf: gotstate's AsyncStateMachine (unlike the
    # sync one and AsyncCompositeStateMachine) does not enter a composite target's
    # initial state, and the tests compare the two flavours event by event
    machine.add_transition(step(start, leaves[0][0]))
    for g, row in enumerate(leaves):
        following = leaves[(g + 1) % RING_GROUPS][0]
        for i, leaf in enumerate(row[:-1]):
            machine.add_transition(step(leaf, row[i + 1]))
        machine.add_transition(step(row[-1], following))
        machine.add_transition(
            Transition(composites[g], following, guards=[on("jump")], priority=1)
        )
        machine.add_transition(Transition(composites[g], start, guards=[on("home")]))
    return machine


async def started_ring(**kwargs: Any) -> Any:
    machine = ring(**kwargs)
    await machine.start()
    return machine


def start_data(machine: Any) -> dict[str, Any]:
    """The ring's own ``start`` data dict (not a copy): an undo must keep this object."""
    data: dict[str, Any] = machine._graph.get_state_data(state_named(machine, "start"))
    return data


async def pending_reaches(astore: gp.AsyncStore, count: int) -> None:
    """Until ``count`` calls are in the pool, then a moment for a thread to pick one up."""
    while astore.pending < count:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.2)


def entry_view(entry: gp.JournalEntry) -> tuple[Any, ...]:
    """A journal entry without its time (comparable across stores and runs)."""
    return (
        entry.seq,
        entry.event.name,
        entry.source,
        entry.target,
        entry.meta,
        entry.snapshot_version,
        entry.behaviors,
    )
