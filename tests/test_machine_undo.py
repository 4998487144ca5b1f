"""Checkpoints (machine/_undo.py): a rollback puts a machine back exactly, running nothing.

Every test compares ``machine.capture`` before the event with the capture
after the rollback, counts entry/exit actions and hooks, checks that the same
data dict objects are still in place and that the graph keeps no instance
attribute of ours after the checkpoint closed.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable
from typing import Any

import pytest
from gotstate.core.events import Event
from gotstate.core.state_machine import StateMachine
from gotstate.core.states import CompositeState, State
from gotstate.core.transitions import Transition
from gotstate.runtime.async_support import AsyncCompositeStateMachine, AsyncStateMachine
from hypothesis import given, settings
from hypothesis import strategies as st
from machines import build_composite_machine, build_ring_machine, on, state_named
from order_workflow import build_order_machine

import gotstate_persist as gp
from gotstate_persist import machine as adapter
from gotstate_persist.formats import FormatRegistry, MachineSnapshot

FORMATS = FormatRegistry()


def snap(machine: Any) -> MachineSnapshot:
    return adapter.capture(machine, struct_kind=FORMATS.kind_of, max_depth=64)


class Hook:
    """Counts every hook call gotstate makes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_enter(self, state: Any) -> None:
        self.calls.append(f"enter {state.name}")

    def on_exit(self, state: Any) -> None:
        self.calls.append(f"exit {state.name}")

    def on_transition(self, source: Any, target: Any) -> None:
        self.calls.append(f"transition {source.name} {target.name}")

    def on_error(self, error: Exception) -> None:
        self.calls.append("error")


def graphs(machine: Any) -> list[Any]:
    subs = getattr(machine, "_submachines", None) or {}
    found = [machine._graph]
    for sub in subs.values():
        found.extend(graphs(sub))
    return found


class Watch:
    """What a rollback must keep: graph attributes and the data dict objects."""

    def __init__(self, machine: Any) -> None:
        self.machine = machine
        self.snapshot = snap(machine)
        self.attributes = [dict(vars(graph)) for graph in graphs(machine)]
        self.dicts = [dict(graph._state_data) for graph in graphs(machine)]

    def assert_untouched_graphs(self, *, restored: bool = False) -> None:
        """Same attribute names, the same objects (``_current_state`` too if restored)."""
        for graph, before in zip(graphs(self.machine), self.attributes, strict=True):
            assert vars(graph).keys() == before.keys()
            for name, value in before.items():
                if restored or name != "_current_state":
                    assert vars(graph)[name] is value, name

    def assert_restored(self) -> None:
        assert snap(self.machine) == self.snapshot
        self.assert_untouched_graphs(restored=True)
        for graph, before in zip(graphs(self.machine), self.dicts, strict=True):
            assert list(graph._state_data) == list(before)  # no dict added, none removed
            assert all(graph._state_data[s] is d for s, d in before.items())  # same objects


# How an action changes data: every public way gotstate or we hand it out.


def by_set(machine: Any, state: Any, tag: str) -> None:
    machine._graph.set_state_data(state, "last", tag)


def by_nested(machine: Any, state: Any, tag: str) -> None:
    machine._graph.get_state_data(state)["log"].append(tag)  # the live dict, nested in place


def by_items(machine: Any, state: Any, tag: str) -> None:
    adapter.set_state_items(machine, state, {"last": tag, "count": 7})


def by_copy_nested(machine: Any, state: Any, tag: str) -> None:
    adapter.state_data_copy(machine, state)["log"].append(tag)  # shallow copy: nested is live


MUTATIONS = {"set": by_set, "nested": by_nested, "items": by_items, "copy": by_copy_nested}
Mutation = Callable[[Any, Any, str], None]


