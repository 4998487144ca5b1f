"""The worker process: runs one extension behind the frame protocol, inside its limits.

Started by the host (``_workerspawn``) as::

    python -I -m gotstate_persist.extensions._worker <private dir> <protocol fd> <lifeline fd>

with a scrubbed environment, a private working directory and stdin on
``/dev/null``. The protocol socket carries the frames of ``_protocol``; the
lifeline is a pipe whose write end only the host holds, so when the host
dies (even by SIGKILL) a watcher thread here sees end-of-file, removes the
private directory (which the host can no longer do) and exits: an orphaned
worker does not run on.

Order of a start, each step before the next: read the configuration,
re-hash the pinned files (a difference is reported and nothing is imported),
lower this process's own resource limits (``RLIMIT_AS``, ``RLIMIT_FSIZE``,
``RLIMIT_NOFILE``, ``RLIMIT_CORE=0``, and the ``RLIMIT_CPU`` lifetime cap),
import the target, instantiate it (serve mode) or describe it (inspect
mode). ``SIGXFSZ`` is restored to its default action (Python ignores it), so
a write past ``file_size_bytes`` ends the worker instead of raising an
``OSError`` the extension could swallow.

CPU per call: before each call the soft ``RLIMIT_CPU`` is set to the CPU
this process used so far plus ``cpu_s``, rounded up to a whole second (the
kernel counts this limit in seconds), so a call gets at least ``cpu_s`` and
less than ``cpu_s`` + 1 s of CPU before ``SIGXCPU`` ends the worker. The hard
limit is the lifetime cap the host passed: the soft limit can never be
raised past it, so when the next call's soft limit would reach it the worker
answers ``recycle`` without running anything and the host restarts it. (An
extension can raise its own soft limit up to that cap during a call; the
host's wall-clock deadline still ends it.)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import os
import resource
import shutil
import signal
import socket
import sys
import threading
from typing import Any, Final, Literal, NoReturn

import msgspec

from ..formats.extension import CodeLocation, ResourceLimits
from ._frames import (
    MAX_FRAME_BYTES,
    FrameClosed,
    body_size,
    decode_trusted_body,
    encode_frame,
    read_body,
    send_frame,
)
from ._protocol import (
    BAD_REQUEST,
    CALL,
    CHECK_SETTINGS,
    CODE_CHANGED,
    FAILED,
    INSPECT,
    INVALID_OUTPUT,
    OK,
    PRIVATE_DIR_PREFIX,
    RAISED,
    READY,
    RECYCLE,
    REPORT,
    RESOURCE,
    STOP,
    STOPPED,
    InterfaceReport,
    WorkerConfig,
)
from ._views import WireError, from_wire, to_wire
from ._workerload import (
    LoadProblem,
    check_settings,
    configure_instance,
    describe,
    find_class,
    import_problem,
    import_target,
    verify_pins,
)

__all__ = ["main"]

#: The lifeline watcher needs almost no stack; the default would reserve 8 MiB
#: of the address space that RLIMIT_AS grants the extension.
_WATCHER_STACK: Final = 64 * 1024

_HELLO: Final = msgspec.msgpack.Decoder(
    tuple[Literal["serve", "inspect", "check_settings"], WorkerConfig, int]
)


def _leave(directory: str) -> NoReturn:
    """The host is gone: remove the private directory (it no longer can) and exit now."""
    if os.path.basename(directory).startswith(PRIVATE_DIR_PREFIX):
        shutil.rmtree(directory, ignore_errors=True)
    os._exit(0)


def _watch_host(lifeline: int, directory: str) -> None:
    """Leave as soon as the host is gone, even while the extension is busy."""

    def watch() -> None:
        try:
            os.read(lifeline, 1)
        finally:
            _leave(directory)

    previous = threading.stack_size(_WATCHER_STACK)
    try:
        threading.Thread(target=watch, name="host-lifeline", daemon=True).start()
    finally:
        threading.stack_size(previous)


def _send(sock: socket.socket, message: list[Any]) -> None:
    send_frame(sock, encode_frame(message), None)


def _lower(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY and hard < value:
        value = hard
    resource.setrlimit(which, (value, value))


def _lower_limits(limits: ResourceLimits, cpu_cap: int) -> None:
    if limits.memory_bytes is not None:
        _lower(resource.RLIMIT_AS, limits.memory_bytes)
    if limits.file_size_bytes is not None:
        _lower(resource.RLIMIT_FSIZE, limits.file_size_bytes)
    if limits.open_files is not None:
        _lower(resource.RLIMIT_NOFILE, limits.open_files)
    _lower(resource.RLIMIT_CORE, 0)
    if limits.cpu_s is not None:
        _lower(resource.RLIMIT_CPU, cpu_cap)


def _arm_cpu(cpu_s: float) -> bool:
    """Set the soft CPU limit for one call; False when the lifetime cap is too near."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + cpu_s)
    _current, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        return False
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    return True


def _run(function: Any, *args: object) -> object:
    result = function(*args)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    return result


def _type_name(exc: BaseException) -> str:
    return type(exc).__qualname__


def _out_of_memory(limits: ResourceLimits) -> list[Any]:
    if limits.memory_bytes is not None:
        return [RESOURCE, "memory_bytes"]
    return [RAISED, "MemoryError"]


