"""Run mode's pool: one process of keepwarm's own per plan worker, all at once.

Each plan worker's process is ``python -m keepwarm.runmode.pool``: a fresh interpreter that starts from this
module, never from the caller's script (multiprocessing's spawn re-imports the caller's
``__main__``, which runs a script without a ``__main__`` guard a second time, inside the pool). It
reads its partitions on stdin, works them in order with ``batch.run_partition``, then calls
``stop()``, and answers each on its stdout; requests and answers are lines of keepwarm's child
protocol (``keepwarm._sys.child``). What the app writes to file descriptor 1 is sent to stderr,
which the runner keeps in the run log. A process that exits before it has answered for every
partition and for ``stop()`` fails the run with what it died of (its exit code or signal) and the
last line it wrote on stderr.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from keepwarm._sys.child import (
    child_command,
    child_parser,
    keep_stdout_for_reports,
    parse_report,
    report,
    report_line,
)
from keepwarm._sys.procs import set_parent_death_signal
from keepwarm.errors import PoolProcessDied
from keepwarm.runmode.batch import PartitionJob, PartitionOutcome, WorkerLog, finish_worker, run_partition

STOP_GRACE_SEC = 5.0
CHILD_MODULE = "keepwarm.runmode.pool"
# the requests a pool process reads on stdin, and its answers on stdout
WORK, FINISH = "work-partition", "finish-worker"
PARTITION_DONE, WORKER_STOPPED = "partition-done", "worker-stopped"


@dataclass
class _PoolProcess:
    worker: str
    jobs: list[PartitionJob]
    process: subprocess.Popen[str]
    answered: int = 0
    last_error_line: str = ""
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def working_on(self) -> str:
        if self.answered < len(self.jobs):
            return f"partition {self.jobs[self.answered].partition.get('name')}"
        return "its stop()"


# (process, kind, value): kind is outcome, stopped, stderr (a line) or exit (the exit code)
_Messages = queue.Queue[tuple[_PoolProcess, str, Any]]


def in_pools(run_id: str, jobs: dict[str, list[PartitionJob]]) -> Iterator[PartitionOutcome | WorkerLog]:
    """Work every plan worker's partitions in a process of its own, all at once; yields each
    partition's outcome as it comes, and what each process wrote outside its partitions."""
    messages: _Messages = queue.Queue()
    pools = [
        _start(run_id, worker, worker_jobs, messages) for worker, worker_jobs in jobs.items() if worker_jobs
    ]
    try:
        running = len(pools)
        while running:
            pool, kind, value = messages.get()
            if kind == "outcome":
                pool.answered += 1
                yield PartitionOutcome.model_validate(value)
            elif kind == "stopped":
                pool.answered += 1
                yield WorkerLog(pool.worker, value)
            elif kind == "stderr":
                if value.strip():
                    pool.last_error_line = value.strip()
                yield WorkerLog(pool.worker, value)
            else:  # "exit": every line it wrote has been read
                running -= 1
                if pool.answered <= len(pool.jobs):
                    raise PoolProcessDied(_death(pool, value))
    finally:
        for pool in pools:
            _end(pool)


def _start(run_id: str, worker: str, jobs: list[PartitionJob], messages: _Messages) -> _PoolProcess:
    command = child_command(CHILD_MODULE, "--parent-pid", str(os.getpid()))
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    pool = _PoolProcess(worker, jobs, process)
    lines = [report_line(WORK, job=asdict(job)) for job in jobs]
    lines.append(report_line(FINISH, run_id=run_id, worker=worker))
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    stderr = threading.Thread(target=_read_stderr, args=(pool, process.stderr, messages), daemon=True)
    pool.threads = [
        threading.Thread(target=_feed, args=(process.stdin, lines), daemon=True),
        stderr,
        threading.Thread(target=_read_answers, args=(pool, process.stdout, stderr, messages), daemon=True),
    ]
    for thread in pool.threads:
        thread.start()
    return pool


def _feed(stdin: IO[str], lines: list[str]) -> None:
    try:
        for line in lines:
            stdin.write(line + "\n")
            stdin.flush()
        stdin.close()
    except (BrokenPipeError, OSError, ValueError):
        pass  # the process died: its reader reports how


def _read_stderr(pool: _PoolProcess, stderr: IO[str], messages: _Messages) -> None:
    for line in stderr:
        messages.put((pool, "stderr", line.rstrip("\n")))


def _read_answers(
    pool: _PoolProcess,
    stdout: IO[str],
    stderr_reader: threading.Thread,
    messages: _Messages,
) -> None:
    for line in stdout:
        answer = parse_report(line)
        if answer is not None and answer.kind == PARTITION_DONE:
            messages.put((pool, "outcome", answer.fields["outcome"]))
        elif answer is not None and answer.kind == WORKER_STOPPED:
            messages.put((pool, "stopped", answer.fields["log"]))
    stderr_reader.join()
    messages.put((pool, "exit", pool.process.wait()))


def _death(pool: _PoolProcess, code: int) -> str:
    if code < 0:
        how = f"killed by signal {signal.Signals(-code).name}"
    else:
        how = f"its interpreter exited with code {code} (os._exit, or the app ended the interpreter)"
    said = f"; its last words on stderr: {pool.last_error_line}" if pool.last_error_line else ""
    return (
        f"the pool process of {pool.worker} (pid {pool.process.pid}) died while working "
        f"{pool.working_on}: {how}{said}"
    )


def _end(pool: _PoolProcess) -> None:
    """Wait for a process that is finishing; stop one still working (the run failed elsewhere)."""
    process = pool.process
    if process.poll() is None and pool.answered <= len(pool.jobs):
        process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_SEC)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for thread in pool.threads:
        thread.join()
    for stream in (process.stdin, process.stdout, process.stderr):
        with contextlib.suppress(OSError):  # stdin of a dead process: its buffer cannot be flushed
            stream.close()  # type: ignore[union-attr]


# ---------------------------------------------------------------- the pool process


def main(argv: list[str] | None = None) -> int:
    """``python -m keepwarm.runmode.pool``: partitions in on stdin, one answer per line out on stdout."""
    parser = child_parser(CHILD_MODULE, __doc__, env=False)
    parser.add_argument("--parent-pid", type=int, required=True)
    options = parser.parse_args(argv)
    set_parent_death_signal(options.parent_pid)
    answers = keep_stdout_for_reports()  # what the app writes to fd 1 goes to the log
    for line in sys.stdin:
        request = parse_report(line)
        if request is None:
            continue
        if request.kind == WORK:
            outcome = run_partition(PartitionJob(**request.fields["job"]))
            report(PARTITION_DONE, stream=answers, outcome=outcome.model_dump(mode="json"))
        elif request.kind == FINISH:
            report(
                WORKER_STOPPED,
                stream=answers,
                log=finish_worker(request.fields["run_id"], request.fields["worker"]),
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
