#!/usr/bin/env bash
# Refresh the page's screenshots in docs/img/ from the browser tests (tests/browser/), which save each
# under its docs name; needs headless Chromium (bash scripts/install-browser.sh) and Selenium.
set -euo pipefail
cd "$(dirname "$0")/.."
shots="$(mktemp -d)"
trap 'rm -rf "$shots"' EXIT
KEEPWARM_SCREENSHOTS="$shots" .venv/bin/python -m pytest -q -p no:cacheprovider tests/browser
mkdir -p docs/img
for shot in "$shots"/*.png; do
    name="$(basename "$shot")"
    if [ -f "docs/img/$name" ] || grep -q "img/$name" docs/*.md; then cp "$shot" "docs/img/$name"; fi
done
ls -l docs/img/*.png
