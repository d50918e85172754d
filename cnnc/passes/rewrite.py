"""Rewiring a graph in place: the edits every rewriting pass is built from.

A graph keeps each node's inputs twice, in `node.inputs` and as networkx edges
(key and attribute `index` = the input's position), and names nodes in its
output, gradient and input maps. These functions keep all of them in step.
"""

from __future__ import annotations

import networkx as nx

from ..graph import Graph, Node


def replace_uses(graph: Graph, old: str, new: str) -> None:
    """Make every use of node `old` a use of node `new`: consumers' inputs and the graph's maps.

    `new` itself is left alone when it consumes `old`, so that a node computed
    from `old` can take its place (no cycle is made).
    """
    if old == new:
        return
    if new not in graph:
        raise KeyError(f"no node {new!r}")
    for consumer in list(graph.nx.successors(old)):
        if consumer == new:
            continue
        node = graph[consumer]
        for index, name in enumerate(node.inputs):
            if name == old:
                node.inputs[index] = new
                graph.nx.remove_edge(old, consumer, key=index)
                graph.nx.add_edge(new, consumer, key=index, index=index)
    for mapping in (graph.outputs, graph.grads, graph.input_grads):
        for key, value in mapping.items():
            if value == old:
                mapping[key] = new


def uses(graph: Graph, name: str) -> int:
    """How many times the node's value is read: by consumers' inputs and by the graph's maps."""
    readers = graph.nx.out_degree(name)
    named = sum(value == name for mapping in (graph.outputs, graph.grads, graph.input_grads) for value in mapping.values())
    return readers + named


def upstream(graph: Graph, roots) -> set[str]:
    """The roots and every node they depend on: one walk, however many roots."""
    found = set(roots)
    stack = list(found)
    while stack:
        for source in graph.nx.predecessors(stack.pop()):
            if source not in found:
                found.add(source)
                stack.append(source)
    return found


def remove_node(graph: Graph, name: str) -> None:
    """Remove a node nothing uses any more (an input node also leaves `graph.inputs`)."""
    if graph.nx.out_degree(name):
        consumers = ", ".join(sorted(graph.nx.successors(name)))
        raise ValueError(f"cannot remove {name!r}: {consumers} still use it")
    for mapping in (graph.outputs, graph.grads, graph.input_grads):
        if name in mapping.values():
            raise ValueError(f"cannot remove {name!r}: the graph returns it")
    graph.nx.remove_node(name)
    for key in [key for key, value in graph.inputs.items() if value == name]:
        del graph.inputs[key]


def replace_node(graph: Graph, name: str, new_node: Node) -> None:
    """Put `new_node` (same name; any op, attributes and inputs) where node `name` was.

    Its uses stay as they are, and it keeps its place in the graph's order.
    """
    if new_node.name != name:
        raise ValueError(f"the replacement of {name!r} is named {new_node.name!r}")
    for source in new_node.inputs:
        if source not in graph or source == name or not _upstream_of(graph, source, name):
            raise ValueError(f"{name!r} cannot read {source!r}")
    for source, _, key in list(graph.nx.in_edges(name, keys=True)):
        graph.nx.remove_edge(source, name, key=key)
    graph.nx.nodes[name]["node"] = new_node
    for index, source in enumerate(new_node.inputs):
        graph.nx.add_edge(source, name, key=index, index=index)


def _upstream_of(graph: Graph, source: str, name: str) -> bool:
    """Whether `name` may read `source` without making a cycle.

    The node's inputs and their inputs are known to come before it (the usual
    rewrites: the same inputs, or a bypassed input's own input); anything else
    is searched for a path from the node.
    """
    inputs = graph[name].inputs
    if source in inputs or any(source in graph[i].inputs for i in inputs):
        return True
    return not nx.has_path(graph.nx, name, source)
