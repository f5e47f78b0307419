#!/usr/bin/env bash
# Quick start, command 1: install everything into .venv and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/keepwarm demo "$@"
