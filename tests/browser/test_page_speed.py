"""How fast the page answers in the browser: measured and printed (the session's terminal summary,
"ORCHESTRATE in the browser: seconds"), never asserted; the machine's load decides the numbers. Run by
``bench/page_speed.py``; the whole check skips them.

- a fresh ``keepwarm ui`` server: seconds until it prints its URL, then the first page load until
  the page is interactive (every section drawn, nothing running), then a second load (warm server);
- cheap clicks on each section (SAVE with nothing changed, STATUS, HEALTH gate, LOAD DATA without a
  run): the click's round trip in the browser minus the time the action itself takes (the same core
  function, timed in this process), i.e. the page's own overhead per click.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.runmode.data import head
from keepwarm.settings import read_snapshot

from .conftest import app_copy, serving
from .kit import TIMINGS, Page

# Measurements, not checks (every click they time is exercised by the other page tests): they run
# only from ``bench/page_speed.py``, which sets how many times (the whole check stays within CI's time).
REPEATS = int(os.environ.get("KEEPWARM_PAGE_SPEED_REPEATS", "0"))
pytestmark = pytest.mark.skipif(
    REPEATS == 0,
    reason="a page-speed measurement: run it with bench/page_speed.py (KEEPWARM_PAGE_SPEED_REPEATS)",
)


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[str]:
    """A ``keepwarm ui`` of this test alone (nothing imported yet), stopped by its pid at the end."""
    apps = app_copy(tmp_path, "mycode_project", folder="speed_server_app").parent
    began = time.perf_counter()
    with serving(tmp_path / "keepwarm-ui.log", "--apps-path", str(apps)) as (_, url):
        TIMINGS.click("speed: keepwarm ui until it prints its URL", time.perf_counter() - began)
        yield url


@pytest.mark.parametrize("attempt", range(REPEATS))
def test_first_load_on_a_fresh_server_is_measured(
    driver: WebDriver, fresh_server: str, tmp_path: Path, attempt: int
) -> None:
    app_dir = app_copy(tmp_path, "mycode_project", folder=f"speed_first_load_{attempt}")
    page = Page(driver, fresh_server)
    began = time.perf_counter()
    page.open(app_dir)
    page.wait_for_text("Live view")
    TIMINGS.click("speed: first load until interactive, fresh server", time.perf_counter() - began)
    began = time.perf_counter()
    page.open(app_dir)
    page.wait_for_text("Live view")
    TIMINGS.click("speed: load until interactive, warm server", time.perf_counter() - began)


def timed(action: Callable[[], Any]) -> float:
    """Seconds ``action`` takes here (its errors are part of its answer, as on the page)."""
    began = time.perf_counter()
    try:
        action()
    except KeepwarmError:
        pass
    return time.perf_counter() - began


def click_round_trip(page: Page, section: str, name: str, answer: str | None) -> float:
    """Click ``name`` on a freshly opened page; seconds until ``section`` shows ``answer`` (or, without
    one, changes) and the page settles."""
    before = page.section_text(section)
    assert answer is None or answer not in before
    css = page.css(name, "button")
    page.wait_for(f"{name} clickable", lambda d: d.find_element(By.CSS_SELECTOR, css).is_enabled())
    began = time.perf_counter()
    page.driver.find_element(By.CSS_SELECTOR, css).click()
    if answer is None:
        page.wait_for(f"{section} to change", lambda d: page.section_text(section) != before)
    else:
        page.wait_for(f"{answer!r} in {section}", lambda d: answer in page.section_text(section))
    page.wait_idle()
    return time.perf_counter() - began


def test_the_page_overhead_of_cheap_clicks_is_measured(page: Page, tmp_path: Path) -> None:
    app_dir = app_copy(tmp_path, "mycode_project", folder="speed_clicks")
    env = Env(app_dir)
    service = Service(env)
    clicks: list[tuple[str, str, str | None, Callable[[], Any]]] = [
        ("settings", "settings.save", "nothing to save", lambda: read_snapshot(env.settings_path)),
        ("distribute", "args.save", "nothing to save", lambda: read_snapshot(env.settings_path)),
        ("service", "service.status", "status stopped", service.status),
        ("service", "service.health", "health gate failed", service.health),
        ("data", "data.load", None, lambda: head(env)),
    ]
    for _ in range(REPEATS):
        for section, name, answer, action in clicks:
            page.open(app_dir)
            page.wait_for_text("Live view")
            took = click_round_trip(page, section, name, answer)
            TIMINGS.click(f"speed: page overhead of {name}", max(0.0, took - timed(action)))
