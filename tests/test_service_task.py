"""In-process services and function tasks, over real sockets on 127.0.0.1 in real event loops."""

from __future__ import annotations

import asyncio
import gc
import inspect
import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import keepwarm
from keepwarm import (
    ServiceHandle,
    ServiceTask,
    ServiceTaskStopped,
    function_task,
    live_services,
    service_scope,
)

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one scenario in a fresh event loop, then collect garbage so a leak warns inside the test."""
    asyncio.run(scenario())
    gc.collect()


async def wait_for(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Yield to the loop until ``predicate`` is true; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.001)


def open_sockets() -> set[str]:
    """The socket inodes this process holds open."""
    links = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # the listing's own descriptor, already closed
    return {link for link in links if link.startswith("socket:")}


def port_is_bindable(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


class CountingServer:
    """A TCP server on a free 127.0.0.1 port: each connection gets ``<instance> <request number>``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = 0
        self.shutdowns = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._answer, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def shutdown(self) -> None:
        self.shutdowns += 1
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def count(self) -> int:
        return self.requests

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readline()
            self.requests += 1
            writer.write(f"{self.name} {self.requests}\n".encode())
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()


async def ask(port: int) -> str:
    """One request over a real connection: the server's answer line."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(b"hello\n")
        await writer.drain()
        return (await reader.readline()).decode().strip()
    finally:
        writer.close()
        await writer.wait_closed()


class Inbox:
    """An instance whose background task consumes a queue; its own close() leaves that task running."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.seen: list[str] = []
        self.closed = False
        self.consumer: asyncio.Task[None] | None = None

    async def consume(self) -> None:
        while True:
            self.seen.append(await self.queue.get())

    def post(self, message: str) -> None:
        self.queue.put_nowait(message)

    def close(self) -> None:
        self.closed = True  # on purpose, not the consumer: keepwarm must end it


def counting_service() -> tuple[ServiceTask[[], CountingServer], list[str]]:
    """A fresh service task starting CountingServers, and the names of the instances it cold-started."""
    cold_starts: list[str] = []

    @keepwarm.service_task
    async def start_counting_server() -> CountingServer:
        server = CountingServer(f"server-{len(cold_starts) + 1}")
        cold_starts.append(server.name)
        await server.start()
        return server

    return start_counting_server, cold_starts


@keepwarm.service_task
async def start_inbox() -> Inbox:
    inbox = Inbox()
    inbox.consumer = asyncio.create_task(inbox.consume())
    return inbox


def test_one_cold_start_serves_many_counted_calls() -> None:
    start_counting_server, cold_starts = counting_service()

    async def scenario() -> None:
        handle = await start_counting_server()
        assert (handle.status, cold_starts) == ("starting", [])  # the handle comes before the start
        server = await handle
        assert handle.status == "running" and handle.cold_start_sec is not None
        assert handle.started_at is not None
        for number in range(1, 11):
            assert await ask(server.port) == f"server-1 {number}"
            assert await handle.call(CountingServer.count) == number
        assert await handle is server  # the same instance every time
        assert cold_starts == ["server-1"] and handle.calls == 10
        await handle.stop()

    run(scenario)


def test_the_instance_background_task_runs_between_calls_and_ends_at_stop() -> None:
    async def scenario() -> None:
        handle = await start_inbox()
        inbox = await handle
        sent: list[str] = []
        for message in ("first", "second", "third"):
            await handle.call(Inbox.post, message)
            sent.append(message)
            await wait_for(lambda: inbox.seen == sent, "the consumer to take every message sent")
        assert inbox.consumer is not None and not inbox.consumer.done()
        await handle.stop()
        assert inbox.closed and inbox.consumer.cancelled()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(scenario)


def test_cancel_runs_shutdown_frees_the_port_and_the_next_call_cold_starts() -> None:
    start_counting_server, cold_starts = counting_service()

    async def scenario() -> None:
        handle = await start_counting_server()
        server = await handle
        assert await ask(server.port) == "server-1 1"
        assert handle.cancel() is True
        assert (handle.status, handle.cancel()) == ("stopping", False)
        await wait_for(handle.done, "the service to stop")
        assert handle.status == "stopped" and server.shutdowns == 1
        assert port_is_bindable(server.port)
        with pytest.raises(ConnectionRefusedError):
            await ask(server.port)
        with pytest.raises(ServiceTaskStopped, match="call start_counting_server"):
            await handle
        with pytest.raises(ServiceTaskStopped):
            await handle.call(CountingServer.count)

        again = await start_counting_server()
        fresh = await again
        assert fresh is not server and cold_starts == ["server-1", "server-2"]
        assert await ask(fresh.port) == "server-2 1"
        await again.stop()
        await again.stop()  # stopping twice is harmless
        assert fresh.shutdowns == 1

    run(scenario)


