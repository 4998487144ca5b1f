"""gp.AsyncStore: awaitable twins of every Store method, on a bounded pool it owns.

Real SQLite files, PostgreSQL (``pg_url``) and S3 (moto, ``s3_url``); nothing
mocks storage. pytest-asyncio is not installed, so each test drives its own
event loop with ``asyncio.run``. Async machines, their locks and cancellation
are in test_async_machines.py.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from _sqlite_lock import WriteLock
from machines import observe
from order_workflow import build_order_machine, set_data

import gotstate_persist as gp
from gotstate_persist._async_pool import THREAD_NAME_PREFIX

T = TypeVar("T")
SYNC_NS, ASYNC_NS = "ns-sync", "ns-async"
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
#: Store properties whose twin is the same sync object (reading them does no I/O).
SYNC_PROPERTIES = {"namespace", "backend", "formats", "pipeline", "extensions", "config"}


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


class Order(msgspec.Struct, frozen=True):
    id: str
    total: int


class Unregistered(msgspec.Struct, frozen=True):
    text: str


def formats() -> gp.FormatRegistry:
    registry = gp.FormatRegistry()
    registry.register(Order, kind="order", version=1)
    return registry


@pytest.fixture(params=["sqlite", "postgresql", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}", {}
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url"), {}
    url, options = request.getfixturevalue("s3_url")
    return url, dict(options)


def pool_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_NAME_PREFIX)]


# Every Store method has a twin with the same signature.


def test_every_store_method_has_an_awaitable_twin_with_the_same_signature() -> None:
    public = [name for name in dir(gp.Store) if not name.startswith("_")]
    assert public, "no public Store names found"
    for name in public:
        assert hasattr(gp.AsyncStore, name), f"AsyncStore has no twin of Store.{name}"
        sync, twin = getattr(gp.Store, name), getattr(gp.AsyncStore, name)
        if isinstance(sync, property) and name in SYNC_PROPERTIES:
            assert isinstance(twin, property), name
            continue
        assert inspect.iscoroutinefunction(twin), f"AsyncStore.{name} is not awaitable"
        if isinstance(sync, property):  # Store.quota: a method on the twin, no arguments
            assert list(inspect.signature(twin).parameters) == ["self"], name
            continue
        assert inspect.signature(twin).parameters == inspect.signature(sync).parameters, name


def test_open_async_store_takes_open_stores_arguments() -> None:
    sync = inspect.signature(gp.open_store).parameters
    twin = inspect.signature(gp.open_async_store).parameters
    assert [p for p in twin if p != "max_workers"] == list(sync)
    for name, parameter in sync.items():
        assert twin[name].kind == parameter.kind and twin[name].default == parameter.default


# Same results, same errors, on every kind of storage.

Step = tuple[str, tuple[Any, ...], dict[str, Any]]
STARTED = object()  # a started order machine, moved to "payment" with data
FRESH = object()  # a fresh order machine, never started
OTHER = object()  # a machine of another structure


def save(key: str, total: int = 1, **kwargs: Any) -> Step:
    return ("save", (key, Order(key, total)), kwargs)


CASES: dict[str, list[Step]] = {
    "save": [save("o"), save("o", 2), save("o/2", 3)],
    "save-compare-and-set": [
        save("o"),
        save("o", 2, expected_version=1),
        save("o", 3, expected_version=1),
    ],
    "save-invalid": [
        ("save", ("", Order("x", 1)), {}),
        ("save", ("u", Unregistered("x")), {}),
        ("save", ("u", "not a record"), {}),
    ],
    "load": [
        save("o"),
        save("o", 2),
        ("load", ("o",), {}),
        ("load", ("o",), {"version": 1}),
        ("load", ("o",), {"version": 9}),
        ("load", ("missing",), {}),
        ("load", ("bad\x00key",), {}),
    ],
    "versions": [save("o"), save("o", 2), ("versions", ("o",), {}), ("versions", ("nope",), {})],
    "keys": [
        save("a/1"),
        save("a/2"),
        save("b"),
        ("keys", (), {}),
        ("keys", ("a/",), {}),
        ("keys", (3,), {}),
    ],
    "delete": [
        save("o"),
        save("o", 2),
        ("delete", ("o",), {"version": 1}),
        ("delete", ("o",), {"version": 0}),
        ("delete", ("o",), {}),
        ("delete", ("o",), {}),
        ("versions", ("o",), {}),
    ],
    "usage": [save("o"), save("p"), ("usage", (), {}), ("usage", (), {"recount": True})],
    "save_machine": [
        ("save_machine", ("m", STARTED), {}),
        ("save_machine", ("m", STARTED), {"expected_version": 7}),
        ("save_machine", ("m", "not a machine"), {}),
        ("save_machine", ("", STARTED), {}),
    ],
    "restore_machine": [
        ("save_machine", ("m", STARTED), {}),
        ("restore_machine", ("m", FRESH), {}),
        ("restore_machine", ("m", FRESH), {"version": 4}),
        ("restore_machine", ("missing", FRESH), {}),
        ("restore_machine", ("m", OTHER), {}),
        save("o"),
        ("restore_machine", ("o", FRESH), {}),
    ],
    "migrate": [
        save("o"),
        ("migrate", ("order",), {}),
        ("migrate", ("order",), {"dry_run": True, "batch_size": 1}),
        ("migrate", ("order",), {"batch_size": 0}),
        ("migrate", ("unknown-kind",), {}),
    ],
    "reseal": [save("o"), save("p"), ("reseal", (), {}), ("reseal", (), {"batch_size": -1})],
    "quota": [
        ("quota", (), {}),
        ("set_quota", (gp.Quota(max_records=2),), {}),
        ("quota", (), {}),
        save("o"),
        save("o", 2),
        save("o", 3),
        ("set_quota", ("not a quota",), {}),
        ("set_quota", (None,), {}),
        ("quota", (), {}),
    ],
}


def build_other() -> Any:
    from gotstate.core.state_machine import StateMachine
    from gotstate.core.states import State

    return StateMachine(State("elsewhere"))


def machine_for(marker: object) -> Any:
    if marker is OTHER:
        return build_other()
    machine = build_order_machine()
    if marker is STARTED:
        machine.start()
        for name in ("start", "checkout"):
            machine.process_event(gp_event(name))
        set_data(machine, "payment", "amount", 42)
    return machine


def materialise(args: tuple[Any, ...]) -> tuple[tuple[Any, ...], list[Any]]:
    """Fresh machines for the markers; also returned, to compare them afterwards."""
    markers = (STARTED, FRESH, OTHER)
    real = tuple(machine_for(arg) if any(arg is m for m in markers) else arg for arg in args)
    machines = [made for made, arg in zip(real, args, strict=True) if made is not arg]
    return real, machines


def gp_event(name: str) -> Any:
    from gotstate.core.events import Event

    return Event(name)


def normalise(value: Any, namespace: str) -> Any:
    if isinstance(value, gp.SnapshotRef):
        assert value.namespace == namespace
        return msgspec.structs.replace(value, created_at=EPOCH, namespace="NS")
    if isinstance(value, list):
        return [normalise(item, namespace) for item in value]
    return value


def outcome(store: gp.Store, step: Step, real: tuple[Any, ...]) -> tuple[Any, ...]:
    name, _, kwargs = step
    try:
        result = store.quota if name == "quota" else getattr(store, name)(*real, **kwargs)
        return ("ok", normalise(result, SYNC_NS))
    except gp.PersistError as exc:
        return ("error", type(exc), str(exc).replace(SYNC_NS, "NS"))


async def async_outcome(
    astore: gp.AsyncStore, step: Step, real: tuple[Any, ...]
) -> tuple[Any, ...]:
    name, _, kwargs = step
    try:
        return ("ok", normalise(await getattr(astore, name)(*real, **kwargs), ASYNC_NS))
    except gp.PersistError as exc:
        return ("error", type(exc), str(exc).replace(ASYNC_NS, "NS"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_twins_return_and_raise_what_the_store_does(
    case: str, location: tuple[str, dict[str, Any]], keyring: gp.KeyRing
) -> None:
    url, options = location
    steps = CASES[case]
    expected: list[tuple[Any, ...]] = []
    with gp.open_store(url, namespace=SYNC_NS, keyring=keyring, formats=formats(), **options) as s:
        for step in steps:
            real, machines = materialise(step[1])
            expected.append(outcome(s, step, real))
            expected.append(("machines", [observe(m) for m in machines]))

    async def twin() -> list[tuple[Any, ...]]:
        found: list[tuple[Any, ...]] = []
        opened = gp.open_async_store(
            url, namespace=ASYNC_NS, keyring=keyring, formats=formats(), **options
        )
        async with opened as astore:
            for step in steps:
                real, machines = materialise(step[1])
                found.append(await async_outcome(astore, step, real))
                found.append(("machines", [observe(m) for m in machines]))
        return found

    assert run(twin()) == expected


# Opening, closing, the pool.


def test_await_opens_and_methods_need_an_open_store(sqlite_url: str, keyring: gp.KeyRing) -> None:
    async def scenario() -> None:
        astore = gp.open_async_store(sqlite_url, keyring=keyring, formats=formats())
        assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # nothing opened yet
        with pytest.raises(gp.InvalidArgument, match="not open yet"):
            await astore.keys()
        with pytest.raises(gp.InvalidArgument, match="not open yet"):
            astore.namespace  # noqa: B018
        assert await astore is astore
        assert await astore is astore  # awaiting again is harmless
        await astore.save("o", Order("o", 1))
        assert astore.namespace == "default"
        assert isinstance(astore.formats, gp.FormatRegistry)
        assert isinstance(astore.extensions, gp.ExtensionRegistry)
        assert isinstance(astore.config, gp.ConfigStore)
        await astore.aclose()
        await astore.aclose()  # idempotent
        with pytest.raises(gp.InvalidArgument, match="closed"):
            await astore.load("o")
        with pytest.raises(gp.InvalidArgument, match="closed"):
            await astore
        # a plain Store sees what the twin wrote
        with gp.open_store(sqlite_url, keyring=keyring, formats=formats()) as store:
            assert store.load("o") == Order("o", 1)

    run(scenario())
    assert pool_threads() == []


def test_open_errors_are_raised_when_awaited(tmp_path: Path, keyring: gp.KeyRing) -> None:
    async def scenario() -> None:
        with pytest.raises(gp.InvalidArgument, match="nosuch"):
            async with gp.open_async_store("nosuch://x", keyring=keyring):
                pass
        with pytest.raises(gp.InvalidArgument):
            await gp.open_async_store(f"sqlite:///{tmp_path / 'x.db'}", keyring="not a keyring")  # type: ignore[arg-type]
        with pytest.raises(gp.InvalidArgument, match="max_workers"):
            gp.open_async_store(f"sqlite:///{tmp_path / 'x.db'}", keyring=keyring, max_workers=0)
        with pytest.raises(gp.InvalidArgument, match="max_workers"):
            gp.AsyncStore(lambda: None, max_workers=True)  # type: ignore[arg-type,return-value]
        with pytest.raises(gp.InvalidArgument, match="Store"):
            gp.AsyncStore("sqlite:///x.db")  # type: ignore[arg-type]

    run(scenario())
    assert pool_threads() == []


def test_wrapping_an_open_store_owns_and_closes_it(sqlite_url: str, keyring: gp.KeyRing) -> None:
    store = gp.open_store(sqlite_url, keyring=keyring, formats=formats())

    async def scenario() -> None:
        async with gp.AsyncStore(store, max_workers=2) as astore:
            ref = await astore.save("o", Order("o", 1))
            assert ref.version == 1
            assert astore.max_workers == 2

    run(scenario())
    with pytest.raises(gp.BackendError):
        store.load("o")  # closed by the AsyncStore


def test_pool_is_bounded_and_its_threads_end_on_close(sqlite_url: str, keyring: gp.KeyRing) -> None:
    seen: list[int] = []

    async def scenario() -> None:
        async with gp.open_async_store(sqlite_url, keyring=keyring, max_workers=3) as astore:

            async def one(i: int) -> gp.SnapshotRef:
                machine = build_order_machine()
                machine.start()
                ref = await astore.save_machine(f"m-{i}", machine)
                seen.append(len(pool_threads()))
                return ref

            refs = await asyncio.gather(*(one(i) for i in range(50)))
            assert sorted(r.key for r in refs) == sorted(f"m-{i}" for i in range(50))
            assert astore.pending == 0
            assert 1 <= len(pool_threads()) <= 3

    run(scenario())
    assert seen and max(seen) <= 3
    assert pool_threads() == []


def test_the_event_loop_keeps_running_while_every_worker_waits(
    sqlite_url: str, keyring: gp.KeyRing
) -> None:
    """50 saves queue behind a SQLite write lock another connection holds.

    The loop itself releases the lock once it has ticked 50 times; a store
    that blocked the loop would stall it until the safety net (a timer
    thread) releases the lock instead, a gap of SAFETY_NET_S.
    """
    ticks_before_release = 50
    tick_s = 0.01
    safety_net_s = 10.0

    async def scenario() -> None:
        async with gp.open_async_store(sqlite_url, keyring=keyring) as astore:
            await astore.save_machine("warm-up", build_order_machine())
            loop = asyncio.get_running_loop()
            gaps: list[float] = []
            done_at_release: list[int] = []
            saves: list[asyncio.Task[gp.SnapshotRef]] = []
            with WriteLock(sqlite_url) as held:
                held.release_later(safety_net_s)

                async def ticker() -> None:
                    last = loop.time()
                    while True:
                        await asyncio.sleep(tick_s)
                        now = loop.time()
                        gaps.append(now - last)
                        last = now
                        if len(gaps) == ticks_before_release:
                            done_at_release.append(sum(t.done() for t in saves))
                            held.release()

                async def one(i: int) -> gp.SnapshotRef:
                    machine = build_order_machine()
                    machine.start()
                    set_data(machine, "idle", "blob", "x" * 1024)
                    return await astore.save_machine(f"k-{i}", machine)

                ticking = asyncio.create_task(ticker())
                saves.extend(asyncio.create_task(one(i)) for i in range(50))
                refs = await asyncio.gather(*saves)
                ticking.cancel()
            assert [r.version for r in refs] == [1] * 50
            assert done_at_release == [0]  # every save was still waiting on the lock
            assert len(gaps) >= ticks_before_release
            # a tick is 10 ms; 0.5 s allows for a loaded shared machine and is
            # far below the safety net's 10 s that a blocked loop would show
            assert max(gaps) < 0.5

    run(scenario())


def test_reprs_hold_no_secrets(
    pg_url: str, s3_url: tuple[str, dict[str, Any]], keyring: gp.KeyRing
) -> None:
    from urllib.parse import urlsplit

    password = urlsplit(pg_url).password
    assert password
    url, options = s3_url
    secret = options["secret"]

    async def scenario() -> None:
        for opened, hidden in (
            (gp.open_async_store(pg_url, keyring=keyring), password),
            (gp.open_async_store(url, keyring=keyring, **options), secret),
        ):
            texts = [repr(opened)]
            async with opened as astore:
                texts.append(repr(astore))
                texts.append(str(astore))
            texts.append(repr(opened))
            assert not any(hidden in text for text in texts), texts
            assert "not open" in texts[0] and "closed" in texts[-1]

    run(scenario())


def test_to_thread_runs_blocking_calls_in_the_pool_with_the_callers_context(
    sqlite_url: str, keyring: gp.KeyRing
) -> None:
    import contextvars

    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")

    async def scenario() -> None:
        async with gp.open_async_store(sqlite_url, keyring=keyring, formats=formats()) as astore:
            await astore.save("o", Order("o", 1))
            request_id.set("r-17")
            seen = await astore.to_thread(
                lambda: (request_id.get(), threading.current_thread().name)
            )
            assert seen[0] == "r-17" and seen[1].startswith(THREAD_NAME_PREFIX)
            usage = await astore.to_thread(astore.backend.usage, astore.namespace)
            assert usage == await astore.usage()
            assert usage.records == 1

    run(scenario())
