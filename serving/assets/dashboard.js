// The live dashboard: polls /v1/dashboard and draws each stage's lag and, per model, metric curves,
// throughput, freshness, versions and drifts, and per spec with a promotion policy its champion and challengers. Charts are rebuilt on each refresh (a few hundred points: cheap).
// Everything from the API is shown as text (textContent, DOM nodes): no HTML is ever built from data.
// With API keys configured, the data need a read key: the page asks for one on a 401/403 and keeps it in
// this tab's sessionStorage.
(function () {
  "use strict";
  const REFRESH_MS = 2000;
  const KEY = "rivulet.readKey";
  const fmt = (v) => (typeof v === "number" && isFinite(v) ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(4)) : "-");
  const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
  // a name from data is looked up among an object's own keys only: "constructor" or "__proto__" is in
  // every object (inherited), and would read as a function or an object where a metric is missing
  const own = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
  const charts = {};
  const cards = new Map();

  function node(tag, attrs, children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") el.className = v;
      else el.setAttribute(k, v);
    }
    for (const c of children || []) el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    return el;
  }

  function chart(id, el, spec) {
    if (charts[id]) charts[id].destroy();
    el.dataset.points = String(spec.x.length);
    charts[id] = RivuletCharts.lineChart(el, Object.assign({ time: true, height: 200 }, spec));
  }

  function card(name) {
    let el = cards.get(name);
    if (el) return el;
    el = node("section", { class: "model" }, [
      node("h2", {}, [String(name)]),
      node("p", { class: "meta" }, [
        node("span", { class: "badge" }, ["version ", node("span", { class: "version" })]),
        node("span", { class: "summary" }),
      ]),
      node("p", { class: "quarantine", hidden: "" }),
      node("div", { class: "grid" }, [
        node("div", { class: "chart metrics" }),
        node("div", { class: "chart rate" }),
        node("div", { class: "chart freshness" }),
        node("div", {}, [
          node("h3", {}, ["Versions"]),
          node("div", { class: "versions" }),
          node("h3", {}, ["Drifts"]),
          node("div", { class: "drifts" }),
        ]),
      ]),
      node("div", { class: "lifecycle", hidden: "" }, [
        node("div", { class: "chart champions" }),
        node("div", {}, [node("h3", {}, ["Champion and challengers"]), node("div", { class: "decisions" })]),
      ]),
    ]);
    el.dataset.model = String(name); // an attribute value set through the DOM: never parsed as HTML
    cards.set(name, el);
    document.getElementById("models").appendChild(el);
    return el;
  }

  function versionsTable(versions) {
    const metricNames = [...new Set(versions.flatMap((v) => Object.keys(v.metrics)))]
      .filter((k) => !k.startsWith("rolling_"))
      .sort();
    const head = node("tr", {}, ["version", "saved", "learned", ...metricNames].map((k) => node("th", {}, [k])));
    const rows = versions.map((v) => {
      const saved = num(v.saved_at) !== null ? new Date(v.saved_at * 1000).toLocaleTimeString() : "-";
      const cells = [
        `v${num(v.version) ?? "-"}${v.current === true ? " (current)" : ""}`,
        saved,
        String(num(v.learned) ?? "-"),
        ...metricNames.map((k) => fmt(own(v.metrics, k) ? v.metrics[k] : null)),
      ];
      return node("tr", v.current === true ? { class: "current" } : {}, cells.map((c) => node("td", {}, [c])));
    });
    return node("table", {}, [head, ...rows]);
  }

  function driftsList(history) {
    const all = history.flatMap((s) => s.drifts);
    if (!all.length) return node("p", { class: "meta" }, ["none detected"]);
    return node(
      "ul",
      {},
      all
        .slice(-10)
        .reverse()
        .map((d) => {
          const at = num(d.ts) !== null ? new Date(d.ts).toISOString() : "-";
          return node("li", { class: "drift" }, [`${d.detector} at event time ${at} (after ${num(d.learned) ?? "-"} learned)`]);
        })
    );
  }

  // a spec's lifecycle (issue 14): its own model and its challengers (<spec>~...) on one chart, the metric
  // each learned on the same records, promotions and rollbacks marked where the learner recorded them
  function lifecycle(name, m, all, el) {
    const box = el.querySelector(".lifecycle");
    box.hidden = !m.champion;
    if (!m.champion) return;
    const names = [name, ...Object.keys(all).filter((n) => n.startsWith(name + "~")).sort()];
    const metric = [...new Set(m.history.flatMap((s) => Object.keys(s.metrics)))].sort().find((k) => k.startsWith("rolling_"))
      || [...new Set(m.history.flatMap((s) => Object.keys(s.metrics)))].sort()[0];
    const xs = [...new Set(names.flatMap((n) => all[n].history.map((s) => s.t)))].sort((a, b) => a - b);
    const series = names.map((n) => {
      const at = new Map(all[n].history.map((s) => [s.t, metric && own(s.metrics, metric) ? s.metrics[metric] : null]));
      return { label: n === m.champion ? `${n} (serving)` : n, values: xs.map((t) => num(at.get(t) ?? null)) };
    });
    const marked = m.decisions.filter((d) => d.kind === "promotion" || d.kind === "rollback");
    const markers = marked
      .filter((d) => num(d.saved_at) !== null)
      .map((d) => ({ x: d.saved_at, label: `${d.kind} ${d.model}` }));
    chart(name + ":champions", box.querySelector(".champions"), {
      title: `${metric ?? "metric"}: champion and challengers`, x: xs, series: series, markers: markers,
    });
    box.querySelector(".champions").dataset.markers = String(markers.length);
    const items = m.decisions.slice(-10).reverse().map((d) => {
      const ev = d.evidence;
      const test = ev ? ` (paired n ${num(ev.n) ?? "-"}, p ${fmt(ev.p_value)})` : "";
      return node("li", { class: "decision" }, [`${d.kind} ${d.model} (champion ${d.champion}) ${d.why}${test}`]);
    });
    box.querySelector(".decisions").replaceChildren(items.length ? node("ul", {}, items) : node("p", { class: "meta" }, ["none yet"]));
  }

  function draw(name, m, all) {
    const el = card(name);
    el.querySelector(".version").textContent = String(num(m.current_version) ?? "-");
    el.dataset.version = String(num(m.current_version) ?? "");
    const metrics = Object.entries(m.metrics).map(([k, v]) => `${k} ${fmt(v)}`).join(" · ");
    const role = m.role ? ` · ${m.role}` : "";
    const serving = m.champion ? ` · requests scored by ${m.champion}` : "";
    el.querySelector(".summary").textContent =
      `view ${m.view ?? "-"} · learned ${num(m.learned) ?? 0} · serving v${num(m.loaded_version) ?? "-"}${role}${serving} · ${metrics}`;
    const q = el.querySelector(".quarantine");
    q.hidden = m.status !== "quarantined";
    q.textContent = m.status === "quarantined" ? `quarantined: stopped learning, its last good version serving (${m.quarantine ?? "?"})` : "";
    const h = m.history;
    const xs = h.map((s) => s.t);
    const names = [...new Set(h.flatMap((s) => Object.keys(s.metrics)))].sort();
    const drifts = h.flatMap((s) => s.drifts.map((d) => ({ x: s.t, label: String(d.detector) })));
    chart(name + ":metrics", el.querySelector(".metrics"), {
      title: "metrics", x: xs, markers: drifts,
      series: names.map((n) => ({ label: n, values: h.map((s) => (own(s.metrics, n) ? s.metrics[n] : null)) })),
    });
    chart(name + ":rate", el.querySelector(".rate"), {
      title: "learned records/s", x: xs, series: [{ label: "records/s", values: h.map((s) => s.rate) }],
    });
    chart(name + ":freshness", el.querySelector(".freshness"), {
      title: "freshness: age of the newest learned event (ms)", x: xs,
      series: [{ label: "ms", values: h.map((s) => s.freshness_ms) }],
    });
    el.querySelector(".versions").replaceChildren(versionsTable(m.versions));
    el.querySelector(".drifts").replaceChildren(driftsList(h));
    lifecycle(name, m, all, el);
  }

  // each stage's lag as the API measured it from outside the stage (serving/lag.py): the worst partition in
  // records and in event time; a lag that is not known says so and why, never 0
  function secondsText(v) {
    if (num(v) === null) return "not known";
    if (v < 120) return `${v.toFixed(1)} s`;
    if (v < 7200) return `${(v / 60).toFixed(1)} min`;
    return `${(v / 3600).toFixed(1)} h`;
  }

  function drawLag(stages) {
    const box = document.getElementById("lag");
    box.hidden = !Array.isArray(stages) || stages.length === 0;
    if (box.hidden) return;
    const titles = ["stage", "records behind (worst partition)", "event time behind (worst partition)",
      "records behind (all partitions)", "measured", "state"];
    const head = node("tr", {}, titles.map((k) => node("th", {}, [k])));
    const rows = stages.map((s) => {
      const records = num(s.worst_records) !== null
        ? `${s.worst_records} on ${s.worst_records_partition ?? "-"}` : "not known";
      const seconds = num(s.worst_seconds) !== null
        ? `${secondsText(s.worst_seconds)} on ${s.worst_seconds_partition ?? "-"}` : "not known";
      const at = num(s.measured_at) !== null ? new Date(s.measured_at * 1000).toLocaleTimeString() : "-";
      const state = s.known === true ? "known" : `not known: ${(s.problems || []).map(String).join("; ")}`;
      const cells = [String(s.stage), records, seconds, String(num(s.records) ?? "not known"), at, state];
      const row = node("tr", s.known === true ? {} : { class: "unknown" }, cells.map((c) => node("td", {}, [c])));
      row.dataset.stage = String(s.stage);
      return row;
    });
    box.querySelector(".stages").replaceChildren(node("table", {}, [head, ...rows]));
  }

  function askKey(status) {
    const form = document.getElementById("auth");
    form.hidden = false;
    document.getElementById("error").textContent =
      status === 403 ? "this key does not have the read scope" : "this API needs a read key";
  }

  async function refresh() {
    const key = sessionStorage.getItem(KEY);
    try {
      const r = await fetch("/v1/dashboard?points=500", { headers: key ? { "X-API-Key": key } : {} });
      if (r.status === 401 || r.status === 403) return askKey(r.status);
      if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
      const data = await r.json();
      drawLag(data.lag);
      const names = Object.keys(data.models).sort();
      for (const name of names) draw(name, data.models[name], data.models);
      document.getElementById("status").textContent =
        `${names.length} model(s), updated ${new Date(data.now * 1000).toLocaleTimeString()}`;
      document.body.dataset.ready = "true";
      // renderings so far: what a test waits for, instead of a clock, to see the page draw the same data again
      document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
      document.getElementById("error").textContent = "";
    } catch (e) {
      document.getElementById("error").textContent = "refresh failed: " + e;
    }
  }

  document.getElementById("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById("key").value);
    document.getElementById("auth").hidden = true;
    refresh();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
