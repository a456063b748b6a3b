// Tideway dashboard: polls the admin listener's JSON endpoints and /metrics, and shows rates
// computed from the differences between two polls. Plain JavaScript, no libraries. Everything
// taken from the gateway is written with textContent, never as HTML.
"use strict";

const params = new URLSearchParams(location.search);
const INTERVAL_MS = Math.max(500, Number(params.get("interval")) || 2000);
const RATE_HISTORY = 900; // points of the traffic chart (30 min at 2 s)
const TOKEN_KEY = "tideway-admin-token";

let previous = null; // {t, routes: Map, shed: Map}
const rateHistory = [];
let updates = 0;

function $(id) { return document.getElementById(id); }

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

class Unauthorized extends Error {}

async function get(path, asText) {
  const r = await fetch(path, { headers: headers(), cache: "no-store" });
  if (r.status === 401) throw new Unauthorized(path);
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return asText ? r.text() : r.json();
}

// Prometheus text format: `name{k="v",...} value`. Returns [{name, labels, value}].
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    let name, labels = {}, rest;
    const brace = line.indexOf("{");
    const space = line.indexOf(" ");
    if (brace !== -1 && (space === -1 || brace < space)) {
      name = line.slice(0, brace);
      let i = brace + 1;
      while (i < line.length && line[i] !== "}") {
        const eq = line.indexOf("=", i);
        const key = line.slice(i, eq).trim();
        let j = eq + 2, value = "";
        while (j < line.length && line[j] !== '"') {
          if (line[j] === "\\" && j + 1 < line.length) {
            const n = line[j + 1];
            value += n === "n" ? "\n" : n;
            j += 2;
          } else {
            value += line[j++];
          }
        }
        labels[key] = value;
        i = j + 1;
        if (line[i] === ",") i++;
      }
      rest = line.slice(i + 1).trim();
    } else {
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const value = Number(rest.split(" ")[0]);
    if (!Number.isNaN(value)) out.push({ name, labels, value });
  }
  return out;
}

// Per route: answered by status class, latency sum/count and cumulative buckets.
function routeStats(samples) {
  const routes = new Map();
  const route = (name) => {
    if (!routes.has(name)) {
      routes.set(name, { total: 0, c4: 0, c5: 0, sum: 0, count: 0, buckets: new Map() });
    }
    return routes.get(name);
  };
  const shed = new Map();
  for (const s of samples) {
    if (s.name === "tideway_requests_total" && s.labels.route !== undefined) {
      const r = route(s.labels.route);
      r.total += s.value;
      const status = Number(s.labels.status);
      if (status >= 500) r.c5 += s.value;
      else if (status >= 400) r.c4 += s.value;
    } else if (s.name === "tideway_request_duration_seconds_sum") {
      route(s.labels.route).sum = s.value;
    } else if (s.name === "tideway_request_duration_seconds_count") {
      route(s.labels.route).count = s.value;
    } else if (s.name === "tideway_request_duration_seconds_bucket") {
      route(s.labels.route).buckets.set(s.labels.le, s.value);
    } else if (s.name === "tideway_shed_total") {
      shed.set(s.labels.reason || "?", (shed.get(s.labels.reason) || 0) + s.value);
    }
  }
  return { routes, shed };
}

function delta(now, before) { return Math.max(0, now - (before || 0)); }

// The q-quantile of the requests between two polls, from histogram buckets, interpolated
// within the bucket it falls in. Seconds, or null without requests.
function quantile(q, now, before) {
  const les = [...now.buckets.keys()]
    .map((le) => ({ le, bound: le === "+Inf" ? Infinity : Number(le) }))
    .sort((a, b) => a.bound - b.bound);
  const counts = les.map(({ le }) => delta(now.buckets.get(le), before ? before.buckets.get(le) : 0));
  const total = counts.length ? counts[counts.length - 1] : 0;
  if (!total) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (let i = 0; i < les.length; i++) {
    if (counts[i] >= rank) {
      const upper = les[i].bound;
      if (!Number.isFinite(upper)) return lower;
      const inBucket = counts[i] - below;
      return inBucket > 0 ? lower + (upper - lower) * ((rank - below) / inBucket) : upper;
    }
    lower = les[i].bound;
    below = counts[i];
  }
  return lower;
}