def build_flat(mutate: Mutation, where: str, hook: Hook, entered: list[str]) -> StateMachine:
    """a --go--> b --more--> c; ``mutate`` runs on b's entry, a's exit or the transition."""
    holder: list[StateMachine] = []

    def act(state_name: str) -> Callable[[], None]:
        def action() -> None:
            entered.append(f"{where} {state_name}")
            mutate(holder[0], state_named(holder[0], state_name), where)

        return action

    a = State("a", exit_actions=[act("a")] if where == "exit" else [])
    b = State("b", entry_actions=[act("b")] if where == "entry" else [])
    c = State("c", entry_actions=[lambda: entered.append("c")])
    machine = StateMachine(initial_state=a, hooks=[hook])
    holder.append(machine)
    machine.add_state(b)
    machine.add_state(c)
    transition_actions = [lambda _event: act("b")()] if where == "transition" else []
    machine.add_transition(Transition(a, b, guards=[on("go")], actions=transition_actions))
    machine.add_transition(Transition(b, c, guards=[on("more")]))
    for state in (a, b, c):
        machine._graph.set_state_data(state, "log", ["seed"])
    machine.start()
    return machine


@pytest.mark.parametrize("where", ["entry", "exit", "transition"])
@pytest.mark.parametrize("how", sorted(MUTATIONS))
def test_rollback_undoes_an_event_and_its_data_changes(where: str, how: str) -> None:
    hook = Hook()
    entered: list[str] = []
    machine = build_flat(MUTATIONS[how], where, hook, entered)
    watch = Watch(machine)
    log_lists = {s.name: d["log"] for s, d in machine._graph._state_data.items()}
    logs = {name: list(log) for name, log in log_lists.items()}
    point = adapter.checkpoint(machine)
    assert machine.process_event(Event("go"))
    changed = snap(machine)
    assert changed.current == "b"
    assert changed.data != watch.snapshot.data  # the action really changed data
    calls, actions = len(hook.calls), len(entered)

    point.rollback()

    watch.assert_restored()
    assert (len(hook.calls), len(entered)) == (calls, actions)  # nothing ran
    assert point.closed
    # an untouched state keeps its nested values; a touched one gets equal copies
    untouched = state_named(machine, "c")
    assert machine._graph._state_data[untouched]["log"] is log_lists["c"]
    assert {s.name: d["log"] for s, d in machine._graph._state_data.items()} == logs
    assert machine.process_event(Event("go"))  # the machine runs on from where it was
    assert snap(machine) == changed


def test_a_composite_machine_and_its_submachine_are_put_back() -> None:
    hook = Hook()
    entered: list[str] = []
    machine = build_composite_machine(entered)
    machine._hooks.append(hook)
    machine.start()
    assert machine.process_event(Event("go"))
    review, sub = next(iter(machine._submachines.items()))
    sub._graph.set_state_data(state_named(sub, "draft"), "notes", ["first"])
    machine._graph.set_state_data(state_named(machine, "step-a"), "n", 1)
    watch = Watch(machine)
    with adapter.checkpoint(machine) as point:
        assert machine.process_event(Event("next"))
        assert machine.process_event(Event("next"))
        machine._graph.get_state_data(state_named(machine, "draft"))["merged"] = True
        machine._graph.get_state_data(state_named(machine, "step-a"))["n"] = 2
        sub._graph.get_state_data(state_named(sub, "draft"))["notes"].append("second")
        sub.start()  # the submachine is started during the checkpoint...
        assert sub.process_event(Event("approve"))  # ...and moves on
        changed = snap(machine)
        assert changed.current == "draft" and changed.submachines[0].current == "approved"
        assert changed.history != watch.snapshot.history
        calls, actions = len(hook.calls), len(entered)
        point.rollback()
    watch.assert_restored()
    assert (len(hook.calls), len(entered)) == (calls, actions)
    assert review.name == "review"


