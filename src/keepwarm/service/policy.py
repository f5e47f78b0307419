"""The supervisor's decisions about a loop, as pure functions of numbers it has already read.

Restart back-off, why a loop ended, when a loop is overdue (no first heartbeat, a stale heartbeat,
a task past its timeout) and when it is over its memory limit. Nothing here reads a file, a clock
or a process: the supervisor passes what it saw and acts on the answer.
"""

from __future__ import annotations

from keepwarm.queue.state import FutureState, RestartReason, stale_heartbeat

MB = 1024 * 1024


def restart_delay(crashes: int, base_sec: float, max_sec: float) -> float:
    """Seconds to wait before restarting a loop after its ``crashes``-th unplanned end in a row.

    The first crash restarts at once; then ``base_sec`` doubles each time, capped at ``max_sec``.
    """
    if crashes <= 0:
        return 0.0
    return float(min(base_sec * 2 ** (crashes - 1), max_sec))


def exit_reason(
    *, ordered: str | None, backend_reason: str | None, code: int, stop_reason: str | None
) -> str:
    """Why a loop exited: what keepwarm ordered, else what the backend saw, else its exit code.

    ``stop_reason`` is the one its last heartbeat gave (``max-tasks`` when it recycled itself).
    """
    if ordered is not None:
        return ordered
    if backend_reason is not None:
        return backend_reason
    if code == 0:
        return RestartReason.RECYCLED if stop_reason == "max-tasks" else RestartReason.LOOP_FINISHED
    return RestartReason.LOOP_ERROR


def future_state_after_exit(*, code: int, ordered: bool, backend_reason: str | None) -> FutureState:
    """The state a loop's row shows once it exited."""
    if backend_reason == RestartReason.WORKER_LOST:
        return "lost"
    if code == 0:
        return "finished"
    return "cancelled" if ordered else "error"


def first_heartbeat_overdue(
    *, started_for: float, heartbeat_timeout_sec: float, start_timeout_sec: float
) -> bool:
    """A loop started ``started_for`` seconds ago and has not beaten yet: is it past its allowance?

    The first heartbeat comes once the interpreter started (on Dask, once a worker took the loop), so
    it gets the start's allowance when that is longer than a heartbeat's.
    """
    return started_for > max(heartbeat_timeout_sec, start_timeout_sec)


def stale_heartbeat_reason(age_sec: float, heartbeat_timeout_sec: float) -> str | None:
    """``stale-heartbeat(Ns)`` when the last heartbeat is older than the timeout, else None."""
    return stale_heartbeat(age_sec) if age_sec > heartbeat_timeout_sec else None


def task_overdue(*, running_for: float, task_timeout_sec: float, heartbeat_interval_sec: float) -> bool:
    """Whether a task has run past its timeout, with a heartbeat's slack (at least a second)."""
    return running_for > task_timeout_sec + max(1.0, heartbeat_interval_sec)


def over_memory_limit(rss_bytes: int | None, max_memory_mb: int | None) -> bool:
    """Whether a loop's resident memory is over ``[cluster] max_memory_mb`` (0 or None: no limit)."""
    return bool(max_memory_mb and rss_bytes and rss_bytes > max_memory_mb * MB)


def crash_count_resets(healthy_for: float, restart_reset_sec: float) -> bool:
    """Whether a loop has been healthy long enough that its back-off starts over."""
    return healthy_for > restart_reset_sec
