"""Simplifying passes: algebraic identities, constant folding, common subexpressions, dead code.

Each pass takes a Graph and returns a new one (the argument is left as it
was), keeps every node's name where the node survives, and keeps
`graph.params` as it is, so a model's parameter arena has the same layout
before and after. `run_simplify_passes` applies them all until nothing changes,
to one copy: each pass has an in-place form (`_dead_code`, ...) that says
whether it changed anything, and every one of them is linear in the graph.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ..graph import Graph, Node
from ..ops import REGISTRY, Attrs, ShapeError
from .rewrite import remove_node, replace_node, replace_uses, upstream, uses

# -- dead code ----------------------------------------------------------------


def eliminate_dead_code(graph: Graph) -> Graph:
    """Drop every node whose value reaches no output, gradient or input gradient.

    Input nodes stay (callers feed them by name), and so do nodes that update
    buffers (batchnorm's running statistics): running them is observable even
    when their value is not.
    """
    g = graph.copy()
    _dead_code(g)
    return g


def _dead_code(g: Graph) -> bool:
    roots = {*g.outputs.values(), *g.grads.values(), *g.input_grads.values()}
    roots |= {node.name for node in g.nodes() if updates_buffers(g, node)}
    live = upstream(g, roots)
    # A dead node's consumers are dead too, so they can all go at once.
    dead = [node.name for node in g.nodes() if node.name not in live and not node.op.placeholder]
    g.nx.remove_nodes_from(dead)
    return bool(dead)


def updates_buffers(graph: Graph, node: Node) -> bool:
    return any(spec is not None and spec.kind == "buffer" for spec in map(graph.params.get, node.params.values()))


# -- constants ----------------------------------------------------------------


def fold_constants(graph: Graph) -> Graph:
    """Compute elementwise ops of constants (`fill` nodes) now, and drop identity constants.

    A folded node becomes a `fill` of the same name and type; the fills it
    read are left for `eliminate_dead_code`. `add(x, 0)` and `mul(x, 1)`
    become `x` when that does not change the type.
    """
    g = graph.copy()
    _fold(g)
    return g


def _fold(g: Graph) -> bool:
    changed = False
    for name in [node.name for node in g.nodes()]:
        if name not in g:
            continue
        node = g[name]
        value = _constant_value(g, node)
        if value is not None:
            attrs = Attrs(value=value, shape=tuple(node.type.shape))
            replace_node(g, name, Node(name, REGISTRY["fill"], attrs, [], node.type, {}, node.loc, node.forward))
            changed = True
        elif _drop_identity_constants(g, node):
            changed = True
    return changed


def _constant_value(graph: Graph, node: Node) -> float | None:
    """The value of an elementwise node whose inputs are all constants, or None."""
    if not node.inputs or node.type.dtype != "float32":
        return None
    sources = [graph[name] for name in node.inputs]
    if not all(source.op.constant for source in sources):
        return None
    values = [float(source.attrs["value"]) for source in sources]
    try:
        value = node.op.fold(node.attrs, values)
    except (ArithmeticError, ValueError):  # e.g. math.exp overflowing: leave it to the run time
        return None
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _drop_identity_constants(graph: Graph, node: Node) -> bool:
    """Remove the `add` inputs that are fills of 0 and the `mul` inputs that are fills of 1."""
    unit = node.op.identity  # mul by 0 is not folded: 0 * NaN is NaN
    if unit is None:
        return False
    kept = [name for name in node.inputs if not _is_fill_of(graph[name], unit)]
    if not kept or len(kept) == len(node.inputs):
        return False
    if len(kept) == 1:
        if graph[kept[0]].type != node.type:  # the constant broadcast the value to a larger shape
            return False
        _bypass(graph, node, kept[0])
        return True
    try:
        if node.op.infer(node.attrs, *(graph[name].type for name in kept)) != node.type:
            return False
    except ShapeError:
        return False
    replace_node(graph, node.name, replace(node, inputs=kept, params=dict(node.params)))
    return True


def _is_fill_of(node: Node, value: float) -> bool:
    return node.op.constant and float(node.attrs["value"]) == value


# -- common subexpressions ----------------------------------------------------


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    """Merge nodes that apply the same op with the same attributes, inputs and parameters.

    The first in topological order stays and takes over the others' uses
    (outputs included). Inputs, random ops, nodes that update buffers and
    gradients are never merged: two of them are two different values, two
    different effects, or two different destinations.
    """
    g = graph.copy()
    _merge_common(g)
    return g


def _merge_common(g: Graph) -> bool:
    changed = False
    first: dict[tuple, str] = {}
    # A gradient is written straight into its parameter's slot of the gradient arena, so two
    # parameters' gradients stay two nodes even when they compute the same value.
    gradients = set(g.grads.values()) | set(g.input_grads.values())
    for node in g.nodes():  # consumers' input lists are updated in place as duplicates go
        if node.op.placeholder or node.op.random or updates_buffers(g, node) or node.name in gradients:
            continue
        key = (node.op.name, _frozen(node.attrs), tuple(node.inputs), _frozen(node.params), node.type)
        kept = first.setdefault(key, node.name)
        if kept != node.name:
            changed = _bypass(g, node, kept)
    return changed


def _frozen(value: Any) -> Any:
    """A hashable form of an attribute value that tells 1, 1.0 and True apart."""
    if isinstance(value, dict):
        return tuple(sorted((key, _frozen(v)) for key, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_frozen(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return (type(value).__name__, value)


# -- algebraic simplification ---------------------------------------------------


def simplify(graph: Graph, training: bool) -> Graph:
    """Remove identity reshapes, merge chained reshapes, and drop ops that compute their input.

    - `flatten`/`reshape` to the type it reads: removed;
    - `flatten`/`reshape` of a `flatten`/`reshape` nothing else uses: one `reshape`;
    - `dropout` (and its gradient) when `training` is false or p is 0: removed;
    - `add`/`mul` of one value, and `sum_to` to the type it reads: removed.
    Repeats until nothing changes.
    """
    g = graph.copy()
    _simplify_all(g, training)
    return g


def _simplify_all(g: Graph, training: bool) -> bool:
    """Rewrites every node until none changes; a rewrite looks at one node and its input."""
    changed_any = False
    changed = True
    while changed:
        changed = False
        for name in [node.name for node in g.nodes()]:
            if name in g and _simplify_node(g, g[name], training):
                changed = changed_any = True
    return changed_any


def _simplify_node(graph: Graph, node: Node, training: bool) -> bool:
    source = graph[node.inputs[0]] if node.inputs else None
    if source is not None and node.op.passes_input(node.attrs, training, node.type, *(graph[i].type for i in node.inputs)):
        return _bypass(graph, node, source.name)
    if node.op.logical_view:
        if source.op.logical_view and uses(graph, source.name) == 1:
            reshape = REGISTRY["reshape"]
            attrs = reshape.bind([], {"shape": list(node.type.sample_shape)})
            replace_node(graph, node.name, replace(node, op=reshape, attrs=attrs, inputs=[source.inputs[0]], params={}))
            remove_node(graph, source.name)
            return True
    return False


def _bypass(graph: Graph, node: Node, replacement: str) -> bool:
    """Let `replacement` stand for the node everywhere, then drop the node."""
    replace_uses(graph, node.name, replacement)
    remove_node(graph, node.name)
    return True


# -- all together -------------------------------------------------------------

MAX_ROUNDS = 10


def run_simplify_passes(graph: Graph, training: bool) -> Graph:
    """simplify, fold_constants, eliminate_common_subexpressions, eliminate_dead_code: until no change."""
    g = graph.copy()
    simplify_in_place(g, training)
    return g


def simplify_in_place(g: Graph, training: bool) -> None:
    """`run_simplify_passes` on the graph itself (for a caller that already holds a copy)."""
    for _ in range(MAX_ROUNDS):
        # Every pass runs in each round (no short circuit): one's rewrite can enable another's.
        changes = [_simplify_all(g, training), _fold(g), _merge_common(g), _dead_code(g)]
        if not any(changes):
            break
