// ehrwatch console: evidence charts. Loaded as a file (the CSP allows no
// inline script); reads data-chart-* attributes the server wrote.
(function () {
  "use strict";
  function drawCharts(root) {
    if (typeof uPlot === "undefined") { return; }
    root.querySelectorAll("figure.evidence[data-chart-values]").forEach(function (fig) {
      var box = fig.querySelector(".chart");
      if (!box || box.dataset.drawn) { return; }
      var labels = fig.dataset.chartLabels.split("|");
      var values = fig.dataset.chartValues.split("|").map(Number);
      var xs = labels.map(function (_, i) { return i; });
      box.dataset.drawn = "1";
      new uPlot({
        width: 420, height: 200, legend: { show: false }, cursor: { show: false },
        scales: { x: { time: false, range: [-0.5, labels.length - 0.5] }, y: { range: function (u, min, max) { return [0, max * 1.15 || 1]; } } },
        axes: [{ values: function (u, splits) { return splits.map(function (s) { return labels[s] || ""; }); }, splits: function () { return xs; } }, {}],
        series: [{}, { label: "value", fill: "#0b4f8a", stroke: "#0b4f8a", paths: uPlot.paths.bars({ size: [0.6, 80] }), points: { show: false } }]
      }, [xs, values], box);
    });
  }
  document.addEventListener("DOMContentLoaded", function () { drawCharts(document); });
  document.addEventListener("htmx:afterSwap", function (e) { drawCharts(e.target); });
})();
