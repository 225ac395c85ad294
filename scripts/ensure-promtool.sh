#!/usr/bin/env bash
# Make sure promtool is present for the deployment tests (tests/unit/test_deploy_observability.py
# runs `promtool check config`, `check rules` and `test rules` on deploy/prometheus/). Idempotent
# and quiet.
#
#   scripts/ensure-promtool.sh        install promtool from Debian's `prometheus` package (as root)
#
# Only the promtool binary is taken out of Debian's package (apt-get download + dpkg-deb) and put
# in /usr/local/bin: a full `apt-get install prometheus` would also pull ~100 MB of web assets and,
# on a machine without a policy-rc.d, start a Prometheus daemon on :9090 from its postinst.
#
# Exit status is 0 unless an install was attempted and failed: without root the promtool tests
# skip with a reason instead, so a developer machine without sudo still runs `make test`.
set -euo pipefail

TARGET=/usr/local/bin/promtool

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-promtool: promtool not on PATH and not root; the promtool tests will skip." \
         "Install it with: sudo apt-get install prometheus (or run this script as root)" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    echo "ensure-promtool: promtool not on PATH and no apt-get/dpkg-deb here; the promtool" \
         "tests will skip. Put a promtool (Prometheus 2.x) on PATH." >&2
    exit 0
fi

echo "ensure-promtool: taking promtool from Debian's prometheus package (once)..." >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! ( cd "$work" \
        && { apt-get download -qq prometheus || { apt-get update -qq && apt-get download -qq prometheus; }; } \
        && dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x -C "$work" ./usr/bin/promtool ) \
        >"$work/log" 2>&1; then
    tail -n 20 "$work/log" >&2
    echo "ensure-promtool: could not get promtool from the prometheus package (see above)" >&2
    exit 1
fi
install -m 0755 "$work/usr/bin/promtool" "$TARGET"
"$TARGET" --version 2>&1 | head -n 1 >&2 || true
