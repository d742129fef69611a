#!/usr/bin/env bash
# Installs what the browser tests and PDF/screenshot rendering need from Debian's packages:
# chromium (driven by Playwright; never a downloaded browser) and a CJK font (without one,
# Chinese renders as empty boxes). Does nothing when both are present.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
fc-list 2>/dev/null | grep -qiE 'wqy|noto sans cjk|noto serif cjk' || need+=(fonts-wqy-microhei)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${need[*]}. Install them with: sudo apt-get install -y ${need[*]}" >&2
  echo "(browser tests are skipped without chromium outside CI)" >&2
  exit 0
fi
echo "Installing ${need[*]} from Debian's packages..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
