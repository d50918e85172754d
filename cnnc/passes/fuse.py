"""Operator fusion: partition the graph into groups, one kernel each, driven by fusion kinds.

Each op declares its fusion kind in its one definition (cnnc/ops). The pass
walks the graph in topological order and grows groups:

- an out-elementwise-fusable op (conv, dense, their input gradients, the global
  pool's gradient) anchors a group, and elementwise ops that read its result
  join it as an epilogue, run on each tile while it is in cache (bias,
  batchnorm in eval mode, activation, the residual add; in the backward graph
  the activation gradients and the sums of gradients);
- batchnorm in training mode joins the group of its producer as a reduction
  tail: its statistics accumulate in the producer's epilogue, then one pass
  normalizes, and elementwise ops after it join that pass;
- elementwise ops with no such producer form their own loop, which later
  elementwise ops may join;
- sibling reductions over the same operands run as one kernel (batchnorm's
  three gradients; dense's weight and bias gradients; cross-entropy with its
  gradient).

A fusion is refused, with its reason recorded, when it would make the schedule
cyclic, when the consumer reads a value the group cannot provide at that point,
when it would raise the planned peak memory, or when the group already holds
MAX_CHAIN elementwise ops: a long chain becomes several kernels of equal length
(whose generated source is the same, so the kernel cache compiles it once)
rather than one expression whose compile time and memory grow with the chain.
The result is the same graph with `graph.groups` (in execution order) and
`graph.decisions` set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import networkx as nx

from ..graph import Graph
from ..ops.base import Fusion
from .memory import Kernel, plan_memory, value_bytes

# The most elementwise ops one group runs after its anchor (and again after batch statistics).
MAX_CHAIN = 32


@dataclass
class Group:
    """Nodes computed by one kernel.

    kind:   "single", "epilogue" (anchor + elementwise chain), "elementwise" (a loop),
            "batchnorm" (optional anchor + chain + batchnorm statistics + chain),
            or "horizontal" (sibling reductions, `pattern` names which).
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


def _is_elementwise(graph: Graph, name: str) -> bool:
    node = graph[name]
    if node.op.fusion not in (Fusion.ELEMENTWISE, Fusion.BROADCAST):
        return False
    return node.op.expression(node.attrs, node.type, *(graph[i].type for i in node.inputs)) is not None


def _hosts_epilogue(graph: Graph, name: str) -> bool:
    return graph[name].op.fusion == Fusion.OUT_ELEMWISE_FUSABLE


def is_view(graph: Graph, name: str) -> bool:
    """A reshape that keeps the physical element order: the output is the input's buffer."""
    from ..backend.layout import is_channels_last

    node = graph[name]
    if node.op.name not in ("flatten", "reshape"):
        return False

    def plain(t) -> bool:  # physical order equals logical order
        return not is_channels_last(t) or tuple(t.shape[2:]) == (1, 1)

    x = graph[node.inputs[0]].type
    return plain(x) and plain(node.type) and x.dtype == node.type.dtype


def _kept(graph: Graph) -> set[str]:
    return set(graph.outputs.values()) | set(graph.grads.values()) | set(graph.input_grads.values())


# -- sibling reductions --------------------------------------------------------

_GRAD_NAME = re.compile(r"(.*)\.grad\d+:\w+$")


def _forward_of(name: str) -> str:
    """The forward node a backward node differentiates (autodiff names it `<forward>.grad<k>:<op>`)."""
    m = _GRAD_NAME.match(name)
    return m.group(1) if m else name


