// Draws every <canvas data-chart="NAME"> from the JSON in #chart-data, with the vendored Chart.js.
(function () {
  "use strict";
  var source = document.getElementById("chart-data");
  if (!source || typeof Chart === "undefined") {
    return;
  }

  // Dollars as the pages print them: cents, or three significant digits below a cent.
  function money(value) {
    if (value === null || value === undefined) {
      return "";
    }
    var size = Math.abs(value);
    if (size === 0 || size >= 0.01) {
      return "$" + value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    }
    var places = 2 - Math.floor(Math.log10(size));
    return "$" + value.toFixed(places).replace(/0+$/, "");
  }

  function tooltipLabel(spec) {
    if (spec.money) {
      return function (item) {
        return item.dataset.label + ": " + money(item.raw);
      };
    }
    if (spec.unit) {
      return function (item) {
        return item.dataset.label + ": " + item.formattedValue + " " + spec.unit;
      };
    }
    return undefined;
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
    // Many series (errors by type) get their legend beside the plot, capped in width, so that
    // the plot keeps the box's height however many there are.
    var many = spec.datasets.length > 3;
    var label = tooltipLabel(spec);
    new Chart(canvas, {
      type: spec.type,
      data: { labels: spec.labels, datasets: spec.datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: {
            display: spec.datasets.length > 1,
            position: many ? "right" : "bottom",
            maxWidth: 260,
            maxHeight: 48,
            labels: { boxWidth: 12, boxHeight: 12 },
          },
          tooltip: { callbacks: label ? { label: label } : {} },
        },
        scales: {
          x: { stacked: !!spec.stacked, ticks: { maxTicksLimit: 12, autoSkip: true, maxRotation: 0 } },
          y: {
            stacked: !!spec.stacked,
            beginAtZero: true,
            ticks: spec.money ? { callback: money } : {},
          },
        },
      },
    });
  });
})();
