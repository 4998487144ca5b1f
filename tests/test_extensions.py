"""The extension registry end to end: registrations as records, lifecycle, binding, guards.

Worker-isolation hostile cases at the process level are in
test_extension_worker.py; here every case goes through ``store.extensions``
and checks what the contract promises at that level: the named error, the
stats, the persisted status and reason, and that nothing else was written.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gotstate.core.events import Event

import gotstate_persist as gp
from tests.machines import build_ring_machine

SAMPLES = Path(__file__).parent / "ext_samples"
THROTTLE = f"{SAMPLES / 'throttle.py'}:Throttle"
AUDIT = f"{SAMPLES / 'audit.py'}:Audit"
GUARDED = f"{SAMPLES / 'guarded.py'}:Guarded"
FAST = gp.ResourceLimits(timeout_s=5.0, start_timeout_s=20.0, memory_bytes=None)


@pytest.fixture
def exts(store: gp.Store) -> Iterator[gp.ExtensionRegistry]:
    yield store.extensions


def _copy_sample(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    target.write_text((SAMPLES / name).read_text())
    return target


def _release_guarded() -> None:
    for module in list(sys.modules.values()):
        release = getattr(module, "RELEASE", None)
        if release is not None and getattr(module, "Guarded", None) is not None:
            release.set()


def test_registration_is_a_hidden_sealed_record(store: gp.Store, keyring: gp.KeyRing) -> None:
    exts = store.extensions
    before = store.usage()
    reg = exts.register(THROTTLE, limits=FAST)
    assert (reg.name, reg.category, reg.version, reg.revision) == (
        "throttle",
        "event_processing",
        "1.0.0",
        1,
    )
    assert reg.status == "registered" and reg.isolation == "worker"
    assert reg.interface == ("process",)
    assert reg.files and all(len(digest) == 64 for digest in reg.files.values())
    assert store.keys() == []
    after = store.usage()
    assert after.records == before.records + 1 and after.bytes > before.bytes
    assert after.keys == before.keys
    assert [r.name for r in exts.list()] == ["throttle"]
    assert exts.get("throttle") == reg
    other = gp.Store(store.backend, keyring=keyring, namespace="elsewhere")
    assert other.extensions.list() == []
    with pytest.raises(gp.NotFound, match="no extension named 'throttle'"):
        other.extensions.get("throttle")


def test_every_problem_is_reported_at_once(exts: gp.ExtensionRegistry, store: gp.Store) -> None:
    with pytest.raises(gp.ExtensionInvalid) as caught:
        exts.register(f"{SAMPLES / 'invalid_many.py'}:Broken")
    problems = caught.value.problems
    assert any("name" in p for p in problems)
    assert any("MAJOR.MINOR.PATCH" in p for p in problems)
    assert any("requires" in p and "not satisfied" in p for p in problems)
    assert any("process() must take 1 argument" in p for p in problems)
    assert isinstance(caught.value, gp.InvalidArgument)
    with pytest.raises(gp.ExtensionInvalid, match="at least one of"):
        exts.register(f"{SAMPLES / 'invalid_many.py'}:NoMethods")
    with pytest.raises(gp.ExtensionInvalid, match="unknown category"):
        exts.register(f"{SAMPLES / 'invalid_many.py'}:UnknownCategory")
    with pytest.raises(gp.ExtensionInvalid):
        exts.register(f"{SAMPLES / 'nowhere.py'}:Thing")
    assert store.usage().records == 0


def test_cas_upgrades_and_history(exts: gp.ExtensionRegistry, tmp_path: Path) -> None:
    source = _copy_sample(tmp_path, "throttle.py")
    target = f"{source}:Throttle"
    exts.register(target, limits=FAST)
    with pytest.raises(gp.VersionConflict, match="revision 1, not 0"):
        exts.register(target, limits=FAST)
    assert len(exts.history("throttle")) == 1
    source.write_text(source.read_text().replace('"1.0.0"', '"1.1.0"'))
    upgraded = exts.register(target, limits=FAST, expected_version=1)
    assert (upgraded.revision, upgraded.version) == (2, "1.1.0")
    assert "upgraded from 1.0.0" in upgraded.reason
    source.write_text(source.read_text().replace('"1.1.0"', '"1.0.5"'))
    with pytest.raises(gp.ExtensionInvalid, match=r"lower than the registered 1\.1\.0"):
        exts.register(target, limits=FAST, expected_version=2)
    source.write_text(source.read_text().replace('"1.0.5"', '"2.0.0"'))
    with pytest.raises(gp.ExtensionInvalid, match="allow_major=True"):
        exts.register(target, limits=FAST, expected_version=2)
    assert exts.register(target, limits=FAST, expected_version=2, allow_major=True).revision == 3
    assert [r.version for r in exts.history("throttle")] == ["1.0.0", "1.1.0", "2.0.0"]


def test_policy_caps_limits(exts: gp.ExtensionRegistry) -> None:
    exts.set_policy(max_limits=gp.ResourceLimits(timeout_s=1.0, memory_bytes=256 << 20))
    with pytest.raises(gp.ExtensionInvalid, match=r"limits.timeout_s=5.0 is over"):
        exts.register(THROTTLE, limits=gp.ResourceLimits(timeout_s=5.0, memory_bytes=128 << 20))
    reg = exts.register(THROTTLE)
    assert reg.limits.timeout_s == 1.0 and reg.limits.memory_bytes == 256 << 20


def _machine() -> Any:
    machine = build_ring_machine(12, groups=2)
    machine.start()
    return machine


def _state(machine: Any) -> str:
    return str(machine.current_state.name)


def test_lifecycle_persists_each_change_once(exts: gp.ExtensionRegistry) -> None:
    exts.register(THROTTLE, limits=FAST)
    handle = exts.activate("throttle")
    assert exts.get("throttle").status == "active"
    assert exts.activate("throttle") is handle
    assert len(exts.history("throttle")) == 2
    bound = exts.bind(_machine(), "throttle")
    assert bound.process_event(Event("next"))
    reg = exts.deactivate("throttle", timeout=5)
    assert reg.status == "inactive" and reg.stats is not None
    assert reg.stats.calls == 1 and reg.stats.ok == 1
    assert [r.status for r in exts.history("throttle")] == ["registered", "active", "inactive"]
    with pytest.raises(gp.ExtensionUnavailable):
        bound.process_event(Event("next"))
    unregistered = exts.unregister("throttle")
    assert unregistered.status == "unregistered" and exts.list() == []
    assert exts.list(include_unregistered=True)[0].name == "throttle"
    with pytest.raises(gp.ExtensionUnavailable, match="unregistered"):
        exts.activate("throttle")
    again = exts.register(THROTTLE, limits=FAST, expected_version=unregistered.revision)
    assert again.status == "registered" and again.reason == "registered"


def test_processors_and_behaviors_drive_the_machine(
    exts: gp.ExtensionRegistry, store: gp.Store
) -> None:
    exts.register(THROTTLE, limits=FAST)
    exts.register(AUDIT, limits=FAST)
    exts.activate("throttle")
    exts.activate("audit")
    machine = _machine()
    bound = exts.bind(machine, "throttle", "audit", key="order-1")
    assert not bound.process_event(Event("spam"))  # dropped before the machine
    assert _state(machine) == "start"
    assert bound.process_event(Event("next"))
    entered = _state(machine)
    assert entered != "start"
    assert bound.process_event(Event("burst"))  # fanned out into two steps
    veto = Event("next")
    veto.metadata["veto"] = True
    position = _state(machine)
    assert not bound.process_event(veto)
    assert _state(machine) == position
    store.save_machine("order-1", machine)
    fresh = _machine()
    store.restore_machine("order-1", fresh)
    assert _state(fresh) == _state(machine)
    bound.unbind()
    assert machine.process_event(Event("next"))  # the bare machine, nothing bound
    stats = exts.handle("audit").stats()
    assert stats.calls > 0 and stats.failures == 0


def test_behavior_state_data_updates(exts: gp.ExtensionRegistry) -> None:
    exts.register(AUDIT, limits=FAST)
    exts.activate("audit")
    machine = _machine()
    bound = exts.bind(machine, "audit", key="k-9")
    bound.process_event(Event("next"))
    from gotstate_persist.machine import state_data_copy

    leaf = machine.current_state
    values = state_data_copy(machine, leaf)
    assert values["entered"] == 1 and values["last_event"] == "next" and values["key"] == "k-9"
    failing = Event("next")
    failing.metadata["fail_enter"] = True
    with pytest.raises(gp.ExtensionFailed, match="raised ValueError"):
        bound.process_event(failing)
    new_leaf = machine.current_state
    assert new_leaf != leaf  # the transition happened; the failed behavior's update did not
    assert "entered" not in state_data_copy(machine, new_leaf)


def test_processor_failure_leaves_machine_untouched(exts: gp.ExtensionRegistry) -> None:
    exts.register(THROTTLE, limits=FAST)
    exts.activate("throttle")
    machine = _machine()
    bound = exts.bind(machine, "throttle")
    for name, error in (("bad", gp.ExtensionFailed), ("boom", gp.ExtensionFailed)):
        with pytest.raises(error):
            bound.process_event(Event(name))
        assert _state(machine) == "start"
    with pytest.raises(gp.ExtensionFailed, match="over max_events"):
        bound.process_event(Event("flood"))
    stats = exts.handle("throttle").stats()
    assert stats.failures == 3 and stats.rejected["invalid_output"] == 2


def test_code_changed_after_registration(exts: gp.ExtensionRegistry, tmp_path: Path) -> None:
    source = _copy_sample(tmp_path, "throttle.py")
    exts.register(f"{source}:Throttle", limits=FAST)
    source.write_text(source.read_text() + "\n# edited\n")
    with pytest.raises(gp.ExtensionCodeChanged) as caught:
        exts.activate("throttle")
    assert "throttle.py" in str(caught.value)
    assert isinstance(caught.value, gp.IntegrityError)
    reg = exts.get("throttle")
    assert reg.status == "failed" and "code changed" in reg.reason
    assert exts.verify()["throttle"].changed == ("throttle.py",)


GUARD_LIMITS = gp.ResourceLimits(timeout_s=0.3, max_failures=3)


@pytest.fixture
def guarded(exts: gp.ExtensionRegistry) -> Iterator[gp.ActiveExtension]:
    exts.register(GUARDED, isolation="in-process", limits=GUARD_LIMITS)
    yield exts.activate("guarded")
    _release_guarded()


@pytest.mark.parametrize(
    ("event", "error", "match"),
    [
        ("raise", gp.ExtensionFailed, "raised ValueError"),
        ("exit", gp.ExtensionFailed, "raised SystemExit"),
        ("interrupt", gp.ExtensionFailed, "raised KeyboardInterrupt"),
        ("object", gp.ExtensionFailed, "invalid output"),
        ("deep", gp.ExtensionFailed, "invalid output"),
        ("hang", gp.ExtensionTimeout, "within 0.3 s"),
    ],
)
def test_guarded_failures_are_named_and_counted(
    exts: gp.ExtensionRegistry,
    guarded: gp.ActiveExtension,
    event: str,
    error: type[Exception],
    match: str,
) -> None:
    machine = _machine()
    bound = exts.bind(machine, "guarded")
    with pytest.raises(error, match=match) as caught:
        bound.process_event(Event(event))
    assert "secret-canary" not in str(caught.value)
    assert _state(machine) == "start"
    stats = guarded.stats()
    assert stats.failures == 1 and stats.ok == 0
    if event == "hang":
        assert stats.timeouts == 1 and stats.stuck == 1
    assert bound.process_event(Event("next"))  # the host and the extension still work


def test_circuit_opens_and_is_persisted(
    exts: gp.ExtensionRegistry, guarded: gp.ActiveExtension
) -> None:
    bound = exts.bind(_machine(), "guarded")
    for _ in range(3):
        with pytest.raises(gp.ExtensionFailed):
            bound.process_event(Event("raise"))
    with pytest.raises(gp.ExtensionUnavailable, match="circuit opened after 3"):
        bound.process_event(Event("next"))
    reg = exts.get("guarded")
    assert reg.status == "failed" and "3 consecutive failures" in reg.reason
    assert reg.stats is not None and reg.stats.failures == 3
    handle = exts.activate("guarded")
    assert handle.active and exts.get("guarded").status == "active"


def test_rate_and_queue_refusals_are_not_failures(exts: gp.ExtensionRegistry) -> None:
    exts.register(
        GUARDED,
        isolation="in-process",
        limits=gp.ResourceLimits(rate_per_s=2, burst=2, max_failures=1),
    )
    handle = exts.activate("guarded")
    bound = exts.bind(_machine(), "guarded")
    bound.process_event(Event("x"))
    bound.process_event(Event("x"))
    with pytest.raises(gp.RateLimited):
        bound.process_event(Event("x"))
    stats = handle.stats()
    assert stats.rejected["rate"] == 1 and stats.failures == 0 and handle.active


def test_input_too_large_is_refused_before_the_call(exts: gp.ExtensionRegistry) -> None:
    exts.register(GUARDED, isolation="in-process", limits=gp.ResourceLimits(max_input_bytes=64))
    handle = exts.activate("guarded")
    event = Event("x")
    event.metadata["blob"] = b"x" * 200
    with pytest.raises(gp.ExtensionResourceError) as caught:
        exts.bind(_machine(), "guarded").process_event(event)
    assert caught.value.resource == "max_input_bytes"
    assert handle.stats().calls == 0 and handle.stats().rejected["size"] == 1


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_deactivate_survives_a_bad_stop(
    exts: gp.ExtensionRegistry, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("GUARDED_STOP_TEST", mode)
    exts.register(GUARDED, isolation="in-process")
    exts.activate("guarded")
    started = time.monotonic()
    reg = exts.deactivate("guarded", timeout=0.5)
    assert time.monotonic() - started < 0.5 + 1.0
    assert reg.status == "inactive"
    assert ("stop() raised RuntimeError" if mode == "raise" else "did not return") in reg.reason


def _register_racing(url: str, keys: str, target: str, barrier: Any, results: Any) -> None:
    keyring = gp.KeyRing.load(keys)
    with gp.open_store(url, keyring=keyring) as store:
        barrier.wait()
        try:
            store.extensions.register(target, expected_version=1)
            results.put("won")
        except gp.VersionConflict:
            results.put("conflict")


def test_concurrent_stale_registrations_have_one_winner(
    sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path
) -> None:
    source = _copy_sample(tmp_path, "throttle.py")
    with gp.open_store(sqlite_url, keyring=keyring) as store:
        store.extensions.register(f"{source}:Throttle")
    source.write_text(source.read_text().replace('"1.0.0"', '"1.0.1"'))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    results = context.Queue()
    workers = [
        context.Process(
            target=_register_racing,
            args=(sqlite_url, keyring.export(), f"{source}:Throttle", barrier, results),
        )
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    outcomes = sorted(results.get(timeout=5) for _ in workers)
    assert outcomes == ["conflict", "conflict", "conflict", "won"]
    with gp.open_store(sqlite_url, keyring=keyring) as store:
        assert [r.revision for r in store.extensions.history("throttle")] == [1, 2]


def test_guarded_is_not_contained(
    exts: gp.ExtensionRegistry, guarded: gp.ActiveExtension, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claims ladder, honestly: in-process code sees the host's environment."""
    monkeypatch.setenv("GOTSTATE_PERSIST_CANARY", "visible-in-process")
    (found,) = guarded.call("process", gp.EventView("env"))
    assert "GOTSTATE_PERSIST_CANARY" in found.metadata["keys"]


