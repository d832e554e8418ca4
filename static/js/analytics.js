/* Analytics page: draws the charts (static/js/charts.js) from the data the server embedded with json_script — the
   same selector output as the tables under each chart. Without JavaScript the tables are the page; with it, the
   tables fold away under "Data table" and stay there for anyone who wants the numbers. */
(function () {
  "use strict";

  var root = document.querySelector("[data-analytics-page]");
  var source = document.getElementById("analytics-chart-data");
  if (!root || !source || !window.CCGCharts) return;

  var data;
  try { data = JSON.parse(source.textContent); } catch (e) { return; }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  /* Buckets are ISO local starts ("2026-11-20T13:00:00+01:00"); show them in the workspace's chosen zone, as
     written, not in the browser's. */
  function bucketFormatter(interval) {
    return function (value) {
      var match = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2}))?/.exec(String(value || ""));
      if (!match) return String(value);
      if (interval === "hour") return match[2] + "-" + match[3] + " " + (match[4] || "00") + ":" + (match[5] || "00");
      if (interval === "week") return "wk " + match[2] + "-" + match[3];
      return match[2] + "-" + match[3];
    };
  }

  function seriesOf(spec) {
    return (spec || "").split(",").filter(Boolean).map(function (part) {
      var pieces = part.split(":");
      return { key: pieces[0], label: pieces.slice(1).join(":") || pieces[0] };
    });
  }

  var figures = root.querySelectorAll("figure[data-chart]");
  for (var i = 0; i < figures.length; i++) {
    var figure = figures[i];
    var rows = data[figure.getAttribute("data-chart-source")] || [];
    var options = {
      data: rows,
      x: figure.getAttribute("data-chart-x"),
      y: figure.getAttribute("data-chart-y"),
      label: figure.getAttribute("data-chart-label"),
      unit: figure.getAttribute("data-chart-unit") || "",
      series: seriesOf(figure.getAttribute("data-chart-series")),
      formatX: bucketFormatter(figure.getAttribute("data-chart-interval"))
    };
    try {
      if (figure.getAttribute("data-chart") === "line") window.CCGCharts.line(figure, options);
      else window.CCGCharts.bar(figure, options);
      figure.setAttribute("data-chart-ready", "true");
      var details = figure.nextElementSibling;
      if (details && details.tagName === "DETAILS" && rows.length) details.removeAttribute("open");
    } catch (error) {
      figure.setAttribute("data-chart-error", String(error && error.message || error));
    }
  }
})();
