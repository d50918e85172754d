"""What a run differentiates: a loss attached to an output (a target input and a loss node), the
network's own scalar loss, or given gradients of chosen outputs (seeds); and the part of a network
that chosen outputs need."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CnncError
from ..graph import BATCH, Graph, Node, TensorType
from ..ops import REGISTRY
from ..ops.base import Attrs


@dataclass(frozen=True)
class Loss:
    name: str
    integer_target: bool  # class labels (cross_entropy) or a tensor like the output

    def target_type(self, output: TensorType) -> TensorType:
        if self.integer_target:
            return TensorType((BATCH, *output.shape[2:]), "int64")
        return output


LOSSES = {
    "cross_entropy": Loss("cross_entropy", True),
    "mse": Loss("mse", False),
    "bce_with_logits": Loss("bce_with_logits", False),
}


def default_output(outputs) -> str:
    """The output a loss, an accuracy or a prediction reads unless told: `logits`, else the first one."""
    return "logits" if "logits" in outputs else next(iter(outputs))


def with_loss(graph: Graph, loss: str, output: str | None = None) -> tuple[Graph, str, str]:
    """A copy of the graph with a `target` input and a loss node on `output` (default: `default_output`).

    Returns (graph, target input name, loss node name).
    """
    if output is None:
        output = default_output(graph.outputs)
    if output not in graph.outputs:
        raise CnncError(f"the network has no output '{output}'; its outputs are {', '.join(graph.outputs)}")
    g = graph.copy()
    out_node = g[g.outputs[output]]
    target = "target"
    while target in g:
        target = "_" + target
    spec = LOSSES[loss]
    t = spec.target_type(out_node.type)
    input_op = REGISTRY["input"]
    g.add(Node(target, input_op, Attrs(type=t), [], t))
    g.inputs[target] = target
    op = REGISTRY[loss]
    name = f"{loss}_loss"
    try:
        out_type = op.infer(Attrs(op.bind([], {})), out_node.type, t)
    except Exception as e:
        raise CnncError(f"cannot apply {loss} to output '{output}' {out_node.type}: {e}") from None
    g.add(Node(name, op, op.bind([], {}), [out_node.name, target], out_type))
    g.outputs = {**g.outputs, "loss": name}
    return g, target, name


def training_graph(
    graph: Graph, loss: str | None, output: str | None = None, wrt: tuple[str, ...] = (), params: tuple[str, ...] | None = None,
) -> tuple[Graph, str | None, str]:
    """The differentiated graph of a training step: (graph, target input name or None, loss node).

    `loss` applied to `output` against a new `target` input; with `loss=None` the network's own
    scalar output `output` is the loss. Only what the loss needs is computed, and every batchnorm
    (whose statistics move). `wrt`: inputs whose gradients are wanted too; `params`: the
    parameters differentiated (None: every one that trains).
    """
    from ..passes.autodiff import differentiate

    if loss is None:
        node = graph.outputs[output]
        return differentiate(select_outputs(graph, (output,), statistics=True), node, wrt, params), None, node
    g, target, node = with_loss(graph, loss, output)
    return differentiate(select_outputs(g, ("loss",), statistics=True), node, wrt, params), target, node


def seeded_graph(
    graph: Graph, outputs: tuple[str, ...], wrt: tuple[str, ...] = (), params: tuple[str, ...] | None = None,
) -> tuple[Graph, dict[str, str]]:
    """The graph of a seeded backward: an input per output in `outputs` holding its given gradient,
    differentiated from those. Returns (graph, {output name: its seed input's name}). As in a training
    step, the forward computes what the seeded outputs need, and a batchnorm on another output's path
    still updates its statistics, as PyTorch's forward of the whole network would."""
    from ..passes.autodiff import differentiate

    g = select_outputs(graph, outputs, statistics=True)
    seeds = {}
    for output in outputs:
        node = g[g.outputs[output]]
        name = f"{output}_grad"
        while name in g:
            name = "_" + name
        g.add(Node(name, REGISTRY["input"], Attrs(type=node.type), [], node.type))
        g.inputs[name] = name
        seeds[output] = name
    d = differentiate(g, None, wrt, params, seeds={g.outputs[o]: seeds[o] for o in outputs})
    return d, seeds


def select_outputs(graph: Graph, outputs: tuple[str, ...], statistics: bool = False) -> Graph:
    """A copy of the graph computing only `outputs`: the layers and inputs they do not need are gone
    (parameters stay declared, so the model's arenas keep their layout). `statistics`: batchnorms
    stay wherever they are, with what they read, so that a training step moves every statistic as
    the whole network's forward would; a forward asked for some outputs moves only theirs."""
    from ..passes.rewrite import upstream
    from ..passes.simplify import updates_buffers

    g = graph.copy()
    g.outputs = {name: graph.outputs[name] for name in outputs}
    roots = set(g.outputs.values())
    if statistics:
        roots |= {node.name for node in g.nodes() if updates_buffers(g, node)}
    keep = upstream(g, roots)
    g.nx.remove_nodes_from([name for name in list(g.nx.nodes) if name not in keep])
    g.inputs = {name: node for name, node in graph.inputs.items() if node in keep}
    return g


def default_step(graph: Graph) -> tuple[str | None, str | None]:
    """(loss, output) of a training step when nobody says: the network's own loss (its one scalar
    output), else cross-entropy on the default output."""
    scalars = [name for name, t in graph.output_types().items() if t.rank == 0]
    return (None, scalars[0]) if len(scalars) == 1 else ("cross_entropy", None)
