"""OpenTelemetry metrics and spans for a store (install the ``otel`` extra).

The store counts its events anyway (``Store.stats()``); :func:`instrument`
shows the same counts to OpenTelemetry as observable counters (read when
OpenTelemetry collects: no cost per save), and adds a duration histogram and
one span around each ``save_machine``, ``restore_machine``, ``save`` and
``load``. Spans and metric points carry the namespace, the
operation, the record kind and, on failure, the exception's class name;
never a key, stored data, a message or a secret, unless ``include_keys=True``
adds the key to spans (never to metrics, where it would be a series per key).

Nothing here imports OpenTelemetry until :func:`instrument` is called, and
``import gotstate_persist`` never imports this module: a program that does
not instrument a store pays nothing for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._metrics import metrics_of
from .errors import InvalidArgument

if TYPE_CHECKING:
    from ._async_store import AsyncStore
    from .store import Store

__all__ = ["instrument", "uninstrument"]

_MISSING = (
    "OpenTelemetry is not installed: pip install 'gotstate-persist[otel]' "
    "(and opentelemetry-sdk, or another implementation, to export anything)"
)


def instrument(
    store: Store | AsyncStore,
    *,
    meter_provider: Any = None,
    tracer_provider: Any = None,
    include_keys: bool = False,
) -> None:
    """Report ``store``'s events as OpenTelemetry metrics and spans from now on.

    ``meter_provider``/``tracer_provider``: where they go (default: the
    global providers that ``opentelemetry.metrics``/``trace`` hand out).
    ``include_keys``: add each operation's key to its span as
    ``gotstate_persist.key`` (off by default: keys may name people or
    accounts). Calling it again replaces the previous instrumentation.
    """
    if not isinstance(include_keys, bool):
        raise InvalidArgument("include_keys must be True or False")
    pipeline = store.pipeline
    metrics = metrics_of(pipeline)
    try:
        from ._otel import OtelSink
    except ImportError as exc:
        raise InvalidArgument(_MISSING) from exc

    uninstrument(store)
    metrics.telemetry = OtelSink(
        pipeline.namespace,
        pipeline.formats,
        metrics,
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
        include_keys=include_keys,
    )


def uninstrument(store: Store | AsyncStore) -> None:
    """Stop reporting ``store``'s operations to OpenTelemetry (its ``stats()`` go on).

    Spans and durations stop; the counters already reported keep their
    totals (OpenTelemetry counters never go down) and stop growing.
    """
    metrics = metrics_of(store.pipeline)
    previous, metrics.telemetry = metrics.telemetry, None
    if previous is not None:
        previous.close()
