"""Live figures: /api/stats (JSON), /api/stats/history, and the /dashboard page.

No sampler thread: each GET /api/stats appends a sample to a bounded deque,
so the history fills while someone is watching (the dashboard polls every
second) and costs nothing otherwise. The page is self-contained: inline CSS
and JS, plain SVG polylines, nothing fetched but /api/stats*.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from typing import Any

import cherrypy

HISTORY = 300  # samples kept (5 minutes at the page's 1 s poll)
_COUNT = re.compile(r"[0-9]{1,4}")
_SAMPLED = ("queued", "batch_mean", "batch_max", "latency_p50_ms", "latency_p99_ms", "commits",
            "requests")


class Dashboard:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _samples
        self._samples: deque[dict[str, Any]] = deque(maxlen=HISTORY)

    def current(self, **_query: Any) -> dict[str, Any]:
        figures: dict[str, Any] = cherrypy.request.db.stats()
        sample = {key: figures.get(key, 0) for key in _SAMPLED}  # the retry backend has fewer
        sample["t"] = figures["time"] = time.time()
        with self._lock:
            previous = self._samples[-1] if self._samples else None
            dt = sample["t"] - previous["t"] if previous else 0.0
            sample["commits_per_s"] = ((sample["commits"] - previous["commits"]) / dt
                                       if previous and dt > 0 else 0.0)
            self._samples.append(sample)
        figures["commits_per_s"] = sample["commits_per_s"]
        return figures

    def history(self, n: object = "120", **_query: Any) -> dict[str, Any]:
        # n may come as a list (?n=1&n=2) or with thousands of digits (int() refuses).
        if not isinstance(n, str) or not _COUNT.fullmatch(n) or not 1 <= int(n) <= HISTORY:
            raise cherrypy.HTTPError(400, f"n must be a whole number from 1 to {HISTORY}")
        with self._lock:
            samples = list(self._samples)[-int(n):]
        return {"samples": samples}

    def page(self, **_query: Any) -> str:
        return PAGE


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>sqlite-gateway dashboard</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1em; }
figure { margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: .5em; }
figcaption { font-weight: 600; } svg { width: 100%; height: 150px; background: #fafafa; }
polyline { fill: none; stroke-width: 2; } .a { stroke: #1f77b4; } .b { stroke: #d62728; }
.legend .a { color: #1f77b4; } .legend .b { color: #d62728; } #status { color: #888; }
</style></head>
<body>
<h1>sqlite-gateway dashboard</h1>
<p>Samples: <span id="sample-count">0</span> &middot; state: <span id="state">?</span>
 &middot; requests: <span id="requests">0</span> &middot; <span id="status">starting</span>
 &middot; <a href="/">home</a></p>
<div class="grid">
<figure><figcaption>Queue depth</figcaption>
 <svg id="chart-queue" viewBox="0 0 600 150" preserveAspectRatio="none" data-max="0">
 <polyline class="a" points=""/></svg></figure>
<figure><figcaption>Batch size <span class="legend"><span class="a">mean</span>
 <span class="b">max</span></span></figcaption>
 <svg id="chart-batch" viewBox="0 0 600 150" preserveAspectRatio="none" data-max="0">
 <polyline class="a" points=""/><polyline class="b" points=""/></svg></figure>
<figure><figcaption>Latency ms <span class="legend"><span class="a">p50</span>
 <span class="b">p99</span></span></figcaption>
 <svg id="chart-latency" viewBox="0 0 600 150" preserveAspectRatio="none" data-max="0">
 <polyline class="a" points=""/><polyline class="b" points=""/></svg></figure>
<figure><figcaption>Commits per second</figcaption>
 <svg id="chart-commits" viewBox="0 0 600 150" preserveAspectRatio="none" data-max="0">
 <polyline class="a" points=""/></svg></figure>
</div>
<script>
"use strict";
const KEEP = 120, W = 600, H = 150;
const series = {queue: [[]], batch: [[], []], latency: [[], []], commits: [[]]};
let samples = 0, last = null;

function push(arr, v) { arr.push(v); if (arr.length > KEEP) arr.shift(); }

function draw(name) {
  const svg = document.getElementById("chart-" + name);
  const lines = svg.querySelectorAll("polyline");
  const all = series[name].flat();
  const max = Math.max(1e-9, ...all);
  svg.setAttribute("data-max", String(Math.max(0, ...all)));
  series[name].forEach((values, i) => {
    const step = W / (KEEP - 1), x0 = W - step * (values.length - 1);
    lines[i].setAttribute("points", values.map((v, j) =>
      (x0 + j * step).toFixed(1) + "," + (H - 4 - (H - 8) * v / max).toFixed(1)).join(" "));
  });
}

function add(s) {
  const t = s.time, commits = s.commits;
  const rate = last && t > last.t ? (commits - last.commits) / (t - last.t) : 0;
  last = {t: t, commits: commits};
  push(series.queue[0], s.queued);
  push(series.batch[0], s.batch_mean); push(series.batch[1], s.batch_max);
  push(series.latency[0], s.latency_p50_ms); push(series.latency[1], s.latency_p99_ms);
  push(series.commits[0], rate);
  samples += 1;
  document.getElementById("sample-count").textContent = String(samples);
  document.getElementById("state").textContent = s.state;
  document.getElementById("requests").textContent = String(s.requests);
  Object.keys(series).forEach(draw);
}

async function poll() {
  try {
    const r = await fetch("/api/stats", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    add(await r.json());
    document.getElementById("status").textContent = "live";
  } catch (e) {
    document.getElementById("status").textContent = "error: " + e.message;
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body></html>
"""
