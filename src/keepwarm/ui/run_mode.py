"""The page's run-mode sections: Install, Distribute (the app's args and the work plan), Run.

INSTALL calls ``installer.install`` and streams its output into *Install logs*; a successful install
(this session's, or the one ``install.json`` records) enables RUN. The args form is generated from
the app's args model and saved to ``[args]``. CHECK DISTRIBUTE calls ``plan.distribute`` and draws
the plan (a tree, each worker's load, the imbalance); a partition moves with ``plan.move_partition``,
which saves the plan. RUN calls ``runner.run``, or ``benchmark.benchmark`` for every mode, with the
run's events streamed into *Run logs*.
"""

from __future__ import annotations

import json
from typing import Any, Literal, get_args, get_origin

import pandas as pd  # type: ignore[import-untyped, unused-ignore]  # stubs are not a dependency
import streamlit as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from keepwarm.api import Service
from keepwarm.app import load_args_model
from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.runmode.appcode import borrowed_imports
from keepwarm.runmode.benchmark import BENCHMARK_FILE, BenchmarkEntry, BenchmarkReport, benchmark
from keepwarm.runmode.installer import InstallReport, install
from keepwarm.runmode.modes import (
    BENCHMARK_BITS,
    RAPIDS,
    RunMode,
    available_benchmark_modes,
    settings_mode,
    unavailable_reason,
)
from keepwarm.runmode.plan import (
    IMBALANCE_LIMIT,
    SavedPlan,
    distribute,
    load_plan,
    move_partition,
    render_tree,
)
from keepwarm.runmode.runner import RunEvent, RunReport, run
from keepwarm.ui import snippets
from keepwarm.ui.actions import (
    Outcome,
    attempt,
    initial_from_settings,
    recalled,
    remember,
    show_log,
    show_outcome,
    show_snippet,
    stream,
    write_settings,
)
from keepwarm.ui.snippets import AppRef

INSTALL_RECORD = "install.json"


# ---------------------------------------------------------------------- install


def installed(env: Env) -> bool:
    """Installed in this session, or an install of this app recorded in its log folder."""
    outcome = recalled("install")
    if outcome is not None and outcome.ok and isinstance(outcome.value, InstallReport):
        return outcome.value.app == env.app_target
    try:
        InstallReport.model_validate_json((env.log_dir / INSTALL_RECORD).read_bytes())
    except (OSError, ValueError):
        return False
    return True


def install_section(env: Env) -> None:
    st.header("Install")
    st.caption(
        "Provisions the app for run mode: its interpreter (its own virtual environment when isolated), "
        "its declared dependencies, an import check, and the Cython build or the Dask shipping it needs."
    )
    ref = AppRef.of(env)
    snippet = snippets.install(ref)
    with st.expander("Python and CLI", expanded=False):
        show_snippet(snippet)
    if st.button("INSTALL", key="install.run", type="primary"):
        log: list[str] = []

        def provision(say: Any) -> InstallReport:
            def step(name: str, state: str, detail: str) -> None:
                say(f"step {name}: {state}{f' - {detail}' if detail else ''}")

            return install(env, on_step=step, on_output=say)

        def act() -> Outcome:
            report = stream(provision, "Install logs", log)
            steps = ", ".join(f"{s.name} {s.status}" for s in report.steps)
            return Outcome(
                True, f"installed {report.app} in {report.seconds:.2f}s: {steps}", snippet, report, log
            )

        remember("install", attempt(snippet, act, log))  # RUN, drawn below, reads it
    outcome = show_outcome("install", with_snippet=False)
    show_log("Install logs", outcome)
    if outcome is None and installed(env):
        st.caption(f"installed earlier: {env.log_dir / INSTALL_RECORD}")


# ---------------------------------------------------------------------- distribute


def distribute_section(env: Env) -> None:
    st.header("Distribute")
    args_form(env)
    plan_view(env)


