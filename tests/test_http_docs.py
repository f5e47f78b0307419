"""docs/http.md's ``curl`` examples run against a real service and a real ``keepwarm http``.

How the page is read (its ``console`` and ``console checked`` blocks, in page order):

- ``$ export NAME=VALUE``: an environment variable, set for every ``curl`` line and for the servers
  documented after it;
- ``$ [NAME=VALUE ...] keepwarm http ARGS  #norun``: a server. The test starts one for each port the
  ``curl`` lines use, with the documented ARGS (``--port N`` becomes ``--port 0``; no ``--port``
  means the default, 8787) from the repository root, so ``--apps-path examples/apps`` is the bundled
  apps. A line with a ``--host`` other than loopback is not started (tests only talk to loopback);
- ``$ curl ...  # → NNN``: an example. Its documented URLs (``http://127.0.0.1:PORT``) are replaced
  by the real server's, then it runs in ``bash`` (so ``"$TASK"`` and ``"$KEEPWARM_HTTP_TOKEN"``
  expand) with the real ``curl``; it must answer status NNN, and the lines under it (up to the next
  ``$ ``) must appear in order in what it printed (``…`` stands for anything; runs of whitespace are
  one space), as in tests/test_docs.py's ``console checked`` blocks;
- ``$TASK`` is the ``task_id`` of the latest answer that had one.

Before the examples run, one service of examples/apps/mycode_project is started in the test's
isolated share (conftest's autouse fixture), with its default two loops; ``flaky`` stays stopped.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from keepwarm.env import Env
from keepwarm.web import DEFAULT_HTTP_PORT, HTTP_TOKEN_VARIABLE, is_loopback

from .conftest import EXAMPLE_APPS, ROOT, Services
from .httpserver import HttpServer
from .test_docs import CHECKED, fenced_blocks, output_problem

PAGE = ROOT / "docs" / "http.md"
DOCUMENTED_URL = re.compile(r"http://127\.0\.0\.1:(\d+)")
STATUS = re.compile(r"#\s*→\s*(\d{3})\s*$")
TASK_ID = re.compile(r'"task_id":"([0-9a-f]+)"')
CURL_TIMEOUT_SEC = 120
# The status codes a reader sees a curl answer with; 413 and 429 need an app configured with tight
# limits, and tests/test_http.py checks them against one.
STATUSES_SHOWN = {200, 202, 400, 401, 403, 404, 409, 422, 503}


@dataclass(frozen=True)
class CurlExample:
    line: int
    command: str  # "curl ...", without "$ " and its status comment
    status: int | None
    output: tuple[str, ...]


@dataclass(frozen=True)
class DocumentedServer:
    line: int
    port: int
    args: tuple[str, ...]  # after "keepwarm http", without --port
    env: dict[str, str]  # the exports before it and its own NAME=VALUE prefix


@dataclass
class HttpPage:
    examples: list[CurlExample] = field(default_factory=list)
    servers: list[DocumentedServer] = field(default_factory=list)
    exports: dict[str, str] = field(default_factory=dict)


def read_page(text: str) -> HttpPage:
    """The exports, servers and curl examples of a page's console blocks, in page order."""
    page = HttpPage()
    for block in fenced_blocks(text):
        if block.info not in ("console", CHECKED):
            continue
        current: CurlExample | None = None
        for offset, line in enumerate(block.source.splitlines()):
            if not line.startswith("$ "):
                if current is not None and line.strip():
                    current = CurlExample(
                        current.line, current.command, current.status, (*current.output, line)
                    )
                continue
            if current is not None:
                page.examples.append(current)
            current = None
            command = line[2:].strip()
            if command.startswith("curl "):
                status = STATUS.search(command)
                text_of = command[: status.start()].strip() if status else command
                current = CurlExample(block.line + offset, text_of, int(status[1]) if status else None, ())
            elif command.startswith("export "):
                name, _, value = shlex.split(command)[1].partition("=")
                page.exports[name] = value
            else:
                server = documented_server(block.line + offset, command, page.exports)
                if server is not None:
                    page.servers.append(server)
        if current is not None:
            page.examples.append(current)
    return page


def documented_server(line: int, command: str, exports: dict[str, str]) -> DocumentedServer | None:
    """A ``[NAME=VALUE ...] keepwarm http ...`` line as a server to start (None for any other line,
    and for one bound beyond loopback)."""
    words = shlex.split(command, comments=True)
    env = dict(exports)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if words[:2] != ["keepwarm", "http"]:
        return None
    args, port, host = [], DEFAULT_HTTP_PORT, "127.0.0.1"
    rest = iter(words[2:])
    for word in rest:
        if word == "--port":
            port = int(next(rest))
        elif word == "--host":
            host = next(rest)
            args += [word, host]
        else:
            args.append(word)
    return DocumentedServer(line, port, tuple(args), env) if is_loopback(host) else None


