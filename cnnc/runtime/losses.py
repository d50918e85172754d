"""Attaching a loss to a network's output for training: a target input and a loss node."""

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


def with_loss(graph: Graph, loss: str, output: str | None = None) -> tuple[Graph, str, str]:
    """A copy of the graph with a `target` input and a loss node on `output`.

    `output` defaults to the output called `logits`, else the first one.
    Returns (graph, target input name, loss node name).
    """
    if output is None:
        output = "logits" if "logits" in graph.outputs else next(iter(graph.outputs))
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
