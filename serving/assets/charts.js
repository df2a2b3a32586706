// Rivulet's charts: thin helpers over uPlot, shared by the replay report and the live dashboard.
// lineChart(el, {title, xLabel, x: [...], series: [{label, values}], markers: [{x, label}]}) -> uPlot
(function (global) {
  "use strict";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04"];

  function markerPlugin(markers) {
    return {
      hooks: {
        draw: [
          (u) => {
            if (!markers || !markers.length) return;
            const ctx = u.ctx;
            ctx.save();
            ctx.strokeStyle = "#f59e0b";
            ctx.fillStyle = "#b45309";
            ctx.setLineDash([4, 4]);
            ctx.lineWidth = 1;
            ctx.font = "10px sans-serif";
            for (const m of markers) {
              const x = Math.round(u.valToPos(m.x, "x", true));
              if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
              ctx.beginPath();
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
              if (m.label) ctx.fillText(m.label, x + 3, u.bbox.top + 10);
            }
            ctx.restore();
          },
        ],
      },
    };
  }

  function lineChart(el, spec) {
    const width = Math.max(320, (el.clientWidth || 640) - 8);
    const opts = {
      title: spec.title,
      width: width,
      height: spec.height || 240,
      scales: { x: { time: !!spec.time } },
      axes: [{ label: spec.xLabel || "" }, { label: spec.yLabel || "" }],
      series: [{ label: spec.xLabel || "x" }].concat(
        spec.series.map((s, i) => ({
          label: s.label,
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          points: { show: spec.x.length < 60 },
        }))
      ),
      plugins: [markerPlugin(spec.markers)],
    };
    const data = [spec.x].concat(spec.series.map((s) => s.values));
    return new uPlot(opts, data, el);
  }

  global.RivuletCharts = { lineChart: lineChart, colors: COLORS };
})(window);