function fmt(n, digits) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function mib(bytes) { return bytes == null ? "–" : (bytes / 1048576).toFixed(1) + " MiB"; }

function cell(row, text, cls, field) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  if (field) td.dataset.field = field;
  row.appendChild(td);
  return td;
}

function pill(row, text, level) {
  const td = document.createElement("td");
  const span = document.createElement("span");
  span.className = "pill " + level;
  span.textContent = text;
  td.appendChild(span);
  row.appendChild(td);
}

function setValue(id, value, text) {
  const el = $(id);
  el.dataset.value = String(value);
  el.textContent = text;
}

function renderRoutes(stats, dt) {
  const body = $("routes").tBodies[0];
  body.replaceChildren();
  let rate = 0, c4 = 0, c5 = 0, total = 0;
  const names = [...stats.routes.keys()].sort();
  for (const name of names) {
    const now = stats.routes.get(name);
    const before = previous && previous.routes.get(name);
    const d = dt ? {
      total: delta(now.total, before && before.total),
      c4: delta(now.c4, before && before.c4),
      c5: delta(now.c5, before && before.c5),
      sum: delta(now.sum, before && before.sum),
      count: delta(now.count, before && before.count),
    } : null;
    const row = document.createElement("tr");
    row.dataset.route = name;
    cell(row, name, "", "route");
    cell(row, d ? fmt(d.total / dt, 1) : "–", "num", "rate").dataset.value = d ? String(d.total / dt) : "0";
    cell(row, d ? fmt(d.c4 / dt, 1) : "–", "num", "rate4xx");
    cell(row, d ? fmt(d.c5 / dt, 1) : "–", "num", "rate5xx");
    cell(row, d && d.total ? fmt((100 * d.c5) / d.total, 1) + " %" : "–", "num", "errors");
    cell(row, d && d.count ? fmt((1000 * d.sum) / d.count, 2) : "–", "num", "mean");
    const p95 = d ? quantile(0.95, now, before) : null;
    const p99 = d ? quantile(0.99, now, before) : null;
    cell(row, p95 === null ? "–" : fmt(p95 * 1000, 2), "num", "p95");
    cell(row, p99 === null ? "–" : fmt(p99 * 1000, 2), "num", "p99");
    cell(row, fmt(now.total, 0), "num", "answered").dataset.value = String(now.total);
    body.appendChild(row);
    total += now.total;
    if (d) { rate += d.total / dt; c4 += d.c4 / dt; c5 += d.c5 / dt; }
  }
  if (!names.length) {
    const row = document.createElement("tr");
    cell(row, "no requests yet", "empty");
    body.appendChild(row);
  }
  setValue("total-requests", total, fmt(total, 0));
  if (dt) {
    setValue("total-rate", rate, fmt(rate, 1));
    setValue("error-rate", c5, fmt(c5, 2));
    setValue("client-error-rate", c4, fmt(c4, 2));
    rateHistory.push({ t: Date.now(), rate, c4, c5 });
    if (rateHistory.length > RATE_HISTORY) rateHistory.shift();
  }
}

function breakerLevel(state) {
  return state === "closed" ? "ok" : state === "half_open" ? "warn" : "bad";
}

function healthLevel(state) {
  return state === "healthy" ? "ok" : state === "probation" || state === "draining" ? "warn" : "bad";
}

