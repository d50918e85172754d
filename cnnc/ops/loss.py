"""Losses: each reduces a prediction and a target to a scalar (the batch mean)."""

from __future__ import annotations

from .base import Attr, Fusion, Op, ShapeError, TensorType, expect_float, integer, optional, register

SCALAR = TensorType((), "float32")


@register
class CrossEntropy(Op):
    """Softmax cross-entropy of logits [C] or [C, H, W] against integer labels [] or [H, W].

    The mean over every labelled element; elements whose label equals `ignore` do not count.
    """

    name = "cross_entropy"
    inputs = 2
    fusion = Fusion.REDUCTION
    attrs = (Attr("ignore", optional(integer), None, doc="a label value to leave out"),)

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


@register
class Mse(_PointwiseLoss):
    """Mean squared error (the L2 loss)."""

    name = "mse"


@register
class BceWithLogits(_PointwiseLoss):
    """Binary cross-entropy on logits, computed stably: mean(max(x,0) - x*t + log(1 + exp(-|x|)))."""

    name = "bce_with_logits"
