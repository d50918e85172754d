"""Reverse-mode differentiation as a graph transformation.

`differentiate` walks the graph backwards from a scalar loss and asks each op's
`grad` rule (beside its definition in cnnc/ops) to add the nodes that compute
its inputs' and parameters' gradients. Those nodes are ordinary registered ops,
so the backward graph is optimized and lowered by the same machinery as the
forward one. Gradients reaching one value along several paths are summed with
`add` nodes.
"""

from __future__ import annotations

from typing import Any

from ..errors import CnncError
from ..graph import Graph, Node
from ..ops import REGISTRY
from ..ops.base import Attrs


class GradContext:
    """What a grad rule may do while it differentiates one node."""

    def __init__(self, builder: _Backward, node: Node):
        self._b = builder
        self.node = node

    @property
    def graph(self) -> Graph:
        return self._b.graph

    def type_of(self, name: str):
        return self._b.graph[name].type

    def needs_input_grad(self, index: int) -> bool:
        return self.node.inputs[index] in self._b.requires

    def needs_param_grad(self, local: str) -> bool:
        return self.node.params.get(local) in self._b.params

    def apply(self, op: str, inputs: list[str], params: dict[str, str] | None = None, **attrs: Any) -> str:
        """Add a backward node applying `op`; returns its name."""
        return self._b.add(self.node, op, inputs, attrs, params or {})

    def input_grad(self, index: int, value: str) -> None:
        if self.needs_input_grad(index):
            self._b.contribute(self.node.inputs[index], value)

    def param_grad(self, local: str, value: str) -> None:
        if self.needs_param_grad(local):
            self._b.param_grads[self.node.params[local]] = value

    def sum_to(self, value: str, like: str) -> str:
        """`value` reduced over broadcast axes to the shape of `like` (identity when equal)."""
        if self.type_of(value).shape == self.type_of(like).shape:
            return value
        return self.apply("sum_to", [value], shape=self.type_of(like).shape)


class _Backward:
    def __init__(self, graph: Graph, wrt_inputs: tuple[str, ...], params: set[str]):
        self.graph = graph
        self.params = params
        self.requires: set[str] = set()
        self.pending: dict[str, list[str]] = {}
        self.param_grads: dict[str, str] = {}
        self.counter = 0
        input_nodes = {graph.inputs[name] for name in wrt_inputs}
        for node in graph.nodes():
            owns_param = any(p in params for p in node.params.values())
            if node.name in input_nodes or owns_param or any(i in self.requires for i in node.inputs):
                self.requires.add(node.name)

    def add(self, forward: Node, op_name: str, inputs: list[str], attrs: dict, params: dict[str, str]) -> str:
        op = REGISTRY[op_name]
        self.counter += 1
        name = f"{forward.name}.grad{self.counter}:{op_name}"
        bound = Attrs({**{a.name: a.default for a in op.attrs if not a.required}, **attrs})
        out = op.infer(bound, *(self.graph[i].type for i in inputs))
        self.graph.add(Node(name, op, bound, list(inputs), out, dict(params), forward.loc, forward.name))
        return name

    def contribute(self, target: str, value: str) -> None:
        self.pending.setdefault(target, []).append(value)

    def total(self, target: str) -> str | None:
        """The summed gradient of a value (one `add` node for several contributions)."""
        parts = self.pending.get(target)
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        node = self.graph[target]
        summed = self.add(node, "add", parts, {}, {})
        self.pending[target] = [summed]
        return summed


def differentiate(
    graph: Graph, loss: str | None, wrt_inputs: tuple[str, ...] = (), params: tuple[str, ...] | None = None,
    seeds: dict[str, str] | None = None,
) -> Graph:
    """A copy of `graph` that also computes d(loss)/d(every parameter) and, on request, inputs.

    `loss` is the name of a node with a scalar output. Or, with `loss=None`, `seeds` maps nodes to the
    nodes holding given gradients of them (a vector-Jacobian product: what reaches the parameters and
    inputs when those values' gradients are the seeds). `params` limits the parameters differentiated
    (default: every one that trains). The result's `grads` maps parameter names, and `input_grads` input
    names, to gradient nodes.
    """
    g = graph.copy()
    if loss is not None and g[loss].type.shape != ():
        raise CnncError(f"the loss {loss} must be a scalar, got {g[loss].type}")
    chosen = {name for name, spec in g.params.items() if spec.trains and (params is None or name in params)}
    backward = _Backward(g, wrt_inputs, chosen)
    forward_nodes = g.nodes()
    position = {node.name: i for i, node in enumerate(forward_nodes)}
    if loss is not None:
        backward.contribute(loss, backward.add(g[loss], "fill", [], {"value": 1.0, "shape": ()}, {}))  # d(loss)/d(loss)
    for node, seed in (seeds or {}).items():
        backward.contribute(node, seed)
    last = max(position[name] for name in ([loss] if loss is not None else list(seeds or {})))
    for node in reversed(forward_nodes[: last + 1]):
        if node.name not in backward.requires or not node.op.computed:
            continue
        dy = backward.total(node.name)
        if dy is None:
            continue
        node.op.grad(GradContext(backward, node), dy)
    g.grads = {name: value for name, value in backward.param_grads.items()}
    # Parameters the loss does not depend on get no gradient node; list them in order.
    g.grads = {name: g.grads[name] for name in g.params if name in g.grads}
    for name in wrt_inputs:
        total = backward.total(g.inputs[name])
        if total is None:
            what = "the loss does" if loss is not None else "the seeded outputs do"
            raise CnncError(f"{what} not depend on input '{name}'")
        g.input_grads[name] = total
    _prune(g, forward_nodes)
    return g


def _prune(g: Graph, forward_nodes: list[Node]) -> None:
    """Drop backward nodes whose results reach no gradient (a rule may build one eagerly)."""
    from .rewrite import upstream

    keep = upstream(g, {*g.grads.values(), *g.input_grads.values()})
    forward = {node.name for node in forward_nodes}
    g.nx.remove_nodes_from([name for name in list(g.nx.nodes) if name not in keep and name not in forward])
