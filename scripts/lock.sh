#!/usr/bin/env bash
# Upgrade every dependency to its newest release and write the result to constraints.txt.
# Then run bash scripts/test.sh: commit the new constraints.txt only if the whole check passes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade -e '.[all,dev]'
head -3 constraints.txt >constraints.txt.new
.venv/bin/python -m pip freeze --exclude-editable | grep -v '^-e' >>constraints.txt.new
mv constraints.txt.new constraints.txt
touch .venv/.keepwarm-installed
git diff --stat constraints.txt
