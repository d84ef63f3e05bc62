// /dashboard: four charts of the server's samples (GET /api/stats/history, once a second).
// Each chart: a y axis with a labelled scale from 0 to a round maximum, an x axis of the
// last two minutes, and the current value (the server's mean over its window) above it.
"use strict";
const KEEP = 120, W = 640, H = 220, L = 58, R = 12, T = 12, B = 34;
const SVG = "http://www.w3.org/2000/svg";
const CHARTS = {
  queue: {series: [s => s.queued], now: (s, w) => fmt(s.queued), whole: true},
  batch: {series: [s => s.batch_mean],
          now: (s, w) => fmt(w.batch_mean, 1) + " (peak " + fmt(w.batch_peak, 1) + ")"},
  latency: {series: [s => s.latency_p50_ms, s => s.latency_p99_ms],
            now: s => fmt(s.latency_p50_ms, 2) + " / " + fmt(s.latency_p99_ms, 2) + " ms"},
  commits: {series: [s => s.commits_per_s], now: (s, w) => fmt(w.commits_per_s, 1) + "/s"},
};

function fmt(v, digits) {
  return Number(v || 0).toLocaleString("en", {maximumFractionDigits: digits || 0});
}

function scale(v, whole) {  // a round step (1, 2, 2.5 or 5 x 10^k), at most 5 steps to >= v
  if (whole && v <= 5) return {step: 1, steps: Math.max(1, Math.ceil(v))};
  if (!(v > 0)) return {step: 0.25, steps: 4};
  const p = Math.pow(10, Math.floor(Math.log10(v / 5)));
  for (const m of [1, 2, 2.5, 5, 10]) {
    const step = m * p;
    if (step * 5 >= v) return {step: step, steps: Math.max(1, Math.ceil(v / step - 1e-9))};
  }
  return {step: 10 * p, steps: 5};
}

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const k in attrs) e.setAttribute(k, String(attrs[k]));
  if (text !== undefined) e.textContent = text;
  return e;
}

function draw(name, samples, interval) {
  const svg = document.getElementById("chart-" + name);
  const chart = CHARTS[name];
  const values = chart.series.map(f => samples.map(f));
  const max = Math.max(0, ...values.flat());
  const {step, steps} = scale(max, chart.whole), top = step * steps;
  svg.setAttribute("data-max", String(max));
  svg.replaceChildren();
  const pw = W - L - R, ph = H - T - B;
  const y = v => T + ph - ph * v / top;
  for (let i = 0; i <= steps; i++) {  // the scale: a labelled gridline at each step
    const v = step * i, yy = y(v).toFixed(1);
    svg.append(el("line", {x1: L, x2: W - R, y1: yy, y2: yy, class: i ? "grid-line" : "axis"}));
    svg.append(el("text", {x: L - 6, y: Number(yy) + 4, "text-anchor": "end"},
                  fmt(v, step < 1 ? 2 : 0)));
  }
  svg.append(el("line", {x1: L, x2: L, y1: T, y2: T + ph, class: "axis"}));
  const span = KEEP * interval;  // seconds across the x axis
  for (const ago of [span, span * 3 / 4, span / 2, span / 4, 0]) {
    const x = L + pw * (1 - ago / span);
    svg.append(el("text", {x: x, y: H - B + 16, "text-anchor": "middle"},
                  ago ? "-" + Math.round(ago) + " s" : "now"));
  }
  svg.append(el("text", {x: 14, y: T + ph / 2, "text-anchor": "middle",
                         transform: "rotate(-90 14 " + (T + ph / 2) + ")"},
                svg.dataset.unit));
  const dx = pw / (KEEP - 1), x0 = L + pw - dx * (samples.length - 1);
  values.forEach((vs, i) => {
    svg.append(el("polyline", {class: "line s" + i, points: vs.map((v, j) =>
      (x0 + j * dx).toFixed(1) + "," + y(v).toFixed(1)).join(" ")}));
  });
}

async function poll() {
  try {
    const r = await fetch("/api/stats/history?n=" + KEEP, {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const data = await r.json();
    const samples = data.samples;
    if (samples.length) {
      const last = samples[samples.length - 1];
      for (const name in CHARTS) {
        draw(name, samples, data.interval_s);
        document.getElementById("now-" + name).textContent = CHARTS[name].now(last, data.window);
      }
      document.getElementById("state").textContent = last.state;
      document.getElementById("requests").textContent = String(last.requests);
    }
    document.getElementById("sample-count").textContent = String(samples.length);
    document.getElementById("status").textContent = "live";
  } catch (e) {
    document.getElementById("status").textContent = "error: " + e.message;
  }
  setTimeout(poll, 1000);
}
poll();