def test_a_key_reuses_the_running_instance() -> None:
    cold_starts: list[str] = []
    gate = asyncio.Event()

    @keepwarm.service_task(key="shared")
    async def start_shared() -> list[str]:
        cold_starts.append("start")
        await gate.wait()
        return cold_starts

    async def scenario() -> None:
        first = await start_shared()
        assert await start_shared() is first  # still starting: the same handle
        gate.set()
        await first
        assert await start_shared() is first  # running: the same handle
        other = await start_shared.options(key="other")()
        assert other is not first and other.key == "other"
        assert await start_shared.options(key="other")() is other
        await first
        await other
        assert cold_starts == ["start", "start"]

        await first.stop()
        replacement = await start_shared()
        assert replacement is not first and await replacement is cold_starts
        assert cold_starts == ["start", "start", "start"]
        assert live_services() == [other, replacement]
        await other.stop()
        await replacement.stop()

    run(scenario)


def test_without_a_key_every_call_starts_its_own_instance() -> None:
    start_counting_server, cold_starts = counting_service()

    async def scenario() -> None:
        async with service_scope():
            handles = [await start_counting_server() for _ in range(3)]
            servers = [await handle for handle in handles]
            assert len({id(server) for server in servers}) == 3
            assert cold_starts == ["server-1", "server-2", "server-3"]

    run(scenario)


def test_concurrent_services_keep_their_own_state_and_uptime() -> None:
    start_counting_server, _ = counting_service()

    async def scenario() -> None:
        async with service_scope():
            first = await start_counting_server()
            one = await first
            second = await start_counting_server()
            two = await second
            answers = await asyncio.gather(*(ask(server.port) for server in (one, two, one, one, two)))
            assert sorted(answers) == ["server-1 1", "server-1 2", "server-1 3", "server-2 1", "server-2 2"]
            assert await first.call(CountingServer.count) == 3
            assert await second.call(CountingServer.count) == 2
            assert (first.calls, second.calls) == (1, 1)
            assert live_services() == [first, second]
            assert first.started_at is not None and second.started_at is not None
            assert first.started_at <= second.started_at
            assert first.uptime >= second.uptime >= 0
            await first.stop()
            frozen = first.uptime
            assert await ask(two.port) == "server-2 3"  # the other one still serves
            assert first.uptime == frozen and second.status == "running"

    run(scenario)


def test_start_errors_surface_through_the_handle_and_end_what_the_start_began() -> None:
    began: list[asyncio.Task[bool]] = []

    @keepwarm.service_task
    async def start_broken() -> None:
        began.append(asyncio.create_task(asyncio.Event().wait()))
        raise ConnectionError("database unreachable")

    async def scenario() -> None:
        handle = await start_broken()  # the call itself does not raise
        with pytest.raises(ConnectionError, match="database unreachable"):
            await handle
        assert handle.status == "failed" and isinstance(handle.error, ConnectionError)
        assert handle.started_at is None and handle.uptime == 0.0
        assert began[0].cancelled()
        assert live_services() == []
        with pytest.raises(ConnectionError):
            await handle.call(lambda instance: instance)
        await handle.stop()  # the start error has been told already: stop() does not repeat it

    run(scenario)


def test_cancelling_a_start_stops_it_and_ends_what_it_began() -> None:
    seen: list[str] = []
    began: list[asyncio.Task[bool]] = []

    @keepwarm.service_task
    async def start_slow() -> str:
        began.append(asyncio.create_task(asyncio.Event().wait()))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "never"

    async def scenario() -> None:
        handle = await start_slow()
        await wait_for(lambda: began, "the start to begin")
        assert (handle.status, live_services()) == ("starting", [handle])
        assert handle.cancel() is True
        with pytest.raises(ServiceTaskStopped):
            await handle
        assert handle.status == "stopped" and seen == ["cancelled"] and began[0].cancelled()

        unstarted = await start_slow()
        unstarted.cancel()  # before its task ran at all
        with pytest.raises(ServiceTaskStopped):
            await unstarted
        assert unstarted.status == "stopped" and len(began) == 1
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(scenario)