def test_the_page_is_read_as_documented() -> None:
    text = (
        "```console\n$ keepwarm http --apps-path examples/apps  #norun\nkeepwarm http: ... at ...\n"
        "$ keepwarm http --host 0.0.0.0 --port 9000  #norun\n"
        "$ export KEEPWARM_HTTP_TOKEN=0123456789abcdef0123\n"
        "$ keepwarm http --read-only --port 8788  #norun\n"
        "$ curl -s http://127.0.0.1:8787/livez   # → 200\n"
        '{"status":"ok"}\n\n'
        "$ curl -s http://127.0.0.1:8788/v1/apps\n```\n\n"
        "```text\n$ curl -s http://127.0.0.1:8787/not-run  # → 200\n```\n"
    )
    page = read_page(text)
    assert [(s.port, s.args, s.env) for s in page.servers] == [
        (DEFAULT_HTTP_PORT, ("--apps-path", "examples/apps"), {}),
        (8788, ("--read-only",), {HTTP_TOKEN_VARIABLE: "0123456789abcdef0123"}),
    ]
    assert [(e.command, e.status, e.output) for e in page.examples] == [
        ("curl -s http://127.0.0.1:8787/livez", 200, ('{"status":"ok"}',)),
        ("curl -s http://127.0.0.1:8788/v1/apps", None, ()),
    ]
    assert page.exports == {HTTP_TOKEN_VARIABLE: "0123456789abcdef0123"}


def test_every_curl_example_declares_its_status_and_its_server() -> None:
    page = read_page(PAGE.read_text(encoding="utf-8"))
    assert page.examples, "docs/http.md has no curl example"
    undeclared = [e.line for e in page.examples if e.status is None]
    assert undeclared == [], f"docs/http.md lines {undeclared}: a curl example without its '# → NNN'"
    ports = [server.port for server in page.servers]
    assert len(ports) == len(set(ports)), f"docs/http.md documents two servers on one port: {ports}"
    for example in page.examples:
        used = {int(port) for port in DOCUMENTED_URL.findall(example.command)}
        assert used and used <= set(ports), (
            f"docs/http.md line {example.line}: no documented server for {used}"
        )
    missing = STATUSES_SHOWN - {e.status for e in page.examples}
    assert not missing, f"docs/http.md shows no curl answer with status {sorted(missing)}"


@pytest.fixture
def documented_servers(services: Services) -> Iterator[dict[int, HttpServer]]:
    """The mycode_project service, and a real ``keepwarm http`` for each server the examples use."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (scripts/install-browser.sh installs it)")
    services.start(Env("mycode_project", EXAMPLE_APPS))
    page = read_page(PAGE.read_text(encoding="utf-8"))
    used = {int(port) for example in page.examples for port in DOCUMENTED_URL.findall(example.command)}
    started: dict[int, HttpServer] = {}
    base = {k: v for k, v in os.environ.items() if k != HTTP_TOKEN_VARIABLE}
    try:
        for server in page.servers:
            if server.port in used:
                started[server.port] = HttpServer(*server.args, env=base | server.env, cwd=ROOT)
        yield started
    finally:
        for running in started.values():
            running.stop()


def run_curl(example: CurlExample, servers: dict[int, HttpServer], env: dict[str, str]) -> tuple[int, str]:
    """The example's status code and what it printed, run in bash with the real URLs."""
    command = DOCUMENTED_URL.sub(lambda m: servers[int(m[1])].url, example.command)
    command = "curl --write-out '\\n%{http_code}' " + command.removeprefix("curl ")
    completed = subprocess.run(
        ["bash", "-c", command],
        check=False,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CURL_TIMEOUT_SEC,
    )
    assert completed.returncode == 0, (
        f"docs/http.md line {example.line}: `{command}` exited {completed.returncode}: {completed.stderr}"
    )
    printed, _, status = completed.stdout.rpartition("\n")
    return int(status), printed


def test_every_curl_example_answers_as_documented(documented_servers: dict[int, HttpServer]) -> None:
    page = read_page(PAGE.read_text(encoding="utf-8"))
    env = dict(os.environ) | page.exports
    for example in page.examples:
        status, printed = run_curl(example, documented_servers, env)
        problem = output_problem(printed, example.output)
        if status != example.status:
            problem = f"answered {status}, not {example.status}"
        if problem is not None:
            pytest.fail(
                f"docs/http.md line {example.line}: `{example.command}` {problem}\nit printed:\n{printed}",
                pytrace=False,
            )
        if found := TASK_ID.search(printed):
            env["TASK"] = found[1]
    assert "TASK" in env, "no example answered a task_id for $TASK"


def routes_shown(examples: list[CurlExample]) -> set[tuple[str, str]]:
    """(method, path) of each example: -X METHOD, else POST with a body, else GET."""
    shown = set()
    for example in examples:
        words = shlex.split(example.command)
        method = words[words.index("-X") + 1] if "-X" in words else None
        if method is None:
            method = "POST" if {"--json", "-d", "--data"} & set(words) else "GET"
        url = next(w for w in words if DOCUMENTED_URL.match(w))
        shown.add((method, DOCUMENTED_URL.sub("", url).split("?")[0]))
    return shown


def is_shown(method: str, template: str, shown: set[tuple[str, str]]) -> bool:
    """Whether an example calls ``method`` on a path the route ``template`` matches."""
    pattern = re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)))
    return any(m == method and pattern.fullmatch(path) for m, path in shown)


def test_every_endpoint_of_the_server_has_a_curl_example(documented_servers: dict[int, HttpServer]) -> None:
    """The server's own OpenAPI document names the endpoints; apps' own submit paths are the
    generic one's, shown once."""
    page = read_page(PAGE.read_text(encoding="utf-8"))
    shown = routes_shown(page.examples)
    document = documented_servers[DEFAULT_HTTP_PORT].request("GET", "/openapi.json").json()
    endpoints = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if "{" in path or not path.startswith("/v1/apps/")
    } | {("GET", "/openapi.json"), ("GET", "/docs")}
    missing = sorted(f"{method} {path}" for method, path in endpoints if not is_shown(method, path, shown))
    assert missing == [], f"docs/http.md has no curl example for {missing}"
