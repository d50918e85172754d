"""Reshaping: flatten and reshape (the batch axis is always kept)."""

from __future__ import annotations

import math

from .base import Attr, Fusion, Op, ShapeError, TensorType, int_list, register
from ..graph import BATCH


@register
class Flatten(Op):
    """[C, H, W] -> [C*H*W]."""

    name = "flatten"
    fusion = Fusion.INJECTIVE

    def infer(self, a, x):
        if not x.batched:
            raise ShapeError(f"flatten expects a batched input, got {x}")
        return TensorType((BATCH, x.sample_elements()), x.dtype)

    def flops(self, a, out, x):
        return 0


@register
class Reshape(Op):
    """Reshape one example to `shape` (one entry may be -1: inferred)."""

    name = "reshape"
    fusion = Fusion.INJECTIVE
    attrs = (Attr("shape", int_list, doc="the new shape of one example, e.g. [16, 25]"),)

    def infer(self, a, x):
        if not x.batched:
            raise ShapeError(f"reshape expects a batched input, got {x}")
        shape = list(a.shape)
        if shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
            raise ShapeError(f"reshape: shape {shape} may hold positive sizes and at most one -1")
        total = x.sample_elements()
        known = math.prod(d for d in shape if d != -1)
        if -1 in shape:
            if total % known:
                raise ShapeError(f"reshape: cannot reshape {x} to {shape}")
            shape[shape.index(-1)] = total // known
        elif known != total:
            raise ShapeError(f"reshape: cannot reshape {x} ({total} elements) to {shape} ({known} elements)")
        return TensorType((BATCH, *shape), x.dtype)

    def flops(self, a, out, x):
        return 0
