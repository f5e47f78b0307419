"""The page's browser tests: one ``keepwarm ui`` server and one headless Chromium for the session.

The server is a real ``keepwarm ui`` subprocess on 127.0.0.1, stopped by its pid at the end; each
test opens the page on its own copy of an app (``?apps_path=…&app=…``), under a folder name of its
own, so its service, logs and exports are its own. The share, log and export dirs are the session's,
in the server and in the test alike (``isolated_dirs`` is overridden here to say so). Selenium drives
Debian's ``chromium`` through ``chromedriver``; without them the tests skip and say how to get them
(``scripts/install-browser.sh``, as root, as CI does).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "headless Chromium is not installed (chromium, chromedriver): as root, run "
        "bash scripts/install-browser.sh (apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="Selenium is not installed: pip install selenium (the dev extra)"
)
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

from ..conftest import EXAMPLE_APPS  # noqa: E402
from .kit import TIMINGS, Page, Screenshots  # noqa: E402

BIN = Path(sys.executable).parent
WINDOW = (1400, 3200)  # tall enough that every section is on screen: element screenshots are not cut
_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def session_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("browser")
    return {
        "KEEPWARM_SHARE": str(root / "share"),
        "KEEPWARM_LOG_DIR": str(root / "logs"),
        "KEEPWARM_EXPORT": str(root / "export"),
    }


@pytest.fixture(autouse=True)
def isolated_dirs(session_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The session's share, log and export dirs: the ones the page's server resolves too."""
    for name, value in session_dirs.items():
        monkeypatch.setenv(name, value)
    for name in ("KEEPWARM_NAMESPACE", "KEEPWARM_APPS_PATH", "KEEPWARM_WATCH"):
        monkeypatch.delenv(name, raising=False)
    return Path(session_dirs["KEEPWARM_SHARE"])


@pytest.fixture(scope="session")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's ``keepwarm ui`` writes its stderr (the page server's log, tracebacks too)."""
    return tmp_path_factory.mktemp("ui-server") / "keepwarm-ui.log"


@pytest.fixture(scope="session")
def page_url(session_dirs: dict[str, str], server_log: Path) -> Iterator[str]:
    """``keepwarm ui`` as a real subprocess; the URL it prints once the page answers. Stopped by pid."""
    folder = server_log.parent
    apps = folder / "apps"
    shutil.copytree(EXAMPLE_APPS / "mycode_project", apps / "mycode_project")
    with serving(server_log, "--apps-path", str(apps), env={**os.environ, **session_dirs}) as (_, url):
        yield url


@pytest.fixture(scope="session")
def driver() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    chrome = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def page(driver: WebDriver, page_url: str) -> Page:
    return Page(driver, page_url)


@pytest.fixture
def shots(driver: WebDriver, tmp_path: Path) -> Screenshots:
    return Screenshots(tmp_path / "screenshots", driver)


@contextlib.contextmanager
def serving(
    log: Path, *options: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``keepwarm ui *options`` as a real subprocess, its stderr in ``log``: the process and the URL it
    prints once the page answers (it gives up by itself after 60 s). Stopped by its pid at the end,
    unless it has already ended."""
    with (
        log.open("w") as stderr,
        subprocess.Popen(
            [str(BIN / "keepwarm"), "ui", *options],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        ) as server,
    ):
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), log.read_text()
            yield server, url
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=60)


def app_copy(tmp_path: Path, name: str = "mycode_project", *, folder: str | None = None) -> Path:
    """A copy of a bundled app under a folder name no other test of the session uses."""
    target = tmp_path / "apps" / (folder or f"{name}_{next(_numbers)}")
    shutil.copytree(EXAMPLE_APPS / name, target)
    return target


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The page's speed as measured in the browser (printed, not asserted)."""
    lines = TIMINGS.lines()
    if lines:
        terminalreporter.section("ORCHESTRATE in the browser: seconds")
        for line in lines:
            terminalreporter.write_line(line)