def _horizontal(graph: Graph) -> list[Group]:
    groups = []
    by_dy: dict[str, list[str]] = {}
    for node in graph.nodes():
        if node.op.name == "bias_grad":
            by_dy.setdefault(node.inputs[0], []).append(node.name)
    taken: set[str] = set()
    for node in graph.nodes():
        name = node.name
        if node.op.name in ("batchnorm_grad_weight", "batchnorm_grad_input") and name not in taken:
            x, dy = node.inputs
            fwd = _forward_of(name)
            members = [
                m.name
                for m in graph.consumers(dy)
                if m.op.name in ("batchnorm_grad_weight", "batchnorm_grad_input")
                and m.inputs == [x, dy]
                and _forward_of(m.name) == fwd
            ]
            members += [b for b in by_dy.get(dy, []) if _forward_of(b) == fwd]
            if len(members) > 1:
                groups.append(Group(fwd + ".grad", "horizontal", members, pattern="batchnorm_grad"))
                taken.update(members)
        elif node.op.name == "dense_grad_weight":
            dy = node.inputs[1]
            fwd = _forward_of(name)
            bias = [b for b in by_dy.get(dy, []) if _forward_of(b) == fwd and b not in taken]
            if bias:
                groups.append(Group(fwd + ".grad_params", "horizontal", [name, bias[0]], pattern="dense_grad"))
                taken.update([name, bias[0]])
        elif node.op.name == "cross_entropy_grad":
            loss = [m.name for m in graph.consumers(node.inputs[0]) if m.op.name == "cross_entropy" and m.inputs == node.inputs[:2]]
            if loss and graph[node.inputs[2]].op.name == "fill":
                groups.append(Group(loss[0], "horizontal", [loss[0], name], pattern="cross_entropy"))
                taken.update([loss[0], name])
    return groups


# -- the pass ----------------------------------------------------------------------


