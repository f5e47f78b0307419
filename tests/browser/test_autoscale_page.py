"""An autoscaled service in the browser (issue 17): under a burst, the live view says how the service
scales (its summary line and its last decision) and draws the loops, the pending tasks and the
throughput on one chart. The chart's data is checked in tests/test_ui_autoscale.py (AppTest reads
it); here, what a person sees, and the screenshot docs/ui.md shows.
"""

from __future__ import annotations

import re
from pathlib import Path

from selenium.webdriver.common.by import By

from keepwarm.env import Env

from ..conftest import Services, write_app
from .kit import Page, Screenshots

WORKER = """\
import time


class Worker:
    def work(self, item):
        time.sleep(item.args.get("seconds", 0))
"""
SETTINGS = """\
[cluster]
heartbeat_interval_sec = 0.2

[cluster.autoscale]
enabled = true
min_loops = 1
max_loops = 4
target_pending_per_loop = 2
scale_up_delay_sec = 0.3
scale_down_delay_sec = 60  # the grown loops stay up while the page is read
"""
DECISION = re.compile(r"last decision at \d\d:\d\d:\d\d: (\d) → (\d) loops \(.*backlog")


def grown(text: str) -> bool:
    """The last decision shown grew the loops (in one step or several: the last may be 2 → 4)."""
    decision = DECISION.search(text)
    return decision is not None and int(decision[2]) > int(decision[1])


def live_text(page: Page) -> str:
    return str(page.find("service.live_panel").text)


def test_a_burst_shows_the_autoscaling_line_its_last_decision_and_the_fleet_chart(
    page: Page, shots: Screenshots, tmp_path: Path, services: Services
) -> None:
    folder = write_app(tmp_path, "scaled_page", WORKER, SETTINGS)
    service = services.start(Env(folder))
    page.open(folder)
    page.wait_for("the autoscaling line", lambda d: "autoscaling 1–4, now 1" in live_text(page))

    service.submit_many([{"args": {"seconds": 0.3}} for _ in range(80)])
    page.wait_for("a scale-up decision", lambda d: grown(live_text(page)))
    page.wait_for(
        "the fleet chart drawn",
        lambda d: (
            "Loops, pending tasks and throughput" in live_text(page)
            and d.find_elements(By.CSS_SELECTOR, f"{page.css('service.live_panel')} .vega-embed")
        ),
    )
    assert re.search(r"autoscaling 1–4, now [234] \(backlog \d+, target 2 per loop\)", live_text(page))
    shots.take("orchestrate-autoscale", section=page.key("service.live_panel").replace(".", "-"))
