// The live dashboard: polls /v1/dashboard and draws, per model, metric curves, throughput, freshness,
// versions and drifts. Charts are rebuilt on each refresh (a few hundred points: cheap).
(function () {
  "use strict";
  const REFRESH_MS = 2000;
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  const fmt = (v) => (typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(4)) : "-");
  const slug = (s) => String(s).replace(/[^A-Za-z0-9_-]/g, "_");
  const charts = {};

  function chart(id, el, spec) {
    if (charts[id]) charts[id].destroy();
    el.dataset.points = String(spec.x.length);
    charts[id] = RivuletCharts.lineChart(el, Object.assign({ time: true, height: 200 }, spec));
  }

  function card(name) {
    const id = "model-" + slug(name);
    let el = document.getElementById(id);
    if (el) return el;
    el = document.createElement("section");
    el.className = "model";
    el.id = id;
    el.dataset.model = name;
    el.innerHTML =
      `<h2>${esc(name)}</h2><p class="meta"><span class="badge">version <span class="version"></span></span>` +
      `<span class="summary"></span></p>` +
      `<div class="grid"><div class="chart metrics"></div><div class="chart rate"></div>` +
      `<div class="chart freshness"></div><div><h3>Versions</h3><div class="versions"></div>` +
      `<h3>Drifts</h3><div class="drifts"></div></div></div>`;
    document.getElementById("models").appendChild(el);
    return el;
  }

  function draw(name, m) {
    const el = card(name);
    el.querySelector(".version").textContent = m.current_version ?? "-";
    el.dataset.version = String(m.current_version ?? "");
    const metrics = Object.entries(m.metrics).map(([k, v]) => `${esc(k)} ${fmt(v)}`).join(" · ");
    el.querySelector(".summary").textContent =
      `view ${m.view ?? "-"} · learned ${m.learned ?? 0} · serving v${m.loaded_version ?? "-"} · ${metrics}`;
    const h = m.history;
    const xs = h.map((s) => s.t);
    const names = [...new Set(h.flatMap((s) => Object.keys(s.metrics)))].sort();
    const drifts = h.flatMap((s) => s.drifts.map((d) => ({ x: s.t, label: d[0] })));
    chart(name + ":metrics", el.querySelector(".metrics"), {
      title: "metrics", x: xs, markers: drifts,
      series: names.map((n) => ({ label: n, values: h.map((s) => (n in s.metrics ? s.metrics[n] : null)) })),
    });
    chart(name + ":rate", el.querySelector(".rate"), {
      title: "learned records/s", x: xs, series: [{ label: "records/s", values: h.map((s) => s.rate) }],
    });
    chart(name + ":freshness", el.querySelector(".freshness"), {
      title: "freshness: age of the newest learned event (ms)", x: xs,
      series: [{ label: "ms", values: h.map((s) => s.freshness_ms) }],
    });
    const metricNames = [...new Set(m.versions.flatMap((v) => Object.keys(v.metrics)))].filter((k) => !k.startsWith("rolling_")).sort();
    let rows = "<table><tr><th>version</th><th>saved</th><th>learned</th>" + metricNames.map((k) => `<th>${esc(k)}</th>`).join("") + "</tr>";
    for (const v of m.versions) {
      const saved = v.saved_at ? new Date(v.saved_at * 1000).toLocaleTimeString() : "-";
      rows += `<tr class="${v.current ? "current" : ""}"><td>v${v.version}${v.current ? " (current)" : ""}</td><td>${saved}</td>` +
        `<td>${v.learned ?? "-"}</td>` + metricNames.map((k) => `<td>${fmt(v.metrics[k])}</td>`).join("") + "</tr>";
    }
    el.querySelector(".versions").innerHTML = rows + "</table>";
    const all = h.flatMap((s) => s.drifts.map((d) => ({ t: s.t, d: d })));
    el.querySelector(".drifts").innerHTML = all.length
      ? "<ul>" + all.slice(-10).reverse().map((e) => `<li class="drift">${esc(e.d[0])} at event time ${new Date(e.d[1]).toISOString()} (after ${e.d[2]} learned)</li>`).join("") + "</ul>"
      : "<p class='meta'>none detected</p>";
  }

  async function refresh() {
    try {
      const r = await fetch("/v1/dashboard?points=500");
      if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
      const data = await r.json();
      const names = Object.keys(data.models).sort();
      for (const name of names) draw(name, data.models[name]);
      document.getElementById("status").textContent =
        `${names.length} model(s), updated ${new Date(data.now * 1000).toLocaleTimeString()}`;
      document.body.dataset.ready = "true";
      document.getElementById("error").textContent = "";
    } catch (e) {
      document.getElementById("error").textContent = "refresh failed: " + e;
    }
  }
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
