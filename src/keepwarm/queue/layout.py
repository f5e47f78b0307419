"""Where every file of a service lives on disk: the one module that spells their names.

Under ``<share>/<namespace>/``::

    service/<app>/                       ServiceLayout
        service.json                     desired state (start, stop, the supervisor)
        service.lock                     flock held by the live supervisor
        supervisor.json                  live state, rewritten every heartbeat interval
        health.json                      the supervisor's last verdict
        events.jsonl                     what happened to tasks and loops
        cluster.json                     the Dask keeper of a cluster service
        control/<id>.cmd.json            a command to the supervisor, and <id>.ack.json its answer
        loops/<slot>.<incarnation>.run   a cluster loop's run marker
        queue/                           QueueLayout
            pending/<seq>-<task_id>.task.json
            running/<slot>.<incarnation>/<name>
            done/<task_id>.task.json
            failed/<task_id>.task.json
            heartbeats/<slot>.json
    data/<app>/                          run-mode outputs

and the log folder (``Env.log_dir``): ``supervisor.log``, ``<slot>.log``, ``cluster.log``.
Paths only: nothing here reads or writes a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from keepwarm.queue.task import TASK_SUFFIX

REJECTION_SUFFIX = ".rejection.txt"
COMMAND_SUFFIX = ".cmd.json"
ACK_SUFFIX = ".ack.json"

SERVICE_FILE = "service.json"
SUPERVISOR_FILE = "supervisor.json"
HEALTH_FILE = "health.json"
LOCK_FILE = "service.lock"
EVENTS_FILE = "events.jsonl"
CLUSTER_FILE = "cluster.json"

SUPERVISOR_LOG = "supervisor.log"
CLUSTER_LOG = "cluster.log"

SERVICES_FOLDER = "service"
DATA_FOLDER = "data"


def services_dir(share_root: Path, namespace: str) -> Path:
    """The folder that holds one folder per service of a namespace."""
    return share_root / namespace / SERVICES_FOLDER


def service_dir(share_root: Path, namespace: str, app: str) -> Path:
    """One service's folder: its state files and its queue."""
    return services_dir(share_root, namespace) / app


def data_dir(share_root: Path, namespace: str, app: str) -> Path:
    """Where an app's run-mode outputs go, one folder per run."""
    return share_root / namespace / DATA_FOLDER / app


def loop_log_name(slot: str) -> str:
    """The name of a loop's log file in the log folder."""
    return f"{slot}.log"


def heartbeat_name(slot: str) -> str:
    """The name of a loop's heartbeat file in ``heartbeats/``."""
    return f"{slot}.json"


def owner_name(slot: str, incarnation: str) -> str:
    """The name of a loop incarnation's claim folder in ``running/`` (and of its run marker)."""
    return f"{slot}.{incarnation}"


@dataclass(frozen=True)
class QueueLayout:
    """The folders of a service's queue, one per task state, and its heartbeats."""

    root: Path

    @property
    def pending(self) -> Path:
        return self.root / "pending"

    @property
    def running(self) -> Path:
        return self.root / "running"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    @property
    def heartbeats(self) -> Path:
        return self.root / "heartbeats"

    @property
    def folders(self) -> tuple[Path, ...]:
        """Every folder of the queue, in the order tasks move through them."""
        return (self.pending, self.running, self.done, self.failed, self.heartbeats)

    def heartbeat(self, slot: str) -> Path:
        """``heartbeats/<slot>.json``."""
        return self.heartbeats / heartbeat_name(slot)

    def owner_dir(self, slot: str, incarnation: str) -> Path:
        """``running/<slot>.<incarnation>/``: the claim folder of one loop incarnation."""
        return self.running / owner_name(slot, incarnation)

    def terminal_name(self, task_id: str) -> str:
        """The name of a task's terminal record in ``done/`` or ``failed/``."""
        return f"{task_id}{TASK_SUFFIX}"


@dataclass(frozen=True)
class ServiceLayout:
    """The files of one service, from its folder."""

    root: Path

    @classmethod
    def of(cls, share_root: Path, namespace: str, app: str) -> ServiceLayout:
        """The layout of app ``app``'s service in ``namespace`` under ``share_root``."""
        return cls(service_dir(share_root, namespace, app))

    @property
    def queue(self) -> QueueLayout:
        return QueueLayout(self.root / "queue")

    @property
    def service_record(self) -> Path:
        return self.root / SERVICE_FILE

    @property
    def supervisor_state(self) -> Path:
        return self.root / SUPERVISOR_FILE

    @property
    def health(self) -> Path:
        return self.root / HEALTH_FILE

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def events(self) -> Path:
        return self.root / EVENTS_FILE

    @property
    def cluster_keeper(self) -> Path:
        return self.root / CLUSTER_FILE

    @property
    def control(self) -> Path:
        return self.root / "control"

    @property
    def run_markers(self) -> Path:
        return self.root / "loops"

    def run_marker(self, slot: str, incarnation: str) -> Path:
        """``loops/<slot>.<incarnation>.run``: a cluster loop's marker, removed to stop it."""
        return self.run_markers / f"{owner_name(slot, incarnation)}.run"

    def stop_marker(self, slot: str, incarnation: str) -> Path:
        """``loops/<slot>.<incarnation>.stop``: tells a cluster loop to finish its task and exit."""
        return self.run_markers / f"{owner_name(slot, incarnation)}.stop"

    def command_file(self, command_id: str) -> Path:
        """``control/<id>.cmd.json``."""
        return self.control / f"{command_id}{COMMAND_SUFFIX}"

    def ack_file(self, command_id: str) -> Path:
        """``control/<id>.ack.json``."""
        return self.control / f"{command_id}{ACK_SUFFIX}"


def events_path_of_queue(queue_root: Path) -> Path:
    """``events.jsonl`` beside a queue folder (a queue lives in its service's folder)."""
    return ServiceLayout(queue_root.parent).events
