/* A small SVG chart module, no dependencies and nothing loaded from elsewhere: a line chart (several series, axes,
   ticks) and a horizontal bar chart. Every mark carries a <title> (the browser shows it as a tooltip, screen readers
   read it); the chart as a whole is an image with a text summary, and the page keeps the data table next to it.
   Charts follow their container's width and redraw when it changes.

   CCGCharts.line(container, {data, x, series: [{key, label}], label, unit, formatX})
   CCGCharts.bar(container, {data, x, y, label, unit})
   Text is only ever set with textContent. */
(function (global) {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var uid = 0;

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG_NS, name);
    for (var key in attrs) {
      if (Object.prototype.hasOwnProperty.call(attrs, key) && attrs[key] !== undefined && attrs[key] !== null) {
        node.setAttribute(key, String(attrs[key]));
      }
    }
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, attrs, content) {
    var node = el("text", attrs, parent);
    node.textContent = content;
    return node;
  }

  function tooltip(node, content) {
    var title = el("title", {}, node);
    title.textContent = content;
  }

  function isNumber(value) { return typeof value === "number" && isFinite(value); }

  /* Round step sizes (1, 2, 5 × 10^n) so that the axis has about `count` ticks from 0 to at least `max`. */
  function niceTicks(max, count) {
    if (!isNumber(max) || max <= 0) return [0, 1];
    var rough = max / Math.max(1, count);
    var power = Math.pow(10, Math.floor(Math.log(rough) / Math.LN10));
    var step = power;
    [1, 2, 5, 10].some(function (factor) {
      step = factor * power;
      return step >= rough;
    });
    if (step < 1 && max >= 1) step = 1;
    var ticks = [];
    for (var value = 0; value < max + step / 2; value += step) ticks.push(+value.toFixed(6));
    if (ticks[ticks.length - 1] < max) ticks.push(+(ticks[ticks.length - 1] + step).toFixed(6));
    return ticks;
  }

  function formatNumber(value, unit) {
    if (!isNumber(value)) return "–";
    var shown = Math.abs(value) >= 1000000 ? (value / 1000000).toFixed(1) + "M"
      : Math.abs(value) >= 10000 ? (value / 1000).toFixed(1) + "k"
      : (Math.round(value * 100) / 100).toString();
    return unit ? shown + " " + unit : shown;
  }

  function truncate(value, length) {
    value = String(value === null || value === undefined ? "" : value);
    return value.length > length ? value.slice(0, length - 1) + "…" : value;
  }

  function svgRoot(container, width, height, label, summary) {
    var id = "ccg-chart-" + (++uid);
    var svg = el("svg", {
      xmlns: SVG_NS, width: width, height: height, viewBox: "0 0 " + width + " " + height,
      role: "img", "aria-labelledby": id + "-t " + id + "-d", "class": "ccg-chart", focusable: "false"
    });
    var title = el("title", { id: id + "-t" }, svg);
    title.textContent = label || "Chart";
    var desc = el("desc", { id: id + "-d" }, svg);
    desc.textContent = summary;
    return svg;
  }

  function replaceDrawing(container, svg, legend) {
    var old = container.querySelectorAll(".ccg-chart, .ccg-legend, .ccg-empty");
    for (var i = 0; i < old.length; i++) old[i].remove();
    if (legend) container.appendChild(legend);
    container.appendChild(svg);
  }

  function legendFor(series) {
    var list = document.createElement("ul");
    list.className = "ccg-legend";
    series.forEach(function (s, index) {
      var item = document.createElement("li");
      var swatch = document.createElement("span");
      swatch.className = "ccg-swatch ccg-series-" + (index % 6);
      swatch.setAttribute("aria-hidden", "true");
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(s.label));
      list.appendChild(item);
    });
    return list;
  }

  function showEmpty(container, message) {
    var old = container.querySelectorAll(".ccg-chart, .ccg-legend, .ccg-empty");
    for (var i = 0; i < old.length; i++) old[i].remove();
    var p = document.createElement("p");
    p.className = "ccg-empty small muted";
    p.textContent = message;
    container.appendChild(p);
  }

  function containerWidth(container) {
    var width = container.clientWidth || (container.getBoundingClientRect && container.getBoundingClientRect().width);
    return Math.max(280, Math.floor(width || 640));
  }

  /* ---- line chart ---------------------------------------------------------------------------------------------- */

  function drawLine(container, options) {
    var data = options.data || [];
    var series = options.series || [];
    var formatX = options.formatX || function (value) { return String(value); };
    if (!data.length || !series.length) { showEmpty(container, options.emptyText || "No data in this range."); return; }

    var width = containerWidth(container);
    var height = options.height || 260;
    var margin = { top: 12, right: 16, bottom: 40, left: 52 };
    var plotW = width - margin.left - margin.right;
    var plotH = height - margin.top - margin.bottom;

    var max = 0;
    data.forEach(function (row) {
      series.forEach(function (s) { if (isNumber(row[s.key]) && row[s.key] > max) max = row[s.key]; });
    });
    var ticks = niceTicks(max, 5);
    var top = ticks[ticks.length - 1] || 1;
    var xAt = function (index) { return margin.left + (data.length === 1 ? plotW / 2 : index * plotW / (data.length - 1)); };
    var yAt = function (value) { return margin.top + plotH - (value / top) * plotH; };

    var totals = series.map(function (s) {
      return s.label + ": " + formatNumber(data.reduce(function (sum, row) {
        return sum + (isNumber(row[s.key]) ? row[s.key] : 0);
      }, 0), options.unit);
    });
    var summary = data.length + " periods from " + formatX(data[0][options.x]) + " to " +
      formatX(data[data.length - 1][options.x]) + (options.unit === "ms" ? "." : ". Totals — " + totals.join(", ") + ".");
    var svg = svgRoot(container, width, height, options.label, summary);

    // y axis: grid lines and values
    var yAxis = el("g", { "class": "ccg-axis ccg-axis-y", "aria-hidden": "true" }, svg);
    ticks.forEach(function (tick) {
      var y = yAt(tick);
      el("line", { x1: margin.left, x2: width - margin.right, y1: y, y2: y, "class": "ccg-grid" }, yAxis);
      text(yAxis, { x: margin.left - 6, y: y + 4, "text-anchor": "end" }, formatNumber(tick));
    });
    // x axis: a label every few points, so they never overlap
    var xAxis = el("g", { "class": "ccg-axis ccg-axis-x", "aria-hidden": "true" }, svg);
    el("line", { x1: margin.left, x2: width - margin.right, y1: margin.top + plotH, y2: margin.top + plotH, "class": "ccg-baseline" }, xAxis);
    var labelEvery = Math.max(1, Math.ceil(data.length / Math.max(2, Math.floor(plotW / 80))));
    data.forEach(function (row, index) {
      if (index % labelEvery !== 0) return;
      var x = xAt(index);
      el("line", { x1: x, x2: x, y1: margin.top + plotH, y2: margin.top + plotH + 4, "class": "ccg-tick" }, xAxis);
      text(xAxis, { x: x, y: margin.top + plotH + 18, "text-anchor": "middle" }, formatX(row[options.x]));
    });

    // one path per series; gaps (null) break the line
    series.forEach(function (s, seriesIndex) {
      var group = el("g", { "class": "ccg-series ccg-series-" + (seriesIndex % 6), "data-series": s.key }, svg);
      var d = "";
      var pen = false;
      data.forEach(function (row, index) {
        var value = row[s.key];
        if (!isNumber(value)) { pen = false; return; }
        d += (pen ? "L" : "M") + xAt(index).toFixed(1) + "," + yAt(value).toFixed(1);
        pen = true;
      });
      if (d) el("path", { d: d, "class": "ccg-line", fill: "none" }, group);
      data.forEach(function (row, index) {
        var value = row[s.key];
        if (!isNumber(value)) return;
        var point = el("circle", { cx: xAt(index).toFixed(1), cy: yAt(value).toFixed(1), r: data.length > 60 ? 2 : 3.5, "class": "ccg-point" }, group);
        tooltip(point, formatX(row[options.x]) + " — " + s.label + ": " + formatNumber(value, options.unit));
      });
    });

    replaceDrawing(container, svg, legendFor(series));
  }

  /* ---- horizontal bar chart ------------------------------------------------------------------------------------ */

  function drawBar(container, options) {
    var data = (options.data || []).filter(function (row) { return isNumber(row[options.y]); });
    if (!data.length) { showEmpty(container, options.emptyText || "No data in this range."); return; }

    var width = containerWidth(container);
    var labelChars = width < 480 ? 16 : 30;
    var margin = { top: 8, right: 48, bottom: 28, left: Math.min(Math.floor(width * 0.4), labelChars * 7 + 12) };
    var barH = 22;
    var gap = 8;
    var plotW = width - margin.left - margin.right;
    var plotH = data.length * (barH + gap);
    var height = margin.top + plotH + margin.bottom;

    var max = 0;
    data.forEach(function (row) { if (row[options.y] > max) max = row[options.y]; });
    var ticks = niceTicks(max, Math.max(2, Math.min(6, Math.floor(plotW / 70))));
    var right = ticks[ticks.length - 1] || 1;
    var xAt = function (value) { return margin.left + (value / right) * plotW; };

    var summary = data.map(function (row) { return row[options.x] + ": " + formatNumber(row[options.y], options.unit); }).join("; ");
    var svg = svgRoot(container, width, height, options.label, summary);

    var axis = el("g", { "class": "ccg-axis ccg-axis-x", "aria-hidden": "true" }, svg);
    ticks.forEach(function (tick) {
      var x = xAt(tick);
      el("line", { x1: x, x2: x, y1: margin.top, y2: margin.top + plotH, "class": "ccg-grid" }, axis);
      text(axis, { x: x, y: margin.top + plotH + 16, "text-anchor": "middle" }, formatNumber(tick));
    });

    var bars = el("g", { "class": "ccg-series ccg-series-0" }, svg);
    data.forEach(function (row, index) {
      var y = margin.top + index * (barH + gap) + gap / 2;
      var value = row[options.y];
      var group = el("g", { "class": "ccg-bar-row" }, bars);
      text(group, { x: margin.left - 8, y: y + barH / 2 + 4, "text-anchor": "end", "class": "ccg-bar-label" },
        truncate(row[options.x], labelChars));
      var bar = el("rect", { x: margin.left, y: y, width: Math.max(1, xAt(value) - margin.left).toFixed(1), height: barH, rx: 3, "class": "ccg-bar" }, group);
      tooltip(bar, row[options.x] + ": " + formatNumber(value, options.unit));
      text(group, { x: xAt(value) + 6, y: y + barH / 2 + 4, "class": "ccg-bar-value" }, formatNumber(value));
    });

    replaceDrawing(container, svg, null);
  }

  /* ---- responsive: redraw when the container's width changes --------------------------------------------------- */

  function responsive(draw) {
    return function (container, options) {
      draw(container, options);
      if (typeof ResizeObserver === "undefined") return;
      var lastWidth = container.clientWidth;
      var pending = null;
      new ResizeObserver(function () {
        if (container.clientWidth === lastWidth) return;
        lastWidth = container.clientWidth;
        clearTimeout(pending);
        pending = setTimeout(function () { draw(container, options); }, 120);
      }).observe(container);
    };
  }

  global.CCGCharts = {
    line: responsive(drawLine),
    bar: responsive(drawBar),
    niceTicks: niceTicks,
    formatNumber: formatNumber
  };
})(window);
