"""The worker isolation of extensions, attacked by the extensions in tests/extensions/.

Each hostile case runs in a real worker process and checks that the host
survives (the test goes on), that the named error reaches the caller, and
that the next call works on a respawned worker. Timings are only generous
"did not hang" bounds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import gotstate_persist
from gotstate_persist.errors import (
    ExtensionBusy,
    ExtensionCodeChanged,
    ExtensionFailed,
    ExtensionResourceError,
    ExtensionTimeout,
    ExtensionUnavailable,
)
from gotstate_persist.extensions._frames import FRAME_MAX_DEPTH
from gotstate_persist.extensions._protocol import (
    AttributeInfo,
    InterfaceReport,
    MethodInfo,
    WorkerConfig,
)
from gotstate_persist.extensions._views import EventView, WireError, from_wire, to_wire
from gotstate_persist.extensions._workerpool import WorkerPool
from gotstate_persist.extensions._workerproc import WorkerProcess, inspect_target
from gotstate_persist.extensions._workerspawn import (
    TAIL_BYTES,
    WORKER_ENV,
    WORKER_MODULE,
    worker_command,
)
from gotstate_persist.formats.extension import CodeLocation, ResourceLimits

EXTENSIONS = Path(__file__).resolve().parent / "extensions"
HOSTILE = EXTENSIONS / "hostile.py"
MIB = 1 << 20
#: "Did not hang": far above any legitimate duration, far below a hang.
HANG_S = 15.0
LIMITS = ResourceLimits(
    timeout_s=10.0,
    start_timeout_s=30.0,
    memory_bytes=256 * MIB,
    max_input_bytes=64 * 1024,
    max_output_bytes=MIB,
    file_size_bytes=MIB,
    open_files=48,
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def config_for(
    attr: str,
    path: Path = HOSTILE,
    limits: ResourceLimits = LIMITS,
    files: dict[str, str] | None = None,
) -> WorkerConfig:
    location = CodeLocation(
        kind="file",
        module=f"ext_{path.stem}",
        path_entry="",
        file=str(path),
        attr=attr,
        root=str(path.parent),
        distribution="",
        target=f"{path}:{attr}",
    )
    pins = {path.name: sha256(path)} if files is None else files
    return WorkerConfig(name="hostile", location=location, files=pins, limits=limits)


def call(worker: WorkerProcess | WorkerPool, method: str, *args: object, **kw: Any) -> Any:
    return from_wire(worker.call(method, [to_wire(arg) for arg in args], **kw))


@pytest.fixture(scope="module")
def worker() -> Iterator[WorkerProcess]:
    """One worker shared by the hostile cases: each leaves it usable (respawned lazily)."""
    process = WorkerProcess(config_for("Hostile"))
    process.start()
    yield process
    process.kill()


def assert_respawns(worker: WorkerProcess, pid_before: int, restarts_before: int) -> None:
    assert call(worker, "echo", "after") == "after"
    assert call(worker, "pid") != pid_before
    assert worker.restarts == restarts_before + 1


# -- the command line and what the worker process sees ---------------------------


def test_the_command_uses_dash_m_exactly_when_isolated_python_imports_this_package(
    tmp_path: Path,
) -> None:
    probe = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            "import importlib.util as u; s = u.find_spec('gotstate_persist'); "
            "print(s.origin if s else '')",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={},
        check=True,
    )
    origin = probe.stdout.strip()
    same = bool(origin) and os.path.samefile(origin, gotstate_persist.__file__)
    command = worker_command()
    assert command[:2] == (sys.executable, "-I")
    if same:
        assert command[2:] == ("-m", WORKER_MODULE)
    else:
        assert command[2] == "-c"
        assert command[-1] == str(Path(gotstate_persist.__file__).resolve().parent.parent)


def test_the_worker_is_isolated_with_private_cwd_closed_stdin_and_lowered_limits() -> None:
    limits = ResourceLimits(
        memory_bytes=300 * MIB, file_size_bytes=2 * MIB, open_files=40, cpu_s=5.0
    )
    process = WorkerProcess(config_for("Hostile", limits=limits), cpu_lifetime_s=600)
    try:
        seen = call(process, "probe")
        assert seen["isolated"] == 1
        assert seen["orig_argv"][:2] == [sys.executable, "-I"]
        assert seen["stdin_is_devnull"] is True
        cwd = Path(seen["cwd"])
        assert cwd.name.startswith("gotstate-ext-")
        assert cwd.is_dir()
        assert cwd.resolve() != Path.cwd().resolve()
        rlimits = seen["limits"]
        assert rlimits["as"] == [300 * MIB, 300 * MIB]
        assert rlimits["fsize"] == [2 * MIB, 2 * MIB]
        assert rlimits["nofile"] == [40, 40]
        assert rlimits["core"] == [0, 0]
        soft, hard = rlimits["cpu"]
        assert hard == 600
        assert 5 <= soft <= 5 + 3  # CPU used at start-up, plus cpu_s, rounded up
    finally:
        assert process.stop(5.0) == ""
    assert not cwd.exists()


def test_a_sandbox_prefix_wraps_the_worker_command() -> None:
    limits = ResourceLimits()
    config = config_for("Hostile", limits=limits)
    prefixed = WorkerProcess(
        WorkerConfig(config.name, config.location, config.files, limits, ("nice", "-n", "5"))
    )
    try:
        seen = call(prefixed, "probe")
    finally:
        prefixed.kill()
    assert seen["niceness"] == min(os.nice(0) + 5, 19)
    assert seen["isolated"] == 1
    missing = WorkerConfig(
        config.name, config.location, config.files, limits, ("gotstate-no-such-sandbox",)
    )
    with pytest.raises(ExtensionFailed, match="'gotstate-no-such-sandbox' is not on PATH"):
        WorkerProcess(missing).start()


def test_the_worker_environment_holds_no_host_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOTSTATE_PERSIST_KEYS", "canary-keys-7f3a")
    monkeypatch.setenv("DATABASE_URL", "postgresql://canary:canary-pw-7f3a@db/prod")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "canary-aws-7f3a")
    process = WorkerProcess(config_for("Hostile"))
    try:
        found = call(process, "environment")
    finally:
        process.kill()
    assert found == WORKER_ENV
    assert not any("7f3a" in value for value in found.values())


CANARY_PARTS = ("gotstate-host-canary-", "b1e9c4")
HOST_CANARY = {"secret": "".join(CANARY_PARTS), "kind": "host object"}


def test_the_worker_cannot_find_host_objects_through_gc() -> None:
    spec = importlib.util.spec_from_file_location("hostile_in_host", HOSTILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.scan_for(CANARY_PARTS) is True  # the scan finds it where it exists
    process = WorkerProcess(config_for("Hostile"))
    try:
        assert call(process, "host_objects", CANARY_PARTS) is False
    finally:
        process.kill()
    assert HOST_CANARY["secret"].endswith("b1e9c4")


# -- hostile calls on the shared worker --------------------------------------------


@pytest.mark.parametrize("method", ["loop", "sleep"])
def test_a_call_past_its_deadline_times_out_and_the_worker_respawns(
    worker: WorkerProcess, method: str
) -> None:
    pid, restarts = call(worker, "pid"), worker.restarts
    started = time.monotonic()
    with pytest.raises(ExtensionTimeout, match=rf"{method}\(\) did not return within 0.5 s"):
        worker.call(method, [], timeout_s=0.5)
    assert time.monotonic() - started < HANG_S
    assert_respawns(worker, pid, restarts)


def test_a_memory_bomb_is_a_memory_resource_error(worker: WorkerProcess) -> None:
    pid, restarts = call(worker, "pid"), worker.restarts
    with pytest.raises(ExtensionResourceError, match="ran out of memory") as caught:
        worker.call("memory_bomb", [])
    assert caught.value.resource == "memory_bytes"
    assert_respawns(worker, pid, restarts)


@pytest.mark.parametrize(
    ("method", "exception"),
    [
        ("exit", "SystemExit"),
        ("interrupt", "KeyboardInterrupt"),
        ("raise_value_error", "ValueError"),
    ],
)
def test_any_exception_is_reported_by_type_only(
    worker: WorkerProcess, method: str, exception: str
) -> None:
    pid, restarts = call(worker, "pid"), worker.restarts
    with pytest.raises(ExtensionFailed, match=rf"{method}\(\) raised {exception}$") as caught:
        worker.call(method, [])
    assert caught.value.cause == "raised"
    assert "secret" not in str(caught.value)
    assert call(worker, "pid") == pid  # the worker survives its extension's exceptions
    assert worker.restarts == restarts


@pytest.mark.parametrize(
    ("method", "how"), [("os_exit", "exited with code 3"), ("segfault", "killed by SIGSEGV")]
)
def test_a_worker_death_is_a_crash_naming_the_exit(
    worker: WorkerProcess, method: str, how: str
) -> None:
    pid, restarts = call(worker, "pid"), worker.restarts
    with pytest.raises(ExtensionFailed, match=how) as caught:
        worker.call(method, [])
    assert caught.value.cause == "crashed"
    assert_respawns(worker, pid, restarts)


def test_an_output_over_max_output_bytes_is_refused(worker: WorkerProcess) -> None:
    pid = call(worker, "pid")
    with pytest.raises(ExtensionResourceError, match="over max_output_bytes") as caught:
        worker.call("big", [to_wire(LIMITS.max_output_bytes + 1)])
    assert caught.value.resource == "max_output_bytes"
    assert call(worker, "pid") == pid  # refused by the worker's own check: nothing killed


def test_a_forged_oversized_frame_is_refused_unread_and_the_worker_killed(
    worker: WorkerProcess,
) -> None:
    pid, restarts = call(worker, "pid"), worker.restarts
    with pytest.raises(ExtensionResourceError) as caught:
        worker.call("forge_header", [])
    assert caught.value.resource == "max_output_bytes"
    assert_respawns(worker, pid, restarts)


def test_an_output_nested_too_deeply_is_an_invalid_output(worker: WorkerProcess) -> None:
    pid = call(worker, "pid")
    with pytest.raises(ExtensionFailed, match="cannot cross to the host") as caught:
        worker.call("deep", [to_wire(1000)])
    assert caught.value.cause == "invalid_output"
    assert call(worker, "pid") == pid


def test_a_forged_deep_frame_is_an_invalid_output_and_the_worker_killed(
    worker: WorkerProcess,
) -> None:
    pid, restarts = call(worker, "pid"), worker.restarts
    with pytest.raises(ExtensionFailed, match="malformed response") as caught:
        worker.call("forge_deep", [])
    assert caught.value.cause == "invalid_output"
    assert_respawns(worker, pid, restarts)


def test_the_deepest_legal_value_crosses_both_ways(worker: WorkerProcess) -> None:
    deep: list[Any] = []
    while True:  # the deepest value to_wire accepts inside an event's metadata
        try:
            to_wire([EventView("e", 0, {"k": [deep]})])
        except WireError:
            break
        deep = [deep]
    events = [EventView("e", 1, {"k": deep})]
    assert from_wire(worker.call("echo", [to_wire(events)])) == events
    assert FRAME_MAX_DEPTH > 64


def test_print_spam_keeps_a_bounded_tail_and_the_protocol_intact(worker: WorkerProcess) -> None:
    assert call(worker, "spam", 20_000) == "done"
    deadline = time.monotonic() + HANG_S
    while "spam-end" not in worker.output_tail() and time.monotonic() < deadline:
        time.sleep(0.01)
    tail = worker.output_tail()
    assert "spam-end" in tail
    assert "spam line 00000000" not in tail
    assert 0 < len(tail.encode()) <= TAIL_BYTES
    assert call(worker, "echo", {"still": ("ok",)}) == {"still": ("ok",)}


def test_a_file_over_file_size_bytes_is_a_file_size_resource_error(worker: WorkerProcess) -> None:
    pid, restarts = call(worker, "pid"), worker.restarts
    assert call(worker, "write_file", 1024) == 1024
    with pytest.raises(ExtensionResourceError, match="SIGXFSZ") as caught:
        worker.call("write_file", [to_wire(2 * MIB)])
    assert caught.value.resource == "file_size_bytes"
    assert_respawns(worker, pid, restarts)


def test_an_input_over_max_input_bytes_is_not_sent(worker: WorkerProcess) -> None:
    pid, restarts = call(worker, "pid"), worker.restarts
    with pytest.raises(ExtensionResourceError, match="it was not sent") as caught:
        worker.call("echo", [to_wire("x" * LIMITS.max_input_bytes)])
    assert caught.value.resource == "max_input_bytes"
    assert call(worker, "pid") == pid
    assert worker.restarts == restarts


def test_an_async_method_is_awaited_in_the_worker(worker: WorkerProcess) -> None:
    assert call(worker, "later", 41) == 42


def test_the_peak_rss_of_the_workers_is_known(worker: WorkerProcess) -> None:
    rss = worker.max_rss_bytes
    assert rss is not None
    assert MIB < rss < LIMITS.memory_bytes  # type: ignore[operator]


# -- CPU ---------------------------------------------------------------------------


def test_a_call_over_cpu_s_is_a_cpu_resource_error() -> None:
    limits = ResourceLimits(timeout_s=60.0, cpu_s=0.5)
    process = WorkerProcess(config_for("Hostile", limits=limits))
    try:
        pid = call(process, "pid")
        started = time.monotonic()
        with pytest.raises(ExtensionResourceError, match="SIGXCPU") as caught:
            process.call("burn", [])
        assert caught.value.resource == "cpu_s"
        assert time.monotonic() - started < HANG_S
        assert call(process, "pid") != pid
        assert process.restarts == 1
    finally:
        process.kill()


def test_a_worker_near_its_cpu_lifetime_cap_is_recycled_without_a_failure() -> None:
    limits = ResourceLimits(timeout_s=60.0, cpu_s=0.5)
    process = WorkerProcess(config_for("Hostile", limits=limits), cpu_lifetime_s=3)
    try:
        used = [call(process, "burn_for", 0.3)]
        while process.restarts == 0 and len(used) < 20:
            used.append(call(process, "burn_for", 0.3))
        assert process.restarts == 1
        assert used[-1] < used[-2]  # a fresh process: its CPU clock started again
        assert max(used) < 3
    finally:
        process.kill()


# -- starting, stopping ------------------------------------------------------------


def test_a_call_timeout_runs_from_when_the_ready_worker_receives_the_call() -> None:
    process = WorkerProcess(config_for("SlowInit"))  # takes 1 s to instantiate
    try:
        assert call(process, "echo", 1, timeout_s=0.9) == 1
    finally:
        process.kill()


def test_a_start_that_does_not_finish_in_time_is_a_timeout() -> None:
    path = EXTENSIONS / "slow_import.py"
    limits = ResourceLimits(start_timeout_s=1.0)
    process = WorkerProcess(config_for("Slow", path=path, limits=limits))
    started = time.monotonic()
    with pytest.raises(ExtensionTimeout, match="did not start within start_timeout_s"):
        process.start()
    assert time.monotonic() - started < HANG_S
    process.kill()


def test_a_class_that_crashes_or_raises_on_init_fails_to_start() -> None:
    crashing = WorkerProcess(config_for("CrashOnInit"))
    with pytest.raises(ExtensionFailed, match="exited with code 7") as crashed:
        crashing.start()
    assert crashed.value.cause == "crashed"
    raising = WorkerProcess(config_for("RaiseOnInit"))
    with pytest.raises(ExtensionFailed, match="instantiating its class raised RuntimeError;"):
        raising.start()
    with pytest.raises(ExtensionFailed, match="importing its code raised ModuleNotFoundError"):
        WorkerProcess(config_for("Broken", path=EXTENSIONS / "broken_import.py")).start()


def test_stop_reports_a_stop_that_raises() -> None:
    process = WorkerProcess(config_for("StopRaises"))
    pid = call(process, "pid")
    assert process.stop(5.0) == "stop() raised ValueError"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ExtensionUnavailable):
        process.call("pid", [])


def test_stop_kills_a_stop_that_hangs_within_timeout_plus_one_second() -> None:
    process = WorkerProcess(config_for("StopHangs"))
    pid = call(process, "pid")
    started = time.monotonic()
    note = process.stop(0.5)
    assert time.monotonic() - started < 0.5 + 1.0
    assert note == "stop() did not return within 0.5 s; worker killed"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_stop_during_a_running_call_kills_the_worker_and_the_call_is_unavailable() -> None:
    process = WorkerProcess(config_for("Hostile"))
    process.start()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            process.call("sleep", [])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.2)  # let the call reach the worker (either way the outcome is the same)
    started = time.monotonic()
    assert process.stop(0.2) == "a call was still running after 0.2 s; worker killed"
    assert time.monotonic() - started < 0.2 + 1.0
    thread.join(HANG_S)
    assert not thread.is_alive()
    assert [type(e) for e in errors] == [ExtensionUnavailable]


# -- the code pin --------------------------------------------------------------------


def test_a_file_edited_after_pinning_is_refused_at_start_and_at_restart(tmp_path: Path) -> None:
    code = tmp_path / "ext.py"
    shutil.copy(HOSTILE, code)
    helper = tmp_path / "helper.py"
    helper.write_text("VALUE = 1\n")
    files = {"ext.py": sha256(code), "helper.py": sha256(helper)}
    process = WorkerProcess(config_for("Hostile", path=code, files=files))
    try:
        pid = call(process, "pid")
        code.write_text(code.read_text() + "\nINJECTED = True\n")
        with pytest.raises(ExtensionFailed, match="exited with code 3"):
            process.call("os_exit", [])  # the running worker is unaffected until it restarts
        with pytest.raises(ExtensionCodeChanged, match=r"changed: ext\.py") as caught:
            process.call("pid", [])
        assert caught.value.changed == ("ext.py",)
        assert caught.value.removed == ()
        assert pid != 0
    finally:
        process.kill()
    helper.unlink()
    with pytest.raises(ExtensionCodeChanged, match=r"removed: helper\.py") as fresh:
        WorkerProcess(config_for("Hostile", path=code, files=files)).start()
    assert fresh.value.changed == ("ext.py",)
    assert fresh.value.removed == ("helper.py",)


# -- inspect_target ------------------------------------------------------------------


def test_inspect_target_describes_a_good_class_without_instantiating_it() -> None:
    report = inspect_target(config_for("Sample"))
    assert report.problems == ()
    assert report.class_name == "Sample"
    assert report.attributes == {
        "name": AttributeInfo("str", text="sample"),
        "version": AttributeInfo("str", text="1.2.3"),
        "category": AttributeInfo("str", text="event_processing"),
        "requires": AttributeInfo("str", text=">=0.1"),
        "states": AttributeInfo("frozenset", items=("a", "b")),
    }
    assert report.methods == {
        "build": MethodInfo(("config",), 1, variadic=False, is_async=False),
        "helper": MethodInfo(("a", "b"), 2, variadic=False, is_async=False),
        "on_enter": MethodInfo(("view",), 1, variadic=False, is_async=True),
        "process": MethodInfo(
            ("event", "extra", "flag"),
            1,
            variadic=True,
            is_async=False,
            required_keywords=("flag",),
        ),
    }


def test_inspect_target_does_not_instantiate() -> None:
    report = inspect_target(config_for("CrashOnInit"))  # its __init__ would os._exit
    assert report == InterfaceReport(class_name="CrashOnInit")


@pytest.mark.parametrize(
    ("path", "attr", "problem"),
    [
        (
            EXTENSIONS / "broken_import.py",
            "Broken",
            "importing the module raised ModuleNotFoundError: No module named "
            "'gotstate_persist_no_such_dependency'",
        ),
        (HOSTILE, "Nope", "attribute 'Nope' not found"),
        (HOSTILE, "NOT_A_CLASS", "'NOT_A_CLASS' is not a class"),
    ],
)
def test_inspect_target_reports_problems(path: Path, attr: str, problem: str) -> None:
    report = inspect_target(config_for(attr, path=path))
    assert report == InterfaceReport(problems=(problem,))


def test_inspect_target_refuses_changed_code(tmp_path: Path) -> None:
    code = tmp_path / "ext.py"
    shutil.copy(HOSTILE, code)
    config = config_for("Sample", path=code)
    code.write_text("class Sample:\n    pass\n")
    with pytest.raises(ExtensionCodeChanged) as caught:
        inspect_target(config)
    assert caught.value.changed == ("ext.py",)


# -- the pool -------------------------------------------------------------------------


def test_a_pool_of_two_runs_two_calls_at_once(tmp_path: Path) -> None:
    pool = WorkerPool(config_for("Hostile", limits=ResourceLimits(max_concurrency=2)))
    results: dict[str, Any] = {}

    def run(mine: str, theirs: str) -> None:
        try:
            results[mine] = call(pool, "rendezvous", str(tmp_path), mine, theirs)
        except BaseException as exc:
            results[mine] = exc

    try:
        pool.start()
        threads = [
            threading.Thread(target=run, args=("one", "two")),
            threading.Thread(target=run, args=("two", "one")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        # each call waited for the other's file: only concurrent calls can both return
        assert results == {"one": "one", "two": "two"}
        assert pool.restarts == 0
        assert pool.max_rss_bytes is not None
    finally:
        assert pool.stop(5.0) == ""
    with pytest.raises(ExtensionUnavailable):
        pool.call("pid", [])


def test_a_pool_refuses_a_call_beyond_its_slots(tmp_path: Path) -> None:
    pool = WorkerPool(config_for("Hostile", limits=ResourceLimits(max_concurrency=1)))
    results: list[Any] = []
    thread = threading.Thread(
        target=lambda: results.append(call(pool, "rendezvous", str(tmp_path), "one", "go"))
    )
    try:
        pool.start()
        thread.start()
        deadline = time.monotonic() + HANG_S
        while not (tmp_path / "one").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(ExtensionBusy, match="all 1 workers are busy"):
            pool.call("pid", [])
        (tmp_path / "go").write_text("go")
        thread.join(HANG_S)
        assert results == ["one"]
    finally:
        pool.kill()


def test_kill_during_a_slow_start_ends_the_start_at_once() -> None:
    path = EXTENSIONS / "slow_import.py"
    process = WorkerProcess(config_for("Slow", path=path, limits=ResourceLimits()))
    errors: list[BaseException] = []

    def start() -> None:
        try:
            process.start()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    time.sleep(0.2)
    process.kill()
    thread.join(HANG_S)  # start_timeout_s is 30 s: only the kill can end it sooner
    assert not thread.is_alive()
    assert [type(e) for e in errors] == [ExtensionUnavailable]


HOST_SCRIPT = """
import sys
from tests.test_extension_worker import call, config_for
from gotstate_persist.extensions._workerproc import WorkerProcess