def test_a_start_that_swallows_its_cancellation_is_still_stopped() -> None:
    class Resource:
        closed = False

        def close(self) -> None:
            self.closed = True

    resources: list[Resource] = []

    @keepwarm.service_task
    async def start_stubborn() -> Resource:
        resources.append(Resource())
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # a factory that finishes its start regardless
        return resources[0]

    async def scenario() -> None:
        handle = await start_stubborn()
        await wait_for(lambda: resources, "the start to begin")
        await handle.stop()
        assert handle.status == "stopped" and resources[0].closed

    run(scenario)


def test_a_failing_shutdown_is_raised_by_stop() -> None:
    class Stubborn:
        async def aclose(self) -> None:
            raise RuntimeError("flush failed")

    @keepwarm.service_task
    async def start_stubborn() -> Stubborn:
        return Stubborn()

    async def scenario() -> None:
        handle = await start_stubborn()
        await handle
        with pytest.raises(RuntimeError, match="flush failed"):
            await handle.stop()
        assert handle.status == "failed" and isinstance(handle.error, RuntimeError)

    run(scenario)


def test_shutdown_is_the_first_of_shutdown_aclose_close() -> None:
    called: list[str] = []

    class Both:
        async def aclose(self) -> None:
            called.append("aclose")

        def close(self) -> None:
            called.append("close")

    @keepwarm.service_task
    async def start_both() -> Both:
        return Both()

    async def scenario() -> None:
        handle = await start_both()
        await handle
        await handle.stop()

    run(scenario)
    assert called == ["aclose"]


class Pool:
    """A connection pool whose close() refuses a second call, as many real pools do."""

    def __init__(self) -> None:
        self.closes = 0

    async def close(self) -> None:
        self.closes += 1
        if self.closes > 1:
            raise RuntimeError("the pool is already closed")
        await asyncio.sleep(0)  # a real close awaits its connections


class SyncPool:
    """The same, with a synchronous close()."""

    def __init__(self) -> None:
        self.closes = 0

    def close(self) -> None:
        self.closes += 1
        if self.closes > 1:
            raise RuntimeError("the pool is already closed")


def loop_reports() -> list[dict[str, Any]]:
    """What the running loop's exception handler receives from now on (asyncio logs it by default)."""
    reports: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: reports.append(context))
    return reports


async def loop_turns(count: int = 3) -> None:
    """Let the loop run what is ready, ``count`` times over: the callbacks a task's end scheduled."""
    for _ in range(count):
        await asyncio.sleep(0)


def test_the_reference_cleanup_copied_as_it_is_shuts_the_instance_down_once() -> None:
    @keepwarm.service_task
    async def create_db_service() -> Pool:
        return Pool()

    async def scenario() -> None:
        reports = loop_reports()
        service_future = await create_db_service()
        db_pool = await service_future
        # the reference document's cleanup, as it is
        service_future.cancel()
        await db_pool.close()
        await wait_for(service_future.done, "the service to stop")
        assert (service_future.status, service_future.error) == ("stopped", None)
        assert db_pool.closes == 1 and reports == []

    run(scenario)


def test_a_shutdown_called_again_after_keepwarms_shares_its_outcome() -> None:
    @keepwarm.service_task
    async def create_db_service() -> SyncPool:
        return SyncPool()

    async def scenario() -> None:
        handle = await create_db_service()
        db_pool = await handle
        await handle.stop()
        db_pool.close()  # the user's own, after keepwarm's: it has run, it does not run again
        assert handle.status == "stopped" and db_pool.closes == 1

    run(scenario)


def test_keepwarm_leaves_the_shutdown_to_its_user_once_the_user_began_one() -> None:
    called: list[str] = []

    class Server:
        async def shutdown(self) -> None:
            called.append("shutdown")

        async def close(self) -> None:
            called.append("close")
            await asyncio.sleep(0)

    @keepwarm.service_task
    async def start_server() -> Server:
        return Server()

    async def scenario() -> None:
        handle = await start_server()
        server = await handle
        await server.close()  # the user chose close(): keepwarm does not add its shutdown()
        await handle.stop()
        assert handle.status == "stopped" and called == ["close"]

    run(scenario)


