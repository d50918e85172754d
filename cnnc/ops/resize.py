"""Resizing: upsample by nearest-neighbour or bilinear interpolation, and its gradient.

Both modes are separable linear maps of the input, so the kernels
(cnnc/kernels/{cpu,cuda}/resize.py) apply the map the average pools use
(cnnc/kernels/{cpu,cuda}/pool.py); only the per-axis taps differ
(cnnc/kernels/shared/resize.py: `nearest_axis`, `bilinear_axis`).
"""

from __future__ import annotations

from ..graph import BATCH
from ..kernels import OUT, In, Kernel
from .base import (
    Attr,
    Fusion,
    Op,
    ShapeError,
    TensorType,
    boolean,
    expect_float,
    expect_rank,
    one_of,
    optional,
    positive_pair,
    register,
)


@register
class Upsample(Op):
    """Scale height and width by an integer factor, or to a fixed size (PyTorch's interpolate)."""

    name = "upsample"
    fusion = Fusion.INJECTIVE
    attrs = (
        Attr("scale", optional(positive_pair), None),
        Attr("mode", one_of("nearest", "bilinear"), "nearest"),
        Attr("size", optional(positive_pair), None),
        Attr("align_corners", boolean, False),
    )

    def infer(self, a, x):
        expect_rank(self.name, x, 4)
        expect_float(self.name, x)
        if (a.scale is None) == (a.size is None):
            raise ShapeError("upsample needs exactly one of scale and size")
        if a.align_corners and a.mode != "bilinear":
            raise ShapeError("upsample: align_corners applies to bilinear mode only")
        _, c, h, w = x.shape
        oh, ow = a.size if a.size else (h * a.scale[0], w * a.scale[1])
        return TensorType((BATCH, c, oh, ow), x.dtype)

    def flops(self, a, out, x):
        return (4 if a.mode == "bilinear" else 1) * out.sample_elements()

    # An integer scale gives out = in * scale, so in / out is PyTorch's 1 / scale_factor:
    # the kernels need only the two sizes.
    def cpu(self, a, out, x):
        return Kernel("resize", "upsample", (In(0), OUT, int(a.mode == "bilinear"), int(a.align_corners)))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/resize.py

    def grad(self, g, dy):
        if g.needs_input_grad(0):
            a = g.node.attrs
            x = g.type_of(g.node.inputs[0])
            g.input_grad(0, g.apply("upsample_grad", [dy], mode=a.mode, align_corners=a.align_corners, in_size=x.shape[2:]))


@register
class UpsampleGrad(Op):
    """dx of upsample: each input pixel gathers dy from the outputs that read it, times their weights."""

    name = "upsample_grad"
    internal = True
    fusion = Fusion.REDUCTION
    attrs = (Attr("mode", str), Attr("align_corners", bool), Attr("in_size", tuple))

    def infer(self, a, dy):
        return TensorType((BATCH, dy.shape[1], *a.in_size), dy.dtype)

    def cpu(self, a, out, dy):
        return Kernel("resize", "upsample_grad", (In(0), OUT, int(a.mode == "bilinear"), int(a.align_corners)))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/resize.py
