"""The event loop an async worker's methods run on, in a thread of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any


class AsyncRunner:
    """One event loop in a thread: async ``start``/``work``/``stop`` all run on it, so what
    ``start()`` opens (pools, clients) stays bound to a live loop between tasks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="keepwarm-async", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        """Run ``coro`` on the loop; its future, to wait on from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, awaitable: Any) -> Any:
        """Await ``awaitable`` on the loop and return its result (or raise its exception)."""
        return self.submit(_await(awaitable)).result()

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _await(awaitable: Any) -> Any:
    return await awaitable
