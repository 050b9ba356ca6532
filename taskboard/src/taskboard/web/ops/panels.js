// One renderer per dashboard panel: each takes the panel's `data` (GET /api/ops/dashboard)
// and returns the nodes to show. Text goes in through textContent only.

import { lineChart } from "./charts.js";

/** An element with attributes and children (strings become text nodes). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const number = new Intl.NumberFormat("en", { maximumFractionDigits: 2 });
const small = new Intl.NumberFormat("en", { maximumSignificantDigits: 2 });
const fmt = (value) => {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  return value !== 0 && Math.abs(value) < 1 ? small.format(value) : number.format(value);
};
const percent = (ratio) => (ratio === null || ratio === undefined ? "–" : `${number.format(ratio * 100)} %`);
const millis = (seconds) => (seconds === null || seconds === undefined ? "–" : `${number.format(seconds * 1000)} ms`);
const pill = (status) => el("span", { class: "pill", "data-status": status }, status);
const figure = (label, value) => el("span", { class: "figure" }, el("b", {}, value), label);

function table(headers, rows, numeric = []) {
  const head = el("tr", {}, ...headers.map((h, i) => el("th", { class: numeric.includes(i) ? "num" : null, scope: "col" }, h)));
  const body = rows.map((cells) => el("tr", {}, ...cells.map((cell, i) => {
    const cls = numeric.includes(i) ? "num" : typeof cell === "string" && cell.length > 40 ? "text" : null;
    return el("td", { class: cls, title: cls === "text" ? cell : null }, cell);
  })));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

const none = (text) => el("p", { class: "muted" }, text);
const last = (points) => {
  for (let i = points.length - 1; i >= 0; i -= 1) if (points[i][1] !== null) return points[i][1];
  return null;
};

function chart(title, now, series, options) {
  const legend = series.length > 1
    ? el("div", { class: "legend" }, ...series.map((s, i) => el("span", { class: `key s${i}` }, s.name)))
    : null;
  return el("div", { class: "chart" }, el("h3", {}, el("span", {}, title), el("span", {}, now)),
    lineChart(series, options), legend);
}

function traffic(data) {
  const end = Date.now() / 1000;
  const range = { start: end - data.window_seconds, end };
  const s = data.series;
  return [el("div", { class: "charts" },
    chart("Requests per second", fmt(last(s.request_rate)), [{ name: "req/s", points: s.request_rate }], { ...range, format: fmt }),
    chart("Error ratio (5xx)", percent(last(s.error_ratio)), [{ name: "5xx", points: s.error_ratio }], { ...range, format: percent }),
    chart("Latency", `p99 ${millis(last(s.p99))}`, [
      { name: "p50", points: s.p50 }, { name: "p95", points: s.p95 }, { name: "p99", points: s.p99 },
    ], { ...range, format: millis }),
  )];
}

function health(data) {
  // Failing and warning components first: the panel scrolls, and they are what matters.
  const rank = { fail: 0, warn: 1, pass: 2 };
  const checks = Object.entries(data.checks).sort(([, [a]], [, [b]]) => (rank[a.status] ?? 0) - (rank[b.status] ?? 0));
  const rows = checks.map(([name, [entry]]) => {
    const observed = entry.observedValue === undefined ? "" : `${fmt(entry.observedValue)} ${entry.observedUnit || ""}`;
    const detail = [observed.trim(), entry.output].filter(Boolean).join(" · ");
    return [name.slice(0, name.lastIndexOf(":")), pill(entry.status), el("span", { class: "wrap" }, detail)];
  });
  return [rows.length ? el("div", { class: "scroll" }, table(["component", "status", "observed"], rows)) : none("No checks registered.")];
}

function breakers(data) {
  if (!data.breakers.length) return [none("No breakers yet.")];
  return [table(["breaker", "state", "failures", "calls"], data.breakers.map((b) => [
    b.name, pill(b.state), `${fmt(b.failure_rate_percent)} %`, fmt(b.successful_calls + b.failed_calls),
  ]), [2, 3])];
}

function cache(data) {
  const tiers = data.tiers.filter((t) => t.tier === "l1" || t.configured);
  return [
    table(["tier", "hit ratio", "hits", "misses"], tiers.map((t) => [
      t.tier.toUpperCase(), percent(t.hit_ratio), fmt(t.hits), fmt(t.misses),
    ]), [1, 2, 3]),
    el("div", { class: "figures" },
      figure("L1 entries", fmt(data.l1_entries)),
      figure("L2 (Redis)", data.l2 ? pill(data.l2.breaker) : "not configured"),
      figure("backplane", data.backplane.connected ? "connected" : "local only")),
  ];
}

function queries(data) {
  const out = [];
  out.push(data.top.length
    ? table(["statement", "calls", "mean", "p95"], data.top.map((q) => [
      q.query, fmt(q.calls), `${fmt(q.mean_ms)} ms`, q.p95_ms === null ? "–" : `${fmt(q.p95_ms)} ms`,
    ]), [1, 2, 3])
    : none(`No statements measured yet (${Object.values(data.sources).join("; ")}).`));
  out.push(data.suggestions.length
    ? table(["suggested index", "gain"], data.suggestions.map((s) => [s.statement, percent(s.gain)]), [1])
    : none("No index suggestion."));
  return out;
}

function backlogs(data) {
  const email = data.email;
  const counts = Object.entries(email.counts);
  return [el("div", { class: "columns" },
    el("div", {},
      el("h3", {}, "Email outbox"),
      el("div", { class: "figures" }, figure("backlog", fmt(email.backlog)),
        figure("oldest", email.oldest_seconds === null ? "–" : `${fmt(email.oldest_seconds)} s`)),
      counts.length ? table(["status", "messages"], counts.map(([s, n]) => [pill(s), fmt(n)]), [1]) : none("No email yet.")),
    el("div", {},
      el("h3", {}, "Events"),
      el("div", { class: "figures" }, figure("outbox backlog", fmt(data.events.backlog)),
        figure("outbox lag", data.events.lag_seconds === null ? "–" : `${fmt(data.events.lag_seconds)} s`)),
      data.consumers.length
        ? table(["consumer group", "lag"], data.consumers.map((c) => [c.group, fmt(c.lag)]), [1])
        : none("No consumer in this process.")),
    el("div", {},
      el("h3", {}, "Recent deliveries"),
      email.recent.length
        ? table(["status", "provider", "tries", "at"], email.recent.map((m) => [
          pill(m.status), m.provider || "–", fmt(m.attempts), new Date(m.updated_at).toLocaleTimeString(),
        ]), [2])
        : none("Nothing sent yet.")),
  )];
}

function live(data) {
  const dropped = Object.entries(data.dropped);
  return [el("div", { class: "figures" }, figure("open streams", fmt(data.open)), figure("events sent", fmt(data.events_sent))),
    dropped.length ? table(["dropped because", "streams"], dropped.map(([r, n]) => [r, fmt(n)]), [1]) : none("No stream dropped.")];
}

const when = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "–");

function alerts(data) {
  const firing = data.alerts.length
    ? table(["alert", "state", "severity", "summary", "since"], data.alerts.map((a) => [
      a.rule, pill(a.silenced ? "silenced" : a.state), a.severity,
      a.annotations.summary || a.annotations.description || "", when(a.active_since),
    ]))
    : none(data.at ? "Nothing firing or pending." : "No evaluation in this process yet.");
  const silences = data.silences.length
    ? table(["silence", "until", "by", "comment"], data.silences.map((s) => [
      s.matchers.map((m) => `${m.name}${m.op}${m.value}`).join(", "), new Date(s.ends_at).toLocaleString(),
      s.created_by, s.comment,
    ]))
    : none("No silence in force.");
  const sent = data.notifications.length
    ? table(["notification", "channel", "status", "at"], data.notifications.slice(0, 5).map((n) => [
      `${n.alert_status}: ${Object.values(n.group_labels).join(", ")}`, n.channel, pill(n.status), when(n.created_at),
    ]))
    : none("No notification sent yet.");
  return [el("div", { class: "columns" },
    el("div", {}, el("h3", {}, "Firing and pending"), firing),
    el("div", {}, el("h3", {}, "Silences"), silences),
    el("div", {}, el("h3", {}, "Recent notifications"), sent))];
}

export const RENDERERS = { traffic, health, breakers, cache, queries, backlogs, live, alerts };
