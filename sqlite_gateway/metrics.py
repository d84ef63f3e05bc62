"""Prometheus metrics for a gateway: a collector over ``stats()``.

Needs the ``metrics`` extra (``pip install 'sqlite-gateway[metrics]'``, which is
prometheus-client); importing this module does not import it, registering
and scraping do::

    from prometheus_client import REGISTRY, start_http_server
    from sqlite_gateway.metrics import GatewayCollector

    REGISTRY.register(GatewayCollector(db))
    start_http_server(9100, addr="127.0.0.1")

Several gateways in one process go through one collector, each with its own
labels: ``GatewayCollector(db, labels={"db": "app"}).add(audit, labels={"db": "audit"})``.

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


Source = _HasStats | Callable[[], _HasStats | None]


class GatewayCollector:
    """A prometheus_client collector (``registry.register(GatewayCollector(db))``).

    One collector exports any number of gateways: give each its own labels
    (``GatewayCollector(app_db, labels={"db": "app"}).add(audit_db, labels={"db":
    "audit"})``); their samples share the metric families. Register one collector
    per registry: Prometheus allows one family per metric name, so a second
    collector in the same registry is refused by prometheus_client
    ("Duplicated timeseries").

    Args:
        source: the gateway (anything with ``stats()``: ``Gateway``,
            ``RetryGateway``), or a function returning the current one or None,
            for an app whose gateway may be replaced (then nothing is exported
            for it while it returns None).
        labels: constant labels on every sample of this gateway, e.g. ``{"db": "app"}``.

    Raises:
        ValueError: see :meth:`add`.

    Thread-safe as ``stats()`` is: each ``collect()`` reads one snapshot per
    gateway. ``add`` is meant for setup, before the collector is scraped.
    """

    def __init__(self, source: Source, labels: Mapping[str, str] | None = None) -> None:
        self._sources: list[tuple[Source, dict[str, str]]] = []
        self.add(source, labels)

    def add(self, source: Source, labels: Mapping[str, str] | None = None) -> GatewayCollector:
        """Export one more gateway (or gateway function) through this collector; return self.

        Raises:
            ValueError: ``source`` is already exported here; or ``labels`` do not
                tell it apart from a gateway already exported (same values), or
                use other label names than the first one's (Prometheus needs the
                same names on every sample of a family), or use ``quantile``.
        """
        labels = dict(labels or {})
        for known, known_labels in self._sources:
            if known is source:
                raise ValueError(f"{source!r} is already exported by this collector (labels "
                                 f"{known_labels}); add each gateway once")
            if set(known_labels) != set(labels):
                raise ValueError(f"labels {sorted(labels)} differ from the names of the first "
                                 f"gateway's labels {sorted(known_labels)}; every gateway of "
                                 "one collector needs the same label names")
            if known_labels == labels:
                raise ValueError(f"labels {labels} are already those of {known!r}: give each "
                                 'gateway its own, e.g. labels={"db": "audit"}')
        if "quantile" in labels:
            raise ValueError("the label name 'quantile' is the latency metric's own")
        self._sources.append((source, labels))
        return self

    def describe(self) -> Iterator[Any]:
        """The families this collector exports, without samples and without calling
        ``stats()``: any registry then refuses a second collector at ``register``
        (one whose registry does not auto-describe would else serve two families
        of one name, which Prometheus rejects at scrape)."""
        CounterMetricFamily, GaugeMetricFamily, StateSetMetricFamily = _families()

        for name, doc in _COUNTERS.values():
            yield CounterMetricFamily(f"{PREFIX}_{name}", doc)
        for name, doc, _ in _GAUGES.values():
            yield GaugeMetricFamily(f"{PREFIX}_{name}", doc)
        yield GaugeMetricFamily(f"{PREFIX}_latency_seconds", "")
        yield StateSetMetricFamily(f"{PREFIX}_state", "")

    def collect(self) -> Iterator[Any]:
        """The metric families of one ``stats()`` snapshot per gateway (prometheus_client
        calls this)."""
        CounterMetricFamily, GaugeMetricFamily, StateSetMetricFamily = _families()

        snapshots = [(list(labels.values()), figures) for source, labels in self._sources
                     if (figures := _stats(source)) is not None]
        if not snapshots:
            return
        names = list(self._sources[0][1])

        def family(kind: Any, name: str, doc: str, key: str, scale: float = 1.0) -> Any:
            made = kind(f"{PREFIX}_{name}", doc, labels=names)
            for values, figures in snapshots:
                if _number(figures.get(key)):
                    made.add_metric(values, figures[key] * scale)
            return made if made.samples else None

        made = [family(CounterMetricFamily, name, doc, key)
                for key, (name, doc) in _COUNTERS.items()]
        made += [family(GaugeMetricFamily, name, doc, key, scale)
                 for key, (name, doc, scale) in _GAUGES.items()]
        latency = GaugeMetricFamily(
            f"{PREFIX}_latency_seconds",
            "Wait + run time of the gateway's recent requests (quantiles over the last "
            "latency_window_requests requests, not since start; quantile 1 is the maximum)",
            labels=[*names, "quantile"])
        for values, figures in snapshots:
            for key, quantile in _QUANTILES.items():
                if _number(figures.get(key)):
                    latency.add_metric([*values, quantile], figures[key] / 1000.0)
        made.append(latency if latency.samples else None)
        state = StateSetMetricFamily(
            f"{PREFIX}_state", "Lifecycle state of the gateway (1 for the current one)",
            labels=names)
        for values, figures in snapshots:
            if isinstance(figures.get("state"), str):
                states = {s.value for s in State} | {figures["state"]}
                state.add_metric(values, {s: s == figures["state"] for s in sorted(states)})
        made.append(state if state.samples else None)
        known = set(_COUNTERS) | set(_GAUGES) | set(_QUANTILES) | _SKIPPED
        for key in sorted({key for _, figures in snapshots for key in figures} - known):
            made.append(family(GaugeMetricFamily, _NAME.sub("_", key),
                               f"stats()[{key!r}] (no description yet)", key))
        yield from (one for one in made if one is not None)


def _families() -> tuple[Any, Any, Any]:
    """prometheus_client's family classes, imported on first use (the ``metrics`` extra)."""
    try:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            StateSetMetricFamily,
        )
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"sqlite_gateway.metrics needs {exc.name}: install it with pip install "
            "'sqlite-gateway[metrics]'", name=exc.name) from exc
    return CounterMetricFamily, GaugeMetricFamily, StateSetMetricFamily


def _stats(source: Source) -> Mapping[str, Any] | None:
    current = source if isinstance(source, _HasStats) else source()
    return None if current is None else current.stats()


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