class _Fuser:
    def __init__(self, graph: Graph, training: bool):
        self.graph = graph
        self.training = training
        self.names = [node.name for node in graph.nodes()]  # topological order
        self.order = {name: k for k, name in enumerate(self.names)}
        self.group_of: dict[str, Group] = {}
        self.groups: list[Group] = []
        self.decisions: list[Decision] = []
        self.kept = _kept(graph)

    def add(self, group: Group) -> Group:
        self.groups.append(group)
        for name in group.nodes:
            self.group_of[name] = group
        return group

    def join(self, group: Group, name: str, phase: str) -> None:
        group.nodes.append(name)
        (group.post if phase == "post" else group.pre).append(name)
        self.group_of[name] = group

    # -- legality --------------------------------------------------------------
    def _cyclic(self, group: Group, name: str) -> bool:
        """Whether an input of `name` from outside the group depends on the group.

        Searches upwards from those inputs, but only through nodes placed after the
        group's first member: a path from a member cannot pass anything earlier.
        """
        outside = [i for i in self.graph[name].inputs if self.group_of.get(i) is not group]
        if not outside:
            return False
        first = min(self.order[n] for n in group.nodes)
        seen = set(outside)
        stack = [i for i in outside if self.order[i] > first]
        while stack:
            current = stack.pop()
            if self.group_of.get(current) is group:
                return True
            for source in self.graph.nx.predecessors(current):
                if source not in seen and self.order[source] >= first:
                    seen.add(source)
                    stack.append(source)
        return False

    def _full(self, group: Group) -> bool:
        """Whether the part of the group a new member would join already holds MAX_CHAIN ops."""
        return len(group.post if group.tail is not None else group.pre) >= MAX_CHAIN

    def _phase(self, group: Group, name: str) -> str | None:
        """Where in the group `name` can run: after the anchor ("pre") or after the statistics ("post")."""
        inside = [i for i in self.graph[name].inputs if self.group_of.get(i) is group]
        if group.tail is None:
            return "pre"
        after_tail = {group.tail, *group.post}
        return "post" if all(i in after_tail for i in inside) else None

    def _window(self, group: Group, name: str) -> list[Group]:
        """The groups holding a node from the group's first member up to `name`, `group` included.

        A join only changes the schedule from the group's place on, so the peak is
        compared over that stretch: the cost of a check does not grow with the graph.
        """
        first = min(self.order[n] for n in group.nodes)
        found: dict[int, Group] = {}
        for member in self.names[first : self.order[name]]:
            owner = self.group_of.get(member)
            if owner is not None:
                found.setdefault(id(owner), owner)
        return list(found.values())

    def _peak(self, groups: list[Group]) -> int:
        """The planned peak of running `groups`; values they read but do not write are there at the start."""
        graph = self.graph
        ks = kernels(graph, schedule(graph, groups, self.order), self.kept)
        written = {n for k in ks for n in k.writes}
        present = [n for n in dict.fromkeys(r for k in ks for r in k.reads) if n not in written]
        sizes = {n: value_bytes(graph, n, 1, 4) for n in [*present, *written]}
        alias = views(graph, groups)
        returned = {alias.get(n, n) for n in (*graph.outputs.values(), *graph.input_grads.values())}
        return plan_memory(ks, sizes, present, returned & written).arena_bytes

    # -- rules -------------------------------------------------------------------
    def elementwise(self, name: str) -> None:
        graph = self.graph
        candidates = []
        for i in dict.fromkeys(graph[name].inputs):
            group = self.group_of.get(i)
            if group is None or group.kind in ("single", "horizontal") or group in candidates:
                continue
            candidates.append(group)
        # The group that runs last first: the others' values are then ready. Members join
        # in topological order, so a (non-horizontal) group's last member is its latest.
        candidates.sort(key=lambda g: -self.order[g.end])
        for group in candidates:
            rule = f"{graph[name].op.name} into the {group.kind} group {group.name}"
            if self._full(group):
                self.decisions.append(Decision(name, group.name, rule, False, f"the group already runs {MAX_CHAIN} elementwise ops"))
                continue
            if self._cyclic(group, name):
                self.decisions.append(Decision(name, group.name, rule, False, "another input depends on the group (cycle)"))
                continue
            phase = self._phase(group, name)
            if phase is None:
                self.decisions.append(Decision(name, group.name, rule, False, "reads a value from before the batch statistics"))
                continue
            if len(set(graph[name].inputs)) > 1:
                window = self._window(group, name)
                before = self._peak(window + [Group(name, "single", [name])])
                self.join(group, name, phase)
                after = self._peak(window)
                if after > before:
                    group.nodes.pop()
                    (group.post if phase == "post" else group.pre).pop()
                    self.group_of.pop(name)
                    self.decisions.append(
                        Decision(name, group.name, rule, False, f"would raise the planned peak by {after - before} bytes per example")
                    )
                    continue
            else:
                self.join(group, name, phase)
            self.decisions.append(Decision(name, group.name, rule, True))
            return
        self.add(Group(name, "elementwise", [name], pre=[name]))

    def batchnorm(self, name: str) -> None:
        x = self.graph[name].inputs[0]
        group = self.group_of.get(x)
        rule = f"batchnorm after the {group.kind} group {group.name}" if group else f"batchnorm of {x}"
        if group is not None and group.kind in ("epilogue", "elementwise") and group.tail is None and group.end == x:
            group.kind = "batchnorm"
            group.tail = name
            group.nodes.append(name)
            self.group_of[name] = group
            self.decisions.append(Decision(name, group.name, rule, True))
            return
        if group is not None:
            why = (
                "its input is not the group's result"
                if group.kind in ("epilogue", "elementwise")
                else "the producer cannot host an epilogue"
            )
            self.decisions.append(Decision(name, group.name, rule, False, why))
        self.add(Group(name, "batchnorm", [name], tail=name))

    def run(self) -> list[Group]:
        graph = self.graph
        for group in _horizontal(graph):
            self.add(group)
        for node in graph.nodes():
            name = node.name
            if name in self.group_of:
                continue
            if node.op.name in ("input", "fill"):
                continue
            if is_view(graph, name):
                self.add(Group(name, "view", [name]))
            elif node.op.name == "batchnorm" and self.training:
                self.batchnorm(name)
            elif _is_elementwise(graph, name):
                self.elementwise(name)
            elif _hosts_epilogue(graph, name):
                self.add(Group(name, "epilogue", [name], anchor=name))
            else:
                self.add(Group(name, "single", [name]))
        for group in self.groups:
            if group.kind == "epilogue" and not group.pre:
                group.kind = "single"  # an anchor with no epilogue beyond its own bias
            if group.kind == "elementwise" and len(group.nodes) == 1:
                group.kind = "single"
        return self._schedule(self.groups)

    def _schedule(self, groups: list[Group]) -> list[Group]:
        """Groups in an order where every group runs after its inputs' groups."""
        return schedule(self.graph, groups, self.order)


