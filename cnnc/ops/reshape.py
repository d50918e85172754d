"""Reshaping: flatten and reshape (the batch axis is always kept)."""

from __future__ import annotations

import math

from ..graph import BATCH
from ..kernels import FLAT_OUT, OUT, In, Kernel
from ..layout import is_channels_last
from .base import Attr, Fusion, Op, ShapeError, TensorType, int_list, register


def _chw(t: TensorType) -> tuple[bool, int, int, int]:
    if is_channels_last(t):
        return (True, *t.shape[1:])
    return (False, 1, 1, 1)


class _Reshaping(Op):
    fusion = Fusion.INJECTIVE
    logical_view = True

    def flops(self, a, out, x):
        return 0

    def passes_input(self, a, training, out, x):
        return x == out

    # Reshaping follows the logical (NCHW) element order, whatever the physical layouts
    # (cnnc/kernels/<target>/reshape.py).
    def cpu(self, a, out, x):
        return Kernel("reshape", "reshape", (In(0), OUT, *_chw(x), *_chw(out)))

    def cuda(self, a, out, x):
        return Kernel("reshape", "reshape", (In(0, flat=True), FLAT_OUT, *_chw(x), *_chw(out), x.sample_elements()))

    def grad(self, g, dy):
        g.input_grad(0, g.apply("reshape", [dy], shape=g.type_of(g.node.inputs[0]).sample_shape))


@register
class Flatten(_Reshaping):
    """[C, H, W] -> [C*H*W]."""

    name = "flatten"

    def infer(self, a, x):
        if not x.batched:
            raise ShapeError(f"flatten expects a batched input, got {x}")
        return TensorType((BATCH, x.sample_elements()), x.dtype)


@register
class Reshape(_Reshaping):
    """Reshape one example to `shape` (one entry may be -1: inferred)."""

    name = "reshape"
    attrs = (Attr("shape", int_list),)

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
