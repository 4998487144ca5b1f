"""OpenTelemetry through ``gotstate_persist.telemetry``: the real SDK, kept in memory.

What is checked: the same events as ``Store.stats()`` arrive as metric points
and spans; attributes are the namespace, the operation, the kind and the
error type only (a canary key and a canary secret in state data appear
nowhere unless keys are opted in, and then only as the span's key); and a
program that does not instrument a store never imports OpenTelemetry.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from gotstate.core.events import Event
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import gotstate_persist as gp
from gotstate_persist import telemetry
from tests.machines import build_ring_machine, set_data

ROOT = Path(__file__).resolve().parent.parent
KEY_CANARY = "cnry-key-Q7v2"
DATA_CANARY = "cnry-state-secret-X9k4"


class Note(msgspec.Struct, frozen=True):
    text: str


class Otel:
    """A real SDK pipeline kept in memory."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def points(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric name -> [(attributes, point)] for every point collected now."""
        found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "gotstate_persist"
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        found.setdefault(metric.name, []).append((dict(point.attributes), point))
        return found

    def total(self, name: str) -> int:
        return sum(point.value for _attributes, point in self.points().get(name, []))

    def close(self) -> None:
        self.meters.shutdown()
        self.tracers.shutdown()


@pytest.fixture
def otel() -> Iterator[Otel]:
    sdk = Otel()
    yield sdk
    sdk.close()


def _formats() -> gp.FormatRegistry:
    formats = gp.FormatRegistry()
    formats.register(Note, kind="note", version=1)
    return formats


@pytest.fixture
def instrumented(sqlite_url: str, keyring: gp.KeyRing, otel: Otel) -> Iterator[gp.Store]:
    with gp.open_store(sqlite_url, namespace="orders", keyring=keyring, formats=_formats()) as s:
        telemetry.instrument(s, meter_provider=otel.meters, tracer_provider=otel.tracers)
        yield s


def _machine(secret: str | None = None) -> Any:
    machine = build_ring_machine()
    machine.start()
    machine.process_event(Event("next"))
    if secret is not None:
        set_data(machine, "s-0-0", "token", secret)
    return machine


def test_events_become_counters_and_a_duration_histogram(
    instrumented: gp.Store, otel: Otel
) -> None:
    machine = _machine()
    refs = [instrumented.save_machine("order", machine) for _ in range(5)]
    note = instrumented.save("note", Note("hello"))
    instrumented.restore_machine("order", build_ring_machine())
    assert instrumented.load("note") == Note("hello")
    with pytest.raises(gp.VersionConflict):
        instrumented.save_machine("order", machine, expected_version=1)

    stats = instrumented.stats()
    assert otel.total("gotstate_persist.records_written") == stats.records_written == 6
    written = sum(ref.size for ref in refs) + note.size
    assert otel.total("gotstate_persist.bytes_written") == stats.bytes_written == written
    assert (
        otel.total("gotstate_persist.bytes_read") == stats.bytes_read == refs[-1].size + note.size
    )
    assert otel.total("gotstate_persist.version_conflicts") == 1

    durations = {
        tuple(sorted(attributes.items())): point.count
        for attributes, point in otel.points()["gotstate_persist.operation.duration"]
    }

    def labels(operation: str, kind: str = "", error: str = "") -> tuple[tuple[str, str], ...]:
        found = {"gotstate_persist.namespace": "orders", "gotstate_persist.operation": operation}
        found |= {"gotstate_persist.kind": kind} if kind else {"error.type": error}
        return tuple(sorted(found.items()))

    assert durations == {
        labels("save_machine", "gotstate.machine"): 5,
        labels("save", "note"): 1,
        labels("restore_machine", "gotstate.machine"): 1,
        labels("load", "note"): 1,
        labels("save_machine", error="VersionConflict"): 1,
    }
    ns = ("gotstate_persist.namespace", "orders")
    for name, points in otel.points().items():
        if name != "gotstate_persist.operation.duration":
            assert all(attributes == {ns[0]: "orders"} for attributes, _ in points), name


