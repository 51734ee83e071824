#!/usr/bin/env bash
# Render a run report in headless Chromium and save a PNG of the page, to check by eye
# that the page (plots included) displays without anything outside the file.
#
#   scripts/screenshot_report.sh REPORT_HTML [OUT_PNG] [WIDTHxHEIGHT]
#
# Defaults: OUT_PNG=/tmp/report.png, size 1280x2400. Needs Debian's `chromium`
# (apt-get install -y chromium). Networking is switched off as far as Chromium allows,
# so a page that tried to fetch anything would show it as missing in the screenshot.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 REPORT_HTML [OUT_PNG] [WIDTHxHEIGHT]" >&2
  exit 2
fi
html=$(realpath "$1")
out=${2:-/tmp/report.png}
size=${3:-1280x2400}
browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z "$browser" ]]; then
  echo "chromium not found; install it with: apt-get install -y chromium" >&2
  exit 3
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars \
  --screenshot="$out" --window-size="${size/x/,}" "file://$html" >/dev/null 2>&1
echo "$out"
