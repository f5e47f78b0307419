"""The HTTP front door (``keepwarm http``) against its floor and keepwarm's Python API, in one run.

Three systems answer the same request, ``mycode_project``'s ``Worker.work`` for ``{"x": x}``
(``x``, ``collatz_steps(x)``, ``prime_factors(x)``; every answer is checked after the timing):

floor      a bare FastAPI app, one ``POST /work`` endpoint that validates the body with the app's
           args model and calls the same ``Worker.work()`` in process; uvicorn in a child process,
           configured as ``keepwarm http`` configures it. The cost of HTTP itself.
gateway    ``keepwarm http --port 0`` (a child process) in front of the running service (its 2
           loops): ``POST /v1/apps/mycode_project/tasks?wait=30``, one round trip per task.
python     keepwarm's Python API on the same service: ``Service.submit({"x": x}).result(30)``.

At each concurrency C (1, 16 and 64 by default) the systems run one after the other, alone on the
machine: C clients in closed loop, each sending its next request once the last is answered, every
request timed. HTTP clients are ``httpx.AsyncClient`` instances, one keep-alive connection each, on
one event loop in this process; Python API clients are C threads sharing one ``Service``. Per case:
p50 and p99 round trip, tasks/s (requests answered over the timed phase's wall time), and the CPU
spent per task by this process (the clients), the HTTP server and the service (supervisor and loops).

Targets (issue 18), printed as pass/miss, never asserted: at 1 client the gateway adds <= 1 ms p50
over the Python API; at 64 clients it sustains >= 50 % of the Python API's tasks/s. The gateway's
p50 over the floor's is printed as a ratio.

Usage::

    .venv/bin/python bench/http_front.py                    # 3,000 requests per case, 1.5-4 minutes
    .venv/bin/python bench/http_front.py --tmpfs            # the share on /dev/shm
    .venv/bin/python bench/http_front.py --quick            # 500 requests per case
    .venv/bin/python bench/http_front.py --clients 1,8 --requests 200 --json http.json
    .venv/bin/python bench/http_front.py --profile-gateway gateway.prof   # the server under cProfile

Every process started here is stopped by pid (the service by the API, its supervisor by pid if that
fails), also on Ctrl-C or SIGTERM, and the temp dir removed. Traffic is loopback only. See
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from provenance import (
    APP,
    APPS_PATH,
    BenchError,
    Ratio,
    Services,
    add_workdir_options,
    compute,
    describe_machine,
    run_main,
    task_inputs,
    temp_workdir,
    use_app_code,
)

NAMESPACE = "bench-http"
KEEPWARM = Path(sys.executable).parent / "keepwarm"
WAIT_SEC = 30.0  # ?wait= and result(timeout): a round trip never comes near it
START_TIMEOUT_SEC = 60.0
STOP_TIMEOUT_SEC = 30.0
STOP_GRACE_SEC = 15.0
SYSTEMS = ("floor", "gateway", "python")
TARGET_ADDED_P50_MS = 1.0
TARGET_DRAIN_RATIO = 0.5


# ---------------------------------------------------------------------- the computation


# ---------------------------------------------------------------------- the floor's server


def serve_floor(parent_pid: int) -> None:
    """The floor: FastAPI, one endpoint, the app's worker in process; uvicorn as keepwarm http runs it."""
    import uvicorn

    from keepwarm._sys.procs import set_parent_death_signal
    from keepwarm.app import load_app
    from keepwarm.env import Env
    from keepwarm.queue.task import TaskItem
    from keepwarm.web import bound_url

    set_parent_death_signal(parent_pid)
    app = load_app(Env(APP, APPS_PATH))
    worker = app.new_worker()
    worker.start()
    api = FastAPI(title="floor")

    @api.post("/work")
    async def work(request: Request) -> Response:
        args = app.validate_args(json.loads(await request.body()))
        result = worker.work(TaskItem("t", "task", args, None, 1, 1, None, "", None))
        body = json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode()
        return Response(body, media_type="application/json")

    listener = loopback_listener()
    config = uvicorn.Config(api, log_level="warning", lifespan="on", access_log=False)
    print(f"floor at {bound_url(listener)}", file=sys.stderr, flush=True)
    uvicorn.Server(config).run(sockets=[listener])


