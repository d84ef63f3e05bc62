"""Live figures: /api/stats, /api/stats/history, the /dashboard page, /metrics.

A :class:`Sampler` (an engine plugin) reads ``stats()`` once a second on its
own thread and keeps the last ``HISTORY`` samples. Rates and batch sizes are
differences between samples, so they describe the last seconds, not the time
since start, and every viewer sees the same figures: a second browser on the
dashboard, or a monitoring scrape, changes nothing. ``/metrics`` is the
Prometheus text format of the same ``stats()`` (sqlite_gateway.metrics).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from typing import Any

import cherrypy
from cherrypy.process.plugins import SimplePlugin

from sqlite_gateway.integrations.cherrypy import CHANNEL

from . import layout
from .tree import Resource

HISTORY = 300  # samples kept: 5 minutes at one a second
WINDOW_S = 10.0  # "now" in /api/stats: the mean over the last 10 s
_COUNT = re.compile(r"[0-9]{1,4}")


def current_db() -> Any:
    """The engine's running gateway, or None (between stop and start)."""
    dbs = [db for db in cherrypy.engine.publish(CHANNEL) if db is not None]
    return dbs[0] if dbs else None


def _sample(figures: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """One point of the history: the raw figures, and the rates since ``previous``."""
    now = time.time()
    batches = figures.get("batches", 0)
    sample = {
        "t": now, "state": figures.get("state"), "queued": figures.get("queued", 0),
        "requests": figures.get("requests", 0), "commits": figures.get("commits", 0),
        "errors": figures.get("errors", 0), "batches": batches,
        # Requests committed in batches since start (stats() gives their mean).
        "batched": figures.get("batch_mean", 0.0) * batches,
        "latency_p50_ms": figures.get("latency_p50_ms", 0.0),
        "latency_p99_ms": figures.get("latency_p99_ms", 0.0),
        "batch_max": figures.get("batch_max", 0),  # since start: stats() keeps no window
    }
    sample.update(_rates(previous, sample))
    return sample


def _rates(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, float]:
    """commits/s, requests/s and the mean batch size between two samples. A
    counter that went down (the gateway was replaced) restarts from zero."""
    if old is None or new["t"] <= old["t"] or new["commits"] < old["commits"]:
        return {"commits_per_s": 0.0, "requests_per_s": 0.0, "batch_mean": 0.0}
    dt = new["t"] - old["t"]
    batches = new["batches"] - old["batches"]
    return {"commits_per_s": (new["commits"] - old["commits"]) / dt,
            "requests_per_s": (new["requests"] - old["requests"]) / dt,
            "batch_mean": (new["batched"] - old["batched"]) / batches if batches > 0 else 0.0}


class Sampler(SimplePlugin):  # type: ignore[misc]  # cherrypy is untyped
    """Samples the gateway's ``stats()`` every ``interval`` seconds on a thread
    that stops with the engine (it waits on an Event, so the stop is at once).

    Thread-safe: :meth:`samples` may be called from any request thread.
    """

    def __init__(self, bus: Any, interval: float = 1.0) -> None:
        super().__init__(bus)
        self.interval = interval
        self._lock = threading.Lock()  # guards _samples
        self._samples: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(self._stopping,),
                                        name="stats-sampler")
        self._thread.start()

    start.priority = 70  # type: ignore[attr-defined]  # after the gateway opens (67)

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            thread.join()

    def _loop(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                self.sample_now()
            except Exception:  # noqa: BLE001 - logged; the next tick tries again
                self.bus.log("stats sampler failed", level=logging.ERROR, traceback=True)
            stopping.wait(self.interval)

    def sample_now(self) -> dict[str, Any] | None:
        """Take one sample (the thread calls this; tests may too)."""
        db = current_db()
        if db is None:
            return None
        figures = db.stats()
        with self._lock:
            sample = _sample(figures, self._samples[-1] if self._samples else None)
            self._samples.append(sample)
        return sample

    def samples(self, n: int = HISTORY) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._samples)[-n:]

    def window(self, seconds: float = WINDOW_S) -> dict[str, Any]:
        """The rates over the last ``seconds`` (between the first sample in the
        window and the last), and the largest one-interval batch mean in it."""
        recent = self.samples()
        if not recent:
            return {"window_s": 0.0, "commits_per_s": 0.0, "requests_per_s": 0.0,
                    "batch_mean": 0.0, "batch_peak": 0.0}
        last = recent[-1]
        inside = [s for s in recent if last["t"] - s["t"] <= seconds]
        rates = _rates(inside[0], last) if len(inside) > 1 else _rates(None, last)
        return {"window_s": round(last["t"] - inside[0]["t"], 3), **rates,
                "batch_peak": max(s["batch_mean"] for s in inside)}