def test_spans_carry_namespace_and_kind_only(instrumented: gp.Store, otel: Otel) -> None:
    instrumented.save_machine("order", _machine())
    with pytest.raises(gp.NotFound):
        instrumented.load("missing")
    spans = otel.spans()
    assert [span.name for span in spans] == [
        "gotstate_persist.save_machine",
        "gotstate_persist.load",
    ]
    saved, failed = spans
    assert dict(saved.attributes or {}) == {
        "gotstate_persist.namespace": "orders",
        "gotstate_persist.kind": "gotstate.machine",
    }
    assert saved.status.status_code is StatusCode.UNSET
    assert dict(failed.attributes or {}) == {
        "gotstate_persist.namespace": "orders",
        "error.type": "NotFound",
    }
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "NotFound"
    assert failed.events == ()  # no exception event: its message quotes the key


def _everything_exported(otel: Otel) -> str:
    """Every attribute, event and status of every span and metric point, as text."""
    parts: list[object] = []
    for span in otel.spans():
        parts += [span.name, dict(span.attributes or {}), span.status.description]
        parts += [(event.name, dict(event.attributes or {})) for event in span.events]
        parts += [dict(span.resource.attributes)]
    for name, points in otel.points().items():
        parts += [name, *(attributes for attributes, _ in points)]
    return json.dumps(parts, default=str)


def _canary_run(store: gp.Store) -> None:
    machine = _machine(secret=DATA_CANARY)
    store.save_machine(KEY_CANARY, machine)
    store.save_machine(KEY_CANARY, machine)
    store.restore_machine(KEY_CANARY, build_ring_machine())
    with pytest.raises(gp.VersionConflict):
        store.save_machine(KEY_CANARY, machine, expected_version=1)
    with pytest.raises(gp.NotFound):
        store.load(f"{KEY_CANARY}-missing")


def test_no_key_and_no_data_in_any_attribute(instrumented: gp.Store, otel: Otel) -> None:
    _canary_run(instrumented)
    exported = _everything_exported(otel)
    assert "gotstate_persist.save_machine" in exported  # the scan sees the spans
    assert KEY_CANARY not in exported
    assert DATA_CANARY not in exported


def test_keys_go_on_spans_only_when_opted_in(
    sqlite_url: str, keyring: gp.KeyRing, otel: Otel
) -> None:
    with gp.open_store(sqlite_url, keyring=keyring) as store:
        telemetry.instrument(
            store, meter_provider=otel.meters, tracer_provider=otel.tracers, include_keys=True
        )
        _canary_run(store)
    keys = {(span.attributes or {}).get("gotstate_persist.key") for span in otel.spans()}
    assert keys == {KEY_CANARY, f"{KEY_CANARY}-missing"}
    metric_attributes = json.dumps([a for points in otel.points().values() for a, _ in points])
    assert KEY_CANARY not in metric_attributes
    assert DATA_CANARY not in _everything_exported(otel)


def test_uninstrument_stops_reporting_but_stats_go_on(instrumented: gp.Store, otel: Otel) -> None:
    instrumented.save("a", Note("1"))
    telemetry.uninstrument(instrumented)
    instrumented.save("a", Note("2"))
    assert len(otel.spans()) == 1
    assert otel.total("gotstate_persist.records_written") == 1
    assert instrumented.stats().records_written == 2


def test_a_store_that_counts_nothing_cannot_be_instrumented(
    sqlite_url: str, keyring: gp.KeyRing, otel: Otel
) -> None:
    with gp.open_store(sqlite_url, keyring=keyring, stats=False) as store:
        with pytest.raises(gp.InvalidArgument, match="stats=False"):
            telemetry.instrument(store, meter_provider=otel.meters)
        with pytest.raises(gp.InvalidArgument, match="include_keys"):
            telemetry.instrument(store, include_keys="yes")  # type: ignore[arg-type]


