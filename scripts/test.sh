#!/usr/bin/env bash
# Quick start, command 2: install everything into .venv, then lint, type-check, check the layers and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-browser.sh  # headless Chromium for tests/browser/; instant once installed
bash scripts/install-multihost.sh  # sshd, sshfs, faketime for tests/multihost/; instant once installed
.venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
.venv/bin/mypy
.venv/bin/lint-imports  # the layer contracts of pyproject.toml [tool.importlinter]
# Two workers, a test file each at a time (a file's shared services and the browser stay in one
# worker): the suite mostly waits on real processes, so two files at once halve its time on 2 cores.
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
