"""The live view's memory (``keepwarm.ui.live``): samples, throughput, and when there is anything to chart."""

from __future__ import annotations

import re

from keepwarm.ui.live import LiveHistory, Sample, clock


def sample(at: float, pending: int = 0, finished: int = 0, loops: int = 0) -> Sample:
    return Sample(at, pending, 0, finished, {f"loop-{n}": 0.5 for n in range(loops)})


def test_a_stopped_idle_service_has_nothing_to_chart_until_a_loop_is_up_or_the_queue_moves() -> None:
    history = LiveHistory()
    for at in (1.0, 2.0, 3.0):
        history.add(sample(at))
    assert not history.eventful  # flat zeros: the page skips redrawing three charts every refresh
    history.add(sample(4.0, pending=2))
    assert history.eventful
    running = LiveHistory()
    running.add(sample(1.0, loops=2))
    assert running.eventful


def test_throughput_counts_finished_tasks_per_second_between_samples() -> None:
    history = LiveHistory()
    history.add(sample(10.0, finished=0))
    history.add(sample(12.0, finished=8))
    history.add(sample(12.0, finished=9))  # the same instant again adds nothing
    assert history.throughput() == [(12.0, 4.0)]
    assert history.recent_throughput() == 4.0


def test_clock_gives_hours_minutes_seconds() -> None:
    assert re.fullmatch(r"\d\d:\d\d:\d\d", clock(1_700_000_000.0))
