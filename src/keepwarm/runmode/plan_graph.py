"""The work plan drawn as a Graphviz graph (DOT text) that fits one screen at any size.

Up to ``PARTITIONS_DRAWN`` partitions, the graph is the tree app -> workers -> partitions, each
partition with its weight. Past that, the partitions are collapsed into their worker's node ("k
partitions, load"), listed in the node's tooltip, so that a plan of a hundred partitions is as tall as
its workers; past ``WORKERS_IN_A_COLUMN`` workers, they are laid side by side instead of one under the
other, and the drawing, scaled to the page's width, stays short.
"""

from __future__ import annotations

from keepwarm.runmode.plan import SavedPlan

PARTITIONS_DRAWN = 12
WORKERS_IN_A_COLUMN = 12
TOOLTIP_PARTITIONS = 40  # a collapsed worker's tooltip names at most this many of its partitions


def collapsed(plan: SavedPlan) -> bool:
    """Whether the graph draws workers only (their partitions listed beside it, not drawn)."""
    return plan.partition_count > PARTITIONS_DRAWN


def plan_graph(plan: SavedPlan) -> str:
    """The plan as DOT: the app, each worker with its load and share, and (when not ``collapsed``)
    each partition with its weight."""
    total = sum(plan.loads().values()) or 1.0
    rankdir = "LR" if len(plan.workers) <= WORKERS_IN_A_COLUMN else "TB"
    lines = [
        "digraph plan {",
        f"rankdir={rankdir};",
        'node [shape=box, style="rounded,filled", fillcolor="#f0f2f6", fontname="sans-serif"];',
        f'{_quote(plan.app)} [fillcolor="#ffd8d8", tooltip={_quote(_summary(plan))}];',
    ]
    fold = collapsed(plan)
    for worker, partitions in plan.workers.items():
        load = sum(p.weight for p in partitions)
        share = f"{_number(load)} {plan.unit} ({100 * load / total:.0f}%)"
        if fold:
            names = [p.name for p in partitions]
            more = ", ..." if len(names) > TOOLTIP_PARTITIONS else ""
            shown = ", ".join(names[:TOOLTIP_PARTITIONS]) + more
            label = f"{worker}\\n{len(partitions)} partitions, {share}"
            tooltip = f"{worker}: {shown}"
            lines.append(f"{_quote(worker)} [label={_quote(label)}, tooltip={_quote(tooltip)}];")
        else:
            label = f"{worker}\\n{share}"
            lines.append(f"{_quote(worker)} [label={_quote(label)}];")
        lines.append(f"{_quote(plan.app)} -> {_quote(worker)};")
        if fold:
            continue
        for partition in partitions:
            node = f"{worker}/{partition.name}"
            label = f"{partition.name}\\n{plan.weights_key}={_number(partition.weight)}"
            lines.append(f"{_quote(node)} [label={_quote(label)}];")
            lines.append(f"{_quote(worker)} -> {_quote(node)};")
    lines.append("}")
    return "\n".join(lines)


def _summary(plan: SavedPlan) -> str:
    return f"{plan.app}: {plan.partition_count} partitions over {len(plan.workers)} workers"


def _quote(text: str) -> str:
    """A DOT string; ``\\n`` already in ``text`` stays a line break."""
    return '"' + text.replace('"', '\\"') + '"'


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"