def _call(instance: object, method: str, args: list[object], limits: ResourceLimits) -> list[Any]:
    if limits.cpu_s is not None and not _arm_cpu(limits.cpu_s):
        return [RECYCLE]
    try:
        views = [from_wire(arg) for arg in args]
    except WireError as exc:
        return [BAD_REQUEST, str(exc)]
    except MemoryError:
        return _out_of_memory(limits)
    try:
        return [OK, to_wire(_run(getattr(instance, method), *views))]
    except WireError as exc:
        return [INVALID_OUTPUT, str(exc)]
    except MemoryError:
        return _out_of_memory(limits)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: the extension's, reported
        return [RAISED, _type_name(exc)]


def _reply_frame(reply: list[Any], limits: ResourceLimits) -> bytearray:
    """The reply's frame, or a refusal when it is over max_output_bytes or cannot be encoded."""
    try:
        frame = encode_frame(reply)
    except MemoryError:
        return encode_frame(_out_of_memory(limits))
    except (msgspec.EncodeError, TypeError, ValueError, OverflowError) as exc:
        return encode_frame([INVALID_OUTPUT, f"it cannot be encoded ({type(exc).__name__})"])
    if body_size(frame) > limits.max_output_bytes:
        return encode_frame([RESOURCE, "max_output_bytes"])
    return frame


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # the extension may have replaced or closed it
            stream.flush()


def _run_stop(instance: object) -> str:
    """Call the extension's optional stop(); the raised type's name, or ""."""
    try:
        stop = getattr(instance, "stop", None)
        if callable(stop):
            _run(stop)
    except BaseException as exc:
        return _type_name(exc)
    return ""


def _serve(sock: socket.socket, instance: object, limits: ResourceLimits) -> int:
    while True:
        message = decode_trusted_body(read_body(sock, MAX_FRAME_BYTES, None))
        if message[0] == STOP:
            note = _run_stop(instance)
            _flush_output()
            _send(sock, [STOPPED, note])
            return 0
        if message[0] != CALL:
            return 2
        reply = _call(instance, message[1], message[2], limits)
        _flush_output()
        send_frame(sock, _reply_frame(reply, limits), None)


def _load(location: CodeLocation, verified: dict[str, bytes], memory: bool) -> type | list[Any]:
    """The target class, or the failure message to send."""
    try:
        module = import_target(location, verified)
    except MemoryError:
        return [RESOURCE, "memory_bytes"] if memory else [FAILED, "import", "MemoryError"]
    except BaseException as exc:
        return [FAILED, "import", _type_name(exc)]
    try:
        return find_class(module, location.attr)
    except LoadProblem as problem:
        return [FAILED, "attribute", str(problem)]


def _inspect(location: CodeLocation, verified: dict[str, bytes]) -> InterfaceReport:
    try:
        module = import_target(location, verified)
    except BaseException as exc:
        return InterfaceReport(problems=(import_problem(exc),))
    try:
        cls = find_class(module, location.attr)
    except LoadProblem as problem:
        return InterfaceReport(problems=(str(problem),))
    return describe(cls)


def _check(
    location: CodeLocation, verified: dict[str, bytes], candidate: dict[str, Any] | None
) -> InterfaceReport:
    """The report of a settings check: its problems are the candidate's (none: it fits)."""
    try:
        module = import_target(location, verified)
    except BaseException as exc:
        return InterfaceReport(problems=(import_problem(exc),))
    try:
        cls = find_class(module, location.attr)
    except LoadProblem as problem:
        return InterfaceReport(problems=(str(problem),))
    return InterfaceReport(problems=tuple(check_settings(cls, candidate or {})))


def main(argv: list[str]) -> int:
    """Run the worker (arguments: private directory, protocol fd, lifeline fd); exit status."""
    directory, sock_fd, lifeline = argv[-3], int(argv[-2]), int(argv[-1])
    _watch_host(lifeline, directory)
    sock = socket.socket(fileno=sock_fd)
    try:
        return _run_worker(sock)
    except FrameClosed:  # the host closed the channel: it is gone, or gave up on us
        _flush_output()
        _leave(directory)


def _run_worker(sock: socket.socket) -> int:
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    sys.dont_write_bytecode = True  # never write into the extension's directories
    mode, config, cpu_cap = _HELLO.decode(read_body(sock, MAX_FRAME_BYTES, None))
    changed, removed, verified = verify_pins(config.location.root, config.files)
    if changed or removed:
        _send(sock, [CODE_CHANGED, changed, removed])
        return 0
    try:
        _lower_limits(config.limits, cpu_cap)
    except (OSError, ValueError) as exc:
        _send(sock, [FAILED, "limits", _type_name(exc)])
        return 0
    if mode == INSPECT:
        _send(sock, [REPORT, _inspect(config.location, verified)])
        return 0
    if mode == CHECK_SETTINGS:
        _send(sock, [REPORT, _check(config.location, verified, config.settings)])
        return 0
    loaded = _load(config.location, verified, config.limits.memory_bytes is not None)
    if isinstance(loaded, list):
        _send(sock, loaded)
        return 0
    try:
        instance = loaded()
    except MemoryError:
        if config.limits.memory_bytes is not None:
            _send(sock, [RESOURCE, "memory_bytes"])
        else:
            _send(sock, [FAILED, "instantiate", "MemoryError"])
        return 0
    except BaseException as exc:
        _send(sock, [FAILED, "instantiate", _type_name(exc)])
        return 0
    try:
        configure_instance(loaded, instance, config.settings)
    except BaseException as exc:  # its own settings refused or configure() raised
        _send(sock, [FAILED, "configure", _type_name(exc)])
        return 0
    _flush_output()
    _send(sock, [READY])
    return _serve(sock, instance, config.limits)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