def test_history_is_put_back() -> None:
    entered: list[str] = []
    machine = build_ring_machine(12, groups=3, entered=entered)
    machine.start()
    assert machine.process_event(Event("next"))  # into group-0
    watch = Watch(machine)
    point = adapter.checkpoint(machine)
    for name in ("next", "jump", "home", "next", "jump"):
        machine.process_event(Event(name))
    assert snap(machine).history != watch.snapshot.history
    actions = len(entered)
    point.rollback()
    watch.assert_restored()
    assert len(entered) == actions


def test_a_machine_started_during_the_checkpoint_is_unstarted_again() -> None:
    hook = Hook()
    entered: list[str] = []
    machine = build_order_machine(entered)
    machine._hooks.append(hook)
    watch = Watch(machine)
    assert not watch.snapshot.started
    with adapter.checkpoint(machine) as point:
        machine.start()
        assert machine.process_event(Event("start"))
        assert snap(machine).started
        calls, actions = len(hook.calls), len(entered)
        point.rollback()
    watch.assert_restored()
    assert not machine._started
    assert (len(hook.calls), len(entered)) == (calls, actions)


class WithData(State):
    """A state gotstate has no data dict for: get_state_data() creates one from ``data``."""

    @property
    def data(self) -> dict[str, Any]:
        return {}


def test_a_data_dict_created_during_the_event_is_removed() -> None:
    outsider = WithData("outsider")
    machine = build_order_machine()
    machine.start()
    graph = machine._graph
    watch = Watch(machine)
    point = adapter.checkpoint(machine)
    graph.get_state_data(outsider)["made"] = 1
    assert outsider in graph._state_data and outsider in graph._data_locks
    point.rollback()
    watch.assert_restored()
    assert outsider not in graph._state_data and outsider not in graph._data_locks


def test_an_event_that_raised_inside_gotstate_still_rolls_back() -> None:
    hook = Hook()
    entered: list[str] = []
    machine = build_ring_machine(12, groups=3, entered=entered)
    machine._hooks.append(hook)
    machine.start()
    start = state_named(machine, "start")
    machine._graph.set_state_data(start, "log", [])

    def leave() -> None:
        machine._graph.get_state_data(start)["log"].append("left")

    def explode() -> None:
        raise RuntimeError("entry failed")

    start.exit_actions.append(leave)
    state_named(machine, "s-0-0").entry_actions.append(explode)
    watch = Watch(machine)
    point = adapter.checkpoint(machine)
    with pytest.raises(RuntimeError, match="entry failed"):
        machine.process_event(Event("next"))
    assert snap(machine) != watch.snapshot  # history recorded, data changed, then it raised
    calls, actions = len(hook.calls), len(entered)
    point.rollback()
    watch.assert_restored()
    assert (len(hook.calls), len(entered)) == (calls, actions)


def test_close_keeps_the_changes_and_leaves_the_graph_as_it_was() -> None:
    machine = build_order_machine()
    machine.start()
    watch = Watch(machine)
    point = adapter.checkpoint(machine)
    assert vars(machine._graph).keys() != watch.attributes[0].keys()  # tapped while open
    assert machine.process_event(Event("start"))
    machine._graph.set_state_data(state_named(machine, "cart"), "items", ["book"])
    changed = snap(machine)
    point.close()
    point.close()  # idempotent
    assert snap(machine) == changed
    watch.assert_untouched_graphs()
    with pytest.raises(gp.InvalidArgument, match="closed"):
        point.rollback()
    assert snap(machine) == changed
    with adapter.checkpoint(machine):  # the context manager closes, never rolls back
        machine.process_event(Event("checkout"))
    assert snap(machine).current == "payment"
    watch.assert_untouched_graphs()


def test_an_instance_attribute_already_on_the_graph_is_put_back() -> None:
    machine = build_order_machine()
    graph = machine._graph
    calls: list[str] = []
    original = graph.get_state_data

    def own_getter(state: Any) -> dict[str, Any]:
        calls.append(state.name)
        found: dict[str, Any] = original(state)
        return found

    graph.get_state_data = own_getter
    watch = Watch(machine)
    cart = state_named(machine, "cart")
    with adapter.checkpoint(machine) as point:
        graph.get_state_data(cart)["x"] = 1
        assert calls == ["cart"]  # the user's shadow still runs, behind ours
        point.rollback()
    assert graph.get_state_data is own_getter
    watch.assert_restored()


