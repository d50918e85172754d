"""The fully connected layer: y = x W^T + b, as PyTorch's Linear."""

from __future__ import annotations

from .base import Attr, Fusion, Op, ShapeError, TensorType, boolean, expect_float, param, positive_int, register
from ..graph import BATCH


@register
class Dense(Op):
    """Fully connected layer over [features]; weight [units, features]."""

    name = "dense"
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (Attr("units", positive_int, doc="output features"), Attr("bias", boolean, True))

    def infer(self, a, x):
        expect_float(self.name, x)
        if x.rank != 2 or not x.batched:
            hint = "; add flatten before it" if x.rank > 2 else ""
            raise ShapeError(f"dense expects [features] input, got {x}{hint}")
        return TensorType((BATCH, a.units), x.dtype)

    def params(self, a, x):
        fan_in = x.shape[1]
        specs = [param("weight", (a.units, fan_in), "kaiming_uniform", fan_in)]
        if a.bias:
            specs.append(param("bias", (a.units,), "fan_in_uniform", fan_in))
        return specs

    def macs(self, a, out, x):
        return x.shape[1] * a.units
