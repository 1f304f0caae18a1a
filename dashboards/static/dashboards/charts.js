// Draws every <canvas data-chart="NAME"> from the JSON in #chart-data, with the vendored Chart.js.
(function () {
  "use strict";
  var source = document.getElementById("chart-data");
  if (!source || typeof Chart === "undefined") {
    return;
  }
  var charts = JSON.parse(source.textContent);
  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    var spec = charts[canvas.dataset.chart];
    if (!spec) {
      return;
    }
    var line = spec.type === "line";
    spec.datasets.forEach(function (dataset) {
      if (line) {
        dataset.fill = false;
        dataset.pointRadius = spec.labels.length > 60 ? 0 : 2;
        dataset.borderWidth = 2;
        dataset.spanGaps = true;
      }
    });
    new Chart(canvas, {
      type: spec.type,
      data: { labels: spec.labels, datasets: spec.datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: { display: spec.datasets.length > 1, position: "bottom" },
          tooltip: {
            callbacks: spec.unit
              ? {
                  label: function (item) {
                    return item.dataset.label + ": " + item.formattedValue + " " + spec.unit;
                  },
                }
              : {},
          },
        },
        scales: {
          x: { stacked: !!spec.stacked, ticks: { maxTicksLimit: 12, autoSkip: true } },
          y: { stacked: !!spec.stacked, beginAtZero: true },
        },
      },
    });
  });
})();
