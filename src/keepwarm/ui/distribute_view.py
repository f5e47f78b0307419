"""The page's Distribute section: the args form, CHECK DISTRIBUTE (``plan.distribute``), the plan
drawn as a tree with each worker's load, and a partition moved with ``plan.move_partition``."""

from __future__ import annotations

import pandas as pd  # type: ignore[import-untyped, unused-ignore]  # stubs are not a dependency
import streamlit as st

from keepwarm.env import Env
from keepwarm.errors import KeepwarmError
from keepwarm.runmode.plan import (
    IMBALANCE_LIMIT,
    SavedPlan,
    distribute,
    load_plan,
    move_partition,
    render_tree,
)
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
    with st.expander("Python and CLI", expanded=False):
        show_snippet(snippet)
    if button_column.button("CHECK DISTRIBUTE", key=state.key("run.distribute"), type="primary"):

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
        key=state.key("run.move_partition"),
    )
    worker = middle.selectbox("To worker", list(plan.workers), key=state.key("run.move_to"))
    if right.button("MOVE AND SAVE", key=state.key("run.move"), width="stretch"):
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
