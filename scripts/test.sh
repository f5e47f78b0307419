#!/usr/bin/env bash
# Quick start, command 2: install everything into .venv, then lint, type-check, check the layers and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-browser.sh  # headless Chromium for tests/browser/; instant once installed
.venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
.venv/bin/mypy
.venv/bin/lint-imports  # the layer contracts of pyproject.toml [tool.importlinter]
exec .venv/bin/python -m pytest "$@"
