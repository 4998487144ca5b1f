"""The contract's hostile cases through the registry, in worker isolation.

In each: the host survives, the named error reaches the caller, stats count
it, the persisted status and reason are right, nothing else is written, and
the next call works (the worker respawns). The worker mechanism itself is
tested in test_extension_worker.py.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gotstate.core.events import Event

import gotstate_persist as gp
from tests.machines import build_ring_machine

SAMPLE = Path(__file__).parent / "ext_samples" / "contained.py"
LIMITS = gp.ResourceLimits(
    timeout_s=2.0,
    start_timeout_s=30.0,
    memory_bytes=256 << 20,
    max_output_bytes=1 << 20,
    max_failures=10,
)


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    copy = tmp_path / "contained.py"
    shutil.copy(SAMPLE, copy)
    return copy


@pytest.fixture
def contained(store: gp.Store, sample: Path) -> Iterator[gp.ActiveExtension]:
    store.extensions.register(f"{sample}:Contained", limits=LIMITS)
    yield store.extensions.activate("contained")


def _machine() -> Any:
    machine = build_ring_machine(12, groups=2)
    machine.start()
    return machine


ATTACKS = [
    ("loop", gp.ExtensionTimeout, "timeouts", None),
    ("sleep", gp.ExtensionTimeout, "timeouts", None),
    ("memory", gp.ExtensionResourceError, "failures", "memory_bytes"),
    ("big", gp.ExtensionResourceError, "failures", "max_output_bytes"),
    ("deep", gp.ExtensionFailed, "failures", "invalid_output"),
    ("exit", gp.ExtensionFailed, "failures", "raised"),
    ("interrupt", gp.ExtensionFailed, "failures", "raised"),
    ("os_exit", gp.ExtensionFailed, "crashes", "crashed"),
    ("segfault", gp.ExtensionFailed, "crashes", "crashed"),
]


@pytest.mark.parametrize(("attack", "error", "counter", "detail"), ATTACKS)
def test_attack_is_contained(
    store: gp.Store,
    contained: gp.ActiveExtension,
    attack: str,
    error: type[gp.ExtensionError],
    counter: str,
    detail: str | None,
) -> None:
    exts = store.extensions
    machine = _machine()
    bound = exts.bind(machine, "contained")
    revisions = len(exts.history("contained"))
    usage = store.usage()
    with pytest.raises(error) as caught:
        bound.process_event(Event(attack))
    if isinstance(caught.value, gp.ExtensionResourceError):
        assert caught.value.resource == detail
    if isinstance(caught.value, gp.ExtensionFailed):
        assert caught.value.cause == detail
    assert "contained" in str(caught.value)
    assert str(machine.current_state.name) == "start"  # the machine never saw the event
    stats = contained.stats()
    assert getattr(stats, counter) == 1 and stats.failures == 1 and stats.ok == 0
    assert bound.process_event(Event("next"))  # respawned; the host and extension work
    assert contained.stats().ok == 1
    reg = exts.get("contained")
    assert reg.status == "active" and len(exts.history("contained")) == revisions
    assert store.usage() == usage  # nothing was written


def test_print_spam_does_not_corrupt_the_protocol(contained: gp.ActiveExtension) -> None:
    view = gp.EventView("spam")
    assert contained.call("process", view) == [view]
    deadline = time.monotonic() + 10  # the tail is drained by a thread of its own
    while "spam 19999" not in (tail := contained.output_tail()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(tail.encode()) <= 64 * 1024 and "spam 19999" in tail


def test_host_secrets_are_out_of_reach(
    contained: gp.ActiveExtension, monkeypatch: pytest.MonkeyPatch
) -> None:
    # set after activation on purpose: a respawned worker must not see them either
    monkeypatch.setenv("GOTSTATE_PERSIST_KEYS", "canary-keyring-secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:canary-password@db/x")
    (found,) = contained.call("process", gp.EventView("env"))
    env = found.metadata["env"]
    assert "GOTSTATE_PERSIST_KEYS" not in env and "DATABASE_URL" not in env
    assert not any("canary" in value for value in env.values())
    parts = ["canary-", "host-object-7f3a"]
    holder = ["".join(parts)]  # a host object (tracked by gc) holding the canary
    (found,) = contained.call("process", gp.EventView("gc", 0, {"parts": parts}))
    assert found.metadata == {"found": False, "control": True}
    assert holder[0]  # alive in the host during the scan


def test_circuit_opens_after_max_failures_and_is_persisted(store: gp.Store, sample: Path) -> None:
    exts = store.extensions
    limits = gp.ResourceLimits(timeout_s=0.5, memory_bytes=None, max_failures=2)
    exts.register(f"{sample}:Contained", limits=limits)
    handle = exts.activate("contained")
    bound = exts.bind(_machine(), "contained")
    for _ in range(2):
        with pytest.raises(gp.ExtensionTimeout):
            bound.process_event(Event("loop"))
    with pytest.raises(gp.ExtensionUnavailable, match="circuit opened"):
        bound.process_event(Event("next"))
    reg = exts.get("contained")
    assert reg.status == "failed"
    assert reg.reason == "circuit opened after 2 consecutive failures (last: ExtensionTimeout)"
    assert reg.stats is not None and reg.stats.timeouts == 2
    assert not handle.active


def test_code_edited_after_registration(store: gp.Store, sample: Path) -> None:
    exts = store.extensions
    exts.register(f"{sample}:Contained", limits=LIMITS)
    sample.write_text(sample.read_text().replace("_FOREVER = 10**9", "_FOREVER = 1"))
    with pytest.raises(gp.ExtensionCodeChanged) as caught:
        exts.activate("contained")
    assert caught.value.changed == ("contained.py",)
    reg = exts.get("contained")
    assert reg.status == "failed" and "contained.py" in reg.reason


def test_code_edited_while_active_is_caught_at_respawn(
    store: gp.Store, contained: gp.ActiveExtension, sample: Path
) -> None:
    bound = store.extensions.bind(_machine(), "contained")
    sample.write_text(sample.read_text() + "\n# edited\n")
    with pytest.raises(gp.ExtensionFailed):
        bound.process_event(Event("os_exit"))  # the worker dies; the respawn re-verifies
    with pytest.raises(gp.ExtensionCodeChanged):
        bound.process_event(Event("next"))
    reg = store.extensions.get("contained")
    assert reg.status == "failed" and "code changed" in reg.reason
    with pytest.raises(gp.ExtensionUnavailable):
        bound.process_event(Event("next"))


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_deactivate_with_a_bad_stop(store: gp.Store, sample: Path, mode: str) -> None:
    sample.with_suffix(".stopmode").write_text(mode)
    exts = store.extensions
    exts.register(f"{sample}:Contained", limits=LIMITS)
    exts.activate("contained")
    started = time.monotonic()
    reg = exts.deactivate("contained", timeout=1.0)
    assert time.monotonic() - started < 1.0 + 1.0
    assert reg.status == "inactive"
    assert ("raised RuntimeError" if mode == "raise" else "did not return") in reg.reason


def test_deactivate_during_a_stuck_call_is_bounded(
    store: gp.Store, contained: gp.ActiveExtension
) -> None:
    import threading

    errors: list[BaseException] = []

    def stuck() -> None:
        try:
            contained.call("process", gp.EventView("sleep"))
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=stuck)
    caller.start()
    time.sleep(0.2)
    started = time.monotonic()
    reg = store.extensions.deactivate("contained", timeout=0.5)
    assert time.monotonic() - started < 0.5 + 1.0
    caller.join(5)
    assert reg.status == "inactive" and errors
    assert isinstance(errors[0], gp.ExtensionError)
    assert os.getpid()  # the host is alive
