"""What counting costs ``save_machine``: stats off vs ``Store.stats()`` vs OpenTelemetry.

Run with ``make bench`` or ``.venv/bin/python benchmarks/bench_metrics.py [--rounds N]``.

Three stores, each on its own SQLite file (WAL, ``synchronous=NORMAL``, so
that the disk's flush does not hide what the library itself adds) and on
``memory://`` (nothing but the library: the strictest case), save the same
small machine (100 states, ~1 KB of state data):

- baseline: ``open_store(..., stats=False)``, nothing counted;
- stats: the default, counters for ``Store.stats()``;
- otel: stats plus ``gotstate_persist.telemetry.instrument`` on the real
  OpenTelemetry SDK (a ``MeterProvider`` with an in-memory reader, a
  ``TracerProvider`` with a batch span processor into an in-memory exporter).

The three run interleaved round by round (who goes first rotates); each
figure is the median over rounds of the median call, and the ratio is time
per call / the baseline's (issue 17 target for metrics on: <= 1.05x).
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
    "save_machine of a 100-state machine with stats / with stats + OpenTelemetry SDK "
    "(in-memory reader and exporter) vs stats=False, interleaved; median call; time / baseline"
)
MODES = ("baseline", "stats", "otel")
KEYS = 50


def _saver(store: gp.Store, machine: Any) -> Callable[[], object]:
    counter = iter(range(10**9))

    def save() -> object:
        return store.save_machine(f"order-{next(counter) % KEYS}", machine)

    return save


def three_way(
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
        mode: gp.open_store(url_of(mode), keyring=keys, stats=mode != "baseline", **options)
        for mode in MODES
    }
    try:
        telemetry.instrument(stores["otel"], meter_provider=meters, tracer_provider=tracers)
        calls = {mode: _saver(store, machine) for mode, store in stores.items()}
        for call in calls.values():  # warm up: tables, caches, the first versions
            for _ in range(KEYS):
                call()
        medians = three_way(calls, rounds, repeat=40)
        counted = stores["stats"].stats().save_machine.count
        assert counted == KEYS + rounds * 40, counted
    finally:
        for store in stores.values():
            store.close()
        tracers.shutdown()
        meters.shutdown()
    base = medians["baseline"]
    for mode in ("stats", "otel"):
        ratio = medians[mode] / base
        figure(
            SECTION,
            f"save_machine, {mode} on, {place}",
            ratio,
            "x time",
            detail=f"baseline {base * 1e6:.1f} us, {mode} {medians[mode] * 1e6:.1f} us",
            at_most=TARGET,
            how=HOW,
            line=(
                f"save_machine {place:<24} baseline {base * 1e6:8.1f} us  {mode:<5} "
                f"{medians[mode] * 1e6:8.1f} us  ratio {ratio:5.3f}x  (target <= {TARGET:.2f}x)"
            ),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench(
            "SQLite (WAL, NORMAL)",
            lambda mode: f"sqlite:///{Path(tmp) / mode}.db",
            args.rounds,
            {"sqlite_synchronous": "NORMAL"},
        )
    bench("memory://", lambda mode: f"memory://bench-metrics-{mode}", args.rounds, {})


if __name__ == "__main__":
    main()
