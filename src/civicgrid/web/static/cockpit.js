/* The digital cockpit in the browser: draws every panel's table (PanelData) as its chart kind
   with ECharts, the map with Leaflet over a plain background (offline: GeoJSON from
   /api/v1/regions/geojson, no tiles), and asks for fresh numbers every few seconds.

   The page carries the first answer (#cockpit-data) and the words it needs (#cockpit-strings).
   Every refresh is one request for all panels; the server computes each panel once per
   interval for all screens of the same scope, so many screens cost the database nothing more. */
(function () {
  "use strict";
  var root = document.getElementById("cockpit");
  if (!root || !window.echarts) return;
  var S = JSON.parse(document.getElementById("cockpit-strings").textContent);
  var initial = JSON.parse(document.getElementById("cockpit-data").textContent);
  var code = root.dataset.code;
  var view = root.dataset.view;
  var query = root.dataset.query || "";
  var dark = root.dataset.theme === "dark";
  var refreshMs = Math.max(2, Number(root.dataset.refresh) || 4) * 1000;
  var en = document.documentElement.lang === "en";
  var locale = en ? "en-GB" : "zh-CN";
  var PALETTE = dark
    ? ["#3aa0ff", "#4fd1c5", "#ffd43b", "#ff8787", "#b197fc", "#69db7c", "#ffa94d"]
    : ["#1d4f91", "#2f9e44", "#e8590c", "#862e9c", "#c92a2a", "#1098ad", "#f08c00"];
  var TEXT = dark ? "#d8e6f8" : "#1f2933";
  var AXIS = dark ? "#5b7aa3" : "#9aa5b1";
  var SPLIT = dark ? "rgba(124,196,255,.12)" : "#eef2f7";
  var charts = {};
  var maps = {};

  function fill(text, params) {
    return String(text).replace(/\{(\w+)\}/g, function (m, k) { return k in params ? params[k] : m; });
  }

  function fmt(v, unit) {
    if (v === null || v === undefined || v === "") return "—";
    if (unit === "%") return Number(v).toFixed(1) + "%";
    if (typeof v === "number") {
      return Number.isInteger(v) ? v.toLocaleString(locale) : v.toLocaleString(locale, { maximumFractionDigits: 1 });
    }
    return String(v);
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function valueColumns(p) {
    // Series: the columns after the first that share the unit of the first value column.
    var cols = p.columns, out = [];
    for (var i = 1; i < cols.length; i++) {
      if (cols[i].key === "url" || cols[i].key === "code") continue;
      if (!out.length || cols[i].unit === cols[out[0]].unit) out.push(i);
    }
    return out;
  }

  function tooltipRows(p, row) {
    return p.columns.map(function (c, i) {
      return c.key === "url" ? "" : c.label + ": " + fmt(row[i], c.unit);
    }).filter(Boolean).join("<br>");
  }

  function base() {
    return {
      color: PALETTE,
      backgroundColor: "transparent",
      textStyle: { color: TEXT, fontSize: dark ? 14 : 12 },
      animationDurationUpdate: 600,
      grid: { left: 8, right: 16, top: 34, bottom: 8, containLabel: true },
      legend: { top: 0, textStyle: { color: TEXT, fontSize: dark ? 14 : 12 } },
      tooltip: { trigger: "axis", confine: true },
    };
  }

  function axisStyle(extra) {
    return Object.assign({
      axisLine: { lineStyle: { color: AXIS } },
      axisLabel: { color: TEXT, fontSize: dark ? 13 : 11 },
      splitLine: { lineStyle: { color: SPLIT } },
    }, extra || {});
  }

  function option(p) {
    var o = base();
    var rows = p.rows || [];
    var cats = rows.map(function (r) { return r[0]; });
    var vals = valueColumns(p);
    var unit = vals.length ? p.columns[vals[0]].unit : "";
    var fmtAxis = function (v) { return unit === "%" ? v + "%" : v; };
    if (p.kind === "line") {
      o.xAxis = axisStyle({ type: "category", data: cats.map(function (d) { return String(d).slice(5); }), boundaryGap: false });
      o.yAxis = axisStyle({ type: "value", minInterval: 1 });
      o.series = vals.map(function (i) {
        return { type: "line", name: p.columns[i].label, smooth: true, showSymbol: false, areaStyle: { opacity: 0.08 },
                 data: rows.map(function (r) { return r[i]; }) };
      });
    } else if (p.kind === "bar") {
      o.xAxis = axisStyle({ type: "category", data: cats, axisLabel: { color: TEXT, interval: 0, rotate: cats.length > 6 ? 30 : 0, fontSize: dark ? 13 : 11 } });
      o.yAxis = axisStyle({ type: "value", axisLabel: { color: TEXT, formatter: fmtAxis } });
      o.tooltip = { trigger: "axis", confine: true, formatter: function (ps) { return tooltipRows(p, rows[ps[0].dataIndex]); } };
      o.series = vals.map(function (i) {
        return { type: "bar", name: p.columns[i].label, barMaxWidth: 28, data: rows.map(function (r) { return r[i]; }) };
      });
      if (p.extra && p.extra.target !== undefined && p.extra.target !== null && o.series.length) {
        o.series[0].markLine = { symbol: "none", lineStyle: { color: "#e03131", type: "dashed" },
          label: { position: "insideEndTop", formatter: S.target + " " + fmtAxis(p.extra.target), color: "#e03131" },
          data: [{ yAxis: p.extra.target }] };
        o.series[0].itemStyle = { color: function (d) { return d.value !== null && d.value < p.extra.target ? "#f76707" : PALETTE[0]; } };
      }
    } else if (p.kind === "ranking") {
      var i0 = vals.length ? vals[0] : 1;
      o.grid.top = 8;
      o.grid.right = 48;
      o.legend = { show: false };
      o.yAxis = axisStyle({ type: "category", inverse: true, data: cats, axisLabel: { color: TEXT, width: dark ? 150 : 120, overflow: "truncate", fontSize: dark ? 13 : 11 } });
      o.xAxis = axisStyle({ type: "value", axisLabel: { color: TEXT, formatter: fmtAxis } });
      o.tooltip = { trigger: "axis", confine: true, formatter: function (ps) { return tooltipRows(p, rows[ps[0].dataIndex]); } };
      o.series = [{ type: "bar", name: p.columns[i0].label, barMaxWidth: 16,
        label: { show: true, position: "right", color: TEXT, formatter: function (d) { return fmt(d.value, p.columns[i0].unit); } },
        data: rows.map(function (r) { return r[i0]; }) }];
    } else if (p.kind === "pie") {
      o.tooltip = { trigger: "item", confine: true };
      o.legend = { bottom: 0, textStyle: { color: TEXT } };
      o.series = [{ type: "pie", radius: ["38%", "66%"], center: ["50%", "45%"],
        label: { color: TEXT, formatter: "{b}\n{c} ({d}%)", fontSize: dark ? 13 : 11 },
        data: rows.map(function (r) { return { name: r[0], value: r[1] }; }) }];
    } else if (p.kind === "funnel") {
      o.tooltip = { trigger: "item", confine: true };
      o.legend = { show: false };
      o.series = [{ type: "funnel", sort: "none", left: "8%", width: "84%", top: 8, bottom: 8, gap: 2, minSize: "24%",
        label: { position: "inside", color: "#fff", fontSize: dark ? 14 : 12, formatter: function (d) { return d.name + " " + fmt(d.value); } },
        data: rows.map(function (r) { return { name: r[0], value: r[1] }; }) }];
    } else if (p.kind === "gauge") {
      var r0 = rows[0] || [null, null];
      var target = r0[1] === null || r0[1] === undefined ? null : r0[1];
      var v = r0[0] === null || r0[0] === undefined ? null : Math.round(r0[0] * 1000) / 10;
      o.tooltip = { show: false };
      o.series = [{ type: "gauge", min: 0, max: 100, radius: "92%", center: ["50%", "58%"],
        progress: { show: true, width: 14 },
        axisLine: { lineStyle: { width: 14, color: target === null ? [[1, AXIS]] : [[target, "#f76707"], [1, "#2f9e44"]] } },
        axisTick: { show: false }, splitLine: { length: 8, lineStyle: { color: AXIS } },
        axisLabel: { color: TEXT, distance: 18, fontSize: 11 }, pointer: { width: 4 },
        title: { show: target !== null, offsetCenter: [0, "72%"], color: TEXT, fontSize: 12 },
        detail: { valueAnimation: true, offsetCenter: [0, "40%"], color: TEXT, fontSize: dark ? 30 : 22,
          formatter: function (x) { return v === null ? "—" : x + "%"; } },
        data: [{ value: v === null ? 0 : v, name: target === null ? "" : S.target + " " + Math.round(target * 100) + "%" }] }];
    }
    return o;
  }

  function renderTable(body, p) {
    var box = body.querySelector(".cp-table");
    if (!box) return;
    var cols = p.columns;
    var urlI = cols.map(function (c) { return c.key; }).indexOf("url");
    var wide = (p.extra && p.extra.wide) || [];
    var cls = function (c) { return wide.indexOf(c.key) >= 0 ? { class: "cp-wide" } : {}; };
    var table = el("table");
    var tr = el("tr");
    cols.forEach(function (c) {
      if (c.key !== "url") tr.appendChild(el("th", cls(c), c.label + (c.unit && c.unit !== "%" ? " (" + c.unit + ")" : "")));
    });
    var thead = el("thead"); thead.appendChild(tr); table.appendChild(thead);
    var tbody = el("tbody");
    (p.rows || []).forEach(function (r) {
      var row = el("tr");
      cols.forEach(function (c, i) {
        if (c.key === "url") return;
        var td = el("td", cls(c));
        if (i === 0 && urlI >= 0 && r[urlI]) {
          var a = el("a", { href: r[urlI] }, fmt(r[i], c.unit));
          td.appendChild(a);
        } else td.textContent = fmt(r[i], c.unit);
        row.appendChild(td);
      });
      tbody.appendChild(row);
    });
    if (!(p.rows || []).length) {
      var empty = el("tr"); empty.appendChild(el("td", { colspan: String(cols.length), class: "muted" }, S.nothing));
      tbody.appendChild(empty);
    }
    table.appendChild(tbody);
    box.innerHTML = "";
    box.appendChild(table);
  }

  function renderNumbers(panel, p) {
    var row = (p.rows || [])[0] || [];
    panel.querySelectorAll(".cp-fig").forEach(function (fig) {
      var i = Number(fig.dataset.col);
      var num = fig.querySelector(".cp-num");
      var text = fmt(row[i], (p.columns[i] || {}).unit);
      if (num.textContent !== text) {
        if (num.textContent) {
          num.classList.add("changed");
          setTimeout(function () { num.classList.remove("changed"); }, 2500);
        }
        num.textContent = text;
      }
    });
  }

  function note(panel, p) {
    var n = panel.querySelector("[data-note]");
    if (!n) return;
    var ex = p.extra || {};
    var total = ex.total !== undefined ? ex.total : (ex.idle !== undefined ? ex.idle : ex.workers);
    var shown = (p.rows || []).length;
    var parts = [];
    if (total !== undefined && total !== null && total > shown) parts.push(fill(S.of_total, { shown: shown, total: total.toLocaleString(locale) }));
    if (ex.note) parts.push(ex.note);
    n.textContent = parts.join(" · ");
  }

  function render(panel, p) {
    panel.dataset.rows = String((p.rows || []).length);
    if (p.error) return;
    var kind = p.kind;
    note(panel, p);
    if (kind === "number") return renderNumbers(panel, p);
    if (kind === "map") return drawMap(panel, p);
    var body = panel.querySelector(".cp-body");
    renderTable(body, p);
    if (kind === "table") return;
    var box = body.querySelector("[data-chart]");
    var chart = charts[p.key];
    if (!chart) {
      chart = charts[p.key] = echarts.init(box, dark ? "dark" : null, { renderer: "canvas" });
    }
    chart.setOption(option(p), { notMerge: false, replaceMerge: ["series", "xAxis", "yAxis"] });
    panel.dataset.ready = "1";
  }

  // ---- the map: choropleth of the shown region's children, event points, drill-down ----------

  var geoCache = {};
  function geojson(parent) {
    if (!geoCache[parent]) {
      geoCache[parent] = fetch("/api/v1/regions/geojson?parent=" + encodeURIComponent(parent),
        { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : { type: "FeatureCollection", features: [] }; });
    }
    return geoCache[parent];
  }

  var SHADES = dark
    ? ["#12305c", "#1c4f8a", "#2b74b8", "#3aa0ff", "#7cc4ff"]
    : ["#e7f0fb", "#bcd5f2", "#7faee3", "#3f7fcb", "#1d4f91"];
  var STATE_COLOURS = { closed: "#2f9e44", rated: "#2f9e44", archived: "#2f9e44", rejected: "#868e96", merged: "#868e96" };

  function drawMap(panel, p) {
    var m = maps[p.key];
    if (!m) {
      var box = panel.querySelector("[data-map]");
      var map = L.map(box, { attributionControl: false, zoomSnap: 0.25, minZoom: 3 });
      map.setView([28.65, 121.4], 9);
      m = maps[p.key] = { map: map, panel: panel, code: p.extra.region.code, data: null, areas: null, points: null, parent: null,
                          metric: 2, legend: null };
      panel.querySelector("[data-metric]").addEventListener("change", function (e) {
        m.metric = Number(e.target.value); restyle(m);
      });
      panel.addEventListener("click", function (e) {
        var a = e.target.closest("[data-drill]");
        if (a) { e.preventDefault(); drill(m, a.dataset.drill); }
      });
    }
    m.data = p;
    m.code = p.extra.region.code;
    crumbs(m);
    var parent = p.extra.parent;
    if (m.parent !== parent) {
      m.parent = parent;
      geojson(parent).then(function (fc) {
        if (m.parent !== parent) return;
        if (m.areas) m.map.removeLayer(m.areas);
        m.areas = L.geoJSON(fc, {
          style: function () { return { className: "cp-area", color: dark ? "#7cc4ff" : "#52606d", weight: 1, fillOpacity: 0.75 }; },
          onEachFeature: function (f, layer) {
            layer.on("click", function () { drill(m, f.properties.code); });
            layer.on("mouseover", function () { layer.setStyle({ weight: 3 }); });
            layer.on("mouseout", function () { layer.setStyle({ weight: f.properties.code === m.data.extra.focus ? 3 : 1 }); });
          },
        }).addTo(m.map);
        restyle(m);
        fit(m);
        points(m);
        panel.querySelector("[data-map]").dataset.ready = String(fc.features.length);
      });
    } else {
      restyle(m);
      fit(m);
      points(m);
      panel.querySelector("[data-map]").dataset.ready = String(m.areas ? m.areas.getLayers().length : 0);
    }
    renderTable(panel.querySelector(".cp-body"), p);
  }

  function fit(m) {
    // Zoom to the shown region once per drill (a refresh keeps the reader's own zoom).
    if (!m.areas || m.fitted === m.code) return;
    m.fitted = m.code;
    var focus = m.data.extra.focus, target = null;
    if (focus) m.areas.eachLayer(function (l) { if (l.feature.properties.code === focus) target = l; });
    var b = (target || m.areas).getBounds();
    if (b.isValid()) m.map.fitBounds(b, { padding: [12, 12], maxZoom: target ? 16 : 18 });
  }

  function restyle(m) {
    if (!m.areas || !m.data) return;
    var rows = {};
    var max = 0;
    m.data.rows.forEach(function (r) { rows[r[0]] = r; max = Math.max(max, r[m.metric] || 0); });
    var focus = m.data.extra.focus;
    m.areas.eachLayer(function (layer) {
      var f = layer.feature, r = rows[f.properties.code];
      var v = r ? r[m.metric] || 0 : 0;
      var shade = max ? SHADES[Math.min(SHADES.length - 1, Math.floor((v / max) * (SHADES.length - 0.001)))] : SHADES[0];
      var inFocus = !focus || f.properties.code === focus;
      var path = layer.getElement && layer.getElement();
      if (path) path.classList.toggle("cp-focus", !!focus && f.properties.code === focus);
      layer.setStyle({ fillColor: shade, fillOpacity: inFocus ? 0.8 : 0.25, weight: f.properties.code === focus ? 3 : 1,
                       color: f.properties.code === focus ? "#e03131" : (dark ? "#7cc4ff" : "#52606d") });
      var name = (en && f.properties.name_en) ? f.properties.name_en : f.properties.name;
      var tip = "<div class='cp-tip'><strong>" + escapeHtml(name) + "</strong>" + (r ? "<br>" + tooltipRows(m.data, r).split("<br>").slice(2).join("<br>") : "") + "</div>";
      layer.unbindTooltip();
      layer.bindTooltip(tip, { sticky: true });
    });
    if (m.legend) m.map.removeControl(m.legend);
    m.legend = L.control({ position: "bottomright" });
    m.legend.onAdd = function () {
      var d = L.DomUtil.create("div", "cp-legend");
      var label = m.data.columns[m.metric].label;
      var html = "<strong>" + escapeHtml(label) + "</strong><br>";
      for (var i = 0; i < SHADES.length; i++) {
        var lo = Math.round((max * i) / SHADES.length), hi = Math.round((max * (i + 1)) / SHADES.length);
        html += "<i style='background:" + SHADES[i] + "'></i>" + lo + "–" + hi + "<br>";
      }
      d.innerHTML = html;
      return d;
    };
    m.legend.addTo(m.map);
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]; });
  }

  function points(m) {
    if (m.points) m.map.removeLayer(m.points);
    var layer = L.layerGroup();
    (m.data.extra.points || []).forEach(function (pt) {
      var colour = STATE_COLOURS[pt[3]] || "#f76707";
      var c = L.circleMarker([pt[1], pt[0]], { radius: dark ? 3.5 : 3, weight: 0, fillColor: colour, fillOpacity: 0.9 });
      c.bindPopup("<a href='/events/" + encodeURIComponent(pt[2]) + "'>" + escapeHtml(pt[2]) + "</a><br>" + escapeHtml((S.states || {})[pt[3]] || pt[3]));
      layer.addLayer(c);
    });
    m.points = layer.addTo(m.map);
  }

  function crumbs(m) {
    var nav = m.panel.querySelector("[data-crumbs] ol");
    var list = m.data.extra.crumbs || [];
    nav.innerHTML = "";
    list.forEach(function (c, i) {
      var li = el("li");
      var name = (en && c.name_en) ? c.name_en : c.name;
      if (i < list.length - 1) {
        var a = el("a", { href: "#", "data-drill": c.code }, name);
        li.appendChild(a);
      } else li.appendChild(el("span", { "aria-current": "location" }, name));
      nav.appendChild(li);
    });
    var open = m.panel.querySelector("[data-open-cockpit]");
    var r = m.data.extra.region;
    var opens = (r.level === "county" || r.level === "township" || r.level === "city") && r.code !== code;
    open.hidden = !opens;
    if (opens) {
      open.href = "/cockpit/" + r.code + (view === "screen" ? "/screen" : "") + "?" + query;
      open.textContent = fill(S.open_cockpit, { name: r.name });
    }
    var box = m.panel.querySelector("[data-map]");
    box.dataset.code = r.code;
    box.dataset.level = r.level;
  }

  function drill(m, target) {
    if (!target || target === m.code) return;
    m.code = target;
    var box = m.panel.querySelector("[data-map]");
    delete box.dataset.ready;
    return fetchPanel(m.data.key, target).then(function (p) {
      if (p && m.code === target) render(m.panel, p);
    });
  }

  function fetchPanel(key, regionCode) {
    var url = "/api/v1/cockpit/" + encodeURIComponent(regionCode) + "/panels/" + encodeURIComponent(key) + "?" + query;
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; });
  }

  // ---- exports and toggles ------------------------------------------------------------------

  root.addEventListener("click", function (e) {
    var png = e.target.closest("[data-png]");
    var toggle = e.target.closest("[data-toggle-table]");
    if (png) {
      var panel = png.closest(".cp-panel");
      var chart = charts[panel.dataset.key];
      if (!chart) return;
      var url = chart.getDataURL({ type: "png", pixelRatio: 2, backgroundColor: dark ? "#0a224a" : "#ffffff" });
      var a = el("a", { href: url, download: "cockpit-" + code + "-" + panel.dataset.key + ".png" });
      document.body.appendChild(a);
      a.click();
      a.remove();
    } else if (toggle) {
      var p2 = toggle.closest(".cp-panel");
      var table = p2.querySelector(".cp-body .cp-table");
      var chartBox = p2.querySelector("[data-chart]");
      var showTable = table.hidden;
      table.hidden = !showTable;
      chartBox.hidden = showTable;
      toggle.textContent = showTable ? S.chart : S.data;
      if (!showTable && charts[p2.dataset.key]) charts[p2.dataset.key].resize();
    }
  });

  var fsButton = root.querySelector("[data-fullscreen]");
  if (fsButton) {
    fsButton.addEventListener("click", function () {
      if (document.fullscreenElement) document.exitFullscreen();
      else if (document.documentElement.requestFullscreen) document.documentElement.requestFullscreen();
    });
  }
  var clock = root.querySelector("[data-clock]");
  function tick() {
    if (clock) clock.textContent = new Date().toLocaleString(locale, { hour12: false });
  }
  tick();
  setInterval(tick, 1000);

  // ---- live refresh ---------------------------------------------------------------------------

  var asOf = root.querySelectorAll("[data-as-of]");
  function showAsOf(iso) {
    var t = new Date(iso);
    asOf.forEach(function (n) { n.textContent = t.toLocaleTimeString(locale, { hour12: false }); n.setAttribute("datetime", iso); });
  }

  function apply(data) {
    Object.keys(data.panels || {}).forEach(function (key) {
      var panel = root.querySelector('.cp-panel[data-key="' + key + '"]');
      var p = data.panels[key];
      if (!panel) return;
      if (p.kind === "map" && maps[key] && maps[key].code !== code) return; // drilled: refreshed on its own
      render(panel, p);
    });
    if (data.as_of) showAsOf(data.as_of);
  }

  var busy = false;
  function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    var live = root.querySelector("[data-live]");
    var url = "/api/v1/cockpit/" + encodeURIComponent(code) + "/data?view=" + view + "&" + query;
    var drilled = Object.keys(maps).filter(function (k) { return maps[k].code !== code; });
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
      .then(function (data) {
        apply(data);
        if (live) { live.classList.remove("stale"); live.removeAttribute("data-stale"); }
        return Promise.all(drilled.map(function (k) {
          var m = maps[k], at = m.code;
          return fetchPanel(k, at).then(function (p) { if (p && m.code === at) render(m.panel, p); });
        }));
      })
      .catch(function () { if (live) { live.classList.add("stale"); live.setAttribute("data-stale", S.stale); } })
      .then(function () { busy = false; });
  }

  apply(initial);
  showAsOf(new Date().toISOString());
  setInterval(refresh, refreshMs);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (k) { charts[k].resize(); });
    Object.keys(maps).forEach(function (k) { maps[k].map.invalidateSize(); });
  });
  root.dataset.live = "1";
})();