def test_a_checkpoint_dropped_without_close_is_closed_when_collected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    machine = build_composite_machine()
    machine.start()
    watch = Watch(machine)
    point = adapter.checkpoint(machine)
    assert machine.process_event(Event("go"))
    changed = snap(machine)
    del point
    gc.collect()
    assert "dropped without close()" in caplog.text
    watch.assert_untouched_graphs()
    assert snap(machine) == changed  # closed, not rolled back
    with adapter.checkpoint(machine):  # and the machine takes a new one
        pass


def test_a_second_checkpoint_on_the_machine_or_a_submachine_is_refused() -> None:
    machine = build_composite_machine()
    machine.start()
    sub = next(iter(machine._submachines.values()))
    watch = Watch(machine)
    with adapter.checkpoint(machine):
        with pytest.raises(gp.InvalidArgument, match="already has an open checkpoint"):
            adapter.checkpoint(machine)
        with pytest.raises(gp.InvalidArgument, match="already has an open checkpoint"):
            adapter.checkpoint(sub)
    watch.assert_untouched_graphs()
    with adapter.checkpoint(sub):  # closed: a new one is fine
        pass
    with pytest.raises(gp.InvalidArgument, match="StateMachine"):
        adapter.checkpoint(object())


def test_data_that_cannot_be_copied_fails_the_rollback_and_changes_nothing() -> None:
    machine = build_order_machine()
    machine.start()
    cart = state_named(machine, "cart")
    machine._graph.set_state_data(cart, "lock", threading.Lock())
    point = adapter.checkpoint(machine)
    assert machine.process_event(Event("start"))
    machine._graph.set_state_data(cart, "n", 1)
    moved = (machine.current_state, dict(machine._graph.get_state_data(cart)))
    with pytest.raises(gp.FormatError, match=r"\['cart'\] could not be copied") as caught:
        point.rollback()
    assert "lock" not in str(caught.value).replace("copy.deepcopy", "")  # no data in the message
    assert (machine.current_state, dict(machine._graph.get_state_data(cart))) == moved
    assert not point.closed
    point.close()


def test_changes_from_another_thread_are_tracked_too() -> None:
    machine = build_ring_machine(40, groups=4)
    machine.start()
    leaves = [s for s in machine._graph._state_data if s.name.startswith("s-")]
    for leaf in leaves:
        machine._graph.set_state_data(leaf, "log", [])
    watch = Watch(machine)
    go = threading.Barrier(2)

    def writer() -> None:
        go.wait()
        for round_ in range(50):
            for leaf in leaves:
                machine._graph.get_state_data(leaf)["log"].append(round_)
                machine._graph.set_state_data(leaf, "n", round_)

    with adapter.checkpoint(machine) as point:
        thread = threading.Thread(target=writer)
        thread.start()
        go.wait()
        for _ in range(30):
            machine.process_event(Event("next"))
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert snap(machine) != watch.snapshot
        point.rollback()
    watch.assert_restored()


