#!/usr/bin/env bash
# Fetch the browser libraries CivicGrid serves itself (no CDN): htmx, Leaflet, ECharts.
# Each comes from its npm package (`npm pack`), so the files match the registry's tarball.
# Usage: scripts/vendor.sh   (re-run after changing a version below; update docs/third-party.md)
set -euo pipefail

HTMX_VERSION=2.0.11
LEAFLET_VERSION=1.9.4
ECHARTS_VERSION=5.6.0

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENDOR="$ROOT/src/civicgrid/web/static/vendor"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

fetch() {  # fetch NAME VERSION → extracted package in $TMP/NAME/package
  mkdir -p "$TMP/$1"
  (cd "$TMP/$1" && npm pack --silent "$1@$2" >/dev/null && tar xzf ./*.tgz)
}

fetch htmx.org "$HTMX_VERSION"
d="$VENDOR/htmx-$HTMX_VERSION"; rm -rf "$d"; mkdir -p "$d"
cp "$TMP/htmx.org/package/dist/htmx.min.js" "$TMP/htmx.org/package/LICENSE" "$d/"

fetch leaflet "$LEAFLET_VERSION"
d="$VENDOR/leaflet-$LEAFLET_VERSION"; rm -rf "$d"; mkdir -p "$d/images"
cp "$TMP/leaflet/package/dist/leaflet.js" "$TMP/leaflet/package/dist/leaflet.css" "$TMP/leaflet/package/LICENSE" "$d/"
cp "$TMP/leaflet/package/dist/images/"*.png "$d/images/"

fetch echarts "$ECHARTS_VERSION"
d="$VENDOR/echarts-$ECHARTS_VERSION"; rm -rf "$d"; mkdir -p "$d"
cp "$TMP/echarts/package/dist/echarts.min.js" "$TMP/echarts/package/LICENSE" "$TMP/echarts/package/NOTICE" "$d/"
cp "$TMP/echarts/package/licenses/LICENSE-d3" "$d/"

(cd "$VENDOR" && find . -type f ! -name SHA256SUMS | sort | xargs sha256sum) > "$VENDOR/SHA256SUMS"
echo "vendored into $VENDOR"