def test_registrations_count_toward_records_and_bytes_only(
    sqlite_url: str, keyring: gp.KeyRing
) -> None:
    quota = gp.Quota(max_keys=1, max_versions_per_key=1, max_records=3)
    with gp.open_store(sqlite_url, keyring=keyring, quota=quota) as store:
        exts = store.extensions
        store.save_machine("only-key", _machine())
        reg = exts.register(THROTTLE, limits=FAST)  # max_keys does not count it
        exts.activate("throttle")  # nor max_versions_per_key: a second revision
        assert len(exts.history("throttle")) == 2 and store.usage().records == 3
        with pytest.raises(gp.QuotaExceeded) as caught:
            exts.deactivate("throttle", timeout=5)
        assert caught.value.limit == "max_records"
        assert [r.revision for r in exts.history("throttle")] == [1, 2]
        assert store.usage().records == 3 and reg.revision == 1


def test_queue_full_is_busy_not_a_failure(exts: gp.ExtensionRegistry) -> None:
    import threading

    exts.register(
        GUARDED,
        isolation="in-process",
        limits=gp.ResourceLimits(timeout_s=5.0, max_concurrency=1, max_queue=0, max_failures=1),
    )
    handle = exts.activate("guarded")
    stuck = threading.Thread(target=lambda: handle.call("process", gp.EventView("hang")))
    stuck.start()
    try:
        deadline = time.monotonic() + 5
        while handle.stats().calls == 0 and time.monotonic() < deadline:
            with pytest.raises(gp.ExtensionBusy, match="max_queue=0"):
                handle.call("process", gp.EventView("x"))
            break
        assert handle.stats().rejected["concurrency"] == 1
        assert handle.stats().failures == 0 and handle.active
    finally:
        _release_guarded()
        stuck.join(10)
    assert handle.call("process", gp.EventView("x")) == [gp.EventView("x")]