def test_async_machines_roll_back() -> None:
    hook = Hook()
    a, b = State("a"), State("b")
    flat = AsyncStateMachine(a, hooks=[hook])
    flat.add_state(b)
    flat.add_transition(Transition(a, b, guards=[on("go")]))
    asyncio.run(flat.start())
    flat._graph.set_state_data(a, "log", ["seed"])
    watch = Watch(flat)
    with adapter.checkpoint(flat) as point:
        assert asyncio.run(flat.process_event(Event("go")))
        flat._graph.get_state_data(a)["log"].append("more")
        calls = len(hook.calls)
        point.rollback()
    watch.assert_restored()
    assert len(hook.calls) == calls

    root, idle, box = CompositeState("root"), State("idle"), CompositeState("box")
    composite = AsyncCompositeStateMachine(root)
    composite.add_state(idle, parent=root)
    composite.add_state(box, parent=root)
    x, y = State("x"), State("y")
    sub = AsyncStateMachine(x)
    sub.add_state(y)
    sub.add_transition(Transition(x, y, guards=[on("xy")]))
    composite.add_submachine(box, sub)
    composite.add_transition(Transition(idle, box, guards=[on("in")]))
    asyncio.run(composite.start())
    watch = Watch(composite)
    with adapter.checkpoint(composite) as point:
        assert asyncio.run(composite.process_event(Event("in")))
        asyncio.run(sub.start())
        sub._graph.set_state_data(x, "n", 1)
        assert snap(composite) != watch.snapshot
        point.rollback()
    watch.assert_restored()


# Property: any sequence of events and data changes through the public APIs.

ORDER_EVENTS = ["start", "checkout", "pay", "pack", "ship", "deliver", "cancel", "bogus"]
ORDER_STATES = ["idle", "cart", "payment", "picking", "packed", "shipped", "checkout"]
ints = st.integers(-(2**63), 2**63 - 1)
values = st.one_of(ints, st.text(max_size=4), st.lists(ints, max_size=3))
steps = st.one_of(
    st.tuples(st.just("event"), st.sampled_from(ORDER_EVENTS)),
    st.tuples(st.just("set"), st.sampled_from(ORDER_STATES), st.sampled_from("kl"), values),
    st.tuples(st.just("append"), st.sampled_from(ORDER_STATES), values),
    st.tuples(st.just("items"), st.sampled_from(ORDER_STATES), st.sampled_from("kl"), values),
    st.tuples(st.just("copy"), st.sampled_from(ORDER_STATES), values),
    st.tuples(st.sampled_from(["start", "stop"])),
)


def build_logging_order_machine(entered: list[str]) -> StateMachine:
    """The order workflow whose every entry action appends to its state's data."""
    machine = build_order_machine(entered)

    def entry(state: Any) -> Callable[[], None]:
        return lambda: machine._graph.get_state_data(state)["visits"].append(len(entered))

    for state in machine.get_states():
        machine._graph.set_state_data(state, "visits", [])
        state.entry_actions.append(entry(state))
    return machine


def run_step(machine: Any, step: tuple[Any, ...]) -> None:
    kind, *args = step
    graph = machine._graph
    if kind == "event":
        machine.process_event(Event(args[0]))
    elif kind in ("start", "stop"):
        getattr(machine, kind)()
    elif kind == "set":
        graph.set_state_data(state_named(machine, args[0]), args[1], args[2])
    elif kind == "append":
        graph.get_state_data(state_named(machine, args[0]))["visits"].append(args[1])
    elif kind == "items":
        adapter.set_state_items(machine, state_named(machine, args[0]), {args[1]: args[2]})
    else:
        adapter.state_data_copy(machine, state_named(machine, args[0]))["visits"].append(args[1])


@settings(max_examples=150)
@given(
    before=st.lists(steps, max_size=8),
    during=st.lists(steps, max_size=12),
    keep=st.booleans(),
)
def test_property_rollback_restores_any_sequence(
    before: list[tuple[Any, ...]], during: list[tuple[Any, ...]], keep: bool
) -> None:
    hook = Hook()
    entered: list[str] = []
    machine = build_logging_order_machine(entered)
    machine._hooks.append(hook)
    machine.start()
    for step in before:
        run_step(machine, step)
    watch = Watch(machine)
    point = adapter.checkpoint(machine)
    for step in during:
        run_step(machine, step)
    changed = snap(machine)
    calls, actions = len(hook.calls), len(entered)
    if keep:
        point.close()
        assert snap(machine) == changed
        watch.assert_untouched_graphs()
    else:
        point.rollback()
        watch.assert_restored()
    assert (len(hook.calls), len(entered)) == (calls, actions)
