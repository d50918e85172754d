"""The schedule: what the middle of the compiler hands the backends.

A `Schedule` is the optimized graph with its kernels in execution order (each a
`Group` of nodes computed by one kernel) and the fusion decisions that shaped
them. The executor, `cnnc explain` and `cnnc graph` take it as an argument;
nothing is attached to the graph. Its memory plan depends on the batch size and
is made on demand (cnnc.passes.memory.plan_schedule).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from ..graph import Graph
from ..layout import is_channels_last


@dataclass
class Group:
    """Nodes computed by one kernel.

    kind:   "single", "epilogue" (anchor + elementwise chain), "elementwise" (a loop),
            "batchnorm" (optional anchor + chain + batchnorm statistics + chain),
            "horizontal" (sibling reductions, `pattern` names which), or "view" (a reshape
            that is its input's buffer: no kernel).
    nodes:  members in execution order; `outputs` are those read outside the group.
    """

    name: str
    kind: str
    nodes: list[str]
    anchor: str | None = None
    pre: list[str] = field(default_factory=list)
    tail: str | None = None
    post: list[str] = field(default_factory=list)
    pattern: str = ""
    outputs: list[str] = field(default_factory=list)

    @property
    def end(self) -> str:
        return self.nodes[-1]


@dataclass
class Decision:
    """One fusion considered: `node` into the group `group`, fused or refused and why."""

    node: str
    group: str
    rule: str
    fused: bool
    reason: str = ""


@dataclass
class Schedule:
    """The optimized graph and its kernels in execution order."""

    graph: Graph
    groups: list[Group]
    decisions: list[Decision] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.graph.name

    def views(self) -> dict[str, str]:
        return views(self.graph, self.groups)

    def plan(self, batch: int, float_itemsize: int, exclude: set[str] = frozenset(), reuse: bool = True):
        """The memory plan at one batch size (values in `exclude` live elsewhere, e.g. the gradient arena)."""
        from .memory import plan_schedule

        return plan_schedule(self, batch, float_itemsize, exclude, reuse)


def unfused(graph: Graph) -> Schedule:
    """Every node its own kernel."""
    groups = [Group(n.name, "single", [n.name], outputs=[n.name]) for n in graph.nodes() if n.op.computed]
    return Schedule(graph, groups)


def is_view(graph: Graph, name: str) -> bool:
    """A reshape that keeps the physical element order: the output is the input's buffer."""
    node = graph[name]
    if not node.op.logical_view:
        return False

    def plain(t) -> bool:  # physical order equals logical order
        return not is_channels_last(t) or tuple(t.shape[2:]) == (1, 1)

    x = graph[node.inputs[0]].type
    return plain(x) and plain(node.type) and x.dtype == node.type.dtype


def kept(graph: Graph) -> set[str]:
    """The values the caller reads: outputs and gradients."""
    return set(graph.outputs.values()) | set(graph.grads.values()) | set(graph.input_grads.values())


def in_order(graph: Graph, groups: list[Group], order: dict[str, int] | None = None) -> list[Group]:
    """Groups in an order where every group runs after its inputs' groups, else in node order.
    `order`: every node's topological position, when the caller has it."""
    owner = {name: k for k, g in enumerate(groups) for name in g.nodes}
    if order is None:
        order = {node.name: k for k, node in enumerate(graph.nodes())}
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(groups)))
    for k, g in enumerate(groups):
        for name in g.nodes:
            for i in graph[name].inputs:
                j = owner.get(i)
                if j is not None and j != k:
                    dag.add_edge(j, k)
    first = [min(order[n] for n in g.nodes) for g in groups]
    return [groups[k] for k in nx.lexicographical_topological_sort(dag, key=lambda k: first[k])]


def materialized(graph: Graph, group: Group, kept_values: set[str] | None = None) -> list[str]:
    """Members whose values are read outside the group (or by the caller), and the group's end, which
    its kernel writes even when nothing reads it (a batchnorm kept for its statistics); `kept_values`:
    `kept(graph)`."""
    members = set(group.nodes)
    kept_values = kept(graph) if kept_values is None else kept_values
    out = []
    for name in group.nodes:
        if name in kept_values or name == group.end or any(c.name not in members for c in graph.consumers(name)):
            out.append(name)
    if group.kind == "batchnorm":  # the normalizing pass reads the statistics' input again
        x = graph[group.tail].inputs[0]
        if x in members and x not in out:
            out.append(x)
    return out


def views(graph: Graph, groups: list[Group]) -> dict[str, str]:
    """View name -> the value whose buffer it is (following chains of views)."""
    alias = {g.name: graph[g.name].inputs[0] for g in groups if g.kind == "view"}
    out = {}
    for name, src in alias.items():
        while src in alias:
            src = alias[src]
        out[name] = src
    return out


def is_elementwise(graph: Graph, name: str) -> bool:
    """An op computed element by element from the same element of its inputs (fusable into a loop,
    and safe to write over its first input)."""
    from ..ops.base import Fusion

    node = graph[name]
    if node.op.fusion not in (Fusion.ELEMENTWISE, Fusion.BROADCAST):
        return False
    return node.op.expression(node.attrs, node.type, *(graph[i].type for i in node.inputs)) is not None