def field_widget(name: str, info: FieldInfo, current: Any) -> Any:
    """One widget for one field of the args model, chosen by its type and bounded by its constraints."""
    annotation = info.annotation
    label = name
    key = f"args.{name}"
    help_text = info.description
    bounds = {
        attribute: getattr(item, attribute)
        for item in info.metadata
        for attribute in ("ge", "le", "gt", "lt")
        if getattr(item, attribute, None) is not None
    }
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le", bounds.get("lt"))
    if annotation is bool:
        return st.toggle(label, value=bool(current), key=key, help=help_text)
    if annotation is int and isinstance(current, int):
        low = low + 1 if "ge" not in bounds and low is not None else low  # gt n: n + 1 for integers
        high = high - 1 if "le" not in bounds and high is not None else high
        if (low is not None and current < low) or (high is not None and current > high):
            low = high = None  # a value out of bounds in the file: shown as is, refused on save with why
        return st.number_input(
            label, value=current, min_value=low, max_value=high, step=1, key=key, help=help_text
        )
    if annotation is float and isinstance(current, (int, float)):
        if (low is not None and current < low) or (high is not None and current > high):
            low = high = None
        return st.number_input(
            label,
            value=float(current),
            min_value=None if low is None else float(low),
            max_value=None if high is None else float(high),
            key=key,
            help=help_text,
        )
    if get_origin(annotation) is Literal:
        choices = list(get_args(annotation))
        return st.selectbox(
            label, choices, index=choices.index(current) if current in choices else 0, key=key, help=help_text
        )
    if annotation is str:
        return st.text_input(label, value=str(current), key=key, help=help_text)
    text = st.text_input(f"{label} (JSON)", value=json.dumps(current), key=key, help=help_text)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # the args model says what is wrong with it when it is saved


def args_form(env: Env) -> None:
    """``[args]`` as a form generated from the app's args model (a JSON box without one)."""
    st.subheader(f"{env.app_target} args")
    try:
        with borrowed_imports(env.app_dir):
            model = load_args_model(env)
    except KeepwarmError as exc:
        st.error(str(exc))
        return
    current = env.settings.args
    values: dict[str, Any] = {}
    if model is None:
        text = st.text_area("[args] (a JSON object)", value=json.dumps(current), key="args.json")
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            values = {"__invalid__": str(exc)}
    else:
        columns = st.columns(3)
        for index, (name, info) in enumerate(model.model_fields.items()):
            default = info.get_default(call_default_factory=True)
            with columns[index % 3]:
                values[name] = field_widget(name, info, current.get(name, default))
    if st.button("SAVE ARGS", key="args.save"):
        remember("args", save_args(env, model, values))
    show_outcome("args")


def save_args(env: Env, model: type[BaseModel] | None, values: dict[str, Any]) -> Outcome:
    """Check the args as a task's args are checked, then write the keys that changed to ``[args]``."""
    if "__invalid__" in values:
        return Outcome(False, f"[args]: not JSON: {values['__invalid__']}")
    if not isinstance(values, dict):
        return Outcome(False, '[args]: write a JSON object, e.g. {"x": 27}')
    try:
        Service(env).check_args(values)
    except ValueError as exc:
        return Outcome(False, f"[args] of {env.settings_path}: {exc}")
    current = env.settings.args
    fields = model.model_fields if model is not None else {}
    defaults = {name: info.get_default(call_default_factory=True) for name, info in fields.items()}

    def differs(key: str, value: Any) -> bool:
        # A key the file does not name is written only when its value is not the model's default.
        if key in current:
            return bool(current[key] != value)
        return key not in defaults or defaults[key] != value

    update: dict[str, Any] = {key: value for key, value in values.items() if differs(key, value)}
    if model is None:
        update |= {key: None for key in current if key not in values}  # removed from the JSON
    return write_settings(env, [("args", update)])


def plan_view(env: Env) -> None:
    st.subheader("Distribute details")
    ref = AppRef.of(env)
    workers_column, button_column = st.columns([1, 3])
    initial_from_settings(env, "run.workers")
    workers = int(
        workers_column.number_input("Plan workers", min_value=1, max_value=1024, step=1, key="run.workers")
    )
    snippet = snippets.distribute(ref, workers)
    with st.expander("Python and CLI", expanded=False):
        show_snippet(snippet)
    if button_column.button("CHECK DISTRIBUTE", key="run.distribute", type="primary"):

        def check() -> Outcome:
            plan = distribute(env, workers=workers)
            message = (
                f"work plan of {plan.partition_count} partitions over {len(plan.workers)} workers, "
                f"imbalance {plan.imbalance():.2f}"
            )
            return Outcome(True, message, snippet, plan)

        remember("plan", attempt(snippet, check))
    show_outcome("plan", with_snippet=False)
    try:
        plan = load_plan(env)
    except KeepwarmError as exc:
        st.error(str(exc))
        return
    if plan is None:
        st.caption("no work plan yet: CHECK DISTRIBUTE builds one with the app's manager")
        return
    with st.expander("Distribution tree", expanded=True):
        show_plan(plan)
    with st.expander("Workplan: reassign partitions", expanded=False):
        move_form(env, plan)


