"""Several gateways in one process, exported to one Prometheus registry.

A second ``GatewayCollector`` could not be registered (prometheus_client refuses
duplicate series), so a process with two databases could export only one. One
collector now exports any number, each under its own labels; adding the same
gateway twice, or labels that do not tell two apart, is a clear error.
"""

from __future__ import annotations

from pathlib import Path

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sqlite_gateway import Gateway
from sqlite_gateway.metrics import GatewayCollector


def scrape(registry: prometheus_client.CollectorRegistry) -> dict[str, float]:
    """What a Prometheus server would read (its parser refuses a family named twice)."""
    text = prometheus_client.generate_latest(registry).decode()
    seen = [family.name for family in text_string_to_metric_families(text)]
    assert len(seen) == len(set(seen)), f"a family is served twice: {sorted(seen)}"
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def test_two_gateways_are_exported_side_by_side(tmp_path: Path) -> None:
    with Gateway(tmp_path / "app.db") as app, Gateway(tmp_path / "audit.db") as audit:
        app.execute("CREATE TABLE t(x)")
        for _ in range(5):
            audit.execute("SELECT 1")
        registry = prometheus_client.CollectorRegistry()
        registry.register(GatewayCollector(app, labels={"db": "app"})
                          .add(audit, labels={"db": "audit"}))
        metrics = scrape(registry)
        assert metrics["sqlite_gateway_requests_total{db=app}"] == app.stats()["requests"]
        assert metrics["sqlite_gateway_requests_total{db=audit}"] == audit.stats()["requests"]
        assert app.stats()["requests"] != audit.stats()["requests"]
        assert metrics["sqlite_gateway_state{db=audit,sqlite_gateway_state=running}"] == 1
        assert "sqlite_gateway_latency_seconds{db=app,quantile=0.5}" in metrics
        assert "sqlite_gateway_latency_seconds{db=audit,quantile=0.5}" in metrics


def test_a_replaceable_gateway_without_one_yet_leaves_the_others_exported(
        tmp_path: Path) -> None:
    current: list[Gateway] = []
    with Gateway(tmp_path / "app.db") as app:
        registry = prometheus_client.CollectorRegistry()
        registry.register(GatewayCollector(app, labels={"db": "app"})
                          .add(lambda: current[0] if current else None, labels={"db": "next"}))
        metrics = scrape(registry)
        assert "sqlite_gateway_requests_total{db=app}" in metrics
        assert not any("db=next" in name for name in metrics)


def test_the_same_gateway_twice_is_a_clear_error(tmp_path: Path) -> None:
    with Gateway(tmp_path / "app.db") as app:
        collector = GatewayCollector(app, labels={"db": "app"})
        with pytest.raises(ValueError, match="already exported by this collector"):
            collector.add(app, labels={"db": "again"})


@pytest.mark.parametrize("first, second, says", [
    ({"db": "x"}, {"db": "x"}, "give each gateway its own"),
    ({}, {}, "give each gateway its own"),
    ({"db": "x"}, {"name": "y"}, "same label names"),
    ({"db": "x"}, {"db": "y", "quantile": "z"}, "same label names"),
])
def test_labels_that_do_not_tell_gateways_apart_are_refused(
        tmp_path: Path, first: dict[str, str], second: dict[str, str], says: str) -> None:
    with Gateway(tmp_path / "a.db") as a, Gateway(tmp_path / "b.db") as b:
        collector = GatewayCollector(a, labels=first)
        with pytest.raises(ValueError, match=says):
            collector.add(b, labels=second)


def test_quantile_is_not_a_label_of_ours(tmp_path: Path) -> None:
    with Gateway(tmp_path / "a.db") as a:
        with pytest.raises(ValueError, match="'quantile'"):
            GatewayCollector(a, labels={"quantile": "x"})


@pytest.mark.parametrize("auto_describe", [False, True])
def test_a_second_collector_in_one_registry_is_refused_at_register(
        tmp_path: Path, auto_describe: bool) -> None:
    """Any registry, not only the default (auto-describing) one, refuses it up front."""
    with Gateway(tmp_path / "a.db") as a, Gateway(tmp_path / "b.db") as b:
        registry = prometheus_client.CollectorRegistry(auto_describe=auto_describe)
        registry.register(GatewayCollector(a, labels={"db": "a"}))
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            registry.register(GatewayCollector(b, labels={"db": "b"}))
        scrape(registry)  # still one family per name