def _run(script: str, tmp_path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "DB": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_without_instrument_nothing_of_opentelemetry_is_imported(tmp_path: Path) -> None:
    out = _run(
        """
        import os, sys
        import gotstate_persist as gp
        from tests.machines import build_ring_machine
        machine = build_ring_machine()
        machine.start()
        with gp.open_store(os.environ["DB"], keyring=gp.KeyRing.generate()) as store:
            store.save_machine("k", machine)
            store.restore_machine("k", build_ring_machine())
            assert store.stats().save_machine.count == 1
        print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))
        """,
        tmp_path,
    )
    assert out.strip() == "[]"


def test_without_the_extra_instrument_says_what_to_install(tmp_path: Path) -> None:
    out = _run(
        """
        import os, sys
        sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
        import gotstate_persist as gp
        from gotstate_persist import telemetry
        with gp.open_store(os.environ["DB"], keyring=gp.KeyRing.generate()) as store:
            try:
                telemetry.instrument(store)
            except gp.InvalidArgument as exc:
                print(exc)
        """,
        tmp_path,
    )
    assert "pip install 'gotstate-persist[otel]'" in out


def test_a_global_tracer_provider_set_later_gets_spans(tmp_path: Path) -> None:
    """Instrumented before the application sets its global provider: spans follow it.

    The global provider is looked up at most once a second (it costs a read
    of the environment); the check interval is zeroed here so the test waits
    for nothing. Once one is set, every later operation is traced.
    """
    out = _run(
        """
        import os
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import gotstate_persist as gp
        from gotstate_persist import _otel, telemetry
        from tests.machines import build_ring_machine
        _otel._GLOBAL_CHECK_S = 0.0
        machine = build_ring_machine()
        machine.start()
        with gp.open_store(os.environ["DB"], keyring=gp.KeyRing.generate()) as store:
            telemetry.instrument(store)
            store.save_machine("k", machine)  # no provider anywhere: no span
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            store.save_machine("k", machine)
            store.restore_machine("k", build_ring_machine())
            print([span.name for span in exporter.get_finished_spans()])
        """,
        tmp_path,
    )
    assert out.strip() == str(["gotstate_persist.save_machine", "gotstate_persist.restore_machine"])


def test_stores_on_one_provider_report_by_namespace_without_double_counting(
    sqlite_url: str, keyring: gp.KeyRing, otel: Otel
) -> None:
    """One set of counters per provider (an SDK ignores a second registration's callbacks)."""
    with (
        gp.open_store(sqlite_url, namespace="a", keyring=keyring, formats=_formats()) as first,
        gp.open_store(sqlite_url, namespace="b", keyring=keyring, formats=_formats()) as second,
    ):
        first.save("k", Note("before"))  # before instrument(): not reported
        for store in (first, second):
            telemetry.instrument(store, meter_provider=otel.meters, tracer_provider=otel.tracers)
        first.save("k", Note("1"))
        second.save("k", Note("2"))
        second.save("k", Note("3"))
        telemetry.instrument(second, meter_provider=otel.meters)  # again: replaces, no double
        second.save("k", Note("4"))
        telemetry.uninstrument(first)
        first.save("k", Note("after"))  # after uninstrument(): not reported
    written = {
        attributes["gotstate_persist.namespace"]: point.value
        for attributes, point in otel.points()["gotstate_persist.records_written"]
    }
    assert written == {"a": 1, "b": 3}


def test_keyword_calls_and_many_queued_durations(
    sqlite_url: str, keyring: gp.KeyRing, otel: Otel
) -> None:
    """Durations wait for the collection; past 1024 the queuing thread records them."""
    with gp.open_store(sqlite_url, keyring=keyring, formats=_formats()) as store:
        telemetry.instrument(
            store, meter_provider=otel.meters, tracer_provider=otel.tracers, include_keys=True
        )
        ref = store.save(key="k", record=Note("x"))
        for _ in range(1100):
            store.load(key="k", version=ref.version)
    assert {(s.attributes or {}).get("gotstate_persist.key") for s in otel.spans()} == {"k"}
    counts = {
        attributes["gotstate_persist.operation"]: point.count
        for attributes, point in otel.points()["gotstate_persist.operation.duration"]
    }
    assert counts == {"save": 1, "load": 1100}
