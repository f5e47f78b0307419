"""A pipeline step running from the PIPELINE page does not outlive the page's server.

The operator clicks RUN ALL on a step that hangs (it has started a process of its own, in its group),
then stops ``keepwarm ui``: the step and the process it started are gone, and the step after it never
ran. The server is this test's own (stopped by its pid), not the session's.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from keepwarm._sys.procs import signal_quietly
from keepwarm.env import Env
from keepwarm.pipeline.steps import add_step

from ..test_pipeline import HANGS, gone, step_pids
from .conftest import app_copy, serving
from .kit import Page


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A ``keepwarm ui`` of this test alone, stopped by its pid at the end if the test has not."""
    with serving(tmp_path / "keepwarm-ui.log") as (server, url):
        yield server, url


def test_stopping_the_page_server_mid_run_kills_the_running_step(
    driver: WebDriver, own_server: tuple[subprocess.Popen[str], str], tmp_path: Path
) -> None:
    server, url = own_server
    app_dir = app_copy(tmp_path, folder="pipeline_stop_app")
    env = Env(app_dir)
    (app_dir / "hangs.py").write_text(HANGS)
    (app_dir / "after.py").write_text("open('after.txt', 'w').write('ran')\n")
    add_step(env, "hangs.py")
    add_step(env, "after.py")
    page = Page(driver, url).open(app_dir, "pipeline")
    css = page.css("pipeline.run_all", "button")
    page.wait_for("RUN ALL", lambda d: d.find_element(By.CSS_SELECTOR, css).is_enabled())
    driver.find_element(By.CSS_SELECTOR, css).click()  # not page.click: the run never settles
    pids = step_pids(app_dir)
    try:
        page.wait_for_text("hanging now")  # the page streams the step's output

        server.send_signal(signal.SIGTERM)  # the operator stops keepwarm ui mid-run

        server.wait(timeout=60)
        assert all(gone(pid) for pid in pids)
        assert not (app_dir / "after.txt").exists()
    finally:
        for pid in pids:
            signal_quietly(pid, signal.SIGKILL)
