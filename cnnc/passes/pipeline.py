"""The middle of the compiler: from a (differentiated) graph to a scheduled one.

    specialize the mode -> simplify, fold, CSE, DCE -> fuse (groups, in order)

The memory plan is made per batch size by the backend (cnnc.passes.fuse.plan_groups).
"""

from __future__ import annotations

from ..graph import Graph, Node
from ..ops import REGISTRY
from .fuse import fuse as fuse_groups
from .fuse import singles
from .simplify import simplify_in_place


def specialize(graph: Graph, training: bool) -> Graph:
    """A copy for one mode: in eval mode batchnorm becomes its elementwise inference form."""
    g = graph.copy()
    if training:
        return g
    from .rewrite import replace_node

    for node in g.nodes():
        if node.op.name == "batchnorm":
            op = REGISTRY["batchnorm_inference"]
            replace_node(g, node.name, Node(node.name, op, node.attrs, list(node.inputs), node.type, dict(node.params), node.loc))
    return g


def optimize(graph: Graph, training: bool, fuse: bool = True) -> Graph:
    """The scheduled graph for one mode; `fuse=False` keeps every node as its own kernel."""
    if not fuse:
        return singles(graph.copy())
    g = specialize(graph, training)
    simplify_in_place(g, training)  # `g` is already a copy of its own
    return fuse_groups(g, training)
