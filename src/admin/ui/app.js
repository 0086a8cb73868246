// The switchyard web page: polls the router's own API and draws it.
// No framework and nothing from the network beyond the router itself.
"use strict";

const POLL_MS = 1000;
const RECENT = 20;
const SVGNS = "http://www.w3.org/2000/svg";

const state = { prev: null, prevAt: 0, topic: null, flow: null };

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") e.onclick = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  const body = await r.json().catch(() => ({}));
  return { status: r.status, body };
}

function followLink(id) {
  return el("a", { class: "mono", "data-follow": id, onclick: () => follow(id) }, id);
}

// ---- the graph -------------------------------------------------------------

function rate(key, count, now) {
  if (!state.prev || !(key in state.prev)) return null;
  const dt = (now - state.prevAt) / 1000;
  return dt > 0 ? Math.max(0, (count - state.prev[key]) / dt) : null;
}

function drawFlow(flow, now) {
  const g = document.getElementById("graph");
  g.replaceChildren();
  const W = 170, H = 40, GX = 70, GY = 22;
  const maxStages = Math.max(1, ...flow.routes.map((r) => r.stages.length));
  const colX = (c) => 10 + c * (W + GX);
  const topicCol = 2 + maxStages, sinkCol = topicCol + 1;
  const nodes = {};
  const counts = {};
  function node(id, kind, col, row, label, sub, data) {
    const x = colX(col), y = 10 + row * (H + GY);
    const grp = svg("g", Object.assign({ class: "node " + kind, "data-kind": kind }, data || {}));
    grp.append(svg("rect", { x, y, width: W, height: H }));
    grp.append(svg("text", { x: x + 8, y: y + 16 }, label.length > 26 ? label.slice(0, 25) + "…" : label));
    if (sub) grp.append(svg("text", { x: x + 8, y: y + 31, class: "sub" }, sub));
    const t = svg("title", {}, label + (sub ? " — " + sub : ""));
    grp.append(t);
    g.append(grp);
    nodes[id] = { x, y };
  }
  function edge(from, to, key, count) {
    const a = nodes[from], b = nodes[to];
    if (!a || !b) return;
    const r = key ? rate(key, count, now) : null;
    if (key) counts[key] = count;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
    const mx = (x1 + x2) / 2;
    g.insertBefore(svg("path", {
      class: "edge" + (r ? " live" : ""),
      d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`,
      "data-edge": from + "->" + to,
    }), g.firstChild);
    if (key) {
      const label = (r == null ? "–" : r.toFixed(1)) + "/s (" + count + ")";
      g.append(svg("text", { x: mx - 20, y: (y1 + y2) / 2 - 4, class: "rate", "data-rate": from + "->" + to }, label));
    }
  }
  flow.sources.forEach((s, i) => node("src:" + s.name, "source", 0, i, s.label, s.name));
  node("ingest", "topic", 1, 0, flow.ingest, "ingest topic", { "data-topic": flow.ingest });
  flow.sources.forEach((s) => edge("src:" + s.name, "ingest", "in:" + s.name, s.events));
  const topics = [];
  const addTopic = (t) => { if (!topics.includes(t) && t !== flow.ingest) topics.push(t); };
  flow.routes.forEach((r) => r.outputs.forEach((o) => addTopic(o.topic)));
  flow.topics.forEach((t) => addTopic(t.name));
  addTopic(flow.deadLetter);
  flow.routes.forEach((r, row) => {
    r.stages.forEach((s, i) => {
      node(`stage:${r.name}:${i}`, "stage", 2 + i, row, s.plugin, `route ${r.name} · ${s.version}`,
        i === 0 ? { "data-route": r.name } : { "data-stage": r.name });
    });
    if (r.stages.length) edge("ingest", `stage:${r.name}:0`, "route:" + r.name, r.events);
    for (let i = 1; i < r.stages.length; i++) edge(`stage:${r.name}:${i - 1}`, `stage:${r.name}:${i}`);
  });
  const len = Object.fromEntries(flow.topics.map((t) => [t.name, t.length]));
  topics.forEach((t, i) => node("topic:" + t, t === flow.deadLetter ? "dead" : "topic", topicCol, i, t,
    (len[t] || 0) + " records", { "data-topic": t }));
  flow.routes.forEach((r) => {
    const last = `stage:${r.name}:${r.stages.length - 1}`;
    r.outputs.forEach((o) => edge(last, "topic:" + o.topic, `out:${r.name}:${o.topic}`, o.count));
  });
  flow.sinks.forEach((s, i) => {
    node("sink:" + s.name, s.retrying ? "sink dead" : "sink", sinkCol, i, s.name, `${s.kind} ${s.target} · ${s.delivered} sent`, { "data-sink": s.name });
    s.from.forEach((t) => edge("topic:" + t, "sink:" + s.name));
  });
  const rows = Math.max(flow.sources.length, flow.routes.length, topics.length, flow.sinks.length, 1);
  const cols = flow.sinks.length ? sinkCol + 1 : topicCol + 1;
  g.setAttribute("width", colX(cols));
  g.setAttribute("height", 20 + rows * (H + GY));
  return counts;
}

// ---- panels ----------------------------------------------------------------

function drawTopics(flow) {
  const list = document.getElementById("topic-list");
  list.replaceChildren(...flow.topics.map((t) => el("button", {
    class: t.name === state.topic ? "on" : "", "data-topic": t.name,
    onclick: () => { state.topic = t.name; refreshRecent(); drawTopics(flow); },
  }, `${t.name} (${t.length})`)));
}

async function refreshRecent() {
  if (!state.topic || !state.flow) return;
  const t = state.flow.topics.find((x) => x.name === state.topic);
  const from = Math.max(0, (t ? t.length : 0) - RECENT);
  const { body } = await getJson(`/v1/topics/${encodeURIComponent(state.topic)}/events?from=${from}&limit=${RECENT}`);
  const rows = (body.events || []).slice().reverse().map((e) =>
    el("tr", {}, el("td", {}, e.offset), el("td", {}, e.type), el("td", {}, state.topic === state.flow.ingest ? followLink(e.id) : el("span", { class: "mono" }, e.id)),
    el("td", {}, e.time || "")));
  document.querySelector("#recent tbody").replaceChildren(...rows);
}

async function refreshPlugins() {
  const { body } = await getJson("/v1/plugins");
  const rows = (body.plugins || []).map((p) => {
    const last = p.lastReload ? `${p.lastReload.outcome} (${p.lastReload.trigger}, ${p.lastReload.at})` : "—";
    const hist = (p.reloads || []).slice(-5).reverse().map((r) =>
      el("div", { class: r.outcome === "failed" ? "error" : "" }, `${r.at} ${r.outcome} ${r.version || ""} ${r.reason || ""}`));
    return el("tr", { "data-plugin": p.name }, el("td", {}, p.name), el("td", { class: "mono" }, p.version),
      el("td", {}, p.calls), el("td", {}, p.errors), el("td", {}, last), el("td", {}, ...hist));
  });
  document.querySelector("#plugin-table tbody").replaceChildren(...rows);
}

async function refreshDead(flow) {
  const t = flow.topics.find((x) => x.name === flow.deadLetter);
  const from = Math.max(0, (t ? t.length : 0) - RECENT);
  const { body } = await getJson(`/v1/topics/${encodeURIComponent(flow.deadLetter)}/events?from=${from}&limit=${RECENT}`);
  const rows = (body.events || []).slice().reverse().map((e) => {
    const d = e.data || {};
    const orig = d.event && d.event.id;
    return el("tr", {}, el("td", {}, e.offset), el("td", {}, d.reason || ""), el("td", {}, d.route || d.source || ""),
      el("td", { class: "mono" }, d.plugin ? `${d.plugin}@${d.pluginVersion}` : ""), el("td", {}, d.error || ""),
      el("td", {}, orig ? followLink(orig) : ""));
  });
  document.querySelector("#dead-table tbody").replaceChildren(...rows);
}

// ---- follow one event ------------------------------------------------------

async function follow(id) {
  id = (id || "").trim();
  if (!id) return;
  document.getElementById("follow-id").value = id;
  history.replaceState(null, "", "#follow=" + encodeURIComponent(id));
  const out = document.getElementById("trace");
  const { status, body } = await getJson(`/v1/events/${encodeURIComponent(id)}/trace`);
  if (status !== 200) {
    out.replaceChildren(el("div", { class: "error" }, (body.details && body.details[0] && body.details[0].reason) || `no trace (${status})`));
    return;
  }
  out.className = "";
  const kids = [el("div", { class: "trace-block", "data-trace": body.id },
    el("div", {}, el("b", {}, body.type), " ", el("span", { class: "muted" }, body.state)),
    el("div", { class: "mono" }, `id ${body.id}`),
    el("div", {}, `from ${body.from.source}, topic ${body.from.topic} @ offset ${body.from.offset}`),
    el("div", { class: "mono" }, `key ${body.key || "—"} · traceparent ${body.traceparent || "—"}`))];
  for (const r of body.routes) {
    const stages = (r.stages || []).map((s) => `${s.plugin}@${s.version}`).join(" → ");
    const items = [el("div", {}, el("b", {}, `route ${r.route || "(none)"}`), " ", stages)];
    for (const o of r.outputs) {
      items.push(el("div", { class: "output", "data-output-topic": o.topic }, `→ ${o.topic} @ ${o.offset} · ${o.type} · `, el("span", { class: "mono" }, o.id)));
    }
    for (const d of r.deadLetters) {
      items.push(el("div", { class: "error deadletter" }, `✗ ${d.reason}: ${d.error} (${d.plugin || "router"}${d.pluginVersion ? "@" + d.pluginVersion : ""}, stage ${d.stage}) → ${d.topic} @ ${d.offset}`));
    }
    kids.push(el("div", { class: "trace-block " + (r.deadLetters.length ? "deadletter" : "route") }, ...items));
  }
  if (!body.routes.length) kids.push(el("div", { class: "muted" }, body.state === "pending" ? "not processed yet" : "no outputs recorded"));
  out.replaceChildren(...kids);
}

// ---- the loop --------------------------------------------------------------

async function tick() {
  try {
    const [{ body: flow }, ready] = await Promise.all([getJson("/v1/flow"), getJson("/readyz")]);
    const now = Date.now();
    state.flow = flow;
    if (!state.topic) state.topic = flow.ingest;
    const counts = drawFlow(flow, now);
    state.prev = counts;
    state.prevAt = now;
    drawTopics(flow);
    const badge = document.getElementById("ready");
    badge.textContent = ready.status === 200 ? "ready" : "not ready: " + (ready.body.failed || []).map((f) => f.check).join(", ");
    badge.className = "badge " + (ready.status === 200 ? "ok" : "bad");
    document.getElementById("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
    await Promise.all([refreshRecent(), refreshPlugins(), refreshDead(flow)]);
    document.body.dataset.loaded = "true";
  } catch (e) {
    document.getElementById("ready").textContent = "router unreachable";
    document.getElementById("ready").className = "badge bad";
  }
  setTimeout(tick, POLL_MS);
}

document.getElementById("follow-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  follow(document.getElementById("follow-id").value);
});
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("follow")) follow(hash.get("follow"));
tick();
