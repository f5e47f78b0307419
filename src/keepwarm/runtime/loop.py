"""The persistent worker loop: ``start()`` once, then claim → work → publish for as long as it lives.

One loop occupies a slot; each (re)start of a slot is a new incarnation with its own folder
``running/<slot>.<incarnation>/``. What it claims and when it wakes is ``claims.py``; one task's
steps are ``tasks.py``; the ways of serving (one by one, async, batches) are ``serving.py``.

Run as a process: ``python -m keepwarm.runtime.loop --app APP --apps-path P --slot loop-0``.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from keepwarm._sys.child import child_parser
from keepwarm._sys.procs import set_parent_death_signal
from keepwarm._sys.watch import IN_MOVED_TO, Watcher
from keepwarm.app import App, load_app, worker_method
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.queue.taskqueue import TaskQueue
from keepwarm.runtime.asyncrunner import AsyncRunner
from keepwarm.runtime.claims import Claims
from keepwarm.runtime.heartbeat import HeartbeatWriter
from keepwarm.runtime.serving import serve_batches, serve_concurrent, serve_one_by_one
from keepwarm.runtime.tasks import TaskSteps

log = logging.getLogger("keepwarm.runtime.loop")


def new_incarnation() -> str:
    return uuid.uuid4().hex[:12]


class WorkerLoop:
    """One loop incarnation of one slot."""

    claims: Claims

    def __init__(
        self,
        env: Env,
        slot: str,
        incarnation: str | None = None,
        *,
        max_tasks: int | None = None,
        preloaded: tuple[App, Any] | None = None,
    ) -> None:
        """``preloaded``: the app and worker a template loaded and ran ``preload()`` on before it
        forked this loop (``runtime/template.py``): the loop only calls ``start()``."""
        self.env = env
        self.settings = env.settings.cluster
        self.slot = slot
        self.incarnation = incarnation or new_incarnation()
        self.max_tasks = max_tasks or self.settings.max_tasks_per_loop
        self.queue = TaskQueue.for_env(env).ensure()
        self.owner = self.queue.owner_dir(slot, self.incarnation)
        self.heartbeat = HeartbeatWriter(
            self.queue.layout.heartbeat(slot),
            slot,
            self.incarnation,
            self.settings.heartbeat_interval_sec,
        )
        self._stopping = threading.Event()
        self.steps = TaskSteps(self.queue, self.heartbeat, slot, self.incarnation, self._stopping)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.in_flight: dict[str, asyncio.Task[Any]] = {}
        self.runner: AsyncRunner | None = None
        self._app: App | None = preloaded[0] if preloaded else None
        self.worker: Any = preloaded[1] if preloaded else None
        self.forked = preloaded is not None

    @property
    def handled(self) -> int:
        """Tasks this incarnation finished (or sent back for another attempt)."""
        return self.steps.handled

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Stop after the current task (safe from a signal handler or another thread)."""
        self._stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> int:
        """Start the worker, serve tasks until stopped (or recycled), then stop the worker."""
        self.owner.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.heartbeat.start()
        try:
            self._start_worker()
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, KeepwarmError) else str(exc)
            log.error(
                "slot %s: start failed: %s",
                self.slot,
                message,
                exc_info=not isinstance(exc, KeepwarmError),
            )
            self.heartbeat.set_state("stopped", error=f"start failed: {message}")
            self._close()
            return 1
        self.heartbeat.set_state("ready")
        log.info(
            "slot %s incarnation %s ready in %.3fs",
            self.slot,
            self.incarnation,
            self.heartbeat.start_sec or 0,
        )
        with Watcher([self.queue.pending], mask=IN_MOVED_TO) as watcher:
            log.info("slot %s: waking by %s on %s", self.slot, watcher.mode, self.queue.pending)
            self.claims = Claims(
                self.queue, self.owner, watcher, self.settings.rescan_interval_sec, self._wake_r
            )
            self._serve()
        self.heartbeat.set_state("stopping")
        self._stop_worker()
        self._release_leftovers()
        if self._recycle_due():
            self.heartbeat.stop_reason = "max-tasks"
        self.heartbeat.set_state("stopped")
        self._close()
        log.info(
            "slot %s incarnation %s stopped after %d tasks",
            self.slot,
            self.incarnation,
            self.handled,
        )
        return 0

    # ------------------------------------------------------------------ worker lifecycle

    def _start_worker(self) -> None:
        began = time.perf_counter()
        if not self.forked:
            self._app = load_app(self.env)
        assert self._app is not None
        self.steps.app = self._app
        if self._app.async_methods:
            self.runner = AsyncRunner()
        if not self.forked:
            self.worker = self._app.new_worker()
            if callable(getattr(self.worker, "preload", None)):
                log.info("slot %s: spawned, not forked: preload() then start() in this loop", self.slot)
            self.call(worker_method(self.worker, "preload"))
        self.call(worker_method(self.worker, "start"))
        gc.freeze()  # what start() loaded lives as long as the loop: collections need not scan it again
        self.heartbeat.start_sec = round(time.perf_counter() - began, 6)
        self.heartbeat.cancels_in_loop = "work" in self._app.async_methods  # told with "ready"

    def _stop_worker(self) -> None:
        try:
            self.call(worker_method(self.worker, "stop"))
        except Exception:
            log.exception("slot %s: worker.stop() raised", self.slot)

    def call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call a worker method; an awaitable it returns is awaited on the loop's event loop."""
        result = method(*args)
        if inspect.isawaitable(result):
            if self.runner is None:
                self.runner = AsyncRunner()
            return self.runner.call(result)
        return result

    def _close(self) -> None:
        self.heartbeat.close()
        if self.runner is not None:
            self.runner.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        try:
            os.rmdir(self.owner)
        except OSError:
            pass

    def _release_leftovers(self) -> None:
        # Claimed but never finished (a publish the storage kept refusing): back to pending, no attempt.
        try:
            names = os.listdir(self.owner)
        except FileNotFoundError:
            return
        if any(not name.startswith(".") for name in names):
            self.queue.requeue(self.owner, "loop-stopped", count_attempt=False)

    # ------------------------------------------------------------------ serving

    def _recycle_due(self) -> bool:
        return self.max_tasks is not None and self.steps.handled >= self.max_tasks

    def serving(self) -> bool:
        """Whether to go on taking tasks: not stopping, not due for recycling."""
        return not self._stopping.is_set() and not self._recycle_due()

    def _serve(self) -> None:
        app = self._app
        assert app is not None
        has_work = callable(getattr(self.worker, "work", None))
        if app.batching and (self.settings.max_batch_size > 1 or not has_work):
            serve_batches(self)
        elif "work" in app.async_methods:
            serve_concurrent(self)
        else:
            serve_one_by_one(self)


def stop_on_signals(loop: WorkerLoop) -> None:
    """SIGTERM and SIGINT ask ``loop`` to stop after its current task."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: loop.request_stop())


def main(argv: list[str] | None = None) -> int:
    """``python -m keepwarm.runtime.loop``: one loop of an app's service until SIGTERM."""
    parser = child_parser("keepwarm.runtime.loop", __doc__)
    parser.add_argument("--slot", required=True)
    parser.add_argument("--incarnation")
    parser.add_argument("--max-tasks", type=int)
    parser.add_argument("--parent-pid", type=int, help="stop when this process dies")
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {options.slot} pid={os.getpid()} %(levelname)s %(message)s",
    )
    try:
        env = Env.of_child(options)
        loop = WorkerLoop(env, options.slot, options.incarnation, max_tasks=options.max_tasks)
    except KeepwarmError as exc:
        log.error("%s", exc)
        return 1
    stop_on_signals(loop)
    if options.parent_pid:
        set_parent_death_signal(options.parent_pid)
    return loop.run()


if __name__ == "__main__":
    sys.exit(main())
