"""Prometheus metrics for a gateway: a collector over ``stats()``.

Needs the ``metrics`` extra (``pip install 'sqlite-gateway[metrics]'``, which is
prometheus-client); importing this module does not import it, registering
and scraping do::

    from prometheus_client import REGISTRY, start_http_server
    from sqlite_gateway.metrics import GatewayCollector

    REGISTRY.register(GatewayCollector(db))
    start_http_server(9100, addr="127.0.0.1")

One bookkeeping: each scrape calls ``stats()`` once and turns its figures into
metric families; nothing is counted a second time. Counters
(``*_total``) are the gateway's counts since it started; a new gateway (after
a restart, or the CherryPy plugin replacing a broken one) starts them again
from zero, which Prometheus' ``rate()`` treats as a counter reset. Latency is
exported as quantile gauges over the gateway's recent requests (a bounded
window of the last N, ``..._latency_window_requests``), not as a histogram:
``stats()`` keeps no buckets. A figure ``stats()`` gains later is exported as
a gauge under its own name until it is described here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from .lifecycle import State

PREFIX = "sqlite_gateway"


@runtime_checkable
class _HasStats(Protocol):
    def stats(self) -> Mapping[str, Any]: ...


# stats() key -> (metric name without the prefix, HELP text[, scale to base units])
_COUNTERS = {
    "requests": ("requests", "Requests answered (committed or failed) since the gateway started"),
    "errors": ("errors", "Requests that failed since the gateway started"),
    "batches": ("batches", "Batches run by the writer (each one transaction)"),
    "commits": ("commits", "COMMITs of the writer"),
    "reruns": ("reruns", "Requests run again after another request rolled back their batch"),
    "reads": ("reads", "Reads served by reader connections"),
    "reads_to_writer": ("reads_to_writer", "Reads that went to the writer"),
    "write_blocks": ("write_blocks", "Write blocks (Gateway.writer()) that held the writer"),
    "write_blocks_expired": ("write_blocks_expired",
                             "Write blocks rolled back at their hold limit"),
    "write_block_hold_s": ("write_block_hold_seconds",
                           "Seconds write blocks held the writer, summed"),
    # the retry baseline's own (benchmarks/baselines.py RetryGateway)
    "retries": ("retries", "Calls run again after SQLITE_BUSY (the retry baseline)"),
    "busy_errors": ("busy_errors", "SQLITE_BUSY errors met (the retry baseline)"),
}
_GAUGES = {
    "queued": ("queue_depth", "Requests waiting in the queue now", 1.0),
    "batch_mean": ("batch_size_mean", "Mean requests per batch since the gateway started", 1.0),
    "batch_max": ("batch_size_max", "Largest batch since the gateway started", 1.0),
    "uptime_s": ("uptime_seconds", "Seconds since the gateway started", 1.0),
    "write_block_hold_max_ms": ("write_block_hold_max_seconds",
                                "Longest hold of the writer by one write block", 0.001),
    "latency_window": ("latency_window_requests",
                       "Recent requests the latency quantiles are taken over", 1.0),
}
_QUANTILES = {"latency_p50_ms": "0.5", "latency_p99_ms": "0.99", "latency_max_ms": "1"}
_SKIPPED = {"state", "time"}
_NAME = re.compile(r"[^a-zA-Z0-9_]")


class GatewayCollector:
    """A prometheus_client collector (``registry.register(GatewayCollector(db))``).

    Args:
        source: the gateway (anything with ``stats()``: ``Gateway``,
            ``RetryGateway``), or a function returning the current one or None,
            for an app whose gateway may be replaced (then nothing is exported
            while it returns None).
        labels: constant labels on every sample, e.g. ``{"db": "app.db"}``.

    Thread-safe as ``stats()`` is: each ``collect()`` reads one snapshot.
    """

    def __init__(self, source: _HasStats | Callable[[], _HasStats | None],
                 labels: Mapping[str, str] | None = None) -> None:
        self._source = source
        self._labels = dict(labels or {})

    def _stats(self) -> Mapping[str, Any] | None:
        source = self._source
        current = source if isinstance(source, _HasStats) else source()
        return None if current is None else current.stats()

    def collect(self) -> Iterator[Any]:
        """The metric families of one ``stats()`` snapshot (prometheus_client calls this)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            StateSetMetricFamily,
        )

        figures = self._stats()
        if figures is None:
            return
        names, values = list(self._labels), list(self._labels.values())

        def gauge(name: str, doc: str, value: float) -> Any:
            family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=names)
            family.add_metric(values, value)
            return family

        for key, (name, doc) in _COUNTERS.items():
            if _number(figures.get(key)):
                family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=names)
                family.add_metric(values, figures[key])
                yield family
        for key, (name, doc, scale) in _GAUGES.items():
            if _number(figures.get(key)):
                yield gauge(name, doc, figures[key] * scale)
        latency = GaugeMetricFamily(
            f"{PREFIX}_latency_seconds",
            "Wait + run time of the gateway's recent requests (quantiles over the last "
            "latency_window_requests requests, not since start; quantile 1 is the maximum)",
            labels=[*names, "quantile"])
        for key, quantile in _QUANTILES.items():
            if _number(figures.get(key)):
                latency.add_metric([*values, quantile], figures[key] / 1000.0)
        if latency.samples:
            yield latency
        if isinstance(figures.get("state"), str):
            state = StateSetMetricFamily(
                f"{PREFIX}_state", "Lifecycle state of the gateway (1 for the current one)",
                labels=names)
            states = {s.value for s in State} | {figures["state"]}
            state.add_metric(values, {s: s == figures["state"] for s in sorted(states)})
            yield state
        known = set(_COUNTERS) | set(_GAUGES) | set(_QUANTILES) | _SKIPPED
        for key in sorted(set(figures) - known):
            if _number(figures[key]):
                name = _NAME.sub("_", key)
                yield gauge(name, f"stats()[{key!r}] (no description yet)", figures[key])


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
