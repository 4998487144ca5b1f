"""Record formats, machines and process targets for tests/test_struct_upcast.py.

``order`` has three format versions (1 -> 2 -> 3); ``note`` is another kind
that no migration of ``order`` may touch. A "release" is a FormatRegistry:
``release(1)`` knows only version 1, ``release(2)`` adds version 2 with its
upcaster, and so on. Every order embedded in a machine is a pure function of
the machine's key and a slot number, so any process can say what a machine
must hold without remembering what was written. Importable by ``spawn``
children (the killed-migration test).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from gotstate.core.events import Event
from gotstate.core.state_machine import CompositeStateMachine
from machines import build_composite_machine, state_named

import gotstate_persist as gp

NAMESPACE = "ns"


class OrderV1(msgspec.Struct, frozen=True):
    id: str
    cents: int
    lines: list[str]


class OrderV2(msgspec.Struct, frozen=True):
    id: str
    cents: int
    items: dict[str, int]
    currency: str


class OrderV3(msgspec.Struct, frozen=True):
    id: str
    price: tuple[int, str]
    items: dict[str, int]


class Note(msgspec.Struct, frozen=True):
    text: str


def to_v2(data: dict[str, Any]) -> dict[str, Any]:
    items: dict[str, int] = {}
    for sku in data["lines"]:
        items[sku] = items.get(sku, 0) + 1
    return {"id": data["id"], "cents": data["cents"], "items": items, "currency": "EUR"}


def to_v3(data: dict[str, Any]) -> dict[str, Any]:
    return {"id": data["id"], "price": [data["cents"], data["currency"]], "items": data["items"]}


ORDER_TYPES: dict[int, type[msgspec.Struct]] = {1: OrderV1, 2: OrderV2, 3: OrderV3}
UPCASTERS = {2: to_v2, 3: to_v3}


def release(newest: int, *, oldest: int = 1) -> gp.FormatRegistry:
    """The formats of the release whose newest ``order`` version is ``newest``."""
    registry = gp.FormatRegistry()
    for version in range(oldest, newest + 1):
        registry.register(
            ORDER_TYPES[version],
            kind="order",
            version=version,
            upcast=UPCASTERS.get(version),
        )
    registry.register(Note, kind="note", version=1)
    return registry


def order_v1(key: str, slot: int) -> OrderV1:
    """The version-1 order a machine of ``key`` holds in ``slot``."""
    return OrderV1(f"{key}#{slot}", 100 * slot + len(key), ["a", "b", "a", "c"][: slot % 4 + 1])


def upcast(value: msgspec.Struct, newest: int) -> msgspec.Struct:
    """``value`` (an order of any version) computed by hand at version ``newest``."""
    version = next(v for v, t in ORDER_TYPES.items() if type(value) is t)
    data = msgspec.to_builtins(value)
    for step in range(version + 1, newest + 1):
        data = UPCASTERS[step](data)
    return msgspec.convert(data, ORDER_TYPES[newest])


def build() -> CompositeStateMachine:
    """A fresh, unstarted machine of the shape the tests save."""
    return build_composite_machine()


def submachine(machine: CompositeStateMachine) -> Any:
    return machine._submachines[state_named(machine, "review")]


def set_data(machine: Any, state: str, key: str, value: object) -> None:
    machine._graph.set_state_data(state_named(machine, state), key, value)


def machine_with_orders(key: str, orders: dict[int, msgspec.Struct] | None = None) -> Any:
    """A started machine in ``review`` whose state data holds orders, as saved by release 1.

    Slots: 0 directly in the top machine's ``idle`` data; 1 in a list and 2
    in a tuple inside a dict in ``step-a``; 3 in the submachine's
    ``approved``. ``orders`` overrides the value of a slot (any version).
    """
    chosen: dict[int, msgspec.Struct] = {slot: order_v1(key, slot) for slot in range(4)}
    chosen.update(orders or {})
    machine = build()
    machine.start()
    for name in ("go", "next", "next"):
        machine.process_event(Event(name))
    set_data(machine, "idle", "order", chosen[0])
    set_data(
        machine,
        "step-a",
        "many",
        [chosen[1], {"nested": (chosen[2], 7), "note": Note(f"note of {key}")}],
    )
    sub = submachine(machine)
    sub.start()
    sub.process_event(Event("approve"))
    set_data(sub, "approved", "order", chosen[3])
    set_data(sub, "draft", "by", "alice")
    return machine


def orders_in(machine: Any) -> dict[int, Any]:
    """The values in the slots of :func:`machine_with_orders`, as a machine holds them."""
    top, sub = machine._graph, submachine(machine)._graph
    step_a = top._state_data[state_named(machine, "step-a")]["many"]
    return {
        0: top._state_data[state_named(machine, "idle")]["order"],
        1: step_a[0],
        2: step_a[1]["nested"][0],
        3: sub._state_data[state_named(submachine(machine), "approved")]["order"],
    }


#: The killed-migration data set: 330 keys, every 11th a top-level order
#: record, the other 300 machines holding four embedded orders each.
KILL_KEYS = [f"m{i:04d}" for i in range(330)]


def kill_is_record(key: str) -> bool:
    return int(key[1:]) % 11 == 10


def seed_kill_data(store: gp.Store, keys: list[str]) -> None:
    for key in keys:
        if kill_is_record(key):
            store.save(key, order_v1(key, 9))
        else:
            store.save_machine(key, machine_with_orders(key))


def migrate_until_killed(
    url: str, keys_text: str, batch_size: int, threshold: int, reached: Any, finished: Any
) -> None:
    """Migrate ``order`` with release 2; set ``reached`` once progress reports ``threshold``.

    If the run ends before the parent's SIGKILL, ``finished`` is set and the
    process waits to be killed, so the parent can tell the kill came too late.
    """

    def progress(done: int, total: int) -> None:
        if done >= threshold:
            reached.set()

    keyring = gp.KeyRing.load(keys_text)
    with gp.open_store(url, namespace=NAMESPACE, keyring=keyring, formats=release(2)) as store:
        store.migrate("order", batch_size=batch_size, progress=progress)
    finished.set()
    reached.set()
    time.sleep(600)
