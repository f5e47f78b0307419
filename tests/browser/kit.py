"""Driving the page in headless Chromium: find a widget by its per-app key, click, type, wait.

A widget's key is ``<name>.<app token>`` (``keepwarm.ui.state``); Streamlit gives its element the CSS
class ``st-key-<key>`` with the dots as dashes. :class:`Page` holds the token of the app it opened,
so a test names widgets as the page's code does (``page.click("settings.save")``). Every wait is a
condition with a deadline; a timeout fails the test with the page's text. :class:`Timings` records
the first load and each click's round trip, printed at the end of the session, never asserted.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from keepwarm.ui.state import app_token

STEP_TIMEOUT_SEC = 60.0


@dataclass
class Timings:
    """Seconds measured in the browser: first loads and click round trips, by what was done."""

    loads: list[float] = field(default_factory=list)
    clicks: dict[str, list[float]] = field(default_factory=dict)

    def click(self, what: str, seconds: float) -> None:
        self.clicks.setdefault(what, []).append(seconds)

    def lines(self) -> list[str]:
        def median(values: list[float]) -> float:
            ordered = sorted(values)
            return ordered[len(ordered) // 2]

        out = []
        if self.loads:
            out.append(f"first load until interactive: median {median(self.loads):.2f}s of {len(self.loads)}")
        for what, values in sorted(self.clicks.items()):
            out.append(f"{what}: median {median(values):.2f}s of {len(values)}")
        return out


TIMINGS = Timings()


class Screenshots:
    """Numbered screenshots under ``folder`` (and ``$KEEPWARM_SCREENSHOTS`` when set, for docs/img)."""

    def __init__(self, folder: Path, driver: WebDriver) -> None:
        self.folder = folder
        self.driver = driver
        extra = os.environ.get("KEEPWARM_SCREENSHOTS")
        self.extra = Path(extra) if extra else None
        self.taken: list[Path] = []
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, name: str, section: str | None = None) -> Path:
        path = self.folder / f"{name}.png"
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


class Page:
    """The page in the browser, opened on one app."""

    def __init__(self, driver: WebDriver, url: str) -> None:
        self.driver = driver
        self.url = url
        self.token = ""

    # -- opening

    def open(self, app_dir: Path, page: str = "") -> Page:
        """Open ``page`` (ORCHESTRATE by default) on the app in ``app_dir``, as a new session."""
        self.bind(app_dir)
        query = urllib.parse.urlencode({"apps_path": str(app_dir.parent), "app": app_dir.name})
        began = time.perf_counter()
        self.driver.get(f"{self.url}/{page}?{query}")
        self.wait_for_text("keepwarm")
        self.wait_idle()
        TIMINGS.loads.append(time.perf_counter() - began)
        return self

    def bind(self, app_dir: Path) -> None:
        """Name widgets by the keys of the app in ``app_dir`` (after choosing it in the sidebar)."""
        self.token = app_token(app_dir.parent, app_dir.name)

    def key(self, name: str) -> str:
        return f"{name}.{self.token}"

    def css(self, name: str, inner: str = "") -> str:
        return f".st-key-{self.key(name).replace('.', '-')} {inner}".strip()

    # -- reading

    def text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def section_text(self, section: str) -> str:
        return str(self.driver.find_element(By.CSS_SELECTOR, f".st-key-section-{section}").text)

    def find(self, name: str, inner: str = "") -> WebElement:
        return self.wait_for(
            f"widget {name}", lambda d: d.find_element(By.CSS_SELECTOR, self.css(name, inner))
        )

    def value(self, name: str, inner: str = "input") -> str:
        return str(self.find(name, inner).get_attribute("value"))

    # -- waiting

    def wait_for(
        self, what: str, condition: Callable[[WebDriver], Any], timeout: float = STEP_TIMEOUT_SEC
    ) -> Any:
        """``condition`` polled until truthy, or the test fails naming ``what`` with the page's text."""
        waiter = WebDriverWait(
            self.driver,
            timeout,
            poll_frequency=0.05,
            ignored_exceptions=(StaleElementReferenceException, LookupError, AssertionError),
        )
        try:
            return waiter.until(condition)
        except TimeoutException:
            pytest.fail(f"waited {timeout:g}s for {what}; the page says:\n{self.text()[-4000:]}")

    def wait_for_text(self, text: str, timeout: float = STEP_TIMEOUT_SEC) -> None:
        self.wait_for(repr(text), lambda d: text in self.text(), timeout)

    def running(self) -> bool:
        """True while the script (not only the live view's fragment) is running."""
        return bool(
            self.driver.execute_script(
                'return !!document.querySelector(\'[data-testid="stStatusWidget"] '
                '[data-testid="stStatusWidgetRunningIcon"], [data-stale="true"]\')'
            )
        )

    def wait_idle(self, timeout: float = STEP_TIMEOUT_SEC) -> None:
        """Until the script's rerun is over: nothing stale on the page, no running indicator."""
        self.wait_for("the page to settle", lambda d: not self.running(), timeout)

    # -- acting

    def click(self, name: str, inner: str = "button", then: str | None = None) -> float:
        """Click widget ``name``; with ``then``, wait for that text. The round trip's seconds."""
        css = self.css(name, inner)
        self.wait_for(f"{name} to be clickable", lambda d: d.find_element(By.CSS_SELECTOR, css).is_enabled())
        began = time.perf_counter()
        self.driver.find_element(By.CSS_SELECTOR, css).click()
        if then is not None:
            self.wait_for_text(then)
        self.wait_idle()
        took = time.perf_counter() - began
        TIMINGS.click(name, took)
        return took

    def type(self, name: str, text: str, inner: str = "input", enter: bool = True) -> None:
        """Replace the text of widget ``name`` and commit it (Enter, or leaving a text area)."""
        element = self.find(name, inner)
        element.send_keys(Keys.CONTROL, "a")
        element.send_keys(Keys.DELETE)
        element.send_keys(text)
        if enter and inner == "input":
            element.send_keys(Keys.ENTER)
        else:
            element.send_keys(Keys.CONTROL, Keys.ENTER)  # a text area commits on Ctrl+Enter
        self.wait_for(
            f"{name} to say {text!r}", lambda d: self.find(name, inner).get_attribute("value") == text
        )
        self.wait_idle()

    def toggle(self, name: str) -> None:
        self.find(name, "label").click()
        self.wait_idle()

    def choose_app(self, app: str) -> None:
        """Pick another app in the sidebar's selectbox, and name widgets by its keys."""
        box = self.driver.find_element(By.CSS_SELECTOR, ".st-key-app input")
        box.send_keys(app, Keys.ENTER)
        self.wait_for(f"app {app} chosen", lambda d: f"app={app}" in d.current_url)
        self.wait_idle()

    def expand(self, section: str, title: str) -> None:
        xpath = f"//*[contains(@class, 'st-key-{section}')]//summary[contains(., '{title}')]"
        summary = self.wait_for(f"the {title} expander", lambda d: d.find_element(By.XPATH, xpath))
        if summary.find_element(By.XPATH, "..").get_attribute("open") is None:
            summary.click()

    def choose(self, name: str, option: str) -> None:
        """Pick the option whose label starts with ``option`` in selectbox ``name``."""
        box = self.find(name, "input")
        box.send_keys(option, Keys.ENTER)
        self.wait_for(
            f"{name} to show {option!r}",
            lambda d: option in self.find(name).text or option in self.value(name),
        )
        self.wait_idle()
