"""How fast ORCHESTRATE answers in the browser: the page-speed tests, each measurement repeated.

``tests/browser/test_page_speed.py`` measures a fresh ``keepwarm ui`` server until it prints its URL,
the first load until the page is interactive, a load on a warm server, and the page's own overhead on
cheap clicks (a click's round trip minus its action's time). The suite runs each once, so that the
path stays tested; this script runs them ``--repeats`` times in headless Chromium and prints the
medians (pytest's summary section "ORCHESTRATE in the browser: seconds"). Nothing is asserted.

Usage::

    .venv/bin/python bench/page_speed.py              # 3 repeats
    .venv/bin/python bench/page_speed.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="times each measurement runs (default 3)")
    options = parser.parse_args()
    env = {**os.environ, "KEEPWARM_PAGE_SPEED_REPEATS": str(options.repeats)}
    test = "tests/browser/test_page_speed.py"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
