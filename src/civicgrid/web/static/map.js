/* Offline grid maps: Leaflet without a tile layer, drawing GeoJSON from /api/v1/regions/geojson
   on a plain background. Every element with class "js-grid-map" becomes a map:
     data-parent  region code whose subtree is drawn
     data-outline level drawn as dashed outlines (county, township or village; empty: none)
     data-select  optional grid code selected (and its panel loaded) once the map is drawn
     data-panel   optional CSS selector; clicking a grid loads /regions/<code>/panel into it
     data-empty   message shown when the area has no grids */
(function () {
  "use strict";
  var en = document.documentElement.lang === "en";

  function label(p) { return (en && p.name_en) ? p.name_en : p.name; }

  function fetchLayer(parent, level) {
    var url = "/api/v1/regions/geojson?parent=" + encodeURIComponent(parent) + "&level=" + level;
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : { type: "FeatureCollection", features: [] }; });
  }

  function init(el) {
    var map = L.map(el, { attributionControl: false, zoomSnap: 0.25, minZoom: 3 });
    map.setView([28.65, 121.4], 9); // Taizhou, until the data says where to look
    var panel = el.dataset.panel ? document.querySelector(el.dataset.panel) : null;
    var selected = null;
    var toSelect = null;
    var gridStyle = { color: "#1d4f91", weight: 1.2, fillColor: "#4f83c4", fillOpacity: 0.18 };
    var hoverStyle = { weight: 2.5, fillOpacity: 0.35 };
    var selectedStyle = { color: "#c8102e", weight: 3, fillOpacity: 0.4 };

    var empty = Promise.resolve({ type: "FeatureCollection", features: [] });
    var outline = el.dataset.outline ? fetchLayer(el.dataset.parent, el.dataset.outline) : empty;
    Promise.all([outline, fetchLayer(el.dataset.parent, "grid")])
      .then(function (res) {
        var villages = L.geoJSON(res[0], {
          style: { color: "#52606d", weight: 2, fill: false, dashArray: "4 3" }, interactive: false,
        }).addTo(map);
        var grids = L.geoJSON(res[1], {
          style: function () { return L.extend({ className: "grid-path" }, gridStyle); },
          onEachFeature: function (f, layer) {
            layer.bindTooltip(label(f.properties), {
              permanent: !el.classList.contains("small-map") && res[1].features.length <= 80, direction: "center", className: "grid-label",
            });
            layer.on("mouseover", function () { if (layer !== selected) layer.setStyle(hoverStyle); });
            layer.on("mouseout", function () { if (layer !== selected) layer.setStyle(gridStyle); });
            if (f.properties.code === el.dataset.select) toSelect = layer;
            layer.on("click", function () {
              if (selected) selected.setStyle(gridStyle);
              selected = layer;
              layer.setStyle(selectedStyle);
              if (panel && window.htmx) {
                htmx.ajax("GET", "/regions/" + encodeURIComponent(f.properties.code) + "/panel",
                  { target: panel, swap: "innerHTML" });
              }
            });
          },
        }).addTo(map);
        var bounds = grids.getBounds();
        if (!bounds.isValid()) bounds = villages.getBounds();
        if (bounds.isValid()) {
          map.fitBounds(bounds, { padding: [12, 12] });
        } else if (el.dataset.empty) {
          var note = L.control({ position: "topright" });
          note.onAdd = function () {
            var d = L.DomUtil.create("div", "panel small");
            d.textContent = el.dataset.empty;
            return d;
          };
          note.addTo(map);
        }
        if (toSelect) {
          map.fitBounds(toSelect.getBounds(), { padding: [40, 40], maxZoom: map.getZoom() + 2 });
          toSelect.fire("click");
        }
        el.dataset.ready = String(res[1].features.length);
      });
  }

  function start() { document.querySelectorAll(".js-grid-map").forEach(init); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
