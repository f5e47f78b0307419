"""The Python and the shell command equivalent to each action of the page, ready to copy.

Each function returns a :class:`Snippet` for one action with the values the operator chose, so what
was clicked can be scripted. The Python calls the same core function the page called; the shell line
is the ``keepwarm`` verb that calls it too (or, for settings, which have no verb, the same Python
through ``python -c``). Where the reference's ``AGI`` façade offers the action (install, get_distrib,
run, serve, submit), the snippet also holds it as the reference writes it: ``asyncio.run(main())``
around ``AgiEnv(apps_path=..., app=...)`` and the ``AGI`` call, with the app's ``[args]`` as keywords.
Where ``keepwarm http`` offers the action (submit, result, cancel, status, health), it holds the
``curl`` line that asks that server for it, under a comment naming the URL.
Pure text: nothing here runs anything or imports Streamlit.
"""

from __future__ import annotations

import json
import keyword
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from keepwarm.web import HTTP_TOKEN_VARIABLE, advertised_http_url, is_loopback

if TYPE_CHECKING:
    from keepwarm.env import Env


@dataclass(frozen=True)
class Snippet:
    """What one action did, as Python, as a shell command, (where the façade offers it) as the
    reference's ``AGI`` call and (where ``keepwarm http`` offers it) as a ``curl`` of that server;
    ``action`` names the file it is saved as (``keepwarm_<action>.py``, ``AGI_run.py``, ...),
    ``args`` are the app's ``[args]`` it was generated from."""

    python: str
    shell: str
    agi: str | None = None
    action: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    app_dir: str = ""
    http: str | None = None


@dataclass(frozen=True)
class AppRef:
    """The app the snippets address, by absolute paths so they run from any folder."""

    app: str
    apps_path: str
    settings_path: str
    args: dict[str, Any] = field(default_factory=dict)  # the app's [args] as the page read them

    @classmethod
    def of(cls, env: Env) -> AppRef:
        return cls(env.app_target, str(env.app_dir.parent), str(env.settings_path), dict(env.settings.args))

    def snippet(
        self, action: str, python: str, shell: str, agi: str | None = None, http: str | None = None
    ) -> Snippet:
        """The snippet of ``action`` for this app, with the ``[args]`` it is generated from."""
        app_dir = str(Path(self.apps_path) / self.app)
        return Snippet(python, shell, agi, action, dict(self.args), app_dir, http)

    def http_path(self, *tail: str) -> str:
        """The app's path on ``keepwarm http`` (``/v1/apps/APP/...``), each part percent-encoded."""
        return "/".join(["", "v1", "apps", *(quote(part, safe="") for part in [self.app, *tail])])

    def agi_script(self, body: str) -> str:
        """A script as the reference writes one: ``main()`` builds the ``AgiEnv`` and awaits ``body``."""
        lines = "\n".join(f"    {line}" if line else "" for line in body.strip("\n").splitlines())
        return (
            "import asyncio\n\n"
            "from keepwarm import AGI, AgiEnv\n\n"
            f"APPS_PATH = {literal(self.apps_path)}\n"
            f"APP = {literal(self.app)}\n\n\n"
            "async def main():\n"
            "    env = AgiEnv(apps_path=APPS_PATH, app=APP, verbose=1)\n"
            f"{lines}\n\n\n"
            'if __name__ == "__main__":\n'
            "    asyncio.run(main())\n"
        )

    def args_keywords(self, reserved: Sequence[str] = ()) -> str:
        """The ``[args]`` as keyword arguments (``, items=2000, x=27``), as the reference passes them;
        ``**{...}`` when a key is no Python name or is one of the call's own parameters."""
        if not self.args:
            return ""
        if all(
            key.isidentifier() and not keyword.iskeyword(key) and key not in reserved for key in self.args
        ):
            return "".join(f", {key}={literal(value)}" for key, value in self.args.items())
        return f", **{literal(self.args)}"

    def env_preamble(self, *imports: str) -> str:
        """``import keepwarm`` (and ``imports``) and the app's ``env``."""
        head = "\n".join(["import keepwarm", *imports])
        return f"{head}\n\nenv = keepwarm.Env({literal(self.app)}, apps_path={literal(self.apps_path)})\n"

    def service_preamble(self) -> str:
        return self.env_preamble() + "service = keepwarm.Service(env)\n"

    def verb(self, verb: str, *options: str) -> str:
        return shlex.join(["keepwarm", verb, self.app, "--apps-path", self.apps_path, *options])


