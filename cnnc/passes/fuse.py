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
The result is a Schedule (cnnc.passes.schedule): the graph, its groups in
execution order and the decisions.
"""

from __future__ import annotations

from ..graph import Graph
from ..ops.base import Fusion
from .memory import kernels, plan_memory, value_bytes
from .schedule import Decision, Group, Schedule, in_order, is_elementwise, is_view, kept, materialized, views

# The most elementwise ops one group runs after its anchor (and again after batch statistics).
MAX_CHAIN = 32


def _hosts_epilogue(graph: Graph, name: str) -> bool:
    return graph[name].op.fusion == Fusion.OUT_ELEMWISE_FUSABLE


# -- sibling reductions --------------------------------------------------------

def _horizontal(graph: Graph) -> list[Group]:
    """Sibling reductions over the same operands, one kernel each, as their ops declare them
    (batchnorm's three gradients; dense's weight and bias gradients; cross-entropy with its gradient)."""
    groups: list[Group] = []
    taken: set[str] = set()
    for node in graph.nodes():
        if node.name in taken:
            continue
        found = node.op.siblings(graph, node, taken)
        if found is not None:
            pattern, name, members = found
            groups.append(Group(name, "horizontal", members, pattern=pattern))
            taken.update(members)
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
        self.kept = kept(graph)

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
        ks = kernels(Schedule(graph, in_order(graph, groups, self.order)), self.kept)
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
            if not node.op.computed:
                continue
            if is_view(graph, name):
                self.add(Group(name, "view", [name]))
            elif node.op.batch_statistics and self.training:
                self.batchnorm(name)
            elif is_elementwise(graph, name):
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
        return in_order(graph, self.groups, self.order)


def fuse(graph: Graph, training: bool) -> Schedule:
    """The schedule of `graph`: its fused groups in execution order, and the decisions taken."""
    fuser = _Fuser(graph, training)
    groups = fuser.run()
    for group in groups:
        group.outputs = materialized(graph, group, fuser.kept)
    return Schedule(graph, groups, fuser.decisions)


