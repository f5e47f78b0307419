"""The ORCHESTRATE page end to end in headless Chromium, as an operator uses it.

``keepwarm ui`` serves the page from a real subprocess on 127.0.0.1 (a free port) and is stopped by
its pid; Selenium drives Debian's ``chromium`` through ``chromedriver``. Every wait is a condition
with a deadline. Each step saves a screenshot under the test's tmp_path (and, when
``KEEPWARM_SCREENSHOTS`` names a folder, there too: ``scripts/ui-screenshots.sh`` refreshes the one in
docs/img/ that way). Without Chromium, its driver or Selenium, the test skips and says how to get them
(``scripts/install-browser.sh`` installs the browser as root, as CI does).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.settings import load_settings

from .conftest import Services, copy_app

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
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

BIN = Path(sys.executable).parent
WINDOW = (1400, 3200)  # tall enough that every section is on screen: element screenshots are not cut
STEP_TIMEOUT_SEC = 60.0


class Screenshots:
    """Numbered screenshots of the page or of one section, under tmp_path and optionally elsewhere."""

    def __init__(self, folder: Path, driver: WebDriver) -> None:
        self.folder = folder
        self.driver = driver
        self.extra = (
            Path(os.environ["KEEPWARM_SCREENSHOTS"]) if os.environ.get("KEEPWARM_SCREENSHOTS") else None
        )
        self.taken: list[Path] = []
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, name: str, section: str | None = None) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        if section is None:
            assert self.driver.save_screenshot(str(path))
        else:
            element = self.driver.find_element(By.CSS_SELECTOR, f".st-key-{section}")
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", element)
            assert element.screenshot(str(path))
        self.taken.append(path)
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.extra / path.name)
        return path


def wait_for(driver: WebDriver, what: str, condition: Callable[[WebDriver], Any]) -> Any:
    """``condition`` polled until true, or the test fails naming ``what`` and showing the page's text."""
    waiter = WebDriverWait(
        driver, STEP_TIMEOUT_SEC, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )
    try:
        return waiter.until(condition)
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"waited {STEP_TIMEOUT_SEC:g}s for {what}; the page says:\n{body[-3000:]}")


def page_text(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def wait_for_text(driver: WebDriver, text: str) -> None:
    wait_for(driver, repr(text), lambda d: text in page_text(d))


def click(driver: WebDriver, key: str, inner: str = "button") -> None:
    """Click the widget Streamlit keyed ``key`` (a key's dots become dashes in its CSS class)."""
    css = f".st-key-{key.replace('.', '-')} {inner}"
    wait_for(driver, f"{key} to be clickable", lambda d: d.find_element(By.CSS_SELECTOR, css).is_enabled())
    driver.find_element(By.CSS_SELECTOR, css).click()


def open_expander(driver: WebDriver, section: str, title: str) -> None:
    xpath = f"//*[contains(@class, 'st-key-{section}')]//summary[contains(., '{title}')]"
    wait_for(driver, f"the {title} expander", lambda d: d.find_element(By.XPATH, xpath).is_displayed())
    driver.find_element(By.XPATH, xpath).click()


@pytest.fixture
def app_dir(tmp_path: Path, services: Services) -> Path:
    """A private copy of the example app; a service the test starts is stopped afterwards (by pid)."""
    folder = copy_app(tmp_path, "mycode_project")
    services.envs.append(Env(folder))
    return folder


@pytest.fixture
def page_url(app_dir: Path, tmp_path: Path) -> Iterator[str]:
    """``keepwarm ui`` as a real subprocess; the URL it prints once the page answers. Stopped by pid."""
    log = tmp_path / "keepwarm-ui.log"
    with (
        log.open("w") as stderr,
        subprocess.Popen(
            [str(BIN / "keepwarm"), "ui", "--apps-path", str(app_dir.parent)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
        ) as server,
    ):
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()  # keepwarm ui gives up by itself after 60 s
            assert url.startswith("http://127.0.0.1:"), log.read_text()
            yield url
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_an_operator_sets_runs_serves_and_stops_an_app_in_the_browser(
    app_dir: Path, page_url: str, browser: WebDriver, tmp_path: Path
) -> None:
    shots = Screenshots(tmp_path / "screenshots", browser)
    settings = app_dir / "app_settings.toml"
    browser.get(page_url)
    wait_for_text(browser, "ORCHESTRATE")
    wait_for_text(browser, "Calculated mode")
    wait_for_text(browser, "Live view")
    shots.take("page")

    # A setting changed in the page lands in the TOML, comments kept.
    workers = browser.find_element(By.CSS_SELECTOR, ".st-key-settings-slots input")
    workers.send_keys(Keys.CONTROL, "a")
    workers.send_keys("3", Keys.ENTER)
    wait_for(browser, "the field to say 3", lambda d: workers.get_attribute("value") == "3")
    click(browser, "settings.save")
    wait_for_text(browser, "saved to")
    assert load_settings(settings).cluster.slots == 3
    assert "# The reference system's SLA defaults." in settings.read_text()
    shots.take("settings-saved", section="section-settings")

    # The example app installs and runs, on the three workers the settings now ask for.
    click(browser, "install.run")
    wait_for_text(browser, "installed mycode_project in")
    click(browser, "run.run")
    wait_for(browser, "the run to finish", lambda d: "mode python: 2000 rows" in page_text(d))
    open_expander(browser, "section-run", "Run logs")  # the kept log: three plan workers ran
    wait_for(browser, "the log of worker-2", lambda d: "on worker-2" in page_text(d))
    shots.take("run-done", section="section-run")

    # The service starts, and every loop is healthy.
    click(browser, "service.start")
    wait_for_text(browser, "3 loops ready")
    wait_for_text(browser, "3 of 3 loops healthy")
    status = Service(Env(app_dir)).status()
    assert status.workers_healthy_count == 3 and status.workers_unhealthy_count == 0
    shots.take("service-started", section="section-service")

    # A task goes in and its result comes out.
    click(browser, "service.submit")
    wait_for(browser, "the task to be done", lambda d: " done in " in page_text(d))
    wait_for_text(browser, '"collatz_steps":111')
    shots.take("task-done", section="section-service")

    click(browser, "service.stop")
    wait_for_text(browser, "service mycode_project stopped")
    assert Service(Env(app_dir)).status().status == "stopped"
    shots.take("service-stopped", section="section-service")
    assert all(path.stat().st_size > 10_000 for path in shots.taken)