process = WorkerProcess(config_for("Hostile"))
print(call(process, "pid"), call(process, "probe")["cwd"], flush=True)
process.call("loop", [], timeout_s=1000)
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_a_worker_ends_and_removes_its_directory_when_its_host_is_killed() -> None:
    root = Path(__file__).resolve().parent.parent
    host = subprocess.Popen(
        [sys.executable, "-c", HOST_SCRIPT],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None
        pid_text, cwd_text = host.stdout.readline().split()
        pid, cwd = int(pid_text), Path(cwd_text)
        assert _running(pid)
        assert cwd.is_dir()
    finally:
        host.kill()
        host.wait()
    deadline = time.monotonic() + HANG_S
    while (_running(pid) or cwd.exists()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _running(pid)
    assert not cwd.exists()


def test_inspect_target_refuses_a_forged_report() -> None:
    with pytest.raises(ExtensionFailed, match="malformed report") as caught:
        inspect_target(config_for("X", path=EXTENSIONS / "forged_report.py"))
    assert caught.value.cause == "invalid_output"


def test_the_peak_rss_is_the_workers_own_not_the_hosts() -> None:
    """A big host must not show as a big worker (Linux carries ``ru_maxrss`` across exec)."""
    ballast = b"x" * (400 * MIB)  # touched pages: the host's high-water mark is now high
    process = WorkerProcess(config_for("Hostile"))
    try:
        call(process, "pid")
        with pytest.raises(ExtensionFailed):
            process.call("os_exit", [])  # reaped: its peak must still be its own
        call(process, "pid")
        rss = process.max_rss_bytes
        assert rss is not None and rss < 200 * MIB
    finally:
        process.kill()
    assert ballast[-1:] == b"x"
