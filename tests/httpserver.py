"""A ``keepwarm http`` server as an operator runs it: the console script in a child process, its URL
(and token) read from what it announces, stopped by its pid."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

KEEPWARM = str(Path(sys.executable).parent / "keepwarm")
ANNOUNCE_TIMEOUT_SEC = 60.0


class HttpServer:
    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        expect_token: bool = False,
    ) -> None:
        """``expect_token``: the server generates a token and announces it (a non-loopback host)."""
        self.process = subprocess.Popen(
            [KEEPWARM, "http", "--port", "0", *args],
            env=env if env is not None else dict(os.environ),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.url = ""
        self.token: str | None = None
        try:
            self._announced(expect_token)
        except BaseException:
            self.stop()
            raise
        headers: dict[str, str] = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put("")

    def _announced(self, expect_token: bool) -> None:
        while not self.url or (expect_token and self.token is None):
            line = self.lines.get(timeout=ANNOUNCE_TIMEOUT_SEC)
            if not line:
                raise AssertionError(
                    f"keepwarm http exited ({self.process.wait()}) before announcing itself:\n"
                    + "".join(self.output)
                )
            if " at http://" in line:
                self.url = line.split(" at ", 1)[1].split(" ", 1)[0]
            if "bearer token (" in line:
                self.token = line.rsplit(": ", 1)[1].strip()

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        return self.client.request(method, path, **options)

    def stop(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.reader.join(timeout=10)
        assert self.process.stderr is not None
        self.process.stderr.close()