def plan_graph(plan: SavedPlan) -> str:
    """The plan as a Graphviz tree: app, workers with their load, partitions with their weight."""
    total = sum(plan.loads().values()) or 1.0
    lines = [
        "digraph plan {",
        "rankdir=LR;",
        'node [shape=box, style="rounded,filled", fillcolor="#f0f2f6"];',
    ]
    lines.append(f'"{plan.app}" [fillcolor="#ffd8d8"];')
    for worker, partitions in plan.workers.items():
        load = sum(p.weight for p in partitions)
        lines.append(f'"{worker}" [label="{worker}\\n{load:g} {plan.unit} ({100 * load / total:.0f}%)"];')
        lines.append(f'"{plan.app}" -> "{worker}";')
        for partition in partitions:
            node = f"{worker}/{partition.name}"
            lines.append(f'"{node}" [label="{partition.name}\\n{plan.weights_key}={partition.weight:g}"];')
            lines.append(f'"{worker}" -> "{node}";')
    lines.append("}")
    return "\n".join(lines)


def show_plan(plan: SavedPlan) -> None:
    imbalance = plan.imbalance()
    columns = st.columns(4)
    columns[0].metric("Partitions", plan.partition_count)
    columns[1].metric("Workers", len(plan.workers))
    columns[2].metric(f"Total ({plan.unit})", f"{sum(plan.loads().values()):g}")
    columns[3].metric(
        "Imbalance",
        f"{imbalance:.2f}",
        help=f"the heaviest worker's load over the mean; over {IMBALANCE_LIMIT} is unbalanced",
    )
    if not plan.balanced:
        st.warning(f"unbalanced: imbalance {imbalance:.2f} is over {IMBALANCE_LIMIT}; move partitions below")
    tree, loads = st.columns(2)
    with tree:
        st.graphviz_chart(plan_graph(plan))
    with loads:
        st.caption(f"Load per worker ({plan.unit}), one block per partition")
        weights = pd.DataFrame(
            [
                {"worker": worker, "partition": p.name, "weight": p.weight}
                for worker, partitions in plan.workers.items()
                for p in partitions
            ]
        )
        if not weights.empty:
            table = weights.pivot_table(index="worker", columns="partition", values="weight", fill_value=0)
            st.bar_chart(
                table[[name for name in plan.order if name in table.columns]], horizontal=True, height=260
            )
    with st.expander("as text", expanded=False):
        st.code(render_tree(plan), language="text")


def move_form(env: Env, plan: SavedPlan) -> None:
    ref = AppRef.of(env)
    where = {name: plan.worker_of(name) for name in plan.order}
    left, middle, right = st.columns([2, 2, 1])
    partition = left.selectbox(
        "Partition",
        plan.order,
        format_func=lambda name: f"{name} (on {where[name]})",
        key="run.move_partition",
    )
    worker = middle.selectbox("To worker", list(plan.workers), key="run.move_to")
    if right.button("MOVE AND SAVE", key="run.move", width="stretch"):
        snippet = snippets.move_partition(ref, str(partition), str(worker))

        def move() -> Outcome:
            moved = move_partition(env, str(partition), str(worker))
            message = (
                f"{partition} moved from {where[str(partition)]} to {worker} and the plan saved; "
                f"imbalance {moved.imbalance():.2f}"
            )
            return Outcome(True, message, snippet, moved)

        remember("move", attempt(snippet, move))
        st.rerun()  # the tree above shows the saved plan
    show_outcome("move")


# ---------------------------------------------------------------------- run


def mode_choices(env: Env) -> list[str]:
    """The modes the benchmark knows (with rapids when a GPU is there), and the settings' own mode."""
    bits = list(BENCHMARK_BITS)
    if unavailable_reason(RunMode(RAPIDS)) is None:
        bits += [b | RAPIDS for b in BENCHMARK_BITS]
    names = [RunMode(b).name for b in bits]
    configured = settings_mode(env.settings.cluster).name
    return names if configured in names else [configured, *names]