def literal(value: Any) -> str:
    """A Python literal for JSON-like data, with double-quoted strings (as ruff format writes them)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, Path):
        return literal(str(value))
    return repr(value)


def curl(method: str, path: str, query: Mapping[str, Any] | None = None, body: Any = None) -> str:
    """``curl`` of ``keepwarm http`` at :func:`keepwarm.web.advertised_http_url`, under a comment
    naming the method and URL; ``None`` values of ``query`` are left out, ``body`` is sent as JSON.
    The bearer token is read from ``$KEEPWARM_HTTP_TOKEN`` when the server asks for one: beyond
    loopback, or whenever that variable is set here (the server then requires it too)."""
    params = {name: query_text(value) for name, value in (query or {}).items() if value is not None}
    url = advertised_http_url() + path + (f"?{urlencode(params)}" if params else "")
    words = ["curl", "-sS", "--fail-with-body", *(["-X", method] if method != "GET" else []), url]
    if body is not None:
        words += ["-H", "Content-Type: application/json", "-d", json.dumps(body, ensure_ascii=False)]
    line = shlex.join(words)
    if HTTP_TOKEN_VARIABLE in os.environ or not is_loopback(urlsplit(url).hostname or ""):
        line += f' -H "Authorization: Bearer ${HTTP_TOKEN_VARIABLE}"'  # expanded by the shell
    return f"# {method} {url}\n{line}\n"


def query_text(value: Any) -> str:
    """A query parameter as FastAPI reads it (``true``, ``30``, ``0.25``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---------------------------------------------------------------------- the reference's AGI calls

LOCALHOST = "127.0.0.1"
# AGI.get_distrib's and AGI.run's own parameters: an [args] key of one of these names goes in **{...}.
DISTRIB_PARAMETERS = ("env", "scheduler", "workers", "verbose")
RUN_PARAMETERS = ("env", "scheduler", "workers", "verbose", "mode", "rapids_enabled")


def mode_bits(mode: str) -> int | str:
    """A mode as the reference's bits (``pool+cython`` -> 3), or as given when it is no mode."""
    from keepwarm.errors import ModeError
    from keepwarm.runmode.modes import RunMode

    try:
        return RunMode.parse(mode).bits
    except ModeError:
        return mode


def serve_script(ref: AppRef, action: str, call: str, result: str) -> str:
    """``AGI.serve(env, action=...)``, printing what the reference's example prints."""
    extra = {
        "status": f', {result}.get("workers_running_count", 0)',
        "health": f', {result}.get("workers_unhealthy_count", 0)',
    }.get(action, "")
    return ref.agi_script(f'{call}\nprint("{action.upper()}:", {result}["status"]{extra})\n')


# ---------------------------------------------------------------------- settings


def save_settings(ref: AppRef, updates: Sequence[tuple[str, dict[str, Any]]]) -> Snippet:
    """``update_settings`` for each ``(section, values)``: comments kept; ``None`` removes a key."""
    calls = [
        f"update_settings(settings, {literal(section)}, {literal(values)})" for section, values in updates
    ]
    python = (
        "from pathlib import Path\n\n"
        "from keepwarm.settings import update_settings\n\n"
        f"settings = Path({literal(ref.settings_path)})\n" + "\n".join(calls) + "\n"
    )
    one_line = "; ".join(
        [
            "from pathlib import Path",
            "from keepwarm.settings import update_settings",
            f"settings = Path({literal(ref.settings_path)})",
            *calls,
        ]
    )
    return ref.snippet("settings", python, shlex.join(["python", "-c", one_line]))


# ---------------------------------------------------------------------- service mode


def start(ref: AppRef, slots: int | None = None) -> Snippet:
    argument = f"slots={slots}" if slots is not None else ""
    python = (
        ref.service_preamble() + f"report = service.start({argument})  # returns once every loop is ready\n"
        "print(report.status, report.workers_healthy_count)\n"
    )
    options = ["--workers", str(slots)] if slots is not None else []
    workers = f", workers={slots}" if slots is not None else ""
    agi = serve_script(ref, "start", f'started = await AGI.serve(env, action="start"{workers})', "started")
    return ref.snippet("start", python, ref.verb("start", *options), agi)


def status(ref: AppRef) -> Snippet:
    python = (
        ref.service_preamble() + "report = service.status()\n"
        "print(report.status)\n"
        "for row in report.worker_health:\n"
        "    print(row.worker, row.healthy, row.reason, row.heartbeat_age_sec)\n"
    )
    agi = serve_script(ref, "status", 'status = await AGI.serve(env, action="status")', "status")
    return ref.snippet("status", python, ref.verb("status"), agi, curl("GET", ref.http_path()))


# keepwarm health's option overriding each threshold of the SLA gate (allow_idle is a --x/--no-x flag).
THRESHOLD_OPTIONS = {
    "allow_idle": "--allow-idle",
    "max_unhealthy": "--max-unhealthy",
    "max_restart_rate": "--max-restart-rate",
    "max_pending_age_sec": "--max-pending-age",
}


def health_gate(ref: AppRef, thresholds: Mapping[str, bool | int | float] | None = None) -> Snippet:
    """The health report and the SLA gate: ``[cluster.service_health]``, each of ``thresholds``
    (named as :data:`THRESHOLD_OPTIONS`' keys) overriding one."""
    given = {name: value for name, value in (thresholds or {}).items() if value is not None}
    unknown = set(given) - set(THRESHOLD_OPTIONS)
    if unknown:
        raise ValueError(
            f"no threshold {', '.join(sorted(unknown))}: choose from {', '.join(THRESHOLD_OPTIONS)}"
        )
    keywords = ", ".join(f"{name}={literal(value)}" for name, value in given.items())
    python = (
        ref.service_preamble() + f"report, gate = service.health({keywords})"
        "  # thresholds: [cluster.service_health]\n"
        "print(gate.code, gate.passed, gate.reasons)\n"
    )
    options: list[str] = []
    for name, value in given.items():
        option = THRESHOLD_OPTIONS[name]
        if isinstance(value, bool):
            options.append(option if value else option.replace("--", "--no-", 1))
        else:
            options += [option, query_text(value)]
    agi = serve_script(ref, "health", 'health = await AGI.serve(env, action="health")', "health")
    http = curl("GET", ref.http_path("health"), given)
    return ref.snippet("health", python, ref.verb("health", "--gate", *options), agi, http)


def snapshot(ref: AppRef) -> Snippet:
    python = ref.service_preamble() + "print(service.snapshot())  # service_operator_snapshot.json\n"
    return ref.snippet("snapshot", python, ref.verb("snapshot"))


def stop(ref: AppRef, timeout: float | None = None) -> Snippet:
    argument = f"timeout={timeout:g}" if timeout is not None else ""
    python = ref.service_preamble() + f'print(service.stop({argument})["message"])\n'
    options = ["--timeout", f"{timeout:g}"] if timeout is not None else []
    wait = f", timeout={timeout:g}" if timeout is not None else ""
    agi = serve_script(ref, "stop", f'stopped = await AGI.serve(env, action="stop"{wait})', "stopped")
    return ref.snippet("stop", python, ref.verb("stop", *options), agi)


def submit(ref: AppRef, args: dict[str, Any], wait_timeout: float | None = None) -> Snippet:
    """Queue one task; with ``wait_timeout``, wait that long for its result."""
    python = ref.service_preamble() + f"handle = service.submit({literal(args)})\n"
    options = ["--args", json.dumps(args)]
    if wait_timeout is None:
        python += "print(handle.task_id)\n"
    else:
        python += f"print(handle.result(timeout={wait_timeout:g}))\n"
        options += ["--wait", "--timeout", f"{wait_timeout:g}"]
    agi = ref.agi_script(
        f"queued = await AGI.submit(env, args={literal(args)})\n"
        'print("SUBMIT:", queued["status"], queued["task_ids"])\n'
    )
    http = curl("POST", ref.http_path("tasks"), {"wait": wait_timeout}, body=args)
    return ref.snippet("submit", python, ref.verb("submit", *options), agi, http)


def result(ref: AppRef, task_id: str, wait_timeout: float | None = None) -> Snippet:
    """A task's result; with ``wait_timeout``, waiting that long for it to finish."""
    timeout = "" if wait_timeout is None else f", timeout={wait_timeout:g}"
    python = ref.service_preamble() + f"print(service.result({literal(task_id)}{timeout}))\n"
    options = [] if wait_timeout is None else ["--timeout", f"{wait_timeout:g}"]
    http = curl("GET", ref.http_path("tasks", task_id), {"wait": wait_timeout})
    return ref.snippet("result", python, ref.verb("result", task_id, *options), http=http)


def cancel(ref: AppRef, task_id: str) -> Snippet:
    python = ref.service_preamble() + f"cancelled = service.cancel([{literal(task_id)}])\n"
    python += "print(list(cancelled), cancelled.not_cancelled)\n"
    http = curl("DELETE", ref.http_path("tasks", task_id))
    return ref.snippet("cancel", python, ref.verb("cancel", task_id), http=http)


# ---------------------------------------------------------------------- run mode


def install(ref: AppRef) -> Snippet:
    python = (
        ref.env_preamble()
        + "report = keepwarm.install(env, on_output=print)  # InstallError names the step that failed\n"
        "print([(step.name, step.status) for step in report.steps])\n"
    )
    agi = ref.agi_script(
        "report = await AGI.install(env)\n"
        'print("INSTALL:", [(step["name"], step["status"]) for step in report["steps"]])\n'
    )
    return ref.snippet("install", python, ref.verb("install"), agi)


def distribute(ref: AppRef, workers: int) -> Snippet:
    python = (
        ref.env_preamble("from keepwarm.runmode.plan import render_tree")
        + f"plan = keepwarm.distribute(env, workers={workers})  # saved; run executes it\n"
        "print(render_tree(plan))\n"
    )
    agi = ref.agi_script(
        f"plan = await AGI.get_distrib(env, workers={{{literal(LOCALHOST)}: {workers}}}"
        f"{ref.args_keywords(DISTRIB_PARAMETERS)})\n"
        'print("DISTRIBUTE:", plan["loads"], plan["imbalance"])\n'
    )
    return ref.snippet("distribute", python, ref.verb("distribute", "--workers", str(workers), "--tree"), agi)


def move_partition(ref: AppRef, partition: str, worker: str) -> Snippet:
    python = (
        ref.env_preamble("from keepwarm.runmode.plan import move_partition, render_tree")
        + f"plan = move_partition(env, {literal(partition)}, {literal(worker)})  # and saved\n"
        "print(render_tree(plan))\n"
    )
    return ref.snippet("move", python, ref.verb("distribute", "--move", partition, "--to", worker))


def run(ref: AppRef, mode: str) -> Snippet:
    python = (
        ref.env_preamble()
        + f"report = keepwarm.run(env, {literal(mode)}, on_event=lambda event: print(event.message))\n"
        "print(report.status, report.seconds, report.rows, report.output_dir)\n"
    )
    agi = ref.agi_script(
        f"run = await AGI.run(env, mode={mode_bits(mode)}{ref.args_keywords(RUN_PARAMETERS)})  # {mode}\n"
        'print("RUN:", run["status"], run["seconds"], run["rows"], run["output_dir"])\n'
    )
    return ref.snippet("run", python, ref.verb("run", "--mode", mode), agi)


def benchmark(ref: AppRef, modes: list[str] | None = None) -> Snippet:
    """Every available mode (``modes=None``), or these, timed and ranked into ``benchmark.json``."""
    chosen = "" if modes is None else f"{literal(modes)}, "
    python = (
        ref.env_preamble("from keepwarm.runmode.benchmark import benchmark")
        + f"report = benchmark(env, {chosen}on_event=lambda event: print(event.message))\n"
        "for entry in report.ranked:\n"
        "    print(entry.order, entry.mode, entry.timing)\n"
    )
    options = [] if modes is None else ["--mode", ",".join(modes)]
    chosen_bits = "None" if modes is None else literal([mode_bits(mode) for mode in modes])
    agi = ref.agi_script(
        f"ranking = await AGI.run(env, mode={chosen_bits}{ref.args_keywords(RUN_PARAMETERS)})  # benchmark\n"
        'for name, entry in sorted(ranking.items(), key=lambda item: item[1]["order"]):\n'
        '    print("BENCHMARK:", entry["order"], name, entry["timing"])\n'
    )
    return ref.snippet("benchmark", python, ref.verb("run", "--benchmark", *options), agi)


def load_data(ref: AppRef, rows: int) -> Snippet:
    python = (
        ref.env_preamble("from keepwarm.runmode.data import head")
        + f"run, table = head(env, rows={rows})  # the latest run's output\n"
        "print(run.run_id)\n"
        "print(table)\n"
    )
    return ref.snippet("data", python, ref.verb("data", "--head", str(rows)))


def export(ref: AppRef, columns: list[str] | None) -> Snippet:
    """Chosen columns of the latest output to ``export.csv`` (``None``: every column)."""
    python = (
        ref.env_preamble("from keepwarm.runmode.data import export_columns")
        + f"print(export_columns(env, {literal(columns) if columns is not None else 'None'}).path)\n"
    )
    options = ["--all"] if columns is None else ["--columns", ",".join(columns)]
    return ref.snippet("export", python, ref.verb("export", *options))


def analysis(ref: AppRef, source: str, kind: str, x: str, y: str | None, color: str | None) -> str:
    """The ANALYSIS page's source, statistics and chart rows, as Python (no CLI verb draws charts)."""
    return (
        ref.env_preamble(
            "from keepwarm.runmode.analysis import chart_data, find_source, load_source, summarize"
        )
        + f"source = find_source(env, {literal(source)})\n"
        "table = load_source(env, source)\n"
        "print(source.label, source.path)\n"
        "summary = summarize(table)\n"
        "print(summary.numeric_table())\n"
        "print(summary.other_table())\n"
        f"chart = chart_data(table, {literal(kind)}, {literal(x)}, {literal(y)}, {literal(color)})\n"
        "print(chart.frame)  # the rows the chart draws\n"
    )


# ---------------------------------------------------------------------- generated for the PIPELINE

# The actions the PIPELINE page generates a step from, as the page lists them.
GENERATED_ACTIONS = ("install", "distribute", "run", "start", "status", "health", "stop")


def generate(ref: AppRef, action: str, *, mode: str, workers: int) -> Snippet:
    """The snippet of one of :data:`GENERATED_ACTIONS`, with the settings' ``mode`` and ``workers``."""
    builders = {
        "install": lambda: install(ref),
        "distribute": lambda: distribute(ref, workers),
        "run": lambda: run(ref, mode),
        "start": lambda: start(ref, workers),
        "status": lambda: status(ref),
        "health": lambda: health_gate(ref),
        "stop": lambda: stop(ref),
    }
    if action not in builders:
        raise ValueError(
            f"no snippet of {action!r} to generate: choose one of {', '.join(GENERATED_ACTIONS)}"
        )
    return builders[action]()
