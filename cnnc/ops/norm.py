"""Normalization and regularization: batchnorm and dropout."""

from __future__ import annotations

from .base import Attr, Fusion, Op, ShapeError, TensorType, boolean, expect_float, param, positive_number, probability, register


@register
class BatchNorm(Op):
    """Batch normalization over the channel axis of [C] or [C, H, W] inputs.

    Training mode normalizes with the batch statistics and updates the running
    averages (momentum as PyTorch: new = (1 - m) * old + m * batch, unbiased
    variance); eval mode normalizes with the running averages.
    """

    name = "batchnorm"
    fusion = Fusion.OPAQUE  # reduces in training; folds into conv in eval (the fusion pass decides)
    attrs = (
        Attr("eps", positive_number, 1e-5),
        Attr("momentum", positive_number, 0.1),
        Attr("affine", boolean, True, doc="learn a scale (weight) and shift (bias)"),
    )

    def infer(self, a, x):
        expect_float(self.name, x)
        if x.rank not in (2, 4) or not x.batched:
            raise ShapeError(f"batchnorm expects [channels] or [channels, height, width] input, got {x}")
        return x

    def params(self, a, x):
        c = x.shape[1]
        specs = []
        if a.affine:
            specs += [param("weight", (c,), "ones"), param("bias", (c,), "zeros")]
        specs += [
            param("running_mean", (c,), "zeros", kind="buffer"),
            param("running_var", (c,), "ones", kind="buffer"),
        ]
        return specs

    def flops(self, a, out, x):
        return 2 * out.sample_elements()


@register
class Dropout(Op):
    """Zero each element with probability p in training, scaling the rest by 1/(1-p); identity in eval."""

    name = "dropout"
    fusion = Fusion.ELEMENTWISE
    attrs = (Attr("p", probability, 0.5),)

    def infer(self, a, x):
        expect_float(self.name, x)
        return x
