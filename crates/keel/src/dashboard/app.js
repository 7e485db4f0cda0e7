// Keel dashboard: polls the admin API every 2 s and renders with plain DOM calls.
// Every value from the server is set with textContent (never innerHTML): domain names, reply
// texts and reasons come from remote peers and operators.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "keel-token";

const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

// fetch() with the bearer token; a 401 opens the token form and rejects.
async function api(path, init = {}) {
  const headers = Object.assign({}, init.headers || {});
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  const resp = await fetch(path, Object.assign({}, init, { headers }));
  if (resp.status === 401) {
    $("login").style.display = "flex";
    throw new Error("the admin API wants a token");
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

function fmtNum(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en");
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return (i === 0 ? v : v.toFixed(1)) + " " + units[i];
}

function fmtAge(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

// Replaces a table body's rows; `fill(tr, item)` adds the cells.
function fillTable(id, items, fill, emptyText) {
  const tbody = $(id).querySelector("tbody");
  tbody.replaceChildren();
  if (!items.length) {
    const tr = document.createElement("tr");
    const td = cell(tr, emptyText, "empty");
    td.colSpan = $(id).querySelectorAll("th").length;
    tbody.appendChild(tr);
    return;
  }
  for (const item of items) {
    const tr = document.createElement("tr");
    fill(tr, item);
    tbody.appendChild(tr);
  }
}

function replyText(r) {
  return r ? [r.code, r.enhanced, r.text].filter(Boolean).join(" ") : "";
}

const SELECTOR_KEYS = ["domain", "site", "source", "campaign", "tenant"];

function selectorOf(s) {
  const sel = {};
  for (const k of SELECTOR_KEYS) if (s[k]) sel[k] = s[k];
  return sel;
}

function selectorText(sel) {
  return Object.entries(sel).map(([k, v]) => k + " " + v).join(", ");
}

async function resume(sel, button) {
  button.disabled = true;
  try {
    await api("/api/v1/resume", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(sel),
    });
    $("error").textContent = "";
  } catch (e) {
    $("error").textContent = "resume failed: " + e.message;
  }
  refresh();
}

function renderQueues(q) {
  $("q-messages").textContent = fmtNum(q.messages);
  $("q-recipients").textContent = fmtNum(q.recipients);
  $("q-bytes").textContent = fmtBytes(q.bytes);
  $("q-domains").textContent = fmtNum(q.scheduled_queues);
  fillTable("suspensions", q.suspensions, (tr, s) => {
    const sel = selectorOf(s);
    tr.dataset.selector = selectorText(sel);
    cell(tr, selectorText(sel));
    cell(tr, s.reason);
    cell(tr, s.until || "until resumed");
    const td = cell(tr, "");
    const b = document.createElement("button");
    b.textContent = "Resume";
    b.addEventListener("click", () => resume(sel, b));
    td.appendChild(b);
  }, "no suspensions");
  fillTable("queues", q.scheduled, (tr, d) => {
    tr.dataset.domain = d.domain;
    cell(tr, d.domain);
    cell(tr, d.site || "");
    cell(tr, fmtNum(d.messages), "num");
    cell(tr, fmtNum(d.recipients), "num");
    cell(tr, fmtAge(d.oldest_age_s), "num");
    cell(tr, d.next_attempt_in_s === undefined ? "" : fmtAge(d.next_attempt_in_s), "num");
    cell(tr, d.parked ? fmtNum(d.parked) : "", "num");
    cell(tr, replyText(d.last_response), "err");
  }, "the queue is empty");
  fillTable("ready", q.ready, (tr, r) => {
    cell(tr, r.source);
    cell(tr, r.site);
    cell(tr, fmtNum(r.queued), "num");
    cell(tr, fmtNum(r.connections), "num");
    cell(tr, r.effective_max_connections + " / " + r.max_connections, "num");
    cell(tr, r.throttle || "");
  }, "no ready queues");
}

function renderSpool(s) {
  $("s-live").textContent = fmtBytes(s.live_bytes);
  $("s-disk").textContent = fmtBytes(s.disk_bytes);
  $("s-segments").textContent = fmtNum(s.segments);
  $("s-syncs").textContent = fmtNum(s.syncs);
  $("s-free").textContent = fmtBytes(s.free_bytes);
  const st = $("status");
  st.textContent = s.ready;
  st.className = s.ready === "ready" ? "ready" : "bad";
}

function renderActions(a) {
  fillTable("actions", a.actions, (tr, x) => {
    cell(tr, x.time);
    cell(tr, x.source);
    cell(tr, x.site || x.queue);
    cell(tr, x.action);
    cell(tr, replyText(x.response), "err");
  }, "none yet");
}

const SERIES = [
  ["received", "#9ca3af"],
  ["deferred", "#d97706"],
  ["failed", "#b91c1c"],
  ["delivered", "#2563eb"],
];

function renderThroughput(t) {
  const b = t.buckets;
  const sum = (k) => b.reduce((acc, x) => acc + x[k], 0);
  // The newest bucket is still filling; "now" is the last complete one.
  const last = b.length > 1 ? b[b.length - 2] : b[0] || { received: 0, delivered: 0 };
  $("rate-received").textContent = (last.received / t.bucket_s).toFixed(1);
  $("rate-delivered").textContent = (last.delivered / t.bucket_s).toFixed(1);
  $("hour-received").textContent = fmtNum(sum("received"));
  $("hour-delivered").textContent = fmtNum(sum("delivered"));
  $("hour-deferred").textContent = fmtNum(sum("deferred"));
  $("hour-failed").textContent = fmtNum(sum("failed"));

  const svg = $("chart");
  const W = 720, H = 160, pad = 4;
  const max = Math.max(1, ...b.map((x) => Math.max(x.received, x.delivered, x.deferred, x.failed)));
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  // Text goes outside the SVG: its viewBox is stretched to the page width.
  $("chart-max").textContent = "top of chart: " + max + " recipients / 10 s";
  for (const [key, color] of SERIES) {
    const pts = b.map((x, i) => {
      const px = (i / Math.max(1, b.length - 1)) * W;
      const py = H - pad - (x[key] / max) * (H - 2 * pad);
      return px.toFixed(1) + "," + py.toFixed(1);
    });
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", color);
    line.setAttribute("stroke-width", "1.5");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    line.dataset.series = key;
    svg.appendChild(line);
  }
}

let busy = false;

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const [q, t, a, s] = await Promise.all([
      api("/api/v1/queues?limit=50"),
      api("/api/v1/stats/throughput"),
      api("/api/v1/stats/actions"),
      api("/api/v1/stats/spool"),
    ]);
    renderQueues(q);
    renderThroughput(t);
    renderActions(a);
    renderSpool(s);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    $("error").textContent = "";
    document.body.dataset.loaded = "1";
  } catch (e) {
    $("error").textContent = e.message;
  } finally {
    busy = false;
  }
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("login").style.display = "none";
  $("error").textContent = "";
  refresh();
});

refresh();
setInterval(refresh, POLL_MS);
