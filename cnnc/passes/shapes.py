"""Shape inference over a whole graph, with a symbolic batch dimension.

The front end infers each node's type as it builds it (so that `x.channels`
can be read); this pass re-derives every type from the inputs alone, after a
transformation or to check a graph assembled by hand.
"""

from __future__ import annotations

from ..errors import CnncError
from ..graph import Graph, TensorType
from ..ops import ShapeError


def infer_shapes(graph: Graph) -> Graph:
    """Recompute every node's type in topological order (in place); returns the graph."""
    for node in graph.nodes():
        types = [graph[i].type for i in node.inputs]
        try:
            node.type = node.op.infer(node.attrs, *types)
        except ShapeError as e:
            where = "" if node.name == node.op.name else f" (in {node.name})"
            raise CnncError(f"{e}{where}", node.loc) from None
    return graph


def with_input_types(graph: Graph, types: dict[str, TensorType]) -> Graph:
    """A copy of the graph whose named inputs have new types, every shape re-inferred."""
    g = graph.copy()
    for name, t in types.items():
        if name not in g.inputs:
            raise CnncError(f"the network has no input '{name}'")
        node = g[g.inputs[name]]
        node.attrs = type(node.attrs)(node.attrs, type=t)
    return infer_shapes(g)
