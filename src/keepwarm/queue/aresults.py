"""The result channel for an event loop: many waiters on terminal records, no thread for any of them.

One ``AsyncResults`` per queue and event loop. Its waiters share one inotify watcher whose fd the loop
watches (``add_reader``); where inotify cannot see every change (a shared filesystem,
``KEEPWARM_WATCH=poll``), one asyncio task polls each waiter with its own back-off. A waiter whose
coroutine is cancelled (an HTTP client that went away) leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import math
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from keepwarm._sys.watch import IN_CREATE, IN_MOVED_TO, POLL_MAX_SEC, POLL_MIN_SEC, Watcher
from keepwarm.queue.task import TASK_SUFFIX, TaskRecord
from keepwarm.queue.taskfiles import require_safe_id
from keepwarm.queue.taskqueue import TaskQueue


@dataclass(eq=False)
class _Awaited:
    """The waiters of one task id, and when the poller looks for its record next."""

    futures: set[asyncio.Future[TaskRecord | None]] = field(default_factory=set)
    delay: float = POLL_MIN_SEC
    next_look: float = 0.0


class AsyncResults:
    """Terminal records awaited on one event loop: ``await channel.record(task_id, timeout)``.

    Bound to the loop of its first ``record``; ``aclose()`` (or ``async with``) stops its watch and
    answers the waiters still there with a last look (their record, or None).
    """

    def __init__(self, queue: TaskQueue) -> None:
        self.queue = queue
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: Watcher | None = None
        self._reading = False  # the watcher's fd is registered with the loop
        self._waiters: dict[str, _Awaited] = {}
        self._poller: asyncio.Task[None] | None = None
        self._kick: asyncio.Event | None = None  # a new waiter: the poller recomputes its sleep

    async def __aenter__(self) -> AsyncResults:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def mode(self) -> str | None:
        """``inotify`` or ``poll`` once the first wait has begun; None before."""
        return None if self._watcher is None else self._watcher.mode

    @property
    def waiting(self) -> int:
        """How many ``record`` calls are waiting now."""
        return sum(len(awaited.futures) for awaited in self._waiters.values())

    @property
    def polling(self) -> bool:
        """Whether the poller task is running (polling mode, while anyone waits)."""
        return self._poller is not None and not self._poller.done()

    async def record(self, task_id: str, timeout: float | None) -> TaskRecord | None:
        """The task's terminal record, waiting up to ``timeout`` seconds (None: no limit) for it;
        None when the time passes first. TaskNotFound if ``task_id`` cannot name a task."""
        require_safe_id(task_id)
        loop = self._start()
        future: asyncio.Future[TaskRecord | None] = loop.create_future()
        awaited = self._waiters.get(task_id)
        if awaited is None:
            awaited = self._waiters[task_id] = _Awaited(next_look=loop.time() + POLL_MIN_SEC)
        awaited.futures.add(future)
        try:
            # Registered first, then the look: a record published in between wakes the waiter.
            found = self.queue.read_terminal(task_id)
            if found is not None or (timeout is not None and timeout <= 0):
                return found
            self._wake_poller()
            try:
                async with asyncio.timeout(timeout):
                    return await future
            except TimeoutError:
                return None
        finally:
            awaited.futures.discard(future)
            if not awaited.futures and self._waiters.get(task_id) is awaited:
                del self._waiters[task_id]

    def close(self) -> None:
        """Stop watching; every waiter still there gets a last look: its record, or None."""
        if self._watcher is not None:
            if self._reading and self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._watcher.fileno())
            self._reading = False
            self._watcher.close()
            self._watcher = None
        if self._poller is not None:
            self._poller.cancel()  # aclose() awaits its end
            self._poller = None
        for task_id in list(self._waiters):
            if not self._resolve(task_id):
                for future in self._waiters.pop(task_id).futures:
                    if not future.done():
                        future.set_result(None)
        _forget_channel(self)

    async def aclose(self) -> None:
        """``close()``, then wait for the poller task to end."""
        poller = self._poller
        self.close()
        if poller is not None and not poller.done():
            await asyncio.gather(poller, return_exceptions=True)

    # ------------------------------------------------------------------ the watch

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("an AsyncResults serves the event loop it first ran on; use async_results()")
        if self._watcher is None:
            folders = [self.queue.done, self.queue.failed]
            try:
                watcher = Watcher(folders, IN_CREATE | IN_MOVED_TO)
            except FileNotFoundError:
                self.queue.ensure()  # the queue's folders are not made yet
                watcher = Watcher(folders, IN_CREATE | IN_MOVED_TO)
            weakref.finalize(self, watcher.close)  # a channel dropped unclosed frees its fd
            self._watcher = watcher
            if watcher.mode == "inotify":
                loop.add_reader(watcher.fileno(), self._on_events)
                self._reading = True
        return loop

    def _on_events(self) -> None:
        if self._watcher is None:
            return
        wakeup = self._watcher.drain()
        if self._watcher.lost:  # the share was unmounted under the watch: watch what is there now
            self._rewatch()
        if wakeup.rescan:  # the kernel's queue overflowed, or the watch was lost: any record may have come
            arrived = set(self._waiters)
        else:
            suffix = len(TASK_SUFFIX)
            names = {name[:-suffix] for name in wakeup.names if name.endswith(TASK_SUFFIX)}
            arrived = names & self._waiters.keys()
        for task_id in arrived:
            self._resolve(task_id)

    def _rewatch(self) -> None:
        """A new watch on the folders now at the queue's paths (the next wait's, if none is there)."""
        if self._watcher is not None:
            if self._reading and self._loop is not None:
                self._loop.remove_reader(self._watcher.fileno())
            self._watcher.close()
        self._watcher, self._reading = None, False
        try:
            self._start()
        except OSError:
            return
        self._wake_poller()  # the new watch may poll

    def _resolve(self, task_id: str) -> bool:
        """Look for the record; when it is there, answer and drop the task's waiters."""
        record = self.queue.read_terminal(task_id)
        if record is None:
            return False
        for future in self._waiters.pop(task_id).futures:
            if not future.done():
                future.set_result(record)
        return True

    # ------------------------------------------------------------------ polling

    def _wake_poller(self) -> None:
        if self._watcher is None or self._watcher.mode != "poll" or self._loop is None:
            return
        if self._kick is None:
            self._kick = asyncio.Event()
        self._kick.set()
        if not self.polling:
            self._poller = self._loop.create_task(self._poll(self._kick), name="keepwarm-result-poller")

    async def _poll(self, kick: asyncio.Event) -> None:
        """Look for each waiter's record when its back-off is due; sleep until the next one is."""
        loop = asyncio.get_running_loop()
        while self._waiters:
            kick.clear()
            now = loop.time()
            for task_id, awaited in list(self._waiters.items()):
                if awaited.next_look <= now and not self._resolve(task_id):
                    awaited.delay = min(awaited.delay * 2, POLL_MAX_SEC)
                    awaited.next_look = now + awaited.delay
            wake_at = min((awaited.next_look for awaited in self._waiters.values()), default=math.inf)
            if wake_at == math.inf:
                break
            try:
                async with asyncio.timeout_at(wake_at):
                    await kick.wait()
            except TimeoutError:
                pass


_channels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Path, AsyncResults]] = (
    weakref.WeakKeyDictionary()
)


def async_results(queue: TaskQueue) -> AsyncResults:
    """The running loop's channel for ``queue`` (one per loop and queue root, made on first use)."""
    loop = asyncio.get_running_loop()
    by_root = _channels.setdefault(loop, {})
    root = Path(os.path.abspath(queue.root))
    channel = by_root.get(root)
    if channel is None:
        channel = by_root[root] = AsyncResults(queue)
    return channel


async def close_async_results() -> None:
    """Close every channel of the running loop (a server's shutdown)."""
    for channel in list(_channels.get(asyncio.get_running_loop(), {}).values()):
        await channel.aclose()


def _forget_channel(channel: AsyncResults) -> None:
    for by_root in list(_channels.values()):
        for root, cached in list(by_root.items()):
            if cached is channel:
                del by_root[root]
