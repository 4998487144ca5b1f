"""Shared pieces of the runtime tests (attach, journal, recover, concurrency).

Real stores only: a ``place`` is a SQLite file, a fresh PostgreSQL database
or a fresh S3 bucket on the moto server (``_places``), with a raw view of
every stored byte so a test can prove that a refused or read-only call
wrote nothing. Machines are the order workflow of ``examples/`` and the ring
machine of ``tests/machines.py`` (the benchmark's). The subprocess workers at
the bottom are run by ``python -c`` from the concurrency tests: they open
the store from a URL and the keyring from the environment, so a child
shares nothing with the test process but the storage.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _places import Place, make_place
from gotstate.core.events import Event
from gotstate.core.state_machine import StateMachine
from gotstate.core.states import CompositeState, State
from gotstate.core.transitions import Transition
from machines import build_ring_machine
from order_workflow import build_order_machine

import gotstate_persist as gp
from gotstate_persist import machine as adapter

ROOT = Path(__file__).resolve().parent.parent
#: Where the runtime's conformance-style tests run.
PLACES = ("sqlite", "postgresql", "s3")
SQL_KINDS = ("sqlite", "postgresql")
NAMESPACE = "orders"
#: A value that must never show up in any output (messages, reprs, logs).
CANARY = "CANARY-s3cr3t-7f3a9c"
#: The order workflow's happy path, event by event, and where each one ends.
ORDER_PATH = ("start", "checkout", "pay", "pack", "ship", "deliver")
ORDER_TARGETS = ("cart", "payment", "picking", "packed", "shipped", "delivered")
#: The ring machine used by the concurrency tests (small: replays stay cheap).
RING_STATES = 13
RING_GROUPS = 3
KEYS_VARIABLE = "GOTSTATE_PERSIST_KEYS"
SUBPROCESS_TIMEOUT_S = 120.0


@pytest.fixture(params=PLACES)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """A fresh storage location of each kind the runtime must work on."""
    return make_place(request.param, request, tmp_path, database="runtime.db", cls=Place)


def on(*kinds: str) -> pytest.MarkDecorator:
    """Run a test on these kinds of place only (the ``place`` fixture runs all of them).

    The slow remote kinds are kept for what differs per backend: compare-and-set,
    listings, retention, quotas kept outside a database, stored times.
    """
    return pytest.mark.parametrize("place", kinds, indirect=True)


SQLITE = on("sqlite")
SQL = on(*SQL_KINDS)


def open_place(place: Place, keyring: gp.KeyRing, **kwargs: Any) -> gp.Store:
    """A store on ``place`` in the tests' namespace."""
    kwargs.setdefault("namespace", NAMESPACE)
    return gp.open_store(place.url, keyring=keyring, **place.options, **kwargs)


def sqlite_place(tmp_path: Path, name: str = "runtime.db") -> Place:
    return Place("sqlite", f"sqlite:///{tmp_path / name}")


# Machines.


def order(entered: list[str] | None = None, *, start: bool = True) -> StateMachine:
    machine = build_order_machine(entered)
    if start:
        machine.start()
    return machine


def ring(entered: list[str] | None = None, *, start: bool = True) -> StateMachine:
    machine = build_ring_machine(RING_STATES, groups=RING_GROUPS, entered=entered)
    if start:
        machine.start()
    return machine


def ring_after(steps: int) -> StateMachine:
    """A ring machine that took ``steps`` "next" events, without any store."""
    machine = ring()
    for _ in range(steps):
        assert machine.process_event(Event("next"))
    return machine


def order_after(steps: int) -> StateMachine:
    machine = order()
    for name in ORDER_PATH[:steps]:
        assert machine.process_event(Event(name))
    return machine