function renderServices(doc) {
  const body = $("services").tBodies[0];
  body.replaceChildren();
  for (const s of doc.services || []) {
    const endpoints = s.endpoints && s.endpoints.length ? s.endpoints : [null];
    endpoints.forEach((e, i) => {
      const row = document.createElement("tr");
      row.dataset.service = s.name;
      if (i === 0) {
        cell(row, s.name, "", "service");
        pill(row, s.breaker.state, breakerLevel(s.breaker.state));
        cell(row, String(s.balancer));
      } else {
        cell(row, ""); cell(row, ""); cell(row, "");
      }
      if (e) {
        cell(row, e.addr, "", "instance");
        pill(row, e.state, healthLevel(e.state));
        pill(row, e.breaker.state, breakerLevel(e.breaker.state));
        cell(row, String(e.in_flight), "num");
        cell(row, fmt(e.ewma_latency_ms, 2), "num");
        cell(row, e.window_failures + " / " + e.window_calls, "num");
      } else {
        cell(row, "no instances", "empty");
        for (let k = 0; k < 5; k++) cell(row, "");
      }
      if (i === 0) {
        cell(row, fmt(s.stats.calls, 0), "num", "calls");
        cell(row, fmt(s.stats.failed_calls, 0), "num");
        cell(row, fmt(s.stats.shed, 0), "num");
      } else {
        cell(row, ""); cell(row, ""); cell(row, "");
      }
      body.appendChild(row);
    });
  }
}

function renderShed(stats, dt, clusterShed) {
  const body = $("shed").tBodies[0];
  body.replaceChildren();
  let total = clusterShed;
  for (const [reason, n] of [...stats.shed.entries()].sort()) {
    const row = document.createElement("tr");
    row.dataset.reason = reason;
    cell(row, reason);
    cell(row, fmt(n, 0), "num");
    const before = previous && previous.shed.get(reason);
    cell(row, dt ? fmt(delta(n, before) / dt, 2) : "–", "num");
    body.appendChild(row);
    total += n;
  }
  const row = document.createElement("tr");
  cell(row, "service clusters (no endpoint ready)");
  cell(row, fmt(clusterShed, 0), "num");
  cell(row, "");
  body.appendChild(row);
  setValue("shed-total", total, fmt(total, 0));
}

function renderOverload(o) {
  const body = $("overload").tBodies[0];
  body.replaceChildren();
  const rows = [
    ["pressure", o.pressure],
    ["memory budget", mib(o.memory_budget_bytes)],
    ["memory used", mib(o.memory_used_bytes)],
    ["held body bytes", mib(o.held_body_bytes)],
    ["in flight / limit", o.in_flight_requests + " / " + o.in_flight_limit],
    ["open / parked connections", o.open_connections + " / " + o.parked_connections],
    ["pending RPC calls", String(o.pending_rpc_calls)],
    ["scheduler stalls (worst ms)", o.scheduler_stalls + " (" + o.worst_stall_ms + ")"],
    ["draining", String(o.draining)],
  ];
  for (const [k, v] of rows) {
    const row = document.createElement("tr");
    cell(row, k);
    cell(row, v, "num");
    body.appendChild(row);
  }
  setValue("in-flight", o.in_flight_requests, String(o.in_flight_requests));
  setValue("open-connections", o.open_connections, String(o.open_connections));
  $("pressure").textContent = o.pressure;
  $("pressure").className = "value " + (o.pressure === "normal" ? "" : "bad");
}

// A line chart: series = [{values: [[t, v]...], color}], x from t0 to t1.
function chart(canvas, series, t0, t1, label) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, left = 70, right = 30, bottom = 22, top = 8;
  ctx.clearRect(0, 0, w, h);
  let max = 0;
  for (const s of series) for (const [, v] of s.values) if (v != null && v > max) max = v;
  max = max > 0 ? max * 1.15 : 1;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7383";
  ctx.strokeStyle = "#e1e4ea";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + ((h - top - bottom) * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w - right, y); ctx.stroke();
    ctx.fillText(label((max * (4 - i)) / 4), 4, y + 4);
  }
  const x = (t) => left + ((w - left - right) * (t - t0)) / Math.max(1, t1 - t0);
  const y = (v) => top + (h - top - bottom) * (1 - v / max);
  const minutes = (t1 - t0) / 60000;
  for (let i = 0; i <= 6; i++) {
    const t = t0 + ((t1 - t0) * i) / 6;
    const ago = minutes - (minutes * i) / 6;
    ctx.fillText(ago < 0.01 ? "now" : "-" + (minutes < 10 ? ago.toFixed(1) : Math.round(ago)) + " min", x(t) - 16, h - 6);
  }
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    for (const [t, v] of s.values) {
      if (v == null) continue;
      if (!started) { ctx.moveTo(x(t), y(v)); started = true; } else ctx.lineTo(x(t), y(v));
    }
    if (s.values.length === 1 && started) ctx.arc(x(s.values[0][0]), y(s.values[0][1]), 2, 0, 7);
    ctx.stroke();
  }
}

