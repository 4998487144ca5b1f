"""One extension worker process, seen from the host: start, call, stop, kill, respawn.

:class:`WorkerProcess` owns the policy around one child process (the
mechanics are ``_workerspawn``'s, the reading of replies and deaths
``_workerreplies``'s):

* ``start`` is bounded by ``limits.start_timeout_s``; the worker re-verifies
  the pinned files, lowers its limits, imports and instantiates the class.
* ``call`` refuses a request over ``max_input_bytes`` before sending it; the
  call's deadline (``timeout_s``) runs from when the ready worker is sent the
  call, and is enforced by killing the worker's process group (SIGKILL),
  never by abandoning a future; a response whose header announces more than
  ``max_output_bytes`` is refused before its body is read, and the worker
  killed.
* A worker that timed out, died, ran out of memory or broke the protocol is
  respawned lazily by the next call (a *restart*). So is one that reached
  its CPU lifetime cap: when ``cpu_s`` is set the worker's hard
  ``RLIMIT_CPU`` is ``cpu_lifetime_s`` (default one hour of CPU) and the
  worker asks to be recycled before a call could reach it; that restart is
  not a failure and the call runs on the fresh worker.
* ``stop`` and ``kill`` are final: afterwards ``call`` raises
  :class:`~gotstate_persist.errors.ExtensionUnavailable`. A call still
  running when they end the worker raises that too.

:func:`inspect_target` runs a throwaway worker that imports the target and
describes its class without instantiating it, so the host never imports
extension code.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, Final

import msgspec

from ..errors import (
    ExtensionError,
    ExtensionFailed,
    ExtensionResourceError,
    ExtensionTimeout,
    ExtensionUnavailable,
    InvalidArgument,
)
from ._frames import (
    FrameClosed,
    FrameError,
    FrameMalformed,
    FrameTimeout,
    FrameTooLarge,
    body_size,
    encode_frame,
)
from ._protocol import (
    BAD_REQUEST,
    CALL,
    INSPECT,
    INVALID_OUTPUT,
    OK,
    RAISED,
    READY,
    RECYCLE,
    REPORT,
    RESOURCE,
    SERVE,
    STOP,
    STOPPED,
    InterfaceReport,
    WorkerConfig,
)
from ._workerreplies import (
    death_error,
    is_reply,
    malformed,
    reason_text,
    resource_error,
    start_refusal,
    type_name,
)
from ._workerspawn import OutputTail, WorkerChild

__all__ = ["DEFAULT_CPU_LIFETIME_S", "WorkerProcess", "inspect_target"]

#: The hard RLIMIT_CPU of a worker when cpu_s is set: its lifetime CPU cap.
DEFAULT_CPU_LIFETIME_S: Final = 3600
#: Room a fresh worker needs under the cap besides one call's cpu_s (start-up CPU).
_CPU_HEADROOM_S: Final = 2
#: Bound on every frame that is not a call's result (replies of start, stop, errors).
_CONTROL_FRAME_BYTES: Final = 64 * 1024
#: Bound on an inspection's report frame.
_REPORT_FRAME_BYTES: Final = 1 << 20
#: After its channel closed, how long a worker may take to exit on its own.
_DEATH_WAIT_S: Final = 1.0
#: After answering stop, how long a worker may take to exit when stop used up the time.
_EXIT_GRACE_S: Final = 0.2
#: How long SIGTERM may take before SIGKILL, and SIGKILL before reaping moves to a thread.
_TERM_WAIT_S: Final = 0.3
_KILL_WAIT_S: Final = 0.3
#: How long a worker recycled at its CPU cap may spend in its stop().
_RECYCLE_STOP_S: Final = 1.0


def _check_cap(config: WorkerConfig, cpu_lifetime_s: int) -> None:
    cpu_s = config.limits.cpu_s
    if type(cpu_lifetime_s) is not int or (
        cpu_s is not None and cpu_lifetime_s < cpu_s + _CPU_HEADROOM_S
    ):
        raise InvalidArgument(
            f"cpu_lifetime_s must be an int at least cpu_s + {_CPU_HEADROOM_S}; "
            f"got {cpu_lifetime_s!r}"
        )


class WorkerProcess:
    """One worker process of one extension; thread-safe, one call at a time."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        cpu_lifetime_s: int = DEFAULT_CPU_LIFETIME_S,
        tail: OutputTail | None = None,
    ) -> None:
        _check_cap(config, cpu_lifetime_s)
        self._config = config
        self._name = config.name
        self._limits = config.limits
        self._cap = cpu_lifetime_s
        self._tail = OutputTail() if tail is None else tail
        self._lock = threading.Lock()  # _child, _closed, _spawns, _reaped_rss
        self._call_lock = threading.Lock()  # one call (or start, or stop) at a time
        self._child: WorkerChild | None = None
        self._closed = False
        self._spawns = 0
        self._reaped_rss: int | None = None

    # -- public API -----------------------------------------------------------

    @property
    def restarts(self) -> int:
        """Workers started after the first one (respawns after deaths, kills, recycling)."""
        with self._lock:
            return max(self._spawns - 1, 0)

    @property
    def max_rss_bytes(self) -> int | None:
        """Peak RSS of this extension's worker processes so far, if known."""
        with self._lock:
            child, peak = self._child, self._reaped_rss
        live = child.live_peak_rss() if child is not None else None
        known = [value for value in (peak, live) if value is not None]
        return max(known) if known else None

    def output_tail(self) -> str:
        """The last 64 KiB of what the worker processes wrote on stdout and stderr."""
        return self._tail.text()

    def start(self) -> None:
        """Start the worker now unless one is running (bounded by ``start_timeout_s``)."""
        with self._call_lock:
            self._ready()

    def call(self, method: str, args: list[object], *, timeout_s: float | None = None) -> object:
        """Call ``method`` with wire-form ``args``; its wire-form result (see module doc)."""
        timeout = self._limits.timeout_s if timeout_s is None else timeout_s
        try:
            request = encode_frame([CALL, method, args])
        except (msgspec.EncodeError, TypeError, ValueError, OverflowError) as exc:
            raise InvalidArgument(
                f"extension {self._name!r}: the arguments of {method}() are not in the wire "
                "form; pass each through to_wire"
            ) from exc
        size = body_size(request)
        if size > self._limits.max_input_bytes:
            raise ExtensionResourceError(
                f"extension {self._name!r}: the call to {method}() is {size} bytes, over "
                f"max_input_bytes ({self._limits.max_input_bytes}); it was not sent: pass "
                "less, or raise max_input_bytes",
                resource="max_input_bytes",
            )
        with self._call_lock:
            child = self._ready()
            reply, size = self._exchange(child, request, timeout, method)
            if is_reply(reply, RECYCLE, 1):
                self._end(child, _RECYCLE_STOP_S)
                child = self._ready()
                reply, size = self._exchange(child, request, timeout, method)
                if is_reply(reply, RECYCLE, 1):  # a fresh worker has the whole budget
                    self._discard(child)
                    raise malformed(self._name, "request to be recycled")
            return self._result(child, reply, size, method)

    def stop(self, timeout: float) -> str:
        """Call the extension's stop() within ``timeout``, then end the worker; a note or "".

        Never takes longer than ``timeout`` + 1 s.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closed:
                return ""
            self._closed = True
        if not self._call_lock.acquire(timeout=max(timeout, 0.0)):
            self._kill_current()
            return f"a call was still running after {timeout:g} s; worker killed"
        try:
            with self._lock:
                child, self._child = self._child, None
            if child is None or child.poll() is not None:
                if child is not None:
                    self._discard(child)
                return ""
            return self._end(child, timeout, deadline)
        finally:
            self._call_lock.release()

    def kill(self) -> None:
        """End the worker now, without calling stop(); final, like :meth:`stop`."""
        with self._lock:
            self._closed = True
        self._kill_current()

    # -- internals --------------------------------------------------------------

    def _kill_current(self) -> None:
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            self._discard(child)

    def _unavailable(self) -> ExtensionUnavailable:
        return ExtensionUnavailable(
            f"extension {self._name!r}: its worker was stopped; activate the extension again"
        )

    def _ready(self) -> WorkerChild:
        """The running worker, starting one (a restart after the first) if there is none."""
        with self._lock:
            if self._closed:
                raise self._unavailable()
            child = self._child
        if child is not None:
            if child.poll() is None:
                return child
            self._discard(child)  # died between calls: respawn quietly
        return self._spawn()

    def _spawn(self) -> WorkerChild:
        child = WorkerChild(self._config.prefix, self._tail, self._name)
        with self._lock:
            self._spawns += 1
            closed = self._closed
            if not closed:
                self._child = child  # from now on stop() and kill() reach it
        if closed:
            self._discard(child)
            raise self._unavailable()
        deadline = time.monotonic() + self._limits.start_timeout_s
        try:
            child.send(encode_frame([SERVE, self._config, self._cap]), deadline)
            reply, _ = child.receive(_CONTROL_FRAME_BYTES, deadline)
        except FrameClosed:
            raise self._died(child, "while starting") from None
        except FrameError as exc:
            self._discard(child)
            if self._closed:
                raise self._unavailable() from None
            if isinstance(exc, FrameTimeout):
                raise ExtensionTimeout(
                    f"extension {self._name!r}: its worker did not start within "
                    f"start_timeout_s ({self._limits.start_timeout_s:g} s); it was killed: make "
                    "importing and instantiating it faster, or raise start_timeout_s"
                ) from None
            raise malformed(self._name, "answer to its start") from None
        if not is_reply(reply, READY, 1):
            self._discard(child)
            raise start_refusal(self._config, reply)
        return child

    def _discard(self, child: WorkerChild) -> None:
        """Kill and reap ``child``, keeping its peak RSS."""
        child.close(_KILL_WAIT_S)
        with self._lock:
            if self._child is child:
                self._child = None
            if child.rss_bytes is not None:
                self._reaped_rss = max(self._reaped_rss or 0, child.rss_bytes)

    def _died(self, child: WorkerChild, during: str) -> ExtensionError:
        code = child.wait(_DEATH_WAIT_S)
        self._discard(child)
        if self._closed:
            return self._unavailable()
        return death_error(self._name, self._limits, code, during)

    def _exchange(
        self, child: WorkerChild, request: bytearray, timeout: float, method: str
    ) -> tuple[Any, int]:
        during = f"during {method}()"
        deadline = time.monotonic() + timeout
        try:
            child.send(request, deadline)
            return child.receive(max(self._limits.max_output_bytes, _CONTROL_FRAME_BYTES), deadline)
        except FrameClosed:
            raise self._died(child, during) from None
        except FrameError as exc:
            self._discard(child)
            if self._closed:
                raise self._unavailable() from None
            if isinstance(exc, FrameTimeout):
                raise ExtensionTimeout(
                    f"extension {self._name!r}: {method}() did not return within {timeout:g} s; "
                    "its worker was killed and restarts on the next call"
                ) from None
            if isinstance(exc, FrameTooLarge):
                raise resource_error(
                    self._name, self._limits, "max_output_bytes", f"{method}()"
                ) from None
            raise malformed(self._name, "response") from None

    def _result(self, child: WorkerChild, reply: Any, size: int, method: str) -> object:
        if is_reply(reply, OK, 2):
            if size > self._limits.max_output_bytes:  # under the frame bound, over the limit
                raise resource_error(self._name, self._limits, "max_output_bytes", f"{method}()")
            return reply[1]
        if is_reply(reply, RAISED, 2):
            raise ExtensionFailed(
                f"extension {self._name!r}: {method}() raised {type_name(reply[1])}",
                cause="raised",
            )
        if is_reply(reply, INVALID_OUTPUT, 2):
            raise ExtensionFailed(
                f"extension {self._name!r}: {method}() returned a value that cannot cross to "
                f"the host ({reason_text(reply[1])}); return views and plain values only",
                cause="invalid_output",
            )
        if is_reply(reply, RESOURCE, 2) and reply[1] in ("memory_bytes", "max_output_bytes"):
            if reply[1] == "memory_bytes":  # its state after a MemoryError is not trusted
                self._discard(child)
            raise resource_error(self._name, self._limits, reply[1], f"in {method}()")
        if is_reply(reply, BAD_REQUEST, 2):
            raise InvalidArgument(
                f"extension {self._name!r}: the worker could not read the arguments of "
                f"{method}() ({reason_text(reply[1])}); pass each through to_wire"
            )
        self._discard(child)
        raise malformed(self._name, "response")

    def _end(self, child: WorkerChild, timeout: float, deadline: float | None = None) -> str:
        """Ask ``child`` to run stop() and exit; terminate, then kill, what does not."""
        if deadline is None:
            deadline = time.monotonic() + timeout
        note = ""
        try:
            child.send(encode_frame([STOP]), deadline)
            reply, _ = child.receive(_CONTROL_FRAME_BYTES, deadline)
        except FrameTimeout:
            note = f"stop() did not return within {timeout:g} s; worker killed"
        except (FrameClosed, FrameMalformed, FrameTooLarge):
            note = "the worker died or broke the protocol during stop()"
        else:
            if is_reply(reply, STOPPED, 2) and reply[1] == "":
                pass
            elif is_reply(reply, STOPPED, 2):
                note = f"stop() raised {type_name(reply[1])}"
            else:
                note = "the worker answered stop() with a malformed response"
            if child.wait(max(deadline - time.monotonic(), _EXIT_GRACE_S)) is None:
                child.signal_group(signal.SIGTERM)
                child.wait(_TERM_WAIT_S)
        self._discard(child)
        return note


def inspect_target(
    config: WorkerConfig, *, cpu_lifetime_s: int = DEFAULT_CPU_LIFETIME_S, mode: str = INSPECT
) -> InterfaceReport:
    """Import the target in a throwaway worker and describe its class, without instantiating it.

    An import that raises, a missing attribute or a non-class are
    ``problems`` of the report. A changed pinned file raises
    ExtensionCodeChanged, an import that does not finish within
    ``start_timeout_s`` ExtensionTimeout, a worker that dies ExtensionFailed.
    With ``mode=CHECK_SETTINGS`` the report's problems are those of
    ``config.settings`` as the class's ``Settings`` instead.
    """
    _check_cap(config, cpu_lifetime_s)
    child = WorkerChild(config.prefix, OutputTail(), config.name)
    deadline = time.monotonic() + config.limits.start_timeout_s
    try:
        try:
            child.send(encode_frame([mode, config, cpu_lifetime_s]), deadline)
            reply, _ = child.receive(_REPORT_FRAME_BYTES, deadline)
        except FrameTimeout:
            raise ExtensionTimeout(
                f"extension {config.name!r}: importing it did not finish within "
                f"start_timeout_s ({config.limits.start_timeout_s:g} s)"
            ) from None
        except FrameClosed:
            code = child.wait(_DEATH_WAIT_S)
            raise death_error(config.name, config.limits, code, "while it was inspected") from None
        except FrameError:
            raise malformed(config.name, "report") from None
        if not is_reply(reply, REPORT, 2):
            raise start_refusal(config, reply)
        try:
            return msgspec.convert(reply[1], InterfaceReport, strict=True)
        except msgspec.ValidationError:
            raise malformed(config.name, "report") from None
    finally:
        child.close(_KILL_WAIT_S)