def test_an_instance_that_refuses_new_attributes_is_still_shut_down_once() -> None:
    class Slotted:
        __slots__ = ("closes",)

        def __init__(self) -> None:
            self.closes = 0

        def close(self) -> None:
            self.closes += 1

    @keepwarm.service_task
    async def start_slotted() -> Slotted:
        return Slotted()

    async def scenario() -> None:
        handle = await start_slotted()
        slotted = await handle
        await handle.stop()
        assert handle.status == "stopped" and slotted.closes == 1

    run(scenario)


def test_a_failure_nobody_waits_for_is_reported_to_the_event_loop() -> None:
    class Stubborn:
        async def aclose(self) -> None:
            raise RuntimeError("flush failed")

    @keepwarm.service_task
    async def start_stubborn() -> Stubborn:
        return Stubborn()

    async def scenario() -> None:
        reports = loop_reports()
        handle = await start_stubborn()
        await handle
        handle.cancel()  # and nobody awaits stop(): the error must still be told
        await wait_for(handle.done, "the service to stop")
        assert handle.status == "failed" and isinstance(handle.error, RuntimeError)
        assert [report["exception"] for report in reports] == [handle.error]
        assert "service start_stubborn failed" in reports[0]["message"]
        assert "call start_stubborn() to start a new instance" in reports[0]["message"]

    run(scenario)


class Journal:
    """A client that buffers its writes and starts its flusher lazily, on the first write."""

    def __init__(self) -> None:
        self.buffer: list[str] = []
        self.flushed: list[str] = []
        self.flusher: asyncio.Task[None] | None = None

    async def write(self, line: str) -> None:
        self.buffer.append(line)
        if self.flusher is None:
            self.flusher = asyncio.create_task(self.flush_forever())

    async def flush_forever(self) -> None:
        while True:
            self.flushed += self.buffer
            self.buffer.clear()
            await asyncio.sleep(0.001)


def test_a_task_the_instance_starts_during_a_call_ends_at_stop() -> None:
    @keepwarm.service_task
    async def open_journal() -> Journal:
        return Journal()

    async def scenario() -> None:
        handle = await open_journal()
        journal = await handle
        await handle.call(Journal.write, "first")
        await wait_for(lambda: journal.flushed == ["first"], "the lazy flusher to flush")
        await handle.stop()
        assert journal.flusher is not None and journal.flusher.cancelled()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(scenario)


def test_a_task_started_while_the_service_stops_is_ended_too() -> None:
    started: list[asyncio.Task[bool]] = []

    async def hand_over_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            started.append(asyncio.create_task(asyncio.Event().wait()))  # e.g. a last flush
            raise

    @keepwarm.service_task
    async def start_worker() -> asyncio.Task[None]:
        return asyncio.create_task(hand_over_on_cancel())

    async def scenario() -> None:
        handle = await start_worker()
        await handle
        await handle.stop()
        assert started[0].cancelled()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(scenario)


class Feed:
    """A subscription whose background follower dies when the feed breaks."""

    def __init__(self) -> None:
        self.broken = asyncio.Event()
        self.closed = False
        self.follower = asyncio.create_task(self.follow())
        self.clock = asyncio.create_task(asyncio.Event().wait())

    async def follow(self) -> None:
        await self.broken.wait()
        raise ConnectionResetError("feed lost")

    def latest(self) -> str:
        return "tick"

    def close(self) -> None:
        self.closed = True


def test_a_crashed_background_task_fails_the_service_and_says_so() -> None:
    @keepwarm.service_task
    async def subscribe() -> Feed:
        return Feed()

    async def scenario() -> None:
        reports = loop_reports()
        handle = await subscribe()
        feed = await handle
        assert await handle.call(Feed.latest) == "tick"
        feed.broken.set()
        await wait_for(handle.done, "the crash to fail the service")
        assert handle.status == "failed" and isinstance(handle.error, ConnectionResetError)
        assert feed.closed and feed.clock.cancelled()  # shut down like any stop
        stopped = r"subscribe failed \(ConnectionResetError\('feed lost'\)\)"
        with pytest.raises(ServiceTaskStopped, match=stopped):
            await handle.call(Feed.latest)
        with pytest.raises(ConnectionResetError, match="feed lost"):
            await handle.stop()
        assert [report["exception"] for report in reports] == [handle.error]

    run(scenario)