def loopback_listener() -> socket.socket:
    """A listening TCP socket on a free loopback port, made with ``IPPROTO_TCP``: asyncio sets
    TCP_NODELAY only on connections whose socket says so (``asyncio.base_events._set_nodelay``), and
    without it a response written in two parts waits for the client's delayed ACK (40 ms)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    return listener


# ---------------------------------------------------------------------- child processes


class Server:
    """An HTTP server in a child process: its output in a log file, its URL read from what it
    announces (``... at http://HOST:PORT``), stopped by its pid."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        log_dir: Path,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / f"{name}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches this script only; it stops the server
            )
        self.pid = self.process.pid
        self.url = ""
        try:
            self.url = self.announced()
        except BaseException:
            self.stop()
            raise

    def announced(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_SEC
        while True:
            for line in self.log.read_text(errors="replace").splitlines():
                if " at http://" in line:
                    return line.split(" at ", 1)[1].split(" ", 1)[0]
            code = self.process.poll()
            if code is not None:
                raise BenchError(f"{self.name} exited with code {code}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not announce its URL in {START_TIMEOUT_SEC:g}s")
            time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, self.stop_signal)
            try:
                self.process.wait(STOP_GRACE_SEC)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait()


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes have used (those gone count 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def service_pids(env: Any) -> list[int]:
    """The service's supervisor and loop processes, now."""
    from keepwarm.queue.state import read_supervisor_state

    state = read_supervisor_state(env.service_dir / "supervisor.json")
    if state is None:
        return []
    return [state.pid, *(loop.pid for loop in state.loops if loop.pid is not None)]


# ---------------------------------------------------------------------- the clients


@dataclass(frozen=True)
class Timed:
    """One case's requests: each one's seconds and answer, and the timed phase's wall time."""

    seconds: list[float]
    answers: list[Any]
    wall: float


def chunks(xs: Sequence[int], clients: int) -> list[list[int]]:
    return [list(xs[index::clients]) for index in range(clients)]


def http_answer(system: str, response: Any) -> Any:
    """The computed value in a response: the floor's body, the gateway's outcome document's result."""
    if response.status_code != 200:
        raise BenchError(f"{system}: HTTP {response.status_code}: {response.text[:300]}")
    document = response.json()
    if system == "floor":
        return document
    if document.get("status") != "done":
        raise BenchError(f"gateway: the task did not finish done: {json.dumps(document)[:300]}")
    return document["result"]


async def drive_http(
    system: str, url: str, path: str, params: dict[str, str], warm: list[list[int]], timed: list[list[int]]
) -> Timed:
    """Each client (one keep-alive connection) sends its warm-up requests, then, once all are
    warm, its timed ones, one after the other."""
    import httpx

    async def one_client(client: httpx.AsyncClient, xs: list[int], seconds: list[float]) -> list[Any]:
        answers = []
        for x in xs:
            began = time.perf_counter()
            response = await client.post(path, params=params, json={"x": x})
            answers.append(http_answer(system, response))
            seconds.append(time.perf_counter() - began)
        return answers

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, timeout=WAIT_SEC * 2, limits=limits)
            )
            for _ in warm
        ]
        await asyncio.gather(*(one_client(c, xs, []) for c, xs in zip(clients, warm, strict=True)))
        seconds: list[list[float]] = [[] for _ in clients]
        gc.collect()
        began = time.perf_counter()
        answers = await asyncio.gather(
            *(one_client(c, xs, s) for c, xs, s in zip(clients, timed, seconds, strict=True))
        )
        wall = time.perf_counter() - began
    return Timed([s for each in seconds for s in each], [a for each in answers for a in each], wall)