def build_order_variant(
    *, pack_to: str = "shipped", rename: dict[str, str] | None = None
) -> StateMachine:
    """The order workflow's state tree with other transitions.

    ``pack`` leads from picking to ``pack_to`` instead of packed; ``rename``
    maps an event to the one its transition waits for instead. The state tree (what a
    snapshot must match) is the order workflow's, so its snapshots restore
    here, while its journal replays elsewhere.
    """

    def on(name: str) -> Callable[[Event], bool]:
        def guard(event: Event) -> bool:
            return bool(event.name == name)

        return guard

    idle = State("idle")
    checkout = CompositeState("checkout")
    cart, payment = State("cart"), State("payment")
    fulfilment = CompositeState("fulfilment")
    picking, packed = State("picking"), State("packed")
    shipped, delivered, cancelled = State("shipped"), State("delivered"), State("cancelled")
    machine = StateMachine(initial_state=idle)
    machine.add_state(checkout)
    machine.add_state(cart, parent=checkout)
    machine.add_state(payment, parent=checkout)
    machine.add_state(fulfilment)
    machine.add_state(picking, parent=fulfilment)
    machine.add_state(packed, parent=fulfilment)
    for state in (shipped, delivered, cancelled):
        machine.add_state(state)
    for child, parent in ((cart, checkout), (payment, checkout), (picking, fulfilment)):
        child.parent = parent
    packed.parent = fulfilment
    by_name = {s.name: s for s in machine.get_states()}
    edges = [
        (idle, checkout, "start"),
        (cart, payment, "checkout"),
        (payment, fulfilment, "pay"),
        (picking, by_name[pack_to], "pack"),
        (packed, shipped, "ship"),
        (shipped, delivered, "deliver"),
        (checkout, cancelled, "cancel"),
        (fulfilment, cancelled, "cancel"),
    ]
    renamed = rename or {}
    for source, target, event in edges:
        machine.add_transition(Transition(source, target, guards=[on(renamed.get(event, event))]))
    return machine


def captured(machine: Any) -> Any:
    """Everything a snapshot holds of ``machine`` (comparable with ==)."""
    return adapter.capture(machine, struct_kind=gp.FormatRegistry().kind_of, max_depth=64)


def state_name(machine: Any) -> str | None:
    state = machine.current_state
    return None if state is None else str(state.name)


def journal_key(key: str) -> str:
    from gotstate_persist.runtime import journal_key as of

    return of(key)


def snapshot_seqs(store: gp.Store, key: str) -> list[int]:
    """The journal sequence each stored snapshot of ``key`` covers, oldest first."""
    return [store.load(key, version=ref.version).journal_seq for ref in store.versions(key)]


