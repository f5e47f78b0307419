"""Serving the page: ``streamlit run`` of ``page.py`` on 127.0.0.1, as a child process.

``keepwarm ui`` prints the page's URL once the server answers, then waits; SIGTERM, SIGINT or
SIGHUP stop the server gracefully, and the server dies with ``keepwarm ui`` even when that one is
killed (Linux's parent-death signal).

The child is ``python -m keepwarm.ui.server run page.py ...``: it imports the page's modules before
Streamlit serves (so the first visitor does not wait for them), then hands over to Streamlit's own
command line. The heavy libraries only some views need (pandas, altair, pyarrow) are imported in a
background thread from then on (:func:`prefetch_heavy_modules`), not on the way to the first page.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from keepwarm._sys.procs import die_with_parent
from keepwarm.errors import PageNotServing

ADDRESS = "127.0.0.1"
PAGE = Path(__file__).with_name("page.py")
READY_TIMEOUT_SEC = 60.0
STOP_TIMEOUT_SEC = 10.0
PRELOADED = ("keepwarm.ui.page",)  # what every first page load needs: imported before serving
PREFETCHED = ("pandas", "pyarrow", "altair")  # what charts and tables need: after the first draw
_prefetch_started = threading.Event()


def free_port(address: str = ADDRESS) -> int:
    """A port nobody listens on now (the OS picks it; the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def page_url(port: int, address: str = ADDRESS) -> str:
    return f"http://{address}:{port}"


def streamlit_command(port: int, address: str = ADDRESS) -> list[str]:
    """``python -m streamlit run page.py`` bound to ``address:port``, headless, without telemetry."""
    return [
        sys.executable,
        "-m",
        "keepwarm.ui.server",
        "run",
        str(PAGE),
        "--server.address",
        address,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]


def page_environment(apps_path: Path | None) -> dict[str, str]:
    """The server's environment: the caller's, with ``KEEPWARM_APPS_PATH`` set to ``apps_path``."""
    environment = dict(os.environ)
    if apps_path is not None:
        environment["KEEPWARM_APPS_PATH"] = str(apps_path.expanduser().resolve())
    return environment


def is_serving(url: str) -> bool:
    """True once Streamlit's health endpoint answers ``ok``."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def wait_until_serving(
    url: str, process: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT_SEC
) -> None:
    """Block until the page answers; PageNotServing if the server exits first or the deadline passes."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not is_serving(url):
        if process.poll() is not None:
            raise PageNotServing(f"the page's server exited with code {process.returncode} before serving")
        if time.monotonic() > deadline:
            raise PageNotServing(f"the page's server did not answer at {url} within {timeout:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def start_server(apps_path: Path | None, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server (its output on our stderr) and return it with the page's URL, not yet waited for."""
    chosen = port or free_port()
    process = subprocess.Popen(
        streamlit_command(chosen),
        env=page_environment(apps_path),
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr.fileno(),
        preexec_fn=die_with_parent,  # noqa: PLW1509 - the CLI's main thread spawns it, once
    )
    return process, page_url(chosen)


def stop_server(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_SEC) -> int:
    """SIGTERM (Streamlit stops gracefully), then SIGKILL at ``timeout``; the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def serve(apps_path: Path | None, port: int | None, announce: Callable[[str], None] = print) -> int:
    """Serve the page until a signal stops it or the server exits; prints the URL once it answers."""
    process, url = start_server(apps_path, port)

    def stop_on(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop_on)
    try:
        wait_until_serving(url, process)
        announce(url)
        return process.wait()
    except KeyboardInterrupt:
        stop_server(process)
        return 0
    except BaseException:
        stop_server(process)
        raise


def prefetch_heavy_modules() -> None:
    """Import pandas, pyarrow and altair in a daemon thread, once per process (the server at its start;
    the page after drawing, for a server started otherwise), so that no click pays for them."""
    if _prefetch_started.is_set():
        return
    _prefetch_started.set()

    def load() -> None:
        for name in PREFETCHED:
            try:
                importlib.import_module(name)
            except ImportError:  # an optional one missing: the view that needs it says so
                continue

    threading.Thread(target=load, name="keepwarm-ui-prefetch", daemon=True).start()


def run_streamlit(argv: list[str]) -> int:
    """The server process: import the page's modules, start prefetching the heavy ones (while
    Streamlit starts and until a visitor comes), then Streamlit's command line with ``argv``."""
    for name in PRELOADED:
        importlib.import_module(name)
    # This file runs as __main__ here: the flag the page checks is in the imported module's namespace.
    importlib.import_module("keepwarm.ui.server").prefetch_heavy_modules()
    from streamlit.web import cli

    sys.argv = ["streamlit", *argv]
    return int(cli.main() or 0)


if __name__ == "__main__":
    sys.exit(run_streamlit(sys.argv[1:]))
