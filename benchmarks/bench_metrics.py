"""What counting costs ``save_machine``: stats off vs ``Store.stats()`` vs OpenTelemetry.

Run with ``make bench`` or ``.venv/bin/python benchmarks/bench_metrics.py [--rounds N]``.

Stores in one SQLite file (WAL; one namespace each, so that checkpoints of
the shared WAL fall on all of them alike) save the same small machine (100
states, ~1 KB of state data), with ``synchronous=FULL`` (the default) and
``NORMAL`` (no flush per commit: the strictest case, where nearly all of the
time is the library's own):

- baseline: ``open_store(..., stats=False)``, nothing counted;
- baseline again: a second such store, whose ratio to the first is the
  noise floor of the run (what two identical sides differ by);
- stats: the default, counters for ``Store.stats()``;
- otel metrics: stats plus ``gotstate_persist.telemetry.instrument`` on the
  real OpenTelemetry SDK's ``MeterProvider`` with an in-memory reader, no
  tracer provider configured (so no spans are started);
- otel + spans: the same plus an SDK ``TracerProvider`` with a batch span
  processor into an in-memory exporter (every save is a recorded span).

The three run interleaved round by round (who goes first rotates); each
figure is the median over rounds of the median call, and the ratio is time
per call / the baseline's (issue 17 target for metrics on: <= 1.05x; a
recorded span costs what the SDK costs, shown for information).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import figure  # noqa: E402
from bench_snapshot import build, timed  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

import gotstate_persist as gp  # noqa: E402
from gotstate_persist import telemetry  # noqa: E402

TARGET = 1.05
SECTION = "metrics overhead"
HOW = (
    "save_machine of a 100-state machine with stats / + OpenTelemetry SDK metrics (in-memory "
    "reader) / + SDK spans, vs stats=False, interleaved; median call; time / baseline"
)
MODES = ("baseline", "baseline again", "stats", "otel metrics", "otel + spans")
KEYS = 50
REPEAT = 20


def _saver(store: gp.Store, machine: Any) -> Callable[[], object]:
    counter = iter(range(10**9))

    def save() -> object:
        return store.save_machine(f"order-{next(counter) % KEYS}", machine)

    return save


def interleaved(
    calls: dict[str, Callable[[], object]], rounds: int, repeat: int
) -> dict[str, float]:
    """Median over rounds of the median call; the order rotates every round."""
    samples: dict[str, list[float]] = {mode: [] for mode in calls}
    order = list(calls)
    for r in range(rounds):
        shift = r % len(order)
        for mode in order[shift:] + order[:shift]:
            samples[mode].append(timed(calls[mode], repeat))
    return {mode: statistics.median(values) for mode, values in samples.items()}


def bench(place: str, url_of: Callable[[str], str], rounds: int, options: dict[str, Any]) -> None:
    keys = gp.KeyRing.generate()
    machine = build(100, 1_000)
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    tracers = TracerProvider()
    tracers.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    stores = {
        mode: gp.open_store(
            url_of(mode),
            namespace=f"mode-{index}",
            keyring=keys,
            stats=not mode.startswith("baseline"),
            **options,
        )
        for index, mode in enumerate(MODES)
    }
    try:
        telemetry.instrument(stores["otel metrics"], meter_provider=meters)
        telemetry.instrument(stores["otel + spans"], meter_provider=meters, tracer_provider=tracers)
        calls = {mode: _saver(store, machine) for mode, store in stores.items()}
        for call in calls.values():  # warm up: tables, caches, the first versions
            for _ in range(KEYS):
                call()
        medians = interleaved(calls, rounds, repeat=REPEAT)
        counted = stores["stats"].stats().save_machine.count
        assert counted == KEYS + rounds * REPEAT, counted
        collected = reader.get_metrics_data()  # the SDK saw the counts
        assert collected is not None and collected.resource_metrics
    finally:
        for store in stores.values():
            store.close()
        tracers.shutdown()
        meters.shutdown()
    base = medians["baseline"]
    for mode in MODES[1:]:
        ratio = medians[mode] / base
        spans = mode in ("otel + spans", "baseline again")
        figure(
            SECTION,
            f"save_machine, {mode}, {place}",
            ratio,
            "x time",
            detail=f"baseline {base * 1e6:.1f} us, {mode} {medians[mode] * 1e6:.1f} us",
            at_most=None if spans else TARGET,
            target="informational" if spans else None,
            how=HOW,
            line=(
                f"save_machine {place:<22} baseline {base * 1e6:7.1f} us  {mode:<12} "
                f"{medians[mode] * 1e6:7.1f} us  ratio {ratio:5.3f}x  "
                f"({'informational' if spans else f'target <= {TARGET:.2f}x'})"
            ),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    for synchronous in ("FULL", "NORMAL"):
        with tempfile.TemporaryDirectory() as tmp:
            bench(
                f"SQLite (WAL, {synchronous})",
                lambda mode, tmp=tmp: f"sqlite:///{Path(tmp) / 'bench.db'}",
                args.rounds,
                {"sqlite_synchronous": synchronous},
            )


if __name__ == "__main__":
    main()