def test_a_task_that_crashes_during_the_start_fails_the_start() -> None:
    @keepwarm.service_task
    async def subscribe() -> Feed:
        feed = Feed()
        feed.broken.set()
        async with asyncio.timeout(10):  # a start that would wait long: the crash must cut it short
            await asyncio.Event().wait()
        return feed

    async def scenario() -> None:
        handle = await subscribe()
        with pytest.raises(ConnectionResetError, match="feed lost"):
            await handle
        assert handle.status == "failed" and handle.started_at is None
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(scenario)


def test_an_exception_someone_handles_is_not_a_crash() -> None:
    class Fragile:
        """A server whose request handler raises, and a method that handles its helpers' errors."""

        async def start(self) -> None:
            self.server = await asyncio.start_server(self.answer, HOST, 0)
            self.port = self.server.sockets[0].getsockname()[1]

        async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            raise ValueError("bad request")  # asyncio's server reports it and closes the connection

        async def lookup(self) -> list[str]:
            async def unreachable() -> None:
                raise ConnectionError("replica down")

            outcomes = await asyncio.gather(unreachable(), unreachable(), return_exceptions=True)
            try:
                await asyncio.wait_for(unreachable(), timeout=10)
            except ConnectionError as error:
                outcomes.append(error)
            return [str(outcome) for outcome in outcomes]

        async def shutdown(self) -> None:
            self.server.close()
            await self.server.wait_closed()

    @keepwarm.service_task
    async def start_fragile() -> Fragile:
        fragile = Fragile()
        await fragile.start()
        return fragile

    async def scenario() -> None:
        reports = loop_reports()
        handle = await start_fragile()
        fragile = await handle
        assert await handle.call(Fragile.lookup) == ["replica down"] * 3
        reader, writer = await asyncio.open_connection(HOST, fragile.port)
        assert await reader.read() == b""  # the handler failed: the connection is closed
        writer.close()
        await writer.wait_closed()
        await wait_for(lambda: reports, "asyncio to report the handler's error")
        await loop_turns()
        assert handle.status == "running" and handle.error is None
        assert [str(report["exception"]) for report in reports] == ["bad request"]
        await handle.stop()
        assert handle.status == "stopped"

    run(scenario)


def test_a_task_that_fails_as_it_is_cancelled_fails_the_stop() -> None:
    async def flush_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise OSError("could not flush: disk full") from None

    @keepwarm.service_task
    async def start_writer() -> asyncio.Task[None]:
        return asyncio.create_task(flush_on_cancel())

    async def scenario() -> None:
        handle = await start_writer()
        await handle
        with pytest.raises(OSError, match="disk full"):
            await handle.stop()
        assert handle.status == "failed"

    run(scenario)


def test_leaving_the_scope_stops_every_service_without_leaking_tasks_or_sockets() -> None:
    start_counting_server, _ = counting_service()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        sockets_before = open_sockets()
        async with service_scope():
            servers = [await handle for handle in [await start_counting_server() for _ in range(2)]]
            inbox_handle = await start_inbox()
            inbox = await inbox_handle
            inbox.post("hello")
            await wait_for(lambda: inbox.seen == ["hello"], "the consumer to take the message")
            for server in servers:
                assert await ask(server.port) == f"{server.name} 1"
            handles = live_services()
            assert len(handles) == 3 and len(open_sockets()) > len(sockets_before)
        assert [handle.status for handle in handles] == ["stopped"] * 3
        assert [server.shutdowns for server in servers] == [1, 1] and inbox.closed
        assert live_services() == []
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert open_sockets() == sockets_before
        assert loop.get_task_factory() is None  # the loop's own task factory is back

    run(scenario)


def test_the_scope_stops_its_services_when_the_block_raises() -> None:
    start_counting_server, _ = counting_service()
    handles: list[ServiceHandle[CountingServer]] = []

    async def scenario() -> None:
        async def failing_block() -> None:
            async with service_scope():
                handles.append(await start_counting_server())
                await handles[0]
                raise LookupError("the block failed")

        with pytest.raises(LookupError):
            await failing_block()
        assert handles[0].status == "stopped"

    run(scenario)


def test_closing_the_event_loop_shuts_down_services_left_running() -> None:
    start_counting_server, _ = counting_service()
    left: list[tuple[ServiceHandle[CountingServer], CountingServer]] = []

    async def scenario() -> None:
        handle = await start_counting_server()
        left.append((handle, await handle))  # and return without stopping it

    run(scenario)
    handle, server = left[0]
    assert handle.status == "stopped" and server.shutdowns == 1
    assert port_is_bindable(server.port)


