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
    var x = { type: "linear", grace: "3%", title: { display: true, text: spec.x_label } };
    if (spec.x_integer) { x.ticks = { precision: 0 }; }
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
      var key = seriesKey(s.label);
      if (!(key in colors)) { colors[key] = PALETTE[Object.keys(colors).length % PALETTE.length]; }
      var color = s.scatter ? "#868e96" : colors[key];
      return {
        label: s.label,
        data: s.points.map(function (p) { return { x: p[0], y: p[1] }; }),
        showLine: !s.scatter, stepped: s.stepped ? "before" : false,
        borderDash: s.dashed ? [5, 4] : [], borderColor: color, backgroundColor: color,
        pointRadius: s.scatter ? 3 : 0, borderWidth: 2, fill: false
      };
    });
    return {
      type: "scatter",
      data: { datasets: datasets },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
                 scales: axes(spec), plugins: { legend: { position: "bottom" } } }
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
      var config = spec.kind === "pareto" ? paretoConfig(spec) : curvesConfig(spec);
      window.optforgeCharts[canvas.id] = new window.Chart(canvas, config);
      canvas.setAttribute("data-rendered", "1");
    });
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