const css = getComputedStyle(document.documentElement);
const color = (name) => css.getPropertyValue(name).trim() || "#000";

function renderMemory(doc) {
  const samples = doc.samples || [];
  const canvas = $("memory-chart");
  canvas.dataset.points = String(samples.length);
  const t1 = Date.now(), t0 = t1 - 3600 * 1000;
  chart(canvas, [
    { values: samples.map((s) => [s.unix_ms, s.rss_bytes]), color: color("--c1") },
    { values: samples.map((s) => [s.unix_ms, s.allocator_resident_bytes]), color: color("--c2") },
    { values: samples.map((s) => [s.unix_ms, s.allocated_bytes]), color: color("--c4") },
  ], t0, t1, (v) => (v / 1048576).toFixed(0) + " MiB");
  const last = samples[samples.length - 1];
  $("memory-now").textContent = last
    ? " — now: RSS " + mib(last.rss_bytes) + ", allocator resident " + mib(last.allocator_resident_bytes) +
      ", allocated " + mib(last.allocated_bytes) + " (" + samples.length + (samples.length === 1 ? " sample" : " samples") + ", one per " + doc.period_ms / 1000 + " s)"
    : "";
}

function renderRates() {
  const canvas = $("rate-chart");
  canvas.dataset.points = String(rateHistory.length);
  const t1 = Date.now();
  const t0 = Math.min(t1 - 5 * 60 * 1000, rateHistory.length ? rateHistory[0].t : t1);
  chart(canvas, [
    { values: rateHistory.map((p) => [p.t, p.rate]), color: color("--c1") },
    { values: rateHistory.map((p) => [p.t, p.c4]), color: color("--c2") },
    { values: rateHistory.map((p) => [p.t, p.c5]), color: color("--c3") },
  ], t0, t1, (v) => v.toFixed(1) + "/s");
}

async function poll() {
  try {
    const [metricsText, services, overload, memory] = await Promise.all([
      get("/metrics", true),
      get("/admin/services"),
      get("/admin/overload"),
      get("/admin/memory"),
    ]);
    const t = performance.now();
    const stats = routeStats(parseMetrics(metricsText));
    const dt = previous ? (t - previous.t) / 1000 : 0;
    renderRoutes(stats, dt);
    renderServices(services);
    const clusterShed = (services.services || []).reduce((n, s) => n + (s.stats.shed || 0), 0);
    renderShed(stats, dt, clusterShed);
    renderOverload(overload);
    renderMemory(memory);
    renderRates();
    previous = { t, routes: stats.routes, shed: stats.shed };
    updates++;
    document.body.dataset.updates = String(updates);
    $("status").textContent = "updated " + new Date().toLocaleTimeString() + " · every " + INTERVAL_MS / 1000 + " s";
    $("status").className = "status";
    $("token-form").hidden = true;
  } catch (e) {
    $("status").textContent = (e instanceof Unauthorized ? "the admin token is needed" : "cannot reach the gateway: " + e.message);
    $("status").className = "status bad";
    if (e instanceof Unauthorized) $("token-form").hidden = false;
  }
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  $("token").value = "";
  poll();
});

poll();
setInterval(poll, INTERVAL_MS);
