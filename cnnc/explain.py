"""What the optimizer did to a model: fused groups, refused fusions, kernel counts, planned memory.

    report = cnnc.explain.explain(graph, training=True, batch=32)
    print(explain_text(report))

Works on the graph alone (no parameters are allocated, nothing is compiled), so
it is quick even for large models.
"""

from __future__ import annotations

from .errors import CnncError
from .graph import Graph
from .passes.pipeline import optimize
from .passes.schedule import Group, unfused


def step_graph(graph: Graph, training: bool) -> Graph:
    """The graph one run executes: the network alone, or for a training step with its loss and backward."""
    if not training:
        return graph
    from .runtime.losses import default_step, training_graph

    try:
        return training_graph(graph, *default_step(graph))[0]
    except CnncError as e:
        raise CnncError(f"cannot build a training step for {graph.name}: {e}") from None


def kernel_count(groups: list[Group]) -> int:
    return sum(1 for g in groups if g.kind != "view")


def explain(graph: Graph, training: bool = False, batch: int = 1, fuse: bool = True, float_itemsize: int = 4) -> dict:
    """The optimizer's decisions and their effect, as plain data (what `cnnc explain --json` prints)."""
    if batch < 1:
        raise CnncError(f"the batch size must be at least 1, got {batch}")
    step = step_graph(graph, training)
    unoptimized = unfused(step)
    scheduled = optimize(step, training, fuse)
    grads = set(step.grads.values())
    # The unplanned figure: every value of the unoptimized graph in a buffer of its own.
    unplanned = unoptimized.plan(batch, float_itemsize, exclude=grads).unplanned_bytes
    planned = scheduled.plan(batch, float_itemsize, exclude=grads)
    return {
        "model": graph.name,
        "mode": "training step" if training else "inference",
        "batch": batch,
        "kernels": {"unfused": kernel_count(unoptimized.groups), "fused": kernel_count(scheduled.groups)},
        "peak_bytes": {"unplanned": unplanned, "planned": planned.arena_bytes},
        "groups": [
            {"name": g.name, "kind": g.kind + (f" ({g.pattern})" if g.pattern else ""), "nodes": list(g.nodes),
             "outputs": list(g.outputs)}
            for g in scheduled.groups
            if len(g.nodes) > 1 or g.kind == "view"
        ],
        "refused": [
            {"node": d.node, "into": d.group, "rule": d.rule, "reason": d.reason} for d in scheduled.decisions if not d.fused
        ],
        "in_place": [{"output": out, "over": src} for out, src in planned.shared.items()],
    }


def megabytes(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


def explain_text(report: dict) -> str:
    k, p = report["kernels"], report["peak_bytes"]
    lines = [
        f"{report['model']}, {report['mode']}, batch {report['batch']}",
        f"kernels: {k['unfused']} unfused -> {k['fused']} fused ({k['unfused'] / max(k['fused'], 1):.2f}x fewer)",
        f"activation memory: {megabytes(p['unplanned'])} unplanned -> {megabytes(p['planned'])} planned "
        f"({100 * p['planned'] / max(p['unplanned'], 1):.0f}%)",
        "",
        f"fused groups ({len(report['groups'])}):",
    ]
    for g in report["groups"]:
        lines.append(f"  {g['kind']:<28} {' + '.join(g['nodes'])}")
    lines.append("")
    lines.append(f"refused fusions ({len(report['refused'])}):")
    for r in report["refused"]:
        lines.append(f"  {r['rule']}: {r['reason']}")
    if report["in_place"]:
        lines.append("")
        lines.append(f"written in place ({len(report['in_place'])}):")
        for item in report["in_place"]:
            lines.append(f"  {item['output']} over {item['over']}")
    return "\n".join(lines)


def peak_line(graph: Graph, batch: int = 1) -> str:
    """One line for `cnnc check`: the planned peak activation memory of inference and a training step."""
    parts = [f"inference {megabytes(explain(graph, False, batch)['peak_bytes']['planned'])}"]
    try:
        parts.append(f"training step {megabytes(explain(graph, True, batch)['peak_bytes']['planned'])}")
    except CnncError:
        parts.append("training step: no loss applies")
    return f"planned peak activation memory at batch {batch}: " + ", ".join(parts)
