"""SERVICE_TASK, working: one cold start, many requests to the same HTTP server, then a clean stop.

The reference document's demonstration, with a real HTTP server (``asyncio.start_server`` on
127.0.0.1, a free port chosen by the system) and a stdlib HTTP client:

1. one instance cold-starts once and answers every request, its request counter climbing;
2. a second call cold-starts a second instance;
3. both serve at the same time, each with its own counter and uptime;
4. the reference's own cleanup, ``service_future.cancel(); await server.shutdown()``, copied as it is,
   shuts the first server down once (keepwarm waits for that shutdown instead of running its own),
   and leaving the scope stops the second; both ports are freed.

Run it with ``python examples/service_task_http.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import keepwarm

HOST = "127.0.0.1"
server_numbers = itertools.count(1)


class HttpServer:
    """A small HTTP server: every GET gets JSON naming the instance and counting its requests."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.requests = 0
        self.shutdowns = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        self._server = await asyncio.start_server(self._answer, HOST, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def shutdown(self) -> None:
        """Stop listening: called by the user, or by keepwarm when the service stops, and run once."""
        self.shutdowns += 1
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await reader.readline()
            while await reader.readline() not in (b"\r\n", b""):
                pass  # the headers say nothing this server needs
            self.requests += 1
            path = request_line.decode().split()[1]
            body = json.dumps({"server": self.number, "request": self.requests, "path": path}).encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()


async def http_get(port: int, path: str) -> dict[str, Any]:
    """GET ``path`` from 127.0.0.1:``port`` and decode the JSON answer."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        response = await reader.read()  # the server closes the connection after its answer
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"unexpected answer from port {port}: {head[:40]!r}")
    answer: dict[str, Any] = json.loads(body)
    return answer


async def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port`` any more."""
    try:
        _, writer = await asyncio.open_connection(HOST, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


@keepwarm.service_task
async def start_server(port: int) -> HttpServer:
    """Start a persistent HTTP server (port 0: any free port)."""
    server = HttpServer(next(server_numbers))
    print(f"  COLD START: server {server.number} starting...")
    await server.start(port)
    return server


async def main() -> None:
    async with keepwarm.service_scope():  # whatever is still running at the end is stopped
        print("Part 1: one instance, many requests")
        first = await start_server(0)  # the handle, at once
        server1 = await first  # the instance, once its start has finished
        print(f"  server 1 listens on {HOST}:{server1.port} (cold start {first.cold_start_sec:.3f}s)")
        for _ in range(3):
            answer = await http_get(server1.port, "/api/users")
            print(f"  request {answer['request']} -> server {answer['server']}")

        print("Part 2: a new call, a new instance")
        second = await start_server(0)
        server2 = await second
        print(f"  server 2 listens on {HOST}:{server2.port} (cold start {second.cold_start_sec:.3f}s)")
        answer = await http_get(server2.port, "/api/data")
        print(f"  request {answer['request']} -> server {answer['server']}")

        print("Part 3: both serve at the same time")
        answers = await asyncio.gather(http_get(server1.port, "/api/data"), http_get(server2.port, "/"))
        for answer in answers:
            print(f"  request {answer['request']} -> server {answer['server']}")
        for number, handle in enumerate(keepwarm.live_services(), start=1):
            print(f"  server {number}: {handle.status}, up {handle.uptime:.3f}s")

        print("Part 4: shutdown")
        first.cancel()  # the reference document's cleanup, as it is
        await server1.shutdown()
    for number, handle, server in ((1, first, server1), (2, second, server2)):
        free = await port_is_free(server.port)
        shut_down = f"{handle.status} after {server.shutdowns} shutdown"
        print(f"  server {number} {shut_down}; port {server.port} free: {free}")
    print(f"cold starts: {next(server_numbers) - 1}; live services: {len(keepwarm.live_services())}")


if __name__ == "__main__":
    asyncio.run(main())
