"""The page's Distribute section: the args form, CHECK DISTRIBUTE (``contained.distribute_in_child``:
the app's manager runs in a child process, never in the page's server), the plan drawn so that it fits one
screen (``plan_graph``), when it was computed and whether ``[args]`` changed since (``freshness``),
and a partition moved with ``plan.move``."""

from __future__ import annotations

from typing import Any

import streamlit as st

from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.runmode.contained import distribute_in_child
from keepwarm.runmode.freshness import freshness
from keepwarm.runmode.plan import IMBALANCE_LIMIT, SavedPlan, load_plan, move, render_tree
from keepwarm.runmode.plan_graph import PARTITIONS_DRAWN, collapsed, plan_graph
from keepwarm.ui import snippets, state
from keepwarm.ui.actions import (
    Outcome,
    attempt,
    initial_from_settings,
    remember,
    show_outcome,
)
from keepwarm.ui.args_form import args_form
from keepwarm.ui.snippet_view import show_snippet
from keepwarm.ui.snippets import AppRef

WORKER_EXPANDERS = 16  # past this many workers, the partitions are one table instead of an expander each


def distribute_section(env: Env) -> None:
    st.header("Distribute")
    args_form(env)
    plan_view(env)


def plan_view(env: Env) -> None:
    st.subheader("Distribute details")
    ref = AppRef.of(env)
    workers_column, button_column = st.columns([1, 3])
    initial_from_settings(env, "run.workers")
    workers = int(
        workers_column.number_input(
            "Plan workers", min_value=1, max_value=1024, step=1, key=state.key("run.workers")
        )
    )
    snippet = snippets.distribute(ref, workers)
    with st.expander("Python, CLI and AGI", expanded=False):
        show_snippet(snippet)
    if button_column.button("CHECK DISTRIBUTE", key=state.key("run.distribute"), type="primary"):

        def check() -> Outcome:
            plan = distribute_in_child(env, workers=workers, args=None)
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
    fresh = freshness(env, plan.created_at, plan.args)
    moved = f"; {len(plan.moves)} moves since" if plan.moves else ""
    with st.container(key=state.key("plan.freshness")):
        st.caption(f"work plan {fresh.computed()}{moved}")
        stale = fresh.out_of_date()
        if stale:
            st.warning(f"{stale}: CHECK DISTRIBUTE builds it again (RUN rebuilds it too, without its moves)")
    with st.expander("Distribution tree", expanded=True):
        show_plan(plan)
    with st.expander("Workplan: reassign partitions", expanded=False):
        move_form(env, plan)


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
    with tree, st.container(key=state.key("plan.tree")):
        st.graphviz_chart(plan_graph(plan))
        if collapsed(plan):
            st.caption(
                f"over {PARTITIONS_DRAWN} partitions: each worker's partitions are listed below, "
                "and named in its node's tooltip"
            )
    with loads, st.container(key=state.key("plan.loads")):
        load_chart(plan)
    if collapsed(plan):
        partitions_by_worker(plan)
    with st.expander("as text", expanded=False):
        st.code(render_tree(plan), language="text")


def load_chart(plan: SavedPlan) -> None:
    """Each worker's load: one block per partition (with a legend) up to a dozen partitions, else one
    bar per worker whose tooltip says how many partitions it holds."""
    import altair as alt
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]  # stubs are not a dependency

    workers = list(plan.workers)
    tooltip: list[Any]
    if collapsed(plan):
        st.caption(f"Load per worker ({plan.unit})")
        data = pd.DataFrame(
            [
                {"worker": worker, "load": sum(p.weight for p in ps), "partitions": len(ps)}
                for worker, ps in plan.workers.items()
            ]
        )
        color: Any = alt.value("#4c78a8")
        tooltip = ["worker", "load", "partitions"]
    else:
        st.caption(f"Load per worker ({plan.unit}), one block per partition")
        data = pd.DataFrame(
            [
                {"worker": worker, "load": p.weight, "partition": p.name}
                for worker, ps in plan.workers.items()
                for p in ps
            ]
        )
        order = [name for name in plan.order]
        color = alt.Color(
            "partition:N",
            sort=order,
            legend=alt.Legend(orient="bottom", columns=6, symbolLimit=0, labelLimit=120),
        )
        tooltip = ["worker", "partition", "load"]
    # the legend sits under the bars, six entries a row, inside the chart's height: never cut
    legend_rows = 0 if collapsed(plan) else -(-plan.partition_count // 6)
    height = min(600, 60 + 30 * len(workers)) + (24 + 20 * legend_rows if legend_rows else 0)
    chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("sum(load):Q", title=plan.unit),
            y=alt.Y("worker:N", sort=workers, title=None),
            color=color,
            tooltip=tooltip,
        )
        .properties(height=height)
    )
    st.altair_chart(chart, width="stretch")


def partitions_by_worker(plan: SavedPlan) -> None:
    """The partitions the collapsed graph does not draw: an expander per worker (a table past
    ``WORKER_EXPANDERS`` workers), in a box of fixed height."""
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    st.caption(f"Partitions by worker ({plan.weights_key})")
    if len(plan.workers) > WORKER_EXPANDERS:
        rows = [
            {"worker": worker, "partition": p.name, plan.weights_key: p.weight}
            for worker, ps in plan.workers.items()
            for p in ps
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True, height=300)
        return
    loads = plan.loads()
    with st.container(height=300, key=state.key("plan.partitions")):
        for worker, partitions in plan.workers.items():
            title = f"{worker}: {len(partitions)} partitions, {loads[worker]:g} {plan.unit}"
            with st.expander(title, expanded=False):
                st.text(", ".join(f"{p.name} ({p.weight:g})" for p in partitions) or "no partition")


def move_form(env: Env, plan: SavedPlan) -> None:
    ref = AppRef.of(env)
    where = {name: plan.worker_of(name) for name in plan.order}
    picker = state.key("run.move_partition")
    moved = state.get("move.moved")
    if moved in where:  # set before the picker is drawn: the browser then shows its new worker
        st.session_state[picker] = moved
    state.drop("move.moved")
    left, middle, right = st.columns([2, 2, 1])
    partition = left.selectbox(
        "Partition",
        plan.order,
        format_func=lambda name: f"{name} (on {where[name]})",
        key=picker,
    )
    worker = middle.selectbox("To worker", list(plan.workers), key=state.key("run.move_to"))
    if right.button("MOVE AND SAVE", key=state.key("run.move"), width="stretch"):
        snippet = snippets.move_partition(ref, str(partition), str(worker))

        def act() -> Outcome:
            done = move(env, str(partition), str(worker))  # its plan is the one saved
            if not done.moved:
                return Outcome(True, done.message, snippet, done.plan)
            message = (
                f"{partition} moved from {done.from_worker} to {done.to_worker} and the plan saved; "
                f"imbalance {done.plan.imbalance():.2f}"
            )
            return Outcome(True, message, snippet, done.plan)

        remember("move", attempt(snippet, act))
        state.put("move.moved", str(partition))
        st.rerun()  # the tree above, and the picker, show the saved plan
    show_outcome("move")
