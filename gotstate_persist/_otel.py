"""The OpenTelemetry side of a store's counters: imported only by ``telemetry.instrument``.

Which attributes go out is decided here, once: the namespace, the
operation, the record kind (the name of a registered format, never data)
and, on failure, ``error.type`` (the exception's class name, never its
message, which may quote a key). Exceptions are not recorded as span events
for the same reason. Attribute dicts are built once per combination and
reused. Without a tracer provider given, and none configured globally, no
span is started at all (OpenTelemetry would only make a non-recording one).

Counters are observable (asynchronous) instruments: OpenTelemetry reads the
store's own totals (``Metrics.total``) when it collects, so a save costs no
more with them than without. An SDK keeps one instrument per name and
meter, and ignores the callbacks of a second registration, so the counters
are created once per meter provider (:class:`_Hub`) and report every store
instrumented on it, by namespace. A store's counts stay in the totals after
it is uninstrumented or closed: counters never go down.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from time import perf_counter
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Histogram, Observation
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanKind,
    Status,
    StatusCode,
)

from ._metrics import COUNTERS, Metrics
from ._refs import SnapshotRef
from ._version import VERSION
from .errors import PersistError
from .formats import FormatRegistry

__all__ = ["OtelSink", "hub_for"]

_SCOPE = "gotstate_persist"
_NAMESPACE = "gotstate_persist.namespace"
_OPERATION = "gotstate_persist.operation"
_KIND = "gotstate_persist.kind"
_KEY = "gotstate_persist.key"
_ERROR = "error.type"
#: What the global tracer provider is until an application configures tracing.
_UNSET = (ProxyTracerProvider, NoOpTracerProvider)
#: OpenTelemetry's recommended boundaries for durations in seconds.
_DURATION_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_UNITS = {"bytes_written": "By", "bytes_read": "By"}
#: How often, at most, a store without a tracer provider asks whether the
#: application has set the global one since (spans start within this delay).
_GLOBAL_CHECK_S = 1.0
#: Durations queued before the thread that queues the next one records them all.
_PENDING_MAX = 1024
_DESCRIPTIONS = {
    "records_written": "Records the store wrote",
    "bytes_written": "Stored (sealed) bytes the store wrote, migrate and reseal included",
    "records_read": "Records the store fetched",
    "bytes_read": "Stored (sealed) bytes the store fetched",
    "version_conflicts": "Writes that found another version first",
    "append_retries": "Writes retried after losing a race to another writer",
    "quota_refusals": "Writes refused by the namespace's quota",
    "rate_refusals": "Reads and writes refused by the namespace's rate limit",
    "migrated": "Records rewritten in the newest format by migrate",
    "resealed": "Records sealed again under the primary key by reseal",
    "extension_calls": "Extension calls that ran",
    "extension_failures": "Extension calls that failed (timeouts and crashes included)",
    "extension_timeouts": "Extension calls that ran past their deadline",
}


class _Hub:
    """The instruments of one meter provider, shared by every store instrumented on it."""

    def __init__(self, meter_provider: Any) -> None:
        meter = otel_metrics.get_meter(_SCOPE, VERSION, meter_provider=meter_provider)
        self._lock = threading.Lock()
        self._stores: dict[int, tuple[str, Metrics, dict[str, int]]] = {}
        self._left: dict[tuple[str, str], int] = {}  # (counter, namespace): counts of stores gone
        self._pending: deque[tuple[float, Mapping[str, str]]] = deque()
        for name in COUNTERS:
            meter.create_observable_counter(
                f"gotstate_persist.{name}",
                callbacks=[functools.partial(self._observe, name)],
                unit=_UNITS.get(name, "1"),
                description=_DESCRIPTIONS[name],
            )
        self.duration: Histogram = meter.create_histogram(
            "gotstate_persist.operation.duration",
            unit="s",
            description="Duration of save_machine, restore_machine, save and load",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS_S,
        )

    def later(self, seconds: float, attributes: Mapping[str, str]) -> None:
        """Queue one duration for the histogram (recorded at the next collection)."""
        pending = self._pending
        pending.append((seconds, attributes))
        if len(pending) >= _PENDING_MAX:
            self.flush()

    def flush(self) -> None:
        """Record the queued durations (popleft is atomic: no duration is lost or doubled)."""
        pending, record = self._pending, self.duration.record
        while True:
            try:
                seconds, attributes = pending.popleft()
            except IndexError:
                return
            record(seconds, attributes)

    def join(self, namespace: str, metrics: Metrics) -> None:
        """Report ``metrics`` from now on (what it counted before is not reported)."""
        start = {name: metrics.total(name) for name in COUNTERS}
        with self._lock:
            self._stores[id(metrics)] = (namespace, metrics, start)

    def leave(self, metrics: Metrics) -> None:
        """Stop reporting ``metrics``; what it counted until now stays in the totals."""
        self.flush()
        with self._lock:
            entry = self._stores.pop(id(metrics), None)
            if entry is not None:
                namespace, _metrics, start = entry
                for name in COUNTERS:
                    key = (name, namespace)
                    self._left[key] = self._left.get(key, 0) + metrics.total(name) - start[name]

    def _observe(self, counter: str, _options: CallbackOptions) -> Iterable[Observation]:
        if counter == COUNTERS[0]:
            self.flush()  # an SDK runs these callbacks before it reads the histogram
        with self._lock:
            entries = list(self._stores.values())
            totals = {ns: count for (name, ns), count in self._left.items() if name == counter}
        for namespace, metrics, start in entries:
            counted = metrics.total(counter) - start[counter]
            totals[namespace] = totals.get(namespace, 0) + counted
        return [Observation(count, {_NAMESPACE: ns}) for ns, count in sorted(totals.items())]


_HUBS: weakref.WeakKeyDictionary[Any, _Hub] = weakref.WeakKeyDictionary()
_HUBS_LOCK = threading.Lock()


def hub_for(meter_provider: Any) -> _Hub:
    """The instruments of ``meter_provider`` (None: the global one), created once."""
    provider = otel_metrics.get_meter_provider() if meter_provider is None else meter_provider
    with _HUBS_LOCK:
        hub = _HUBS.get(provider)
        if hub is None:
            hub = _HUBS[provider] = _Hub(provider)
        return hub


class OtelSink:
    """Spans and durations of one store's operations; its counters join the provider's hub."""

    def __init__(
        self,
        namespace: str,
        formats: FormatRegistry,
        metrics: Metrics,
        *,
        meter_provider: Any,
        tracer_provider: Any,
        include_keys: bool,
    ) -> None:
        self._hub = hub_for(meter_provider)
        self._hub.join(namespace, metrics)
        self._metrics = metrics
        self._tracer = trace.get_tracer(_SCOPE, VERSION, tracer_provider=tracer_provider)
        self._namespace = namespace
        self._formats = formats
        self._include_keys = include_keys
        self._attributes: dict[tuple[str, str, str], Mapping[str, str]] = {}
        self._records_spans = tracer_provider is not None
        self._checked_at = -_GLOBAL_CHECK_S

    def close(self) -> None:
        """Stop: spans and durations end now; the counters keep the counts so far."""
        self._hub.leave(self._metrics)

    def _labels(self, operation: str, kind: str, error: str) -> Mapping[str, str]:
        """The attributes of one (operation, kind, error type), built once."""
        found = self._attributes.get((operation, kind, error))
        if found is None:
            built = {_NAMESPACE: self._namespace, _OPERATION: operation}
            if kind:
                built[_KIND] = kind
            if error:
                built[_ERROR] = error
            found = self._attributes.setdefault((operation, kind, error), built)
        return found

    def _kind(self, result: Any) -> str:
        if isinstance(result, SnapshotRef):
            return result.kind
        try:
            return self._formats.kind_of(result)[0]  # load() returns the record itself
        except PersistError:
            return ""

    def _tracing(self) -> bool:
        """Whether spans are recorded: a provider was given, or the global one is set.

        Asking OpenTelemetry for the global provider costs a microsecond (it
        reads the environment), so it is asked at most every
        :data:`_GLOBAL_CHECK_S` seconds until set; once set it stays set
        (OpenTelemetry lets it be set only once).
        """
        if self._records_spans:
            return True
        now = perf_counter()
        if now - self._checked_at < _GLOBAL_CHECK_S:
            return False
        self._checked_at = now
        self._records_spans = not isinstance(trace.get_tracer_provider(), _UNSET)
        return self._records_spans

    def traced(
        self,
        operation: str,
        key: object,
        metrics: Metrics,
        method: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if not self._tracing():
            return self._timed(operation, method, args, kwargs, metrics, None)
        attributes = {_NAMESPACE: self._namespace}
        if self._include_keys and isinstance(key, str):
            attributes[_KEY] = key
        with self._tracer.start_as_current_span(
            f"gotstate_persist.{operation}",
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            record_exception=False,  # its message may quote a key
            set_status_on_exception=False,
        ) as span:
            return self._timed(operation, method, args, kwargs, metrics, span)

    def _timed(
        self,
        operation: str,
        method: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        metrics: Metrics,
        span: Span | None,
    ) -> Any:
        started = perf_counter()
        try:
            result = method(*args, **kwargs)
        except BaseException as exc:
            seconds = perf_counter() - started
            metrics.finished(operation, seconds, exc)
            error = type(exc).__name__
            if span is not None:
                span.set_attribute(_ERROR, error)
                span.set_status(Status(StatusCode.ERROR, error))
            self._hub.later(seconds, self._labels(operation, "", error))
            raise
        seconds = perf_counter() - started
        metrics.finished(operation, seconds, None)
        kind = self._kind(result)
        if kind and span is not None:
            span.set_attribute(_KIND, kind)
        self._hub.later(seconds, self._labels(operation, kind, ""))
        return result
