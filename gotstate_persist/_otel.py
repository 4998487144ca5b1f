"""The OpenTelemetry side of a store's counters: imported only by ``telemetry.instrument``.

Which attributes go out is decided here, once: the namespace, the
operation, the record kind (the name of a registered format, never data)
and, on failure, ``error.type`` (the exception's class name, never its
message, which may quote a key). Exceptions are not recorded as span events
for the same reason. Attribute dicts are built once per combination and
reused, so a counter update does not allocate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._metrics import COUNTERS, Metrics
from ._refs import SnapshotRef
from ._version import VERSION
from .errors import PersistError
from .formats import FormatRegistry

__all__ = ["OtelSink"]

_SCOPE = "gotstate_persist"
_NAMESPACE = "gotstate_persist.namespace"
_OPERATION = "gotstate_persist.operation"
_KIND = "gotstate_persist.kind"
_KEY = "gotstate_persist.key"
_ERROR = "error.type"
#: OpenTelemetry's recommended boundaries for durations in seconds.
_DURATION_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_UNITS = {"bytes_written": "By", "bytes_read": "By"}
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


class OtelSink:
    """Counters, a duration histogram and spans for one store's namespace."""

    def __init__(
        self,
        namespace: str,
        formats: FormatRegistry,
        *,
        meter_provider: Any,
        tracer_provider: Any,
        include_keys: bool,
    ) -> None:
        meter = otel_metrics.get_meter(_SCOPE, VERSION, meter_provider=meter_provider)
        self._tracer = trace.get_tracer(_SCOPE, VERSION, tracer_provider=tracer_provider)
        self._counters = {
            name: meter.create_counter(
                f"gotstate_persist.{name}",
                unit=_UNITS.get(name, "1"),
                description=_DESCRIPTIONS[name],
            )
            for name in COUNTERS
        }
        self._duration = meter.create_histogram(
            "gotstate_persist.operation.duration",
            unit="s",
            description="Duration of save_machine, restore_machine, save and load",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS_S,
        )
        self._namespace = namespace
        self._formats = formats
        self._include_keys = include_keys
        self._base: Mapping[str, str] = {_NAMESPACE: namespace}
        self._attributes: dict[tuple[str, str, str], Mapping[str, str]] = {}

    def add(self, counter: str, amount: int) -> None:
        self._counters[counter].add(amount, self._base)

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

    def traced(
        self, operation: str, store: Any, key: str, call: Callable[[], Any], metrics: Metrics
    ) -> Any:
        attributes = {_NAMESPACE: self._namespace}
        if self._include_keys:
            attributes[_KEY] = key
        with self._tracer.start_as_current_span(
            f"gotstate_persist.{operation}",
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            record_exception=False,  # its message may quote a key
            set_status_on_exception=False,
        ) as span:
            started = perf_counter()
            try:
                result = call()
            except BaseException as exc:
                seconds = perf_counter() - started
                metrics.finished(operation, seconds, exc)
                error = type(exc).__name__
                span.set_attribute(_ERROR, error)
                span.set_status(Status(StatusCode.ERROR, error))
                self._duration.record(seconds, self._labels(operation, "", error))
                raise
            seconds = perf_counter() - started
            metrics.finished(operation, seconds, None)
            kind = self._kind(result)
            if kind:
                span.set_attribute(_KIND, kind)
            self._duration.record(seconds, self._labels(operation, kind, ""))
            return result
