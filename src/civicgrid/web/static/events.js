/* Event pages: the category picker's search box, the report form's map and GPS button, the event
   page's small map, and "select all" on the dispatch queue. Leaflet without tiles (offline), as
   map.js. Every message shown comes from the page (data-msg-*), so it is in the reader's language. */
(function () {
  "use strict";
  var en = document.documentElement.lang === "en";
  var gridStyle = { color: "#1d4f91", weight: 1.2, fillColor: "#4f83c4", fillOpacity: 0.15 };
  var pointStyle = { radius: 8, color: "#fff", weight: 2, fillColor: "#c8102e", fillOpacity: 1 };

  // ---- category picker: the search box narrows the list (rebuilt, so it works on every phone)
  function initCategoryPicker(input) {
    var select = document.getElementById(input.getAttribute("aria-controls"));
    if (!select) return;
    var chosen = document.querySelector(".js-category-chosen");
    var groups = Array.prototype.map.call(select.querySelectorAll("optgroup"), function (g) {
      return { label: g.label, options: Array.prototype.slice.call(g.querySelectorAll("option")) };
    });
    function show() {
      var opt = select.options[select.selectedIndex];
      if (chosen) chosen.textContent = opt ? opt.textContent : "";
    }
    function filter() {
      var words = input.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
      var current = select.value;
      select.innerHTML = "";
      var shown = 0;
      groups.forEach(function (g) {
        var hits = g.options.filter(function (o) {
          var text = (o.dataset.search || "") + " " + o.textContent.toLowerCase();
          return words.every(function (w) { return text.indexOf(w) >= 0; });
        });
        if (!hits.length) return;
        var group = document.createElement("optgroup");
        group.label = g.label;
        hits.forEach(function (o) { group.appendChild(o); });
        select.appendChild(group);
        shown += hits.length;
      });
      if (!shown) {
        var none = document.createElement("option");
        none.disabled = true;
        none.value = "";
        none.textContent = input.dataset.none || "—";
        select.appendChild(none);
      }
      select.value = current;
      if (shown === 1 && !select.value) select.selectedIndex = select.options[0].disabled ? -1 : 0;
      show();
    }
    input.addEventListener("input", filter);
    input.addEventListener("keydown", function (e) {
      if (e.key === "Enter") { e.preventDefault(); if (select.options.length) select.focus(); }
    });
    select.addEventListener("change", show);
    show();
  }

  // ---- point in polygon (GeoJSON Polygon / MultiPolygon, even-odd rule)
  function inRing(x, y, ring) {
    var inside = false;
    for (var i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      var xi = ring[i][0], yi = ring[i][1], xj = ring[j][0], yj = ring[j][1];
      if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }
  function inGeometry(x, y, g) {
    if (!g) return false;
    var polys = g.type === "Polygon" ? [g.coordinates] : g.type === "MultiPolygon" ? g.coordinates : [];
    return polys.some(function (rings) {
      return rings.length && inRing(x, y, rings[0]) &&
        !rings.slice(1).some(function (hole) { return inRing(x, y, hole); });
    });
  }

  function blankMap(el) {
    var map = L.map(el, { attributionControl: false, zoomSnap: 0.25, minZoom: 3 });
    map.setView([28.65, 121.4], 9);
    return map;
  }

  // ---- report form: click the map or use the device's location
  function initReportMap(el) {
    var form = el.closest("form");
    var lon = form.querySelector(".js-lon");
    var lat = form.querySelector(".js-lat");
    var status = form.querySelector(".js-loc-status");
    var gps = form.querySelector(".js-gps");
    var map = blankMap(el);
    var features = [];
    var marker = null;

    function say(text) { if (status) status.textContent = text; }
    function gridAt(x, y) {
      for (var i = 0; i < features.length; i++) {
        if (inGeometry(x, y, features[i].geometry)) return features[i].properties;
      }
      return null;
    }
    function setPoint(latlng, pan) {
      lon.value = latlng.lng.toFixed(6);
      lat.value = latlng.lat.toFixed(6);
      if (marker) marker.setLatLng(latlng);
      else marker = L.circleMarker(latlng, pointStyle).addTo(map);
      if (pan) map.setView(latlng, Math.max(map.getZoom(), 15));
      var g = gridAt(latlng.lng, latlng.lat);
      say(g ? el.dataset.msgGrid.replace("{grid}", en && g.name_en ? g.name_en : g.name) : el.dataset.msgNogrid);
      el.dataset.point = lon.value + "," + lat.value;
    }

    var url = "/api/v1/regions/geojson?parent=" + encodeURIComponent(el.dataset.parent) + "&level=grid";
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : { type: "FeatureCollection", features: [] }; })
      .then(function (fc) {
        features = fc.features || [];
        var layer = L.geoJSON(fc, {
          style: function () { return L.extend({ className: "grid-path" }, gridStyle); },
          onEachFeature: function (f, l) {
            l.bindTooltip(en && f.properties.name_en ? f.properties.name_en : f.properties.name, { sticky: true });
          },
        }).addTo(map);
        if (layer.getBounds().isValid()) map.fitBounds(layer.getBounds(), { padding: [10, 10] });
        var x = parseFloat(lon.value), y = parseFloat(lat.value);
        if (isFinite(x) && isFinite(y)) setPoint(L.latLng(y, x), true);
        el.dataset.ready = String(features.length);
      });

    map.on("click", function (e) { setPoint(e.latlng, false); });
    [lon, lat].forEach(function (input) {
      input.addEventListener("change", function () {
        var x = parseFloat(lon.value), y = parseFloat(lat.value);
        if (isFinite(x) && isFinite(y)) setPoint(L.latLng(y, x), true);
      });
    });
    if (gps) {
      if (!navigator.geolocation) gps.disabled = true;
      gps.addEventListener("click", function () {
        say(el.dataset.msgLocating);
        navigator.geolocation.getCurrentPosition(
          function (pos) { setPoint(L.latLng(pos.coords.latitude, pos.coords.longitude), true); },
          function () { say(el.dataset.msgGpsFailed); },
          { enableHighAccuracy: true, timeout: 15000, maximumAge: 60000 }
        );
      });
    }
  }

  // ---- event page: the point and its grid's outline
  function initEventMap(el) {
    var map = blankMap(el);
    var point = L.latLng(parseFloat(el.dataset.lat), parseFloat(el.dataset.lon));
    var geomEl = el.parentNode.querySelector(".js-grid-geometry");
    var geom = null;
    try { geom = geomEl ? JSON.parse(geomEl.textContent) : null; } catch (e) { geom = null; }
    var bounds = L.latLngBounds([point]);
    if (geom) {
      var outline = L.geoJSON(geom, { style: L.extend({ dashArray: "4 3" }, gridStyle), interactive: false }).addTo(map);
      bounds.extend(outline.getBounds());
    }
    L.circleMarker(point, pointStyle).addTo(map);
    map.fitBounds(bounds, { padding: [20, 20], maxZoom: 17 });
    el.dataset.ready = "1";
  }

  // ---- queue: one box selects every row ready to dispatch
  function initCheckAll(box) {
    box.addEventListener("change", function () {
      document.querySelectorAll('input[type=checkbox][name="' + box.dataset.target + '"]').forEach(function (c) {
        c.checked = box.checked;
      });
    });
  }

  function start() {
    document.querySelectorAll(".js-category-search").forEach(initCategoryPicker);
    if (window.L) {
      document.querySelectorAll(".js-report-map").forEach(initReportMap);
      document.querySelectorAll(".js-event-map").forEach(initEventMap);
    }
    document.querySelectorAll(".js-check-all").forEach(initCheckAll);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