class Stats(Resource):
    """``/api/stats``: ``stats()`` now, plus ``"window"``: the rates over the last
    seconds (the same for every viewer). ``/api/stats/history?n=`` is the series."""

    def __init__(self, sampler: Sampler) -> None:
        super().__init__()
        self.sampler = sampler
        self.history = StatsHistory(sampler)

    def GET(self, /, **_query: Any) -> dict[str, Any]:
        figures: dict[str, Any] = cherrypy.request.db.stats()
        figures["time"] = time.time()
        figures["window"] = self.sampler.window()
        return figures


class StatsHistory(Resource):
    """``/api/stats/history?n=120``: the last n samples, oldest first."""

    def __init__(self, sampler: Sampler) -> None:
        super().__init__()
        self.sampler = sampler

    def GET(self, /, n: object = "120", **_query: Any) -> dict[str, Any]:
        # n may come as a list (?n=1&n=2) or with thousands of digits (int() refuses).
        if not isinstance(n, str) or not _COUNT.fullmatch(n) or not 1 <= int(n) <= HISTORY:
            raise cherrypy.HTTPError(400, f"n must be a whole number from 1 to {HISTORY}")
        return {"interval_s": self.sampler.interval, "window": self.sampler.window(),
                "samples": self.sampler.samples(int(n))}


class DashboardPage(Resource):
    """``/dashboard``: four charts drawn by /static/dashboard.js from the history."""

    def GET(self, /, **_query: Any) -> str:
        return layout.page("sqlite-gateway dashboard", DASHBOARD, script="dashboard.js")


class Metrics(Resource):
    """``/metrics``: the gateway's figures in Prometheus' text format (needs the
    ``metrics`` extra: prometheus-client; 501 without it)."""

    def GET(self, /, **_query: Any) -> bytes:
        try:
            from prometheus_client import CollectorRegistry
            from prometheus_client.exposition import choose_encoder
        except ImportError:
            raise cherrypy.HTTPError(501, "metrics need prometheus-client: "
                                          "pip install -e '.[metrics]'") from None
        from sqlite_gateway.metrics import GatewayCollector

        registry = CollectorRegistry()
        registry.register(GatewayCollector(current_db))
        # The text format, or OpenMetrics when the scraper asks for it.
        encode, content_type = choose_encoder(cherrypy.request.headers.get("Accept", ""))
        cherrypy.response.headers["Content-Type"] = content_type
        return bytes(encode(registry))


def _chart(name: str, title: str, unit: str, legend: tuple[str, ...]) -> str:
    keys = "".join(f'<span class="key k{i}">{label}</span>' for i, label in enumerate(legend))
    return (f'<figure class="chart" id="fig-{name}"><figcaption><span>{title}</span>'
            f'<output id="now-{name}">&ndash;</output></figcaption>'
            f'<svg id="chart-{name}" viewBox="0 0 640 220" role="img" aria-label="{title}"'
            f' data-unit="{unit}" data-max="0"></svg><div class="legend">{keys}</div></figure>')


DASHBOARD = (
    "<h1>Gateway dashboard</h1>"
    '<p class="muted">One sample a second, taken by the server (every viewer sees the same '
    "figures); the charts show the last two minutes, the numbers the last "
    f"{WINDOW_S:g} seconds. State <strong id=\"state\">?</strong> &middot; requests "
    '<strong id="requests">0</strong> &middot; samples <strong id="sample-count">0</strong>'
    ' &middot; <span id="status">starting</span></p>'
    '<div class="grid">'
    + _chart("queue", "Queue depth", "requests waiting", ("queued",))
    + _chart("batch", "Batch size", "requests per commit", ("mean per second",))
    + _chart("latency", "Latency", "ms, recent requests", ("p50", "p99"))
    + _chart("commits", "Commits per second", "commits/s", ("commits/s",))
    + "</div>"
)
