"""The supervisor's decisions about a loop, as pure functions: real values in, the decision out."""

from __future__ import annotations

import pytest

from keepwarm.queue.state import LoopRow, RestartReason, is_planned
from keepwarm.service import policy
from keepwarm.service.slots import Slot, SlotPhase, slot_index, slot_name


def test_the_first_crash_restarts_at_once_then_the_back_off_doubles_up_to_its_cap() -> None:
    delays = [policy.restart_delay(crashes, base_sec=1.0, max_sec=10.0) for crashes in range(7)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_loop_healthy_long_enough_starts_its_back_off_over() -> None:
    assert policy.crash_count_resets(601.0, restart_reset_sec=600.0)
    assert not policy.crash_count_resets(600.0, restart_reset_sec=600.0)


def test_what_keepwarm_ordered_names_the_exit_whatever_its_code() -> None:
    for code in (0, 1, -9):
        reason = policy.exit_reason(
            ordered="scale-down", backend_reason="worker-lost", code=code, stop_reason="max-tasks"
        )
        assert reason == "scale-down"


def test_an_unordered_exit_is_named_by_the_backend_then_by_its_code() -> None:
    assert policy.exit_reason(ordered=None, backend_reason="worker-lost", code=0, stop_reason=None) == (
        "worker-lost"
    )
    assert policy.exit_reason(ordered=None, backend_reason=None, code=0, stop_reason="max-tasks") == (
        RestartReason.RECYCLED
    )
    assert policy.exit_reason(ordered=None, backend_reason=None, code=0, stop_reason=None) == (
        "loop-finished"
    )
    assert policy.exit_reason(ordered=None, backend_reason=None, code=1, stop_reason="max-tasks") == (
        "loop-error"
    )


def test_a_recycled_loop_is_a_planned_restart_a_crashed_one_is_not() -> None:
    recycled = policy.exit_reason(ordered=None, backend_reason=None, code=0, stop_reason="max-tasks")
    crashed = policy.exit_reason(ordered=None, backend_reason=None, code=1, stop_reason=None)
    assert is_planned(recycled)
    assert not is_planned(crashed)


@pytest.mark.parametrize(
    ("code", "ordered", "backend_reason", "state"),
    [
        (0, False, None, "finished"),
        (0, True, None, "finished"),
        (1, False, None, "error"),
        (-15, True, None, "cancelled"),
        (1, False, "worker-lost", "lost"),
        (0, True, "worker-lost", "lost"),
    ],
)
def test_the_row_of_an_exited_loop_says_how_it_ended(
    code: int, ordered: bool, backend_reason: str | None, state: str
) -> None:
    assert policy.future_state_after_exit(code=code, ordered=ordered, backend_reason=backend_reason) == state


def test_the_first_heartbeat_gets_the_longer_of_the_start_and_heartbeat_allowances() -> None:
    overdue = policy.first_heartbeat_overdue
    assert not overdue(started_for=25.0, heartbeat_timeout_sec=10.0, start_timeout_sec=30.0)
    assert overdue(started_for=31.0, heartbeat_timeout_sec=10.0, start_timeout_sec=30.0)
    assert not overdue(started_for=9.0, heartbeat_timeout_sec=10.0, start_timeout_sec=1.0)
    assert overdue(started_for=11.0, heartbeat_timeout_sec=10.0, start_timeout_sec=1.0)


def test_a_stale_heartbeat_is_named_with_its_age_in_whole_seconds() -> None:
    assert policy.stale_heartbeat_reason(9.9, heartbeat_timeout_sec=10.0) is None
    reason = policy.stale_heartbeat_reason(12.7, heartbeat_timeout_sec=10.0)
    assert reason == "stale-heartbeat(12s)"
    assert RestartReason.parse(reason) is RestartReason.STALE_HEARTBEAT
    assert not is_planned(reason)


def test_a_task_is_overdue_only_past_its_timeout_plus_a_heartbeat_of_slack() -> None:
    assert not policy.task_overdue(running_for=5.9, task_timeout_sec=5.0, heartbeat_interval_sec=0.5)
    assert policy.task_overdue(running_for=6.1, task_timeout_sec=5.0, heartbeat_interval_sec=0.5)
    assert not policy.task_overdue(running_for=7.9, task_timeout_sec=5.0, heartbeat_interval_sec=3.0)
    assert policy.task_overdue(running_for=8.1, task_timeout_sec=5.0, heartbeat_interval_sec=3.0)


def test_the_memory_limit_counts_mebibytes_and_none_or_zero_means_no_limit() -> None:
    assert policy.over_memory_limit(101 * 1024 * 1024, max_memory_mb=100)
    assert not policy.over_memory_limit(100 * 1024 * 1024, max_memory_mb=100)
    assert not policy.over_memory_limit(10**12, max_memory_mb=None)
    assert not policy.over_memory_limit(10**12, max_memory_mb=0)
    assert not policy.over_memory_limit(None, max_memory_mb=100)


def _slot() -> Slot:
    return Slot("loop-0", LoopRow(slot="loop-0", incarnation="-", host="here", started_at=0.0))


def test_a_slot_is_due_only_when_scheduled_and_its_time_has_come() -> None:
    slot = _slot()
    slot.schedule(10.0)
    assert slot.phase is SlotPhase.SCHEDULED
    assert not slot.due(9.0)
    assert slot.due(10.0)
    slot.hold()
    assert not slot.due(100.0)
    assert slot.ordered is None


def test_a_slot_keeps_the_reason_of_its_stop_when_the_stop_turns_into_a_kill() -> None:
    slot = _slot()
    slot.stopping("memory-limit", deadline=5.0)
    assert (slot.phase, slot.ordered, slot.stop_deadline) == (SlotPhase.STOPPING, "memory-limit", 5.0)
    slot.killed()
    assert (slot.phase, slot.ordered) == (SlotPhase.KILLED, "memory-limit")
    slot.killed("task-timeout")
    assert slot.ordered == "task-timeout"
    slot.exited()
    assert (slot.phase, slot.ordered, slot.alive) == (SlotPhase.HELD, None, False)


def test_slot_names_and_indexes_round_trip_and_odd_names_sort_last() -> None:
    assert [slot_index(slot_name(i)) for i in range(3)] == [0, 1, 2]
    assert slot_index("extra") > slot_index(slot_name(1023))