def test_service_task_refuses_a_plain_function() -> None:
    def not_async() -> int:
        return 1

    with pytest.raises(TypeError, match="async def"):
        keepwarm.service_task(not_async)  # type: ignore[arg-type]


def test_function_task_runs_the_function_afresh_on_every_call() -> None:
    runs: list[int] = []

    @function_task
    def add(a: int, b: int) -> int:
        runs.append(a + b)
        return a + b

    @function_task(attempts=2)
    async def add_later(a: int, b: int) -> int:
        runs.append(a + b)
        return a + b

    assert add(1, 2) == 3 and add(2, 2) == 4
    assert asyncio.run(add_later(3, 3)) == 6
    assert runs == [3, 4, 6]
    assert not inspect.iscoroutinefunction(add) and inspect.iscoroutinefunction(add_later)
    assert add.__name__ == "add" and add_later.__name__ == "add_later"


def test_function_task_retries_until_success_within_its_attempts() -> None:
    runs: list[float] = []

    @function_task(attempts=3, backoff=0.02)
    def flaky() -> str:
        runs.append(time.monotonic())
        if len(runs) < 3:
            raise ConnectionError(f"attempt {len(runs)} failed")
        return "ok"

    assert flaky() == "ok" and len(runs) == 3
    waits = [later - earlier for earlier, later in itertools.pairwise(runs)]
    assert waits[0] >= 0.02 * 0.99 and waits[1] >= 0.04 * 0.99  # back-off doubles


def test_function_task_gives_up_after_its_attempts_with_the_last_error() -> None:
    runs: list[int] = []

    @function_task(attempts=3)
    async def always_down() -> None:
        runs.append(1)
        raise ConnectionError(f"attempt {len(runs)} failed")

    with pytest.raises(ConnectionError, match="attempt 3 failed"):
        asyncio.run(always_down())
    assert len(runs) == 3


def test_function_task_retries_only_the_exceptions_it_is_told_to() -> None:
    runs: list[int] = []

    @function_task(attempts=5, retry_on=ConnectionError)
    def wrong_input() -> None:
        runs.append(1)
        raise ValueError("bad input is not worth retrying")

    with pytest.raises(ValueError, match="not worth retrying"):
        wrong_input()
    assert len(runs) == 1


def test_function_task_timeout_bounds_each_attempt() -> None:
    runs: list[str] = []

    @function_task(attempts=2, timeout=0.05)
    async def hangs_once() -> str:
        runs.append("run")
        if len(runs) == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                runs.append("cut off")
                raise
        return "answered"

    @function_task(timeout=0.05)
    async def hangs() -> None:
        await asyncio.Event().wait()

    assert asyncio.run(hangs_once()) == "answered"
    assert runs == ["run", "cut off", "run"]
    with pytest.raises(TimeoutError):
        asyncio.run(hangs())


def test_function_task_refuses_limits_it_cannot_keep() -> None:
    def plain() -> None:
        return None

    with pytest.raises(TypeError, match="make it `async def` or drop timeout"):
        function_task(timeout=1.0)(plain)
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        function_task(attempts=0)


def test_the_http_example_runs() -> None:
    completed = subprocess.run(
        [sys.executable, "-W", "error", str(ROOT / "examples" / "service_task_http.py")],
        check=False,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    lines = [line.strip() for line in completed.stdout.splitlines()]
    assert [line for line in lines if line.startswith("COLD START")] == [
        "COLD START: server 1 starting...",
        "COLD START: server 2 starting...",
    ]
    requests = [line for line in lines if line.startswith("request ")]
    assert requests == [
        "request 1 -> server 1",
        "request 2 -> server 1",
        "request 3 -> server 1",
        "request 1 -> server 2",
        "request 4 -> server 1",
        "request 2 -> server 2",
    ]
    # the reference's cleanup, cancel() then the server's own shutdown(), shuts server 1 down once
    shutdowns = [line.partition(";")[0] for line in lines if line.endswith("free: True")]
    assert shutdowns == ["server 1 stopped after 1 shutdown", "server 2 stopped after 1 shutdown"]
    assert lines[-1] == "cold starts: 2; live services: 0"
    assert completed.stderr == ""
