"""The typed graph: op applications as nodes of a networkx graph.

A `Graph` is what the front end produces and what every later stage consumes.
Each `Node` applies one registered op to the outputs of other nodes and carries
its inferred `TensorType`. Parameters and buffers are named the way the source
labels them (`layer1.0.conv1.weight`), in the order the source defines them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .errors import Loc


class _Batch:
    """The symbolic batch dimension: every input's first axis."""

    def __repr__(self) -> str:
        return "N"

    def __reduce__(self):  # keep the singleton across pickling
        return "BATCH"


BATCH = _Batch()

Dim = int | _Batch


@dataclass(frozen=True)
class TensorType:
    """Shape (batch first, possibly symbolic) and dtype of a value.

    `image`: whether a batched rank-4 value is an image [N, C, H, W], which backends store
    channels-last. An op whose rank-4 output is something else (a sampling grid [N, H, W, 2])
    says so in its shape rule with image=False, and the value keeps its logical layout.
    """

    shape: tuple[Dim, ...]
    dtype: str = "float32"
    image: bool = True

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def batched(self) -> bool:
        return bool(self.shape) and self.shape[0] is BATCH

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one example: the shape without the batch axis."""
        return tuple(self.shape[1:]) if self.batched else tuple(self.shape)

    @property
    def itemsize(self) -> int:
        return {"float32": 4, "float64": 8, "int64": 8, "int32": 4}[self.dtype]

    def sample_elements(self) -> int:
        return math.prod(self.sample_shape)

    def sample_bytes(self) -> int:
        return self.sample_elements() * self.itemsize

    def concrete(self, batch: int) -> tuple[int, ...]:
        """The shape with the batch axis set to `batch`."""
        return tuple(batch if d is BATCH else d for d in self.shape)

    def __str__(self) -> str:
        dims = ", ".join(str(d) for d in self.sample_shape)
        suffix = "" if self.dtype == "float32" else f" {self.dtype}"
        return f"[{dims}]{suffix}"


@dataclass(frozen=True)
class ParamSpec:
    """A named tensor a layer owns. Its kind says what it is:

    - "param": a parameter that trains (it gets a gradient and the optimizer updates it);
    - "frozen": a parameter that does not train (`frozen=true`): saved and loaded like any parameter;
    - "buffer": state the layer updates itself (batchnorm's running statistics);
    - "constant": a value the program fixes (normalize's mean): neither saved nor loaded.
    """

    name: str
    shape: tuple[int, ...]
    init: str  # an initializer name, see cnnc/initializers.py
    kind: str = "param"  # "param", "frozen", "buffer" or "constant"
    node: str = ""  # the node that owns it
    fan_in: int = 0  # for fan-in scaled initializers
    dtype: str = "float32"
    args: tuple[float, ...] = ()  # the initializer's arguments

    @property
    def trains(self) -> bool:
        return self.kind == "param"

    @property
    def saved(self) -> bool:
        """Whether it belongs to the state dict (saved, loaded, compared with PyTorch's)."""
        return self.kind != "constant"

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class Node:
    """One op application. `params` maps the op's local names to full names."""

    name: str
    op: Any  # cnnc.ops.base.Op
    attrs: dict[str, Any]
    inputs: list[str]
    type: TensorType
    params: dict[str, str] = field(default_factory=dict)
    loc: Loc | None = None
    forward: str | None = None  # for a node of the backward pass: the forward node it differentiates


def _reads_only_earlier(nodes: list[Node], order: dict[str, int]) -> bool:
    """Whether every node comes after the nodes it reads (the usual case: nodes are added so)."""
    return all(order[source] < k for k, node in enumerate(nodes) for source in node.inputs)


class Graph:
    """A network: nodes in a networkx MultiDiGraph, named inputs, outputs, parameters."""

    def __init__(self, name: str, hyperparameters: dict[str, Any] | None = None):
        self.name = name
        self.hyperparameters = dict(hyperparameters or {})
        self.nx = nx.MultiDiGraph()
        self.inputs: dict[str, str] = {}  # input name -> node name
        self.outputs: dict[str, str] = {}  # output name -> node name
        self.params: dict[str, ParamSpec] = {}  # in definition order
        # Set by autodiff: the node computing each parameter's / input's gradient.
        self.grads: dict[str, str] = {}
        self.input_grads: dict[str, str] = {}

    # -- building -----------------------------------------------------------
    def add(self, node: Node, specs: dict[str, ParamSpec] | None = None) -> Node:
        if node.name in self.nx:
            raise ValueError(f"duplicate node {node.name!r}")
        self.nx.add_node(node.name, node=node)
        for index, src in enumerate(node.inputs):
            self.nx.add_edge(src, node.name, key=index, index=index)
        for spec in (specs or {}).values():
            self.params[spec.name] = spec
        return node

    # -- reading ------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def __getitem__(self, name: str) -> Node:
        return self.nx.nodes[name]["node"]

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def nodes(self) -> list[Node]:
        """Nodes in a topological order that keeps definition order where free."""
        in_definition_order = [data["node"] for data in self.nx.nodes.values()]
        order = {node.name: i for i, node in enumerate(in_definition_order)}
        if _reads_only_earlier(in_definition_order, order):  # what the sort below returns, in linear time
            return in_definition_order
        names = nx.lexicographical_topological_sort(self.nx, key=order.__getitem__)
        return [self[n] for n in names]

    def consumers(self, name: str) -> list[Node]:
        return [self[n] for n in self.nx.successors(name)]

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Ordered mapping of every parameter and buffer name to its shape (the state dict's, without constants)."""
        return {name: spec.shape for name, spec in self.params.items() if spec.saved}

    def parameter_count(self) -> int:
        """Parameters, trained or frozen (as PyTorch counts a module's parameters)."""
        return sum(s.size for s in self.params.values() if s.kind in ("param", "frozen"))

    @property
    def saved_params(self) -> dict[str, ParamSpec]:
        """The specs of the state dict: every parameter and buffer, not the program's constants."""
        return {name: spec for name, spec in self.params.items() if spec.saved}

    def input_types(self) -> dict[str, TensorType]:
        return {name: self[node].type for name, node in self.inputs.items()}

    def output_types(self) -> dict[str, TensorType]:
        return {name: self[node].type for name, node in self.outputs.items()}

    def copy(self) -> Graph:
        g = Graph(self.name, self.hyperparameters)
        nodes = [
            Node(node.name, node.op, type(node.attrs)(node.attrs), list(node.inputs), node.type, dict(node.params), node.loc,
                 node.forward)
            for node in self.nodes()
        ]
        # In bulk: the names are known to be distinct, and networkx adds a batch faster.
        g.nx.add_nodes_from((node.name, {"node": node}) for node in nodes)
        g.nx.add_edges_from((src, node.name, k, {"index": k}) for node in nodes for k, src in enumerate(node.inputs))
        g.params = dict(self.params)
        g.inputs = dict(self.inputs)
        g.outputs = dict(self.outputs)
        g.grads = dict(self.grads)
        g.input_grads = dict(self.input_grads)
        return g

    def summary(self) -> str:
        from .report import summary_text

        return summary_text(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self)} nodes, {self.parameter_count():,} parameters>"
