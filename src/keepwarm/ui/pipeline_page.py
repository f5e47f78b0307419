"""The PIPELINE page: the app's steps (``<app>/pipeline.toml``), each a saved snippet run as
``python <file>`` in a child process, in order; reorder, remove, run one or RUN ALL, each step's log
and outcome, a stale mark when the ``[args]`` a step was generated from changed; add a step from a
snippet file of the app folder, or generate one now from ORCHESTRATE's actions.

Every button calls one function of ``keepwarm.pipeline``; widget keys are ``pipeline.<name>`` (per
app, through ``state.key``) and the page sits in the container ``section-pipeline``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import streamlit as st

from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.pipeline.runner import PipelineRun, last_outcome, run_pipeline, step_log
from keepwarm.pipeline.snippet_file import snippet_file_name, snippet_title
from keepwarm.pipeline.steps import (
    PIPELINE_FILE,
    Step,
    add_step,
    current_args,
    load_pipeline,
    move_step,
    remove_step,
    save_as_step,
    stale,
)
from keepwarm.runmode.modes import settings_mode
from keepwarm.ui import snippets, state
from keepwarm.ui.actions import LOG_LINES_SHOWN, Outcome, attempt, remember, show_log, show_outcome, stream
from keepwarm.ui.snippets import AppRef

INTRO = (
    "A pipeline runs the app's saved snippets in order, each as `python <file>` in the app folder, "
    "and stops at the first that fails. Save a snippet from ORCHESTRATE (its Python or AGI tab), or "
    "add one below; a step is marked stale when the app's `[args]` changed since it was generated."
)
T = TypeVar("T")
GENERATE = "generate from ORCHESTRATE"
FROM_FILE = "a snippet file of the app folder"


def pipeline_page(env: Env) -> None:
    st.title("PIPELINE")
    st.caption(INTRO)
    with st.container(key="section-pipeline"):
        message = state.get("pipeline.message")
        if message is not None:
            state.drop("pipeline.message")  # said once, after the change
            (st.success if message[0] else st.error)(message[1])
        try:
            steps_view(env)
        except KeepwarmError as exc:
            st.error(f"{type(exc).__name__}: {exc}")
        st.divider()
        add_view(env)


def changed(ok: bool, message: str) -> None:
    """Say ``message`` after the rerun that shows the pipeline as it now is."""
    state.put("pipeline.message", (ok, message))
    st.rerun()


def act(change: Callable[[], T], message: Callable[[T], str]) -> None:
    """A button's change of the pipeline file, then the page redrawn from the file, saying what
    ``message`` makes of what the change returned (or what went wrong)."""
    try:
        done = change()
    except KeepwarmError as exc:
        changed(False, f"{type(exc).__name__}: {exc}")
    changed(True, message(done))


def steps_view(env: Env) -> None:
    pipeline = load_pipeline(env)
    st.subheader(f"Steps of {env.app_target}")
    st.caption(f"`{env.app_dir / PIPELINE_FILE}`")
    if not pipeline.steps:
        st.info("no steps yet: add one below, or save a snippet from ORCHESTRATE and add it to the PIPELINE")
        return
    args = current_args(env)
    for number, step in enumerate(pipeline.steps, 1):
        with st.container(border=True, key=f"pipeline-step-{number}"):
            step_view(env, number, step, args, last=number == len(pipeline.steps))
    if st.button("RUN ALL", key=state.key("pipeline.run_all"), type="primary"):
        run_steps(env, None)
    outcome = show_outcome("pipeline", with_snippet=False)
    show_log("Pipeline log", outcome)


def step_view(env: Env, number: int, step: Step, args: dict[str, Any], *, last: bool) -> None:
    name, up, down, run, remove = st.columns([6, 1, 1, 2, 2])
    source = "saved from ORCHESTRATE" if step.source == "orchestrate" else "added from a file"
    limit = "" if step.timeout_sec is None else f", killed past {step.timeout_sec:g} s"
    name.markdown(f"**{number}. `{step.file}`** ({source}{limit})")
    if up.button("↑", key=state.key(f"pipeline.up.{number}"), disabled=number == 1, help="move up"):
        act(lambda: move_step(env, number, -1), lambda _: f"moved {step.file} up")
    if down.button("↓", key=state.key(f"pipeline.down.{number}"), disabled=last, help="move down"):
        act(lambda: move_step(env, number, 1), lambda _: f"moved {step.file} down")
    if run.button("RUN STEP", key=state.key(f"pipeline.run.{number}")):
        run_steps(env, number)
    if remove.button("REMOVE", key=state.key(f"pipeline.remove.{number}")):
        act(
            lambda: remove_step(env, number), lambda _: f"removed step {number} ({step.file}); the file stays"
        )
    staleness = stale(env, step, args)
    if staleness.stale:
        st.warning(
            f"stale: `[args]` changed since this step was generated: {staleness.describe()}. "
            "Generate it again (below, or from ORCHESTRATE) before you rely on it."
        )
    outcome = last_outcome(env, step)
    if outcome is None:
        st.caption("not run yet")
        return
    (st.success if outcome.status == "ok" else st.error)(f"step {number} {outcome.describe()}")
    with st.expander(f"Log of step {number}", expanded=outcome.status != "ok"):
        st.code(log_tail(step_log(env, step)), language="text")


def log_tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return f"(no log: {exc.strerror or exc})"
    return "\n".join(lines[-LOG_LINES_SHOWN:]) or "(it printed nothing)"


def run_steps(env: Env, number: int | None) -> None:
    """RUN ALL (``number`` None) or RUN STEP: the steps' output streamed, the outcome kept."""
    log: list[str] = []

    def execute() -> Outcome:
        ran: PipelineRun = stream(lambda say: run_pipeline(env, number, on_output=say), "Pipeline log", log)
        return Outcome(ran.ok, ran.message, None, ran, log)

    remember("pipeline", attempt(None, execute, log))
    st.rerun()  # every step drawn again with its new outcome


