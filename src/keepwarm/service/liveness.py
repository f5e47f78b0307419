"""Is a service's supervisor alive? One answer, asked by lifecycle, health, the API, fleets and MCP.

Alive means a fresh heartbeat in ``supervisor.json`` and, on this host, a live pid; on another host the
heartbeat alone decides (its pid cannot be probed from here). Read from the state files only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keepwarm._sys.procs import process_alive
from keepwarm.queue.shareclock import Clock
from keepwarm.queue.state import (
    ServiceRecord,
    SupervisorState,
    read_service_record,
    read_supervisor_state,
    settings_in_force,
)
from keepwarm.queue.task import epoch_of

if TYPE_CHECKING:
    from keepwarm.env import Env
    from keepwarm.settings import ClusterSettings


pid_alive = process_alive  # the one probe (keepwarm._sys.procs), under the name its callers use


@dataclass(frozen=True)
class SupervisorLiveness:
    """What the state files say of a service's supervisor: who it is, and whether it is alive."""

    pid: int | None = None
    host: str | None = None
    incarnation: str | None = None
    heartbeat_age_sec: float | None = None  # None: no ``supervisor.json`` of this supervisor yet
    fresh: bool = False  # its heartbeat (or, before the first one, its start) is recent enough
    pid_exists: bool | None = None  # None: on another host, where its pid cannot be probed

    @property
    def alive(self) -> bool:
        """A fresh heartbeat, and a live pid unless it runs on another host."""
        return self.fresh and self.pid_exists is not False


def current_supervisor_state(
    record: ServiceRecord | None, state: SupervisorState | None
) -> SupervisorState | None:
    """``supervisor.json`` if it belongs to the supervisor ``service.json`` names (else it is stale)."""
    if state is None or record is None or record.supervisor is None:
        return state
    return state if state.incarnation == record.supervisor.incarnation else None


def heartbeat_limit(cluster: ClusterSettings) -> float:
    """How old the supervisor's heartbeat may be before it reads as silent."""
    return max(cluster.heartbeat_timeout_sec, 3 * cluster.heartbeat_interval_sec)


def supervisor_liveness(
    env: Env,
    record: ServiceRecord | None,
    state: SupervisorState | None,
    *,
    now: float | None = None,
) -> SupervisorLiveness:
    """The supervisor ``service.json`` names (else the one ``supervisor.json`` names) and its liveness.

    Fresh: its heartbeat is at most ``heartbeat_limit`` old, or, before its first heartbeat, it started
    at most that long ago. Judged by the settings the service runs with. Without ``now``, the heartbeat
    is aged on the share's clock (``service.clocks``: the supervisor's host's clock may disagree with
    this one's); with it, the caller vouches that ``state`` is on ``now``'s clock.
    """
    state = current_supervisor_state(record, state)
    on_share = None  # supervisor.json's age on the share's clock: the time written in it, rebased
    if now is None:
        now = time.time()
        if state is not None:
            on_share = Clock.of_share(env.queue_dir, now).file_age(env.layout.supervisor_state)
    identity = record.supervisor if record else None
    source = identity or state
    if source is None:
        return SupervisorLiveness()
    limit = heartbeat_limit(settings_in_force(env, record).cluster)
    age = (on_share if on_share is not None else max(0.0, now - state.timestamp)) if state else None
    if age is not None:
        fresh = age <= limit
    else:
        started = epoch_of(identity.started_at) if identity else None
        fresh = started is not None and now - started <= limit
    return SupervisorLiveness(
        pid=source.pid,
        host=source.host,
        incarnation=source.incarnation,
        heartbeat_age_sec=age,
        fresh=fresh,
        pid_exists=pid_alive(source.pid) if source.host == os.uname().nodename else None,
    )


def live_supervisor_state(env: Env, *, now: float | None = None) -> SupervisorState | None:
    """``supervisor.json`` of the service's live supervisor, or None: not meant to run, or not alive.

    What every "the service must be running" check asks (commands, submits, waits): the service's
    ``desired`` is running, and the supervisor ``service.json`` names is alive by ``supervisor_liveness``.
    """
    record = read_service_record(env.layout.service_record)
    state = current_supervisor_state(record, read_supervisor_state(env.layout.supervisor_state))
    if record is None or record.desired != "running" or state is None:
        return None
    return state if supervisor_liveness(env, record, state, now=now).alive else None