def schedule(graph: Graph, groups: list[Group], order: dict[str, int] | None = None) -> list[Group]:
    """`order`: every node's topological position, when the caller has it."""
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


def materialized(graph: Graph, group: Group, kept: set[str] | None = None) -> list[str]:
    """Members whose values are read outside the group (or by the caller); `kept`: `_kept(graph)`."""
    members = set(group.nodes)
    kept = _kept(graph) if kept is None else kept
    out = []
    for name in group.nodes:
        if name in kept or any(c.name not in members for c in graph.consumers(name)):
            out.append(name)
    if group.kind == "batchnorm":  # the normalizing pass reads the statistics' input again
        x = graph[group.tail].inputs[0]
        if x in members and x not in out:
            out.append(x)
    return out


def fuse(graph: Graph, training: bool) -> Graph:
    """Set `graph.groups` (execution order) and `graph.decisions`; returns the graph."""
    fuser = _Fuser(graph, training)
    groups = fuser.run()
    for group in groups:
        group.outputs = materialized(graph, group, fuser.kept)
    graph.groups = groups
    graph.decisions = fuser.decisions
    return graph


def singles(graph: Graph) -> Graph:
    """Every node its own kernel (the unfused schedule)."""
    graph.groups = single_groups(graph)
    graph.decisions = []
    return graph


def single_groups(graph: Graph) -> list[Group]:
    """The groups of the unfused schedule, leaving the graph as it is."""
    return [Group(n.name, "single", [n.name], outputs=[n.name]) for n in graph.nodes() if n.op.name not in ("input", "fill")]


def views(graph: Graph, groups: list[Group]) -> dict[str, str]:
    """View name -> the value whose buffer it is (following chains of views)."""
    alias = {g.name: graph[g.name].inputs[0] for g in groups if g.kind == "view"}
    out = {}
    for name, src in alias.items():
        while src in alias:
            src = alias[src]
        out[name] = src
    return out


def kernels(graph: Graph, groups: list[Group], kept: set[str] | None = None) -> list[Kernel]:
    """The planner's view of a schedule: what each kernel reads and writes (views read their source).

    `kept`: `_kept(graph)`, when the caller has it.
    """
    alias = views(graph, groups)
    kept = _kept(graph) if kept is None else kept
    out = []
    for group in groups:
        if group.kind == "view":
            continue
        members = set(group.nodes)
        outputs = group.outputs or materialized(graph, group, kept)
        reads = [alias.get(i, i) for name in group.nodes for i in graph[name].inputs if i not in members]
        if group.kind == "batchnorm":
            reads += [graph[group.tail].inputs[0]]
        in_place = None
        if group.kind in ("elementwise", "single") and _is_elementwise(graph, group.end):
            first = graph[group.nodes[0]].inputs
            if first and first[0] not in members and graph[first[0]].op.name not in ("input", "fill"):
                in_place = (group.end, first[0])
        elif group.kind == "batchnorm":  # the normalizing pass reads x[i], then writes o[i]
            in_place = (group.end, graph[group.tail].inputs[0])
        out.append(Kernel(group.name, reads, outputs, in_place))
    return out


def plan_groups(
    graph: Graph, groups: list[Group], batch: int, float_itemsize: int, exclude: set[str] = frozenset(), reuse: bool = True
):
    """The memory plan of a schedule (values in `exclude` live elsewhere, e.g. the gradient arena)."""
    ks = kernels(graph, groups)
    sizes = {}
    for k in ks:
        for name in k.writes:
            if name not in exclude:
                sizes[name] = value_bytes(graph, name, batch, float_itemsize)
    inputs = [n for n in graph.inputs.values()]
    for name in inputs:
        sizes[name] = value_bytes(graph, name, batch, float_itemsize)
    alias = views(graph, groups)
    keep = {alias.get(n, n) for n in set(graph.outputs.values()) | set(graph.input_grads.values())}
    return plan_memory(ks, sizes, inputs, keep, reuse)
