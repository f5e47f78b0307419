"""The live view of an autoscaled service (issue 17): one chart of the loops, the pending tasks and the
throughput over time, and the autoscaler's one-line summary with its last decision; nothing about
autoscaling for a service that does not autoscale.

The page runs in Streamlit's AppTest (each ``run()`` is one refresh of the live view, as its timer does
in the browser) against real services; the chart's data is read from the element the page drew.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pytest
from streamlit.testing.v1 import AppTest

from keepwarm.env import Env
from keepwarm.ui import server
from keepwarm.ui.live import WINDOW_SEC, LiveHistory, Sample

from .conftest import Services, write_app
from .test_autoscale import scaled_app

AT_TIMEOUT_SEC = 90
PLAIN = """\
import time


class Worker:
    def work(self, item):
        time.sleep(item.args.get("seconds", 0))
"""


def sample(at: float, pending: int = 0, finished: int = 0, loops: int = 0) -> Sample:
    return Sample(at, pending, 0, finished, {f"loop-{n}": 0.5 for n in range(loops)})


# ---------------------------------------------------------------------- the series, alone


def test_the_fleet_series_has_loops_pending_and_throughput_over_time() -> None:
    history = LiveHistory()
    history.add(sample(10.0, pending=40, loops=1))
    history.add(sample(12.0, pending=30, finished=8, loops=3))
    assert sorted(history.fleet_series()) == [
        (10.0, "loops", 1.0),
        (10.0, "pending", 40.0),
        (12.0, "loops", 3.0),
        (12.0, "pending", 30.0),
        (12.0, "tasks/s", 4.0),
    ]


def test_the_live_history_keeps_the_last_ten_minutes() -> None:
    history = LiveHistory()
    for at in range(0, 1200, 5):
        history.add(sample(float(at), loops=1))
    kept = [s.at for s in history.samples]
    assert kept[-1] == 1195.0 and kept[0] == 1195.0 - WINDOW_SEC


# ---------------------------------------------------------------------- the page


def open_page(apps: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("KEEPWARM_APPS_PATH", str(apps))
    page = AppTest.from_file(str(server.PAGE), default_timeout=AT_TIMEOUT_SEC)
    return refresh(page)


def refresh(page: AppTest) -> AppTest:
    page.run()
    assert not page.exception, page.exception
    return page


def fleet_frame(page: AppTest) -> pd.DataFrame | None:
    """The data of the live view's loops/pending/throughput chart (None while it is not drawn)."""
    for chart in page.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        if any("datum.series === 'loops'" in json.dumps(layer) for layer in spec.get("layer", [])):
            (dataset,) = chart.proto.datasets
            frame: pd.DataFrame = pa.ipc.open_stream(dataset.data.data).read_pandas()
            return frame
    return None


def most(frame: pd.DataFrame | None, series: str) -> float:
    if frame is None:
        return 0.0
    values = frame.loc[frame["series"] == series, "value"]
    return float(values.max()) if len(values) else 0.0


def texts(page: AppTest) -> list[str]:
    return [str(element.value) for element in [*page.markdown, *page.caption]]


def refresh_until(page: AppTest, what: str, condition: object, timeout: float = 90) -> None:
    """Refresh the page, as the live view's timer does, until ``condition(page)`` holds."""
    deadline = time.monotonic() + timeout
    while not condition(refresh(page)):  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; the page said {texts(page)}")


def test_an_autoscaled_burst_shows_on_the_chart_and_in_the_autoscaling_line(
    tmp_path: Path, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long down delay: the grown loops stay up while the page is read (the chart keeps them anyway).
    env, _ = scaled_app(tmp_path, low=1, high=4, down=60)
    service = services.start(env)
    page = open_page(env.app_dir.parent, monkeypatch)
    assert any(text.startswith("**autoscaling 1–4, now 1 (backlog 0") for text in texts(page)), texts(page)

    service.submit_many([{"args": {"seconds": 0.3}} for _ in range(60)])
    refresh_until(
        page,
        "the chart's loops above one and the last decision said",
        lambda p: (
            most(fleet_frame(p), "loops") > 1
            and any(text.startswith("last decision at ") for text in texts(p))
        ),
    )
    frame = fleet_frame(page)
    assert frame is not None and set(frame["series"]) <= {"loops", "pending", "tasks/s"}
    assert most(frame, "pending") > 0  # the backlog is on the same chart
    decision = next(text for text in texts(page) if text.startswith("last decision at "))
    grew = re.match(r"last decision at \d\d:\d\d:\d\d: (\d) → (\d) loops \(backlog", decision)
    assert grew is not None and int(grew[2]) > int(grew[1]), decision  # up, in one step or several
    summary = service.status().autoscale
    assert summary.enabled and summary.last_decision is not None
    refresh_until(page, "throughput on the chart", lambda p: most(fleet_frame(p), "tasks/s") > 0)
    assert any(text.startswith("**autoscaling 1–4, now ") for text in texts(page)), texts(page)


def test_a_service_that_does_not_autoscale_shows_its_loops_and_nothing_about_autoscaling(
    tmp_path: Path, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_app(tmp_path, "fixed", PLAIN, "[cluster]\nheartbeat_interval_sec = 0.2\n")
    service = services.start(Env(folder), slots=2)
    page = open_page(folder.parent, monkeypatch)
    service.submit_many([{"args": {"seconds": 0.05}} for _ in range(10)])
    refresh_until(page, "two loops on the chart", lambda p: most(fleet_frame(p), "loops") == 2)
    assert not [text for text in texts(page) if "autoscal" in text or "last decision" in text]