def describe_event(event: RunEvent) -> str:
    if event.kind == "partition":
        return f"[{event.done}/{event.total}] {event.message}"
    return {"warning": "WARNING ", "app": "| "}.get(event.kind, "") + event.message


def run_section(env: Env) -> None:
    st.header("Run")
    ref = AppRef.of(env)
    choices = mode_choices(env)
    mode_column, bench_column = st.columns(2)
    initial_from_settings(env, "run.mode")
    mode = str(mode_column.selectbox("Mode", choices, key="run.mode"))
    every = bench_column.toggle("Benchmark all modes", value=False, key="run.benchmark")
    modes: list[str] | None = None
    if every:
        runnable, skipped = available_benchmark_modes()
        names = [m.name for m in runnable]
        picked = bench_column.multiselect("Modes to benchmark", names, default=names, key="run.bench_modes")
        modes = None if list(picked) == names else [str(name) for name in picked]
        for name, why in skipped.items():
            bench_column.caption(f"not here: {name}: {why}")
    reason = None if every else unavailable_reason(RunMode.parse(mode))
    if reason:
        st.warning(reason)
    snippet = snippets.benchmark(ref, modes) if every else snippets.run(ref, mode)
    with st.expander("Python and CLI", expanded=False):
        show_snippet(snippet)
    ready = installed(env)
    if not ready:
        st.caption("INSTALL first: a successful install enables RUN")
    if st.button("RUN", key="run.run", type="primary", disabled=not ready):
        log: list[str] = []

        chosen: list[str | int | RunMode] | None = None if modes is None else list(modes)

        def act() -> Outcome:
            if every:
                ranking = stream(
                    lambda say: benchmark(env, chosen, on_event=lambda e: say(describe_event(e))),
                    "Run logs",
                    log,
                )
                fastest = ranking.ranked[0] if ranking.ranked else None
                best = f"; fastest: {fastest.mode} in {fastest.timing}" if fastest else ""
                message = f"benchmarked {len(ranking.entries)} modes{best} (written to {ranking.path})"
                return Outcome(True, message, snippet, ranking, log)
            report = stream(
                lambda say: run(env, mode, on_event=lambda e: say(describe_event(e))), "Run logs", log
            )
            message = (
                f"run {report.run_id} {report.status} in {report.seconds:.2f}s, mode {report.mode}: "
                f"{report.rows} rows in {report.output_dir}"
            )
            return Outcome(True, message, snippet, report, log)

        remember("run", attempt(snippet, act, log))
    outcome = show_outcome("run", with_snippet=False)
    show_log("Run logs", outcome)
    if outcome is not None and isinstance(outcome.value, RunReport):
        st.json(outcome.value.to_json_dict(), expanded=False)
    benchmark_results(env, outcome.value if outcome is not None else None)


def saved_benchmark(env: Env) -> BenchmarkReport | None:
    """``benchmark.json`` of the app's log folder, as the benchmark wrote it (None if there is none)."""
    path = env.log_dir / BENCHMARK_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        entries = {name: BenchmarkEntry.model_validate(entry) for name, entry in document.items()}
    except (OSError, ValueError, AttributeError):
        return None
    return BenchmarkReport(path=str(path), entries=entries, skipped={})


def benchmark_results(env: Env, latest: Any) -> None:
    ranking = latest if isinstance(latest, BenchmarkReport) else saved_benchmark(env)
    if ranking is None or not ranking.entries:
        return
    st.subheader("Benchmark results")
    rows = [entry.model_dump() for entry in ranking.ranked]
    table = pd.DataFrame.from_records(
        rows, columns=["order", "mode", "variant", "seconds", "delta", "timing", "rows", "digest"]
    )
    left, right = st.columns(2)
    with left:
        st.table(table, hide_index=True)
        st.caption(
            f"{ranking.path}; "
            + ("every mode produced the same table" if ranking.same_output else "the modes' outputs DIFFER")
        )
        for name, why in ranking.skipped.items():
            st.caption(f"skipped {name}: {why}")
    with right:
        st.bar_chart(table.set_index("mode")[["seconds"]], horizontal=True, height=240)
