"""What the supervisor asks of a backend and of each loop it runs.

A backend places loops somewhere (OS processes of this host: ``local``; Dask workers: ``dask``) and
hands back a ``LoopHandle`` per loop. The supervisor drives every backend through these two protocols
only. Both carry the answers of a backend with nothing to add (no own exit reasons, no cluster to
record, check or release): a backend that subclasses them overrides only what it does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from keepwarm.queue.state import ClusterRecord


class LoopHandle(Protocol):
    """One loop a backend started: the supervisor polls it, stops or kills it, and closes it once gone."""

    slot: str
    incarnation: str
    wake_fd: int | None  # readable when the loop exits (a pidfd); None: the backend calls ``wake``

    @property
    def pid(self) -> int | None:
        """The loop's process id, where known."""
        ...

    def poll(self) -> int | None:
        """The loop's exit code once it has ended, else None."""
        ...

    def stop(self) -> None:
        """Ask the loop to finish its current task, then exit."""
        ...

    def kill(self) -> None:
        """End the loop now."""
        ...

    def exit_reason(self) -> str | None:
        """A backend's own word for how the loop ended (None: judge by the exit code)."""
        return None

    def close(self) -> None:
        """Release what watching the loop held, once it is gone."""
        return None


class LoopBackend(Protocol):
    """Where a service's loops run."""

    name: str

    def open(self, supervisor: str, wake: Callable[[], None], slots: int) -> None:
        """Get ready to start loops for the supervisor of incarnation ``supervisor``; ``wake`` is
        called when a loop without a ``wake_fd`` ends."""
        ...

    def spawn(self, slot: str, *, max_tasks: int | None = None) -> LoopHandle:
        """Start a loop for ``slot`` (which exits after ``max_tasks`` tasks, when given)."""
        ...

    def loop_alive(self, pid: int | None, slot: str, incarnation: str) -> bool:
        """Whether a loop an earlier supervisor started still runs."""
        ...

    def stop_orphan(self, pid: int | None, slot: str, incarnation: str) -> None:
        """Ask a loop of an earlier supervisor to finish its task and exit."""
        ...

    def kill_orphan(self, pid: int | None, slot: str, incarnation: str) -> None:
        """End a loop of an earlier supervisor now, where this backend can reach it."""
        ...

    def fit(self, loops: int) -> int | None:
        """Make room for ``loops`` loops where the backend can (a cluster keepwarm holds grows or
        shrinks to that many workers); the most loops it can place now (None: no limit)."""
        return None

    def record(self) -> ClusterRecord | None:
        """The cluster to record in ``service.json`` (None: no cluster)."""
        return None

    def check(self) -> str | None:
        """A condition that makes the whole backend unusable (None: fine)."""
        return None

    def close(self, *, shutdown: bool | None = None) -> None:
        """Release the backend (``shutdown``: whether a cluster keepwarm started goes too)."""
        return None

    def retire(self) -> None:
        """A later start chose another backend: release what an earlier start of this one left."""
        return None