def runtime_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the runtime logged (every one a WARNING: a periodic snapshot that failed)."""
    found = [r for r in caplog.records if r.name == "gotstate_persist.runtime"]
    assert all(r.levelno == logging.WARNING for r in found)
    return found


def check_journal_chain(entries: list[gp.JournalEntry]) -> None:
    """Sequences 1..n without gaps, each entry starting where the previous one ended."""
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    for before, after in itertools.pairwise(entries):
        assert after.source == before.target, (before, after)


# Subprocesses.


def child_env(keyring: gp.KeyRing) -> dict[str, str]:
    """The environment of a worker: this checkout first on the path, the test keyring."""
    paths = [str(ROOT), str(ROOT / "tests"), str(ROOT / "examples")]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    env[KEYS_VARIABLE] = keyring.export()
    return env


def run_worker(call: str, keyring: gp.KeyRing, **popen: Any) -> subprocess.Popen[str]:
    """Start ``_runtime_helpers.<call>`` in a fresh interpreter."""
    code = f"import _runtime_helpers as h; h.{call}"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=child_env(keyring),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        **popen,
    )


def _child_store(url: str) -> gp.Store:
    return gp.open_store(url, namespace=NAMESPACE, keyring=gp.KeyRing.from_env(KEYS_VARIABLE))


def unstarted_ring() -> StateMachine:
    return ring(start=False)


def hammer(url: str, key: str, successes: int, seed: int, go: str) -> None:
    """Worker: commit ``successes`` ring "next" events to ``key``, fighting for it.

    Opens the key, says "ready", waits for the file ``go`` to exist (so every
    worker has opened before any writes), then on each ``VersionConflict``
    recovers and retries. Prints how many events it committed and how many
    conflicts it met.
    """
    rng = random.Random(seed)
    store = _child_store(url)
    every = rng.choice((1, 2, 3))
    opened = store.open_machine(key, unstarted_ring, journal=True, snapshot_every=every)
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.01)
    done = conflicts = 0
    while done < successes:
        try:
            assert opened.process_event(Event("next"), meta={"pid": os.getpid()})
        except gp.VersionConflict:
            conflicts += 1
            opened.recover()
            continue
        done += 1
    with contextlib.suppress(gp.VersionConflict):
        opened.detach()  # another writer's snapshot may come first; the journal has it all
    store.close()
    print(f"{done} {conflicts}", flush=True)


def crash_after(url: str, key: str, events: int) -> None:
    """Worker: commit ``events`` ring events, then die without detaching."""
    store = _child_store(url)
    attached = store.attach(ring(), key, journal=True, snapshot_every=50)
    for _ in range(events):
        assert attached.process_event(Event("next"), meta={"pid": os.getpid()})
    print("done", flush=True)
    os._exit(0)


def run_until_killed(url: str, key: str) -> None:
    """Worker: commit ring events forever, printing each committed sequence."""
    store = _child_store(url)
    attached = store.open_machine(key, unstarted_ring, journal=True, snapshot_every=7)
    while True:
        assert attached.process_event(Event("next"))
        print(attached.head.journal_seq, flush=True)


# Extensions.

RENAMER_SOURCE = '''
"""A test event processor: "advance" becomes "next", "go" fans out into two "next"."""

from gotstate_persist import EventView


class Renamer:
    name = "renamer"
    version = "1.0.0"
    category = "event_processing"

    def process(self, event):
        if event.name == "advance":
            return EventView("next", event.priority, {**event.metadata, "renamed": True})
        if event.name == "go":
            return [EventView("next"), EventView("next")]
        return event
'''

FAILER_SOURCE = '''
"""A test behavior that raises on entering one state."""

from typing import ClassVar


class Failer:
    name = "failer"
    version = "1.0.0"
    category = "state_behavior"
    states: ClassVar[frozenset[str]] = frozenset({"payment"})

    def on_enter(self, view):
        raise ValueError("failer refuses to enter payment")

    def on_exit(self, view):
        return None
'''


def in_process_extension(store: gp.Store, tmp_path: Path, source: str, attr: str) -> str:
    """Register and activate an in-process extension written to ``tmp_path``; its name."""
    path = tmp_path / f"{attr.lower()}.py"
    path.write_text(source)
    registration = store.extensions.register(f"{path}:{attr}", isolation="in-process")
    store.extensions.activate(registration.name)
    return registration.name


DROPPER_SOURCE = '''
"""A test event processor that drops every "next" (replays must not go through it)."""


class Dropper:
    name = "dropper"
    version = "1.0.0"
    category = "event_processing"

    def process(self, event):
        return None if event.name == "next" else event
'''


# A machine whose actions change state data from the event (so a replay must too).

TALLY_EVENTS = ("next", "back", "stay", "noop")


def tally(*, start: bool = True) -> StateMachine:
    """Three states in a ring; every transition adds the event's ``amount`` to its target's data.

    "next" and "back" move around the ring, "stay" loops on the current
    state, "noop" is never accepted. The data each action writes depends on
    the event's metadata, so a recovered machine equals the original only if
    the journal carried the metadata and the replay ran the actions.
    """
    states = [State(name) for name in ("a", "b", "c")]
    machine = StateMachine(initial_state=states[0])
    for state in states[1:]:
        machine.add_state(state)

    def bump(target: State) -> Callable[[Event], None]:
        def action(event: Event) -> None:
            amount = getattr(event, "metadata", {}).get("amount", 1)
            graph = machine._graph
            data = graph.get_state_data(target)
            graph.set_state_data(target, "total", data.get("total", 0) + amount)
            graph.set_state_data(target, "last", (event.name, amount))

        return action

    def guard(name: str) -> Callable[[Event], bool]:
        return lambda event: event.name == name

    for i, state in enumerate(states):
        for name, target in (
            ("next", states[(i + 1) % 3]),
            ("back", states[(i - 1) % 3]),
            ("stay", state),
        ):
            machine.add_transition(
                Transition(state, target, guards=[guard(name)], actions=[bump(target)])
            )
    if start:
        machine.start()
    return machine


def tally_event(name: str, amount: int) -> Event:
    event = Event(name)
    event.metadata["amount"] = amount
    return event


def kill_between_append_and_snapshot(url: str, key: str) -> None:
    """Worker: journal three events with snapshot_every=2 and die inside the snapshot write.

    The store's clock kills the process at the first reading after the third
    journal entry is stored: that reading is the periodic snapshot's time,
    taken before its write.
    """
    backend_store = _child_store(url)
    jkey = journal_key(key)
    armed = False

    def clock() -> Any:
        if armed and backend_store.backend.head(NAMESPACE, jkey).newest >= 3:
            print("killed", flush=True)
            os.kill(os.getpid(), 9)
        return datetime.now(UTC)

    store = gp.Store(
        backend_store.backend,
        keyring=gp.KeyRing.from_env(KEYS_VARIABLE),
        namespace=NAMESPACE,
        clock=clock,
    )
    attached = store.open_machine(key, lambda: tally(start=False), journal=True, snapshot_every=2)
    for amount in (1, 2):
        assert attached.process_event(tally_event("next", amount))
    armed = True
    assert attached.process_event(tally_event("stay", 3))
    print("not killed", flush=True)


# Clocks.


class StepClock:
    """A clock that moves one second each time it is read."""

    def __init__(self) -> None:
        self.now = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now
