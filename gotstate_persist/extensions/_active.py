"""``gp.ActiveExtension``: one activated extension in this process, and its boundary.

Every call to an extension goes through here, whatever its isolation, in a
fixed order: admission (open circuit, rate, queue and concurrency, input
size), the call on the runner (worker pool or guarded threads) under its
deadline, then validation of the output. Each outcome is counted once, and
consecutive failures open the circuit: the runner is stopped and the
registry is told, so it can persist status ``failed`` with the reason.

Refusals that are the caller's load, not the extension's fault (rate,
queue, input size), never count toward the circuit.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from .._metrics import Metrics
from ..errors import (
    ExtensionBusy,
    ExtensionCodeChanged,
    ExtensionError,
    ExtensionFailed,
    ExtensionResourceError,
    ExtensionTimeout,
    ExtensionUnavailable,
    InvalidArgument,
    RateLimited,
)
from ..formats.extension import ExtensionStats
from ._categories import OutputError, check_output
from ._registration import Registration
from ._stats import StatsCounter
from ._views import WireError, copy_across, from_wire, to_wire

__all__ = ["ActiveExtension", "Runner"]

logger = logging.getLogger(__name__)

# measures inputs; msgspec encodes the exact types (tuple, set, Decimal, ...) natively
_SIZE_ENCODER = msgspec.msgpack.Encoder()


class Runner(Protocol):
    """What an isolation provides (the worker pool and the guarded thread pool)."""

    @property
    def restarts(self) -> int: ...

    @property
    def max_rss_bytes(self) -> int | None: ...

    def start(self) -> None: ...

    def call(
        self, method: str, args: list[object], *, timeout_s: float | None = None
    ) -> object: ...

    def stop(self, timeout: float) -> str: ...

    def kill(self) -> None: ...

    def output_tail(self) -> str: ...


def _rate_limiter(rate: float | None, burst: int | None) -> tuple[Any, Any] | None:
    """A moving window of ``burst`` calls (default: one second's worth) per process."""
    if rate is None:
        return None
    from limits import RateLimitItemPerSecond, storage, strategies

    amount = burst if burst is not None else max(1, math.floor(rate))
    window = max(1, math.ceil(amount / rate))
    item = RateLimitItemPerSecond(amount, window)
    return strategies.MovingWindowRateLimiter(storage.MemoryStorage()), item


class ActiveExtension:
    """An active extension in this process: call it, read its stats.

    Returned by ``exts.activate``; usually driven through a
    :class:`~gotstate_persist.BoundMachine`. Thread-safe.
    """

    def __init__(
        self,
        registration: Registration,
        runner: Runner,
        *,
        on_circuit_open: Callable[[ActiveExtension, str], None] = lambda handle, reason: None,
        metrics: Metrics | None = None,
    ) -> None:
        self._registration = registration
        self._runner = runner
        self._on_circuit_open = on_circuit_open
        self._stats = StatsCounter(metrics)
        limits = registration.limits
        self._lock = threading.Lock()
        self._waiting = 0
        self._in_flight = 0
        # one condition for both: a slot was freed (queued calls) / all calls ended (close)
        self._changed = threading.Condition(self._lock)
        self._consecutive_failures = 0
        self._closed_reason = ""
        self._open = True
        self._rate = _rate_limiter(limits.rate_per_s, limits.burst)
        self._takes_values = bool(getattr(runner, "takes_values", False))

    def __repr__(self) -> str:
        state = "active" if self._open else "closed"
        return f"<ActiveExtension {self.name!r} revision {self._registration.revision} {state}>"

    @property
    def name(self) -> str:
        return self._registration.name

    @property
    def registration(self) -> Registration:
        """The registration revision this handle was activated from."""
        return self._registration

    @property
    def active(self) -> bool:
        """False once deactivated or after the circuit opened."""
        return self._open

    def stats(self) -> ExtensionStats:
        """Counters and latency percentiles of this extension in this process."""
        return self._stats.snapshot(
            restarts=self._runner.restarts, max_rss_bytes=self._runner.max_rss_bytes
        )

    def stuck(self) -> None:
        """Count an in-process call that outlived its deadline (the guard reports it)."""
        self._stats.stuck()

    def output_tail(self) -> str:
        """The last 64 KiB the worker printed (empty in-process)."""
        return self._runner.output_tail()

    # Calls.

    def call(self, method: str, *args: Any) -> Any:
        """Call ``method`` with views/values; return its validated output.

        Raises the named ``Extension*`` error of the contract, ``RateLimited``
        or ``InvalidArgument`` (the arguments cannot be passed to an
        extension); the machine or caller state is the caller's to keep.
        """
        if method not in self._registration.interface:
            raise InvalidArgument(
                f"extension {self.name!r} has no method {method}(); it defines "
                f"{', '.join(self._registration.interface) or 'none'}"
            )
        passed = self._encode_args(args)
        self._admit()
        try:
            return self._run(method, passed)
        finally:
            self._release()

    def _encode_args(self, args: tuple[Any, ...]) -> list[object]:
        """The arguments as the runner takes them (copies or wire forms), size-checked.

        The size is that of their msgpack encoding (in-process: of the copies
        as msgspec encodes them; for a worker: of the request's wire forms).
        """
        convert = copy_across if self._takes_values else to_wire
        try:
            passed: list[object] = [convert(arg) for arg in args]
            size = len(_SIZE_ENCODER.encode(passed))
        except (WireError, TypeError, OverflowError) as exc:
            raise InvalidArgument(
                f"cannot pass this value to extension {self.name!r}: {exc}"
            ) from None
        if size > self._registration.limits.max_input_bytes:
            self._stats.reject("size")
            raise ExtensionResourceError(
                f"the input to extension {self.name!r} is {size} bytes, over "
                f"max_input_bytes={self._registration.limits.max_input_bytes}; send less data",
                resource="max_input_bytes",
            )
        return passed

    def _admit(self) -> None:
        if not self._open:
            raise self._unavailable()
        if self._rate is not None:
            limiter, item = self._rate
            if not limiter.hit(item, self.name):
                self._stats.reject("rate")
                reset = limiter.get_window_stats(item, self.name)[0]
                raise RateLimited(
                    f"extension {self.name!r}: over rate_per_s="
                    f"{self._registration.limits.rate_per_s} in this process; retry later or "
                    "raise the limit by registering again",
                    limit="rate_per_s",
                    retry_after=max(0.0, reset - time.time()),
                )
        limits = self._registration.limits
        with self._lock:
            if not self._open:
                raise self._unavailable()
            if self._in_flight < limits.max_concurrency:
                self._in_flight += 1
                return
            if self._waiting >= limits.max_queue:
                self._stats.reject("concurrency")
                raise ExtensionBusy(
                    f"extension {self.name!r}: {limits.max_concurrency} calls running and "
                    f"{self._waiting} waiting (max_queue={limits.max_queue}); retry later"
                )
            self._waiting += 1
            try:
                deadline = time.monotonic() + limits.timeout_s
                while self._open and self._in_flight >= limits.max_concurrency:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._stats.reject("concurrency")
                        raise ExtensionBusy(
                            f"extension {self.name!r}: no free slot within timeout_s="
                            f"{limits.timeout_s:g}; retry later or raise max_concurrency"
                        )
                    self._changed.wait(left)
                if not self._open:
                    raise self._unavailable()
                self._in_flight += 1
            finally:
                self._waiting -= 1

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._waiting or not self._in_flight:  # a queued call, or close() draining
                self._changed.notify_all()

    def _run(self, method: str, passed: list[object]) -> Any:
        started = time.perf_counter()
        try:
            raw = self._runner.call(method, passed)
            value = check_output(
                method,
                copy_across(raw) if self._takes_values else from_wire(raw),
                max_events=self._registration.limits.max_events,
            )
        except (WireError, OutputError) as exc:
            self._stats.reject("invalid_output")
            error: ExtensionError = ExtensionFailed(
                f"extension {self.name!r} returned an invalid output from {method}() ({exc}); "
                "nothing was applied. Fix the extension",
                cause="invalid_output",
            )
            self._failed(error, "failure", started)
            raise error from None
        except ExtensionResourceError as exc:
            if exc.resource == "max_input_bytes":
                self._stats.reject("size")
                raise
            self._failed(exc, "failure", started)
            raise
        except ExtensionTimeout as exc:
            self._failed(exc, "timeout", started)
            raise
        except ExtensionCodeChanged as exc:
            self._stats.record("failure", time.perf_counter() - started)
            self._open_circuit(f"code changed since registration: {exc}")
            raise
        except ExtensionFailed as exc:
            self._failed(exc, "crash" if exc.cause == "crashed" else "failure", started)
            if exc.cause == "invalid_output":
                self._stats.reject("invalid_output")
            raise
        self._stats.record("ok", time.perf_counter() - started)
        with self._lock:
            self._consecutive_failures = 0
        return value

    def _failed(self, error: Exception, outcome: str, started: float) -> None:
        self._stats.record(outcome, time.perf_counter() - started)
        with self._lock:
            self._consecutive_failures += 1
            tripped = self._open and (
                self._consecutive_failures >= self._registration.limits.max_failures
            )
        if tripped:
            self._open_circuit(
                f"circuit opened after {self._consecutive_failures} consecutive failures "
                f"(last: {type(error).__name__})"
            )

    def _open_circuit(self, reason: str) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
            self._closed_reason = reason
        logger.warning("extension %r: %s", self.name, reason)
        self._runner.kill()
        self._on_circuit_open(self, reason)

    def _unavailable(self) -> ExtensionUnavailable:
        why = self._closed_reason or "it was deactivated"
        return ExtensionUnavailable(
            f"extension {self.name!r} is not active in this process ({why}); "
            "activate it again with exts.activate()"
        )

    # Lifecycle.

    def close(self, timeout: float) -> str:
        """Stop admitting calls, drain in-flight ones, stop the runner; a short note.

        Never takes longer than ``timeout`` + 1 s: draining and the
        extension's ``stop()`` share the ``timeout``, killing takes the rest.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            self._open = False
            self._closed_reason = self._closed_reason or "it was deactivated"
            while self._in_flight and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            self._changed.notify_all()  # queued calls give up: the handle is closed
            undrained = self._in_flight
        note = self._runner.stop(max(0.0, deadline - time.monotonic()))
        if undrained:
            drained = f"{undrained} call(s) still running at the deadline were abandoned"
            note = f"{note}; {drained}" if note else drained
        return note