def drive_python(service: Any, warm: list[list[int]], timed: list[list[int]]) -> Timed:
    """C threads, one ``Service`` shared: each ``submit(...).result()`` in turn, warm-up first."""
    clients = len(warm)
    ready = threading.Barrier(clients + 1)
    go = threading.Barrier(clients + 1)
    seconds: list[list[float]] = [[] for _ in range(clients)]
    answers: list[list[Any]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def one_client(index: int) -> None:
        try:
            for x in warm[index]:
                service.submit({"x": x}).result(WAIT_SEC)
        except BaseException as exc:
            errors.append(exc)
            ready.abort()
            return
        try:
            ready.wait()
            go.wait()
        except threading.BrokenBarrierError:
            return
        try:
            for x in timed[index]:
                began = time.perf_counter()
                answers[index].append(service.submit({"x": x}).result(WAIT_SEC))
                seconds[index].append(time.perf_counter() - began)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one_client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    gc.collect()
    began = time.perf_counter()
    if not errors:
        go.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if errors:
        raise BenchError(f"python: {errors[0]!r}")
    return Timed([s for each in seconds for s in each], [a for each in answers for a in each], wall)


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class Sizes:
    requests: int  # timed, per case
    warmup: int  # per case, at least one per client


FULL = Sizes(requests=3000, warmup=200)
QUICK = Sizes(requests=500, warmup=50)


@dataclass(frozen=True)
class Case:
    system: str
    clients: int
    requests: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    seconds: float
    tasks_per_sec: float
    client_cpu_ms: float  # this process's CPU per task (the load clients)
    server_cpu_ms: float | None  # the HTTP server's CPU per task (None: no server)
    service_cpu_ms: float | None  # the supervisor's and loops' CPU per task (None: no service)


@dataclass
class Results:
    cases: list[Case] = field(default_factory=list)

    def get(self, system: str, clients: int) -> Case:
        return next(c for c in self.cases if c.system == system and c.clients == clients)


def per_task_ms(cpu: float | None, count: int) -> float | None:
    return None if cpu is None else cpu * 1000 / count


@dataclass
class Bench:
    """The three systems, ready: the floor's and the gateway's servers, the running service."""

    floor: Server
    gateway: Server
    service: Any
    sizes: Sizes
    results: Results

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def measure(self, system: str, clients: int, offset: int) -> None:
        sizes = self.sizes
        warm = chunks(task_inputs(max(sizes.warmup, clients), offset), clients)
        xs = task_inputs(sizes.requests, offset + 1)
        timed = chunks(xs, clients)
        self.say(f"{system}: {sizes.requests} requests, {clients} client(s)")
        server = {"floor": self.floor, "gateway": self.gateway}.get(system)
        server_pids = [server.pid] if server is not None else []
        keepwarm_pids = service_pids(self.service.env) if system != "floor" else []
        before = (time.process_time(), cpu_seconds(server_pids), cpu_seconds(keepwarm_pids))
        if system == "python":
            run = drive_python(self.service, warm, timed)
        else:
            path = "/work" if system == "floor" else f"/v1/apps/{APP}/tasks"
            params = {} if system == "floor" else {"wait": f"{WAIT_SEC:g}"}
            url = server.url if server is not None else ""
            run = asyncio.run(drive_http(system, url, path, params, warm, timed))
        after = (time.process_time(), cpu_seconds(server_pids), cpu_seconds(keepwarm_pids))
        # CPU spans warm-up and timed phase alike: counted per request of both
        count = sizes.requests + sum(len(w) for w in warm)
        expected = [compute(x) for chunk in timed for x in chunk]
        if run.answers != expected:
            raise BenchError(f"{system} returned wrong results")
        millis = [s * 1000 for s in run.seconds]
        cuts = statistics.quantiles(millis, n=100, method="inclusive")
        self.results.cases.append(
            Case(
                system=system,
                clients=clients,
                requests=len(millis),
                p50_ms=statistics.median(millis),
                p99_ms=cuts[98],
                mean_ms=statistics.fmean(millis),
                seconds=run.wall,
                tasks_per_sec=len(millis) / run.wall,
                client_cpu_ms=(after[0] - before[0]) * 1000 / count,
                server_cpu_ms=per_task_ms(after[1] - before[1], count) if server_pids else None,
                service_cpu_ms=per_task_ms(after[2] - before[2], count) if keepwarm_pids else None,
            )
        )


# ---------------------------------------------------------------------- ratios and targets


def ratios(results: Results, concurrency: Sequence[int]) -> list[Ratio]:
    """The issue's targets (at 1 and 64 clients: at the fewest and most clients measured, judged only
    when those are 1 and 64), and the gateway against the floor at every concurrency."""
    low, high = min(concurrency), max(concurrency)
    added = results.get("gateway", low).p50_ms - results.get("python", low).p50_ms
    drain = results.get("gateway", high).tasks_per_sec / results.get("python", high).tasks_per_sec
    rows = [
        Ratio(
            f"gateway p50 − Python API p50, {low} client(s)",
            added,
            " ms",
            f"<= {TARGET_ADDED_P50_MS:g} ms at 1 client",
            added <= TARGET_ADDED_P50_MS if low == 1 else None,
        ),
        Ratio(
            f"gateway tasks/s / Python API tasks/s, {high} clients",
            drain * 100,
            " %",
            f">= {TARGET_DRAIN_RATIO:.0%} at 64 clients",
            drain >= TARGET_DRAIN_RATIO if high == 64 else None,
        ),
    ]
    for clients in concurrency:
        gateway, floor = results.get("gateway", clients), results.get("floor", clients)
        rows.append(
            Ratio(f"gateway p50 / floor p50, {clients} client(s)", gateway.p50_ms / floor.p50_ms, "x")
        )
    for clients in concurrency:
        gateway, floor = results.get("gateway", clients), results.get("floor", clients)
        rows.append(
            Ratio(
                f"gateway tasks/s / floor tasks/s, {clients} client(s)",
                gateway.tasks_per_sec / floor.tasks_per_sec * 100,
                " %",
            )
        )
    return rows


# ---------------------------------------------------------------------- report


def shown(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def report(machine: dict[str, Any], sizes: Sizes, results: Results, rows: list[Ratio]) -> str:
    lines = [
        f"{machine['cpus']} CPUs ({machine['cpu_model']}) · Linux {machine['kernel']} · "
        f"Python {machine['python']} · keepwarm {machine['keepwarm']} ({machine['source']}) · "
        f"fastapi {machine['fastapi']} · uvicorn {machine['uvicorn']} · httpx {machine['httpx']}",
        f"share: {machine['filesystem']} at {machine['workdir']} · load average "
        f"{machine['load_average']:.2f} at the start · {sizes.requests} timed requests per case after "
        f"{sizes.warmup} warm-up",
        "",
        "| system | clients | p50 ms | p99 ms | mean ms | tasks/s | CPU ms/task: clients | server "
        "| service |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in results.cases:
        lines.append(
            f"| {c.system} | {c.clients} | {c.p50_ms:.3f} | {c.p99_ms:.3f} | {c.mean_ms:.3f} | "
            f"{c.tasks_per_sec:,.0f} | {c.client_cpu_ms:.3f} | {shown(c.server_cpu_ms)} | "
            f"{shown(c.service_cpu_ms)} |"
        )
    lines += ["", "| measure | value | target | |", "| --- | --- | --- | --- |"]
    for row in rows:
        verdict = "" if row.passed is None else "PASS" if row.passed else "MISS"
        lines.append(f"| {row.name} | {row.value:.3g}{row.unit} | {row.target or ''} | {verdict} |")
    return "\n".join(lines)


def write_json(
    path: Path, machine: dict[str, Any], sizes: Sizes, results: Results, rows: list[Ratio]
) -> None:
    document = {
        "machine": machine,
        "sizes": asdict(sizes),
        "cases": [asdict(c) for c in results.cases],
        "ratios": [asdict(r) for r in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


# ---------------------------------------------------------------------- main


def concurrency_list(text: str) -> list[int]:
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give client counts as integers, e.g. 1,16,64") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more client counts of at least 1")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_workdir_options(parser)
    parser.add_argument("--quick", action="store_true", help="500 timed requests per case")
    parser.add_argument(
        "--clients",
        type=concurrency_list,
        default=[1, 16, 64],
        metavar="C,C,...",
        help="concurrent clients per case (default 1,16,64)",
    )
    parser.add_argument("--requests", type=int, metavar="N", help="timed requests per case (>= 100)")
    parser.add_argument("--warmup", type=int, metavar="N", help="warm-up requests per case")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers to this JSON file")
    parser.add_argument(
        "--profile-gateway",
        type=Path,
        metavar="PATH",
        help="run keepwarm http under cProfile (its event loop's thread) and write the profile here",
    )
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.requests is not None and options.requests < 100:
        parser.error("--requests must be at least 100 (for a p99)")
    return options


def choose_sizes(options: argparse.Namespace) -> Sizes:
    base = QUICK if options.quick else FULL
    return Sizes(options.requests or base.requests, base.warmup if options.warmup is None else options.warmup)


def server_environment(share: Path, logs: Path) -> dict[str, str]:
    """This environment without any KEEPWARM_ variable (no token: loopback), plus the run's share."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPWARM_")}
    return env | {"KEEPWARM_SHARE": str(share), "KEEPWARM_LOG_DIR": str(logs)}


def run(options: argparse.Namespace) -> int:
    import keepwarm

    sizes = choose_sizes(options)
    results = Results()
    services = Services(START_TIMEOUT_SEC, STOP_TIMEOUT_SEC)
    servers: list[Server] = []
    with temp_workdir(options, "http-") as workdir:
        machine = describe_machine(workdir, ("fastapi", "uvicorn", "httpx"))
        share, logs = workdir / "share", workdir / "logs"
        os.environ["KEEPWARM_LOG_DIR"] = str(logs)
        environment = server_environment(share, logs)
        try:
            env = keepwarm.Env(APP, APPS_PATH, share_dir=share, namespace=NAMESPACE)
            print(f"starting {APP} (its {env.settings.cluster.slots} loops)", file=sys.stderr, flush=True)
            service = services.start(env)
            floor_command = [sys.executable, __file__, "--serve-floor", "--parent-pid", str(os.getpid())]
            servers.append(Server("floor", floor_command, environment, logs))
            gateway_command = [str(KEEPWARM), "http", "--port", "0", "--apps-path", str(APPS_PATH)]
            gateway_command += ["--namespace", NAMESPACE]
            stop_gateway = signal.SIGTERM
            if options.profile_gateway is not None:
                profile = options.profile_gateway.resolve()
                gateway_command = [sys.executable, "-m", "cProfile", "-o", str(profile), *gateway_command]
                # uvicorn ends by raising the signal that stopped it again: SIGTERM would kill the
                # process before cProfile writes; SIGINT's KeyboardInterrupt lets it write
                stop_gateway = signal.SIGINT
            servers.append(Server("gateway", gateway_command, environment, logs, stop_gateway))
            bench = Bench(servers[0], servers[1], service, sizes, results)
            for offset, clients in enumerate(options.clients):
                for system in SYSTEMS:
                    bench.measure(system, clients, offset)
        finally:
            for server in servers:
                server.stop()
            services.stop_all()
    rows = ratios(results, options.clients)
    print(report(machine, sizes, results, rows))
    if options.profile_gateway is not None:
        print(f"gateway profile: {options.profile_gateway}", file=sys.stderr)
    if options.json:
        write_json(options.json, machine, sizes, results, rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    use_app_code()
    if options.serve_floor:
        serve_floor(options.parent_pid)
        return 0
    return run_main(run, options)


if __name__ == "__main__":
    sys.exit(main())