def add_view(env: Env) -> None:
    st.subheader("Add step")
    source = st.radio("Step source", [GENERATE, FROM_FILE], horizontal=True, key=state.key("pipeline.source"))
    if source == FROM_FILE:
        add_from_file(env)
    else:
        add_generated(env)


def add_from_file(env: Env) -> None:
    try:
        taken = {step.file for step in load_pipeline(env).steps}
    except KeepwarmError:
        taken = set()
    files = sorted(path.name for path in env.app_dir.glob("*.py") if path.name not in taken)
    if not files:
        st.caption(f"no snippet file in {env.app_dir} that is not a step already: save one from ORCHESTRATE")
        return
    chosen = st.selectbox("Snippet file", files, key=state.key("pipeline.file"))
    if st.button("ADD STEP", key=state.key("pipeline.add_file")):
        act(lambda: add_step(env, str(chosen)), lambda added: f"added {chosen} as step {len(added.steps)}")


def add_generated(env: Env) -> None:
    action_column, kind_column, name_column = st.columns(3)
    action = str(
        action_column.selectbox("Action", snippets.GENERATED_ACTIONS, key=state.key("pipeline.gen.action"))
    )
    kind = kind_column.radio("As", ["AGI", "Python"], horizontal=True, key=state.key("pipeline.gen.kind"))
    agi = kind == "AGI"
    default = snippet_file_name(action, agi=agi)
    typed = name_column.text_input(
        "File name", key=state.key("pipeline.gen.file"), placeholder=default, help=f"default: {default}"
    )
    name = typed.strip() or default
    cluster = env.settings.cluster
    snippet = snippets.generate(
        AppRef.of(env), action, mode=settings_mode(cluster).name, workers=cluster.slots
    )
    code = snippet.agi if agi and snippet.agi is not None else snippet.python
    st.code(code, language="python")
    if st.button("GENERATE AND ADD", key=state.key("pipeline.generate"), type="primary"):
        act(
            lambda: save_as_step(env, name, code, args=snippet.args, title=snippet_title(action, agi=agi)),
            lambda saved: f"saved {saved[0].path} as step {saved[1]}",
        )
