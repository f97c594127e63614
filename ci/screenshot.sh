#!/usr/bin/env bash
# Regenerates the README's picture of the HTML report (docs/html-report.png):
# a short demo run with a fault verification catches, its report rendered
# by headless Chromium (Debian's `chromium`), cropped to the top of the page.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's chromium renders the page; pngquant keeps the committed PNG small.
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v pngquant >/dev/null 2>&1 || missing="$missing pngquant"
if [ -n "$missing" ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet
# Exit 2 is the point: the fault fails the duration check.
"${CARGO_TARGET_DIR:-target}/release/redproof" demo --quiet --duration 8s --fault unmeasured-delay=200ms \
  --html "$work/report.html" >/dev/null || [ $? -eq 2 ]
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size=1000,1900 --screenshot="$work/report.png" "file://$work/report.html" 2>/dev/null
mkdir -p docs
pngquant --force --quality 60-90 --output docs/html-report.png -- "$work/report.png"
ls -l docs/html-report.png
