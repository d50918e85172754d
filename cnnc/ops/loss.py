"""Losses: each reduces a prediction and a target to a scalar (the batch mean)."""

from __future__ import annotations

from ..kernels import OUT, In, Kernel, Value
from .base import Attr, Fusion, IndexRange, Op, ShapeError, TensorType, expect_float, integer, optional, register

SCALAR = TensorType((), "float32")
NO_LABEL = -(2**62)  # stands for "no ignored label" in kernels

# The kernels: cnnc/kernels/cpu/loss.py and cnnc/kernels/cuda/loss.py, which define the same
# entries; the pointwise losses' numerics, written once for both, in cnnc/kernels/shared/loss.py.


@register
class CrossEntropy(Op):
    """Softmax cross-entropy of logits [C] or [C, H, W] against integer labels [] or [H, W].

    The mean over every labelled element; elements whose label equals `ignore` do not count.
    """

    name = "cross_entropy"
    inputs = 2
    fusion = Fusion.REDUCTION
    attrs = (Attr("ignore", optional(integer), None),)

    def siblings(self, graph, node, taken):
        # The loss and its gradient (seeded with a constant, as a training step's is) in one pass.
        grads = [m.name for m in graph.consumers(node.inputs[0]) if m.op.name == "cross_entropy_grad"
                 and m.inputs[:2] == node.inputs and graph[m.inputs[2]].op.constant and m.name not in taken]
        return ("cross_entropy", node.name, [node.name, grads[0]]) if grads else None

    def siblings_kernel(self, graph, members, target):
        loss, grad = (graph[m] for m in members)
        return cross_entropy_with_grad_kernel(loss, grad, target)

    def infer(self, a, logits, labels):
        expect_float(self.name, logits)
        if logits.rank < 2 or not logits.batched:
            raise ShapeError(f"cross_entropy expects logits [classes, ...], got {logits}")
        expected = (logits.shape[0], *logits.shape[2:])
        if labels.shape != expected:
            want = TensorType(expected, "int64")
            raise ShapeError(f"cross_entropy: labels {labels} do not match logits {logits}: expected labels {want}")
        if labels.dtype not in ("int64", "int32"):
            raise ShapeError(f"cross_entropy expects integer labels, got {labels.dtype}")
        return SCALAR

    def flops(self, a, out, logits, labels):
        return 4 * logits.sample_elements()

    def index_inputs(self, a, logits, labels, *rest):
        return {1: _label_range(a, logits)}

    def cpu(self, a, out, logits, labels):
        return Kernel("loss", "cross_entropy", (In(0), In(1), OUT, _ignore(a)))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/loss.py

    def grad(self, g, dy):
        g.input_grad(0, g.apply("cross_entropy_grad", [g.node.inputs[0], g.node.inputs[1], dy], ignore=g.node.attrs["ignore"]))


def cross_entropy_with_grad_kernel(loss, grad, target: str = "cpu") -> Kernel:
    """cross_entropy and cross_entropy_grad (nodes) of the same logits and labels as one kernel
    (the same entry on both targets)."""
    return Kernel(
        "loss",
        "cross_entropy_with_grad",
        (In(0), In(1), Value(grad.inputs[2], flat=False), Value(loss.name, flat=False), Value(grad.name, flat=False),
         _ignore(loss.attrs), True, True),
    )


def _label_range(a, logits) -> IndexRange:
    classes = logits.shape[1]
    return IndexRange(0, classes, () if a.ignore is None else (a.ignore,))


def _ignore(a) -> int:
    return NO_LABEL if a.ignore is None else a.ignore


@register
class CrossEntropyGrad(Op):
    """d(cross_entropy)/d(logits) = (softmax(logits) - onehot(labels)) * dy / count."""

    name = "cross_entropy_grad"
    inputs = 3
    internal = True
    attrs = (Attr("ignore", optional(integer), None),)

    def infer(self, a, logits, labels, dy):
        return logits

    def index_inputs(self, a, logits, labels, dy):
        return {1: _label_range(a, logits)}

    def cpu(self, a, out, logits, labels, dy):
        return Kernel("loss", "cross_entropy_grad", (In(0), In(1), In(2), OUT, _ignore(a)))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/loss.py


class _PointwiseLoss(Op):
    inputs = 2
    fusion = Fusion.REDUCTION

    def infer(self, a, pred, target):
        expect_float(self.name, pred)
        expect_float(self.name, target)
        if pred.shape != target.shape:
            raise ShapeError(f"{self.name}: prediction {pred} and target {target} differ")
        return SCALAR

    def flops(self, a, out, pred, target):
        return 3 * pred.sample_elements()

    kind = 0

    def cpu(self, a, out, pred, target):
        return Kernel("loss", "pointwise_loss", (In(0), In(1), OUT, self.kind))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/loss.py

    def grad(self, g, dy):
        for wrt in (0, 1):
            if g.needs_input_grad(wrt):
                g.input_grad(wrt, g.apply("pointwise_loss_grad", [*g.node.inputs, dy], kind=self.kind, wrt=wrt))


@register
class PointwiseLossGrad(Op):
    """The gradient of mse (kind 0) or bce_with_logits (kind 1) with respect to input `wrt`."""

    name = "pointwise_loss_grad"
    inputs = 3
    internal = True
    attrs = (Attr("kind", int), Attr("wrt", int))

    def infer(self, a, pred, target, dy):
        return (pred, target)[a.wrt]

    def cpu(self, a, out, pred, target, dy):
        return Kernel("loss", "pointwise_loss_grad", (In(0), In(1), In(2), OUT, a.kind, a.wrt))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/loss.py


@register
class Mse(_PointwiseLoss):
    """Mean squared error (the L2 loss)."""

    name = "mse"


@register
class BceWithLogits(_PointwiseLoss):
    """Binary cross-entropy on logits, computed stably: mean(max(x,0) - x*t + log(1 + exp(-|x|)))."""

    name = "bce_with_logits"
    kind = 1
