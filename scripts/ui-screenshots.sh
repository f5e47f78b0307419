#!/usr/bin/env bash
# Refresh the page's screenshots in docs/img/ from the browser test (tests/test_ui_browser.py), which
# saves one per step; needs headless Chromium (bash scripts/install-browser.sh) and Selenium.
set -euo pipefail
cd "$(dirname "$0")/.."
shots="$(mktemp -d)"
trap 'rm -rf "$shots"' EXIT
KEEPWARM_SCREENSHOTS="$shots" .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_ui_browser.py
mkdir -p docs/img
cp "$shots"/*-service-started.png docs/img/orchestrate-service.png
cp "$shots"/*-run-done.png docs/img/orchestrate-run.png
ls -l docs/img/orchestrate-*.png
