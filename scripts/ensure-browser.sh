#!/usr/bin/env bash
# Make sure Debian's Chromium is present for the browser tests (tests/integration/
# test_web_page_chromium.py). Idempotent and quiet; never downloads a browser build of its own
# (playwright drives this Chromium through its executable path).
#
#   scripts/ensure-browser.sh          install chromium with apt-get if missing (as root)
#   BUURTALERT_CHROMIUM=/path/to/chromium scripts/ensure-browser.sh   check another binary
#
# Exit status is 0 unless an install was attempted and failed: without root the browser test
# skips with a reason instead, so a developer machine without sudo still runs `make test`.
set -euo pipefail

CHROMIUM="${BUURTALERT_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-browser: no Chromium at $CHROMIUM and not root; the browser test will skip." \
         "Install it with: sudo apt-get install chromium" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-browser: no Chromium at $CHROMIUM and no apt-get here; the browser test" \
         "will skip. Install Chromium and set BUURTALERT_CHROMIUM to its path." >&2
    exit 0
fi

if [ "$CHROMIUM" != /usr/bin/chromium ]; then
    echo "ensure-browser: BUURTALERT_CHROMIUM=$CHROMIUM does not exist; apt-get would install" \
         "/usr/bin/chromium instead, so nothing is done." >&2
    exit 0
fi

echo "ensure-browser: installing Debian's chromium with apt-get (once)..." >&2
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { apt-get update -qq && apt-get install -y -qq chromium; } \
        >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "ensure-browser: apt-get install chromium failed (see above)" >&2
    exit 1
fi
"$CHROMIUM" --version 2>/dev/null | head -n 1 >&2 || true
