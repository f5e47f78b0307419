"""An operator builds a two-step pipeline in the browser, runs it, and sees a step go stale.

Step 1 is ORCHESTRATE's install snippet as the reference writes it (its AGI tab, "Save and add to
PIPELINE"); step 2 is an ``AGI.run`` snippet generated on the PIPELINE page. Both run as child
processes; their outcomes and logs show on the page; an ``[args]`` change in the file marks them stale.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from keepwarm.env import Env
from keepwarm.pipeline.steps import load_pipeline
from keepwarm.settings import update_settings

from .conftest import app_copy
from .kit import Page, Screenshots


def click_tab(page: Page, section: str, label: str) -> None:
    """Show tab ``label`` of the first snippet in ``section``."""
    xpath = f"//*[contains(@class, 'st-key-{section}')]//*[@data-testid='stTab'][contains(., '{label}')]"

    def shown_tab(driver: Any) -> Any:
        return next((tab for tab in driver.find_elements(By.XPATH, xpath) if tab.is_displayed()), None)

    page.wait_for(f"the {label} tab", shown_tab).click()
    page.wait_for(f"the {label} tab chosen", lambda d: shown_tab(d).get_attribute("aria-selected") == "true")
    page.wait_idle()


def click_shown(page: Page, name: str, then: str) -> None:
    """Click button ``name`` once it is on screen (a tab's content shows after the tab is chosen)."""
    page.wait_for(
        f"{name} shown", lambda d: d.find_element(By.CSS_SELECTOR, page.css(name, "button")).is_displayed()
    )
    page.click(name, then=then)


def choose(page: Page, name: str, option: str) -> None:
    """Pick ``option`` in the selectbox ``name`` (the caller waits for what it changes)."""
    page.find(name, "input").send_keys(option, Keys.ENTER)
    page.wait_idle()


def test_an_operator_builds_runs_and_sees_a_stale_two_step_pipeline(
    page: Page, shots: Screenshots, tmp_path: Path
) -> None:
    app_dir = app_copy(tmp_path)

    # Step 1: ORCHESTRATE's install snippet, as the reference writes it, saved and added to the pipeline.
    page.open(app_dir)
    page.expand("section-install", "Python, CLI and AGI")
    click_tab(page, "section-install", "AGI")
    page.wait_for_text("await AGI.install(env)")
    click_shown(page, "snippet.install.agi.step", then="as step 1 of the PIPELINE")
    assert (app_dir / "AGI_install.py").read_text().startswith("# keepwarm snippet: AGI.install of")
    shots.take("orchestrate-agi-snippet", section="section-install")

    # Any snippet saved as a file runs as it is: the Run section's AGI.run.
    page.expand("section-run", "Python, CLI and AGI")
    click_tab(page, "section-run", "AGI")
    click_shown(page, "snippet.run.agi.save", then="run it with python AGI_run.py")
    ran = subprocess.run(
        [sys.executable, "AGI_run.py"], cwd=app_dir, capture_output=True, text=True, timeout=300, check=False
    )
    assert ran.returncode == 0 and "RUN: done" in ran.stdout, ran.stderr

    # Step 2: an AGI.run snippet generated on the PIPELINE page.
    page.open(app_dir, "pipeline")
    page.wait_for_text("1. AGI_install.py")
    choose(page, "pipeline.gen.action", "run")
    page.wait_for_text("await AGI.run(env, mode=0, x=27, items=2000, partitions=8)")
    page.click("pipeline.generate", then="as step 2")
    assert [s.file for s in load_pipeline(Env(app_dir)).steps] == ["AGI_install.py", "AGI_run.py"]

    # RUN ALL: both steps run, in order, each with its outcome and its log.
    page.click("pipeline.run_all", then="2 steps ok in")
    page.wait_for_text("step 1 ok: exit code 0")
    page.wait_for_text("step 2 ok: exit code 0")
    page.expand("section-pipeline", "Log of step 1")
    page.expand("section-pipeline", "Log of step 2")
    page.wait_for_text("INSTALL: [('environment', 'done')")
    page.wait_for_text("RUN: done")

    # [args] changed in the file: both steps still embed the old values, and say so.
    update_settings(app_dir / "app_settings.toml", "args", {"items": 400})
    page.open(app_dir, "pipeline")
    page.wait_for_text("stale: [args] changed since this step was generated: items 2000 → 400")
    assert page.section_text("pipeline").count("items 2000 → 400") == 2
    page.expand("section-pipeline", "Log of step 2")
    page.wait_for_text("RUN: done")
    shots.take("pipeline-page", section="section-pipeline")

    # One step on its own.
    page.click("pipeline.run.1", then="1 step ok in")

    # Reorder, remove, and add back from the file the app folder keeps.
    def order() -> list[str]:
        return [step.file for step in load_pipeline(Env(app_dir)).steps]

    page.click("pipeline.down.1", then="moved AGI_install.py down")
    assert order() == ["AGI_run.py", "AGI_install.py"]
    page.click("pipeline.remove.2", then="removed step 2 (AGI_install.py); the file stays")
    assert order() == ["AGI_run.py"] and (app_dir / "AGI_install.py").exists()
    source = page.find("pipeline.source")
    next(
        label for label in source.find_elements(By.TAG_NAME, "label") if "snippet file" in label.text
    ).click()
    page.wait_idle()
    page.click("pipeline.add_file", then="added AGI_install.py as step 2")
    assert order() == ["AGI_run.py", "AGI_install.py"]
    assert all(path.stat().st_size > 10_000 for path in shots.taken)
