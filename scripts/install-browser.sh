#!/usr/bin/env bash
# Headless Chromium and its WebDriver (Debian's chromium and chromium-driver) for tests/browser/, and
# curl for the HTTP front door's documented examples (tests/test_http_docs.py).
# Idempotent and instant when both are there; installs them only as root (as CI runs), otherwise says why
# not and leaves it to that test to skip with the same reason.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && command -v curl >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: chromium, chromedriver or curl missing and not root with apt-get; the tests that need them will skip" >&2
    exit 0
fi
echo "install-browser: apt-get install -y chromium chromium-driver curl" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq chromium chromium-driver curl >/dev/null
