"""sqlite_gateway.metrics: the Prometheus collector over stats(), scraped and parsed
with prometheus_client's own text parser (the live /metrics endpoint of the demo app
is tested in tests/test_webapp_security.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT
import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from sqlite_gateway import Gateway
from benchmarks.baselines import RetryGateway
from sqlite_gateway.metrics import GatewayCollector



def scrape(collector: GatewayCollector) -> dict[str, float]:
    """What a Prometheus server would read: sample name (and labels) -> value."""
    registry = prometheus_client.CollectorRegistry()
    registry.register(collector)
    text = prometheus_client.generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def test_the_metrics_are_the_figures_of_stats(db_path):
    with Gateway(db_path, readers=2) as db:
        db.execute("CREATE TABLE t(x)")
        for i in range(20):
            db.execute("INSERT INTO t VALUES (?)", (i,))
        assert db.execute("SELECT count(*) FROM t").scalar() == 20
        metrics = scrape(GatewayCollector(db))
        stats = db.stats()  # nothing ran in between: the same figures
    assert metrics["sqlite_gateway_requests_total"] == stats["requests"] >= 21
    assert metrics["sqlite_gateway_commits_total"] == stats["commits"]
    assert metrics["sqlite_gateway_batches_total"] == stats["batches"]
    assert metrics["sqlite_gateway_errors_total"] == stats["errors"] == 0
    assert metrics["sqlite_gateway_reads_total"] == stats["reads"]
    assert metrics["sqlite_gateway_queue_depth"] == stats["queued"] == 0
    assert metrics["sqlite_gateway_batch_size_max"] == stats["batch_max"]
    assert metrics["sqlite_gateway_latency_seconds{quantile=0.99}"] == pytest.approx(
        stats["latency_p99_ms"] / 1000)
    assert metrics["sqlite_gateway_latency_window_requests"] == stats["latency_window"]
    assert metrics["sqlite_gateway_state{sqlite_gateway_state=running}"] == 1
    assert metrics["sqlite_gateway_state{sqlite_gateway_state=broken}"] == 0


def test_labels_a_replaceable_gateway_and_the_retry_backend(db_path):
    current = []
    collector = GatewayCollector(lambda: current[0] if current else None, labels={"db": "app"})
    assert scrape(collector) == {}  # no gateway yet: nothing, not an error
    with RetryGateway(db_path) as db:
        db.execute("CREATE TABLE t(x)")
        current.append(db)
        metrics = scrape(collector)
        assert metrics["sqlite_gateway_requests_total{db=app}"] == db.stats()["requests"] >= 1
        assert metrics["sqlite_gateway_retries_total{db=app}"] == db.stats()["retries"]


def test_unknown_figures_are_exported_as_gauges():
    class Source:
        def stats(self):
            return {"requests": 3, "state": "running", "new-figure": 2.5, "note": "text",
                    "flag": True}

    metrics = scrape(GatewayCollector(Source()))
    assert metrics["sqlite_gateway_requests_total"] == 3
    assert metrics["sqlite_gateway_new_figure"] == 2.5
    assert not any("note" in name or "flag" in name for name in metrics)


def test_importing_the_module_does_not_import_prometheus_client():
    code = "import sys, sqlite_gateway.metrics; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(ROOT), timeout=60, check=True)
    assert out.stdout.strip() == "False"
