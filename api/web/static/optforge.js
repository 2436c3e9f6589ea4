/* optforge web pages: charts (vendored Chart.js), clickable rows, selector, copy button. */
(function () {
  "use strict";

  var PALETTE = ["#1c7ed6", "#d9480f", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599",
                 "#e03131", "#5f3dc4", "#66a80f", "#c2255c"];
  var FRONT = "#d9480f";
  var POINT = "#1c7ed6";
  window.optforgeCharts = {};

  function readSpec(canvas) {
    var node = document.getElementById(canvas.getAttribute("data-chart"));
    return node ? JSON.parse(node.textContent) : null;
  }

  function fmt(v) {
    return typeof v === "number" ? Number(v.toPrecision(4)).toString() : String(v);
  }

  // Draws the `label` of each point of datasets flagged `ofLabels` (seed presets, front trials).
  var labelPlugin = {
    id: "ofLabels",
    afterDatasetsDraw: function (chart) {
      var ctx = chart.ctx;
      ctx.save();
      ctx.font = "12px system-ui, sans-serif";
      ctx.fillStyle = "#212529";
      chart.data.datasets.forEach(function (ds, i) {
        if (!ds.ofLabels) { return; }
        chart.getDatasetMeta(i).data.forEach(function (el, j) {
          var p = ds.data[j];
          if (p && p.label) { ctx.fillText(p.label, el.x + 7, el.y - 7); }
        });
      });
      ctx.restore();
    }
  };

  function axes(spec) {
    var x = { type: spec.x_log ? "logarithmic" : "linear", grace: "3%",
              title: { display: true, text: spec.x_label } };
    if (spec.x_integer) { x.ticks = { precision: 0 }; }
    if (spec.x_labels) {  // a categorical parameter: integer positions named by the labels
      x.min = -0.5; x.max = spec.x_labels.length - 0.5;
      x.ticks = { stepSize: 1, callback: function (v) { return spec.x_labels[v] !== undefined ? spec.x_labels[v] : ""; } };
    }
    return { x: x, y: { type: "linear", grace: "3%", title: { display: true, text: spec.y_label } } };
  }

  function paretoConfig(spec) {
    var pts = spec.points.map(function (p) {
      return { x: p.x, y: p.y, label: p.label, href: p.href, hash: p.hash, pareto: p.pareto };
    });
    var front = pts.filter(function (p) { return p.pareto; })
      .sort(function (a, b) { return a.x - b.x || a.y - b.y; });
    return {
      type: "scatter",
      data: { datasets: [
        { label: "recipes", data: pts, ofLabels: true, pointRadius: 6, pointHoverRadius: 8,
          backgroundColor: pts.map(function (p) { return p.pareto ? FRONT : POINT; }) },
        // Horizontal first: the boundary of the region the front dominates (both minimised).
        { label: "Pareto front", data: front, showLine: true, stepped: "before", fill: false,
          pointRadius: 0, pointHitRadius: 0, borderColor: FRONT, borderWidth: 2 }
      ] },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        layout: { padding: { top: 12, right: 80 } },
        scales: axes(spec),
        interaction: { mode: "nearest", intersect: true },
        plugins: { legend: { display: false }, tooltip: { filter: function (item) { return item.datasetIndex === 0; },
          callbacks: { label: function (c) {
            var p = c.raw;
            return (p.label || p.hash.slice(0, 10)) + ": loss " + fmt(p.y) + ", " + fmt(p.x) + " B/param";
          } } } },
        onHover: function (evt, els) {
          evt.native.target.style.cursor = els.some(function (e) { return e.datasetIndex === 0; }) ? "pointer" : "default";
        },
        onClick: function (evt, els) {
          var el = els.find(function (e) { return e.datasetIndex === 0; });
          if (el && pts[el.index].href) { window.location.href = pts[el.index].href; }
        }
      },
      plugins: [labelPlugin]
    };
  }

  function seriesKey(label) {
    var i = label.lastIndexOf(" ");
    return i > 0 ? label.slice(0, i) : label;
  }

  function curvesConfig(spec) {
    var colors = {};
    var datasets = spec.series.map(function (s) {
      var key = s.group || seriesKey(s.label);
      if (!(key in colors)) { colors[key] = PALETTE[Object.keys(colors).length % PALETTE.length]; }
      var color = s.scatter ? "#868e96" : colors[key];
      var ds = {
        label: s.label,
        data: s.points.map(function (p) { return { x: p[0], y: p[1] }; }),
        showLine: !s.scatter, stepped: s.stepped ? "before" : false,
        borderDash: s.dashed ? [5, 4] : [], borderColor: color, backgroundColor: color,
        pointRadius: s.scatter ? 3 : 0, borderWidth: 2, fill: false, ofBand: s.band || null
      };
      if (s.band) {  // mean ± std over seeds: the upper edge fills down to the lower one
        ds.borderWidth = 0; ds.pointRadius = 0; ds.pointHitRadius = 0;
        ds.backgroundColor = color + "33";
        ds.fill = s.band === "upper" ? "+1" : false;
      }
      return ds;
    });
    return {
      type: "scatter",
      data: { datasets: datasets },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
                 scales: axes(spec), plugins: { legend: { position: "bottom", labels: {
                   filter: function (item, data) { return data.datasets[item.datasetIndex].ofBand !== "lower"; } } } } }
    };
  }

  // Parallel coordinates: x = axis index, y = each axis scaled to [0, 1]; tick labels per axis.
  var axisLabelPlugin = {
    id: "ofAxes",
    afterDraw: function (chart) {
      var spec = chart.options.ofSpec, ctx = chart.ctx, xs = chart.scales.x, ys = chart.scales.y;
      if (!spec) { return; }
      ctx.save();
      ctx.font = "11px system-ui, sans-serif";
      ctx.fillStyle = "#495057";
      ctx.strokeStyle = "#adb5bd";
      spec.axes.forEach(function (ax, i) {
        var x = xs.getPixelForValue(i);
        ctx.beginPath(); ctx.moveTo(x, ys.getPixelForValue(0)); ctx.lineTo(x, ys.getPixelForValue(1)); ctx.stroke();
        var ticks = ax.kind === "cat"
          ? ax.labels.map(function (l, j) { return [ax.labels.length > 1 ? j / (ax.labels.length - 1) : 0.5, l]; })
          : [[0, fmt(ax.min)], [1, fmt(ax.max)]];
        ticks.forEach(function (t) { ctx.fillText(t[1], x + 4, ys.getPixelForValue(t[0]) + 4); });
      });
      ctx.restore();
    }
  };

  function scoreColor(score) {  // best (0) dark blue .. worst (1) light orange
    var s = typeof score === "number" ? Math.min(1, Math.max(0, score)) : 0.5;
    var r = Math.round(28 + s * (247 - 28)), g = Math.round(126 + s * (159 - 126)), b = Math.round(214 + s * (68 - 214));
    return "rgba(" + r + "," + g + "," + b + ",0.75)";
  }

  function parallelConfig(spec) {
    var datasets = spec.lines.map(function (line) {
      return { label: line.label, raw: line.raw, data: line.values, borderColor: scoreColor(line.score),
               backgroundColor: scoreColor(line.score), borderWidth: 1.5, pointRadius: 2, spanGaps: false };
    });
    return {
      type: "line",
      data: { labels: spec.axes.map(function (a) { return a.name; }), datasets: datasets },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, ofSpec: spec,
        layout: { padding: { right: 60 } },
        scales: { x: { type: "category", offset: false, grid: { display: false } },
                  y: { min: -0.02, max: 1.02, display: false } },
        plugins: { legend: { display: false }, tooltip: { callbacks: { label: function (c) {
          return c.dataset.label + ": " + spec.axes[c.dataIndex].name + " = " + c.dataset.raw[c.dataIndex];
        } } } }
      },
      plugins: [axisLabelPlugin]
    };
  }

  function barsConfig(spec) {
    return {
      type: "bar",
      data: { labels: spec.labels, datasets: spec.series.map(function (s, i) {
        return { label: s.label, data: s.values, backgroundColor: PALETTE[i % PALETTE.length] };
      }) },
      options: { animation: false, responsive: true, maintainAspectRatio: false, indexAxis: "y",
                 scales: { x: { min: 0, title: { display: true, text: spec.x_label || "" } } },
                 plugins: { legend: { position: "bottom" } } }
    };
  }

  function drawCharts() {
    var canvases = document.querySelectorAll("canvas[data-chart]");
    if (!canvases.length) { return; }
    if (typeof window.Chart === "undefined") {
      console.warn("optforge: Chart.js is not loaded; charts skipped");
      return;
    }
    canvases.forEach(function (canvas) {
      var spec = readSpec(canvas);
      if (!spec) { return; }
      if (spec.src) { fetchAndDraw(canvas, spec.src); return; }
      draw(canvas, spec);
    });
  }

  function draw(canvas, spec) {
    var make = { pareto: paretoConfig, parallel: parallelConfig, bars: barsConfig }[spec.kind] || curvesConfig;
    window.optforgeCharts[canvas.id] = new window.Chart(canvas, make(spec));
    canvas.setAttribute("data-rendered", "1");
  }

  // Charts that take a while to compute (fANOVA importances) come from their own URL.
  function fetchAndDraw(canvas, src) {
    fetch(src, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (spec) {
        if (spec && spec.labels && spec.labels.length) { draw(canvas, spec); return; }
        canvas.parentNode.hidden = true;
        var note = document.getElementById("no-" + canvas.id.replace(/^study-/, ""));
        if (note) { note.hidden = false; }
        canvas.setAttribute("data-rendered", "empty");
      })
      .catch(function () { canvas.setAttribute("data-rendered", "error"); });
  }

  function wireRows() {
    document.querySelectorAll("tr[data-href]").forEach(function (row) {
      row.addEventListener("click", function (evt) {
        if (evt.target.closest("a")) { return; }
        window.location.href = row.getAttribute("data-href");
      });
    });
  }

  function wireSelector() {
    var sel = document.getElementById("board-select");
    if (!sel) { return; }
    sel.addEventListener("change", function () {
      var parts = sel.value.split("|");
      window.location.href = "/?workload=" + encodeURIComponent(parts[0]) + "&steps=" + encodeURIComponent(parts[1]);
    });
  }

  function wireCopy() {
    document.querySelectorAll("button[data-copy]").forEach(function (btn) {
      btn.addEventListener("click", function () {
        var text = document.getElementById(btn.getAttribute("data-copy")).textContent;
        var done = function () { btn.textContent = "Copied"; };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { btn.textContent = "Select and copy"; });
        } else {
          btn.textContent = "Select and copy";
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts();
    wireRows();
    wireSelector();
    wireCopy();
  });
})();