def test_persistence_extension_contributes_formats_and_backends(
    exts: gp.ExtensionRegistry, store: gp.Store, keyring: gp.KeyRing
) -> None:
    reg = exts.register(f"{SAMPLES / 'persist.py'}:Notes")
    assert reg.isolation == "in-process" and reg.interface == ("backends", "formats")
    exts.activate("notes")
    note_type = store.formats.type_for("sample.note", 1)
    store.save("note-1", note_type(text="hello"))
    assert store.load("note-1") == note_type(text="hello")
    with gp.open_store("samplenotes://notes-test", keyring=keyring) as other:
        other.save_machine("m", _machine())
        assert other.keys() == ["m"]
    exts.deactivate("notes")
    exts.activate("notes")  # its own scheme is replaced, not refused
    second = gp.Store(store.backend, keyring=keyring, namespace=store.namespace)
    second.extensions.activate("notes")  # same code: the same factory, not a conflict
    assert second.formats.type_for("sample.note", 1) is note_type


def test_invalid_contribution_fails_activation(exts: gp.ExtensionRegistry) -> None:
    exts.register(f"{SAMPLES / 'persist.py'}:BadContribution")
    with pytest.raises(gp.ExtensionFailed, match="backend scheme") as caught:
        exts.activate("badcontrib")
    assert caught.value.cause == "invalid_output"
    assert exts.get("badcontrib").status == "failed"
    with pytest.raises(gp.ExtensionUnavailable):
        exts.handle("badcontrib")


def test_persistence_extensions_cannot_run_in_a_worker(exts: gp.ExtensionRegistry) -> None:
    with pytest.raises(gp.ExtensionInvalid, match="persistence extensions run in-process"):
        exts.register(f"{SAMPLES / 'persist.py'}:Notes", isolation="worker")


def test_a_binding_follows_reactivation(exts: gp.ExtensionRegistry) -> None:
    exts.register(GUARDED, isolation="in-process", limits=gp.ResourceLimits(max_failures=1))
    exts.activate("guarded")
    bound = exts.bind(_machine(), "guarded")
    with pytest.raises(gp.ExtensionFailed):
        bound.process_event(Event("raise"))  # the circuit opens
    with pytest.raises(gp.ExtensionUnavailable):
        bound.process_event(Event("next"))
    exts.activate("guarded")
    assert bound.process_event(Event("next"))  # the same binding uses the new handle
