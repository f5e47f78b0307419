"""An operator sets, runs, serves and stops an app in the browser, end to end.

Each step saves a screenshot under the test's tmp_path (and, when ``KEEPWARM_SCREENSHOTS`` names a
folder, there too: ``scripts/ui-screenshots.sh`` refreshes docs/img/ that way).
"""

from __future__ import annotations

from pathlib import Path

from keepwarm.api import Service
from keepwarm.env import Env
from keepwarm.settings import load_settings

from ..conftest import Services
from .conftest import app_copy
from .kit import Page, Screenshots


def test_an_operator_sets_runs_serves_and_stops_an_app_in_the_browser(
    page: Page, shots: Screenshots, tmp_path: Path, services: Services
) -> None:
    app_dir = app_copy(tmp_path)
    services.envs.append(Env(app_dir))
    settings = app_dir / "app_settings.toml"
    page.open(app_dir)
    page.wait_for_text("ORCHESTRATE")
    page.wait_for_text("Calculated mode")
    page.wait_for_text("Live view")
    shots.take("orchestrate-page")

    # A setting changed in the page lands in the TOML, comments kept.
    page.type("settings.slots", "3")
    page.click("settings.save", then="saved to")
    assert load_settings(settings).cluster.slots == 3
    assert "# The reference system's SLA defaults." in settings.read_text()
    shots.take("orchestrate-settings", section="section-settings")

    # The example app installs and runs, on the three workers the settings now ask for.
    page.click("install.run", then=f"installed {app_dir.name} in")
    page.click("run.run", then="mode python: 2000 rows")
    page.expand("section-run", "Run logs")  # the kept log: three plan workers ran
    page.wait_for_text("on worker-2")
    shots.take("orchestrate-run", section="section-run")

    # The service starts, and every loop is healthy.
    page.click("service.start", then="3 loops ready")
    page.wait_for_text("3 of 3 loops healthy")
    status = Service(Env(app_dir)).status()
    assert status.workers_healthy_count == 3 and status.workers_unhealthy_count == 0
    shots.take("orchestrate-service", section="section-service")

    # A task goes in and its result comes out.
    page.click("service.submit", then=" done in ")
    page.wait_for_text('"collatz_steps":111')
    shots.take("orchestrate-task", section="section-service")

    page.click("service.stop", then=f"service {app_dir.name} stopped")
    assert Service(Env(app_dir)).status().status == "stopped"
    assert all(path.stat().st_size > 10_000 for path in shots.taken)
