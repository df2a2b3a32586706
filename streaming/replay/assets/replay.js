// The replay report: reads the result embedded as JSON and draws the table and the charts.
"use strict";
const R = JSON.parse(document.getElementById("replay-data").textContent);
const models = Object.keys(R.models);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
document.getElementById("meta").textContent =
  `${R.records.toLocaleString()} records from ${R.source} in ${R.elapsed_s.toFixed(1)} s ` +
  `(${Math.round(R.events_per_s).toLocaleString()} records/s read); order: ${R.order}; labels: ${R.labels}`;
const metricNames = [...new Set(models.flatMap((m) => Object.keys(R.models[m].metrics)))].sort();
const finalNames = metricNames.filter((n) => !n.startsWith("rolling_"));
let rows = "<tr><th>model</th>" + finalNames.map((n) => `<th>${esc(n)}</th>`).join("") +
  "<th>learned</th><th>drifts</th></tr>";
for (const m of models) {
  const r = R.models[m];
  rows += `<tr><td>${esc(m)}</td>` + finalNames.map((n) => `<td>${n in r.metrics ? r.metrics[n].toFixed(4) : "-"}</td>`).join("") +
    `<td>${r.counters.learned}</td><td>${r.counters.drifts}</td></tr>`;
}
document.getElementById("final").innerHTML = rows;
const curves = document.getElementById("curves");
for (const metric of metricNames) {
  const xs = [...new Set(models.flatMap((m) => R.models[m].curve.map((p) => p[0])))].sort((a, b) => a - b);
  const series = models.map((m) => {
    const at = new Map(R.models[m].curve.map((p) => [p[0], p[2][metric]]));
    return { label: m, values: xs.map((x) => (at.has(x) ? at.get(x) : null)) };
  });
  const markers = models.flatMap((m) => R.models[m].drifts.map((d) => ({ x: d.records, label: m })));
  const el = document.createElement("div");
  el.className = "chart";
  el.dataset.metric = metric;
  curves.appendChild(el);
  RivuletCharts.lineChart(el, { title: metric, xLabel: "records", x: xs, series: series, markers: markers });
}
const tp = R.throughput;
const rate = tp.map((p, i) => (i === 0 ? (p[0] > 0 ? p[1] / p[0] : 0) : (p[1] - tp[i - 1][1]) / Math.max(1e-9, p[0] - tp[i - 1][0])));
RivuletCharts.lineChart(document.getElementById("throughput"), {
  title: "records/s", xLabel: "seconds", x: tp.map((p) => p[0]), series: [{ label: "records/s", values: rate }],
});
