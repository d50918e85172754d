"""The middle of the compiler: from a (differentiated) graph to a schedule.

    specialize the mode -> simplify, fold, CSE, DCE -> fuse (groups, in order)

The result is a Schedule (cnnc.passes.schedule); its memory plan is made per
batch size (Schedule.plan).
"""

from __future__ import annotations

from dataclasses import replace

from ..graph import Graph
from .fuse import fuse as fuse_groups
from .rewrite import replace_node
from .schedule import Schedule, unfused
from .simplify import simplify_in_place


def specialize(graph: Graph, training: bool) -> Graph:
    """A copy for one mode: ops whose form depends on it (batchnorm) take their form for the mode."""
    g = graph.copy()
    for node in g.nodes():
        op = node.op.specialized(training)
        if op is not node.op:
            replace_node(g, node.name, replace(node, op=op, inputs=list(node.inputs), params=dict(node.params)))
    return g


def optimize(graph: Graph, training: bool, fuse: bool = True) -> Schedule:
    """The schedule of a graph in one mode; `fuse=False` keeps every node as its own kernel (and the graph as it is)."""
    if not fuse:
        return unfused(graph.copy())
    g = specialize(graph, training)
    simplify_in_place(g, training)  # `g` is already a copy of its own
    return fuse_groups(g, training)
