"""Resizing: upsample by nearest-neighbour or bilinear interpolation."""

from __future__ import annotations

from .base import Attr, AttrError, Fusion, Op, ShapeError, TensorType, boolean, expect_float, expect_rank, one_of, optional, positive_pair, register
from ..graph import BATCH


@register
class Upsample(Op):
    """Scale height and width by an integer factor, or to a fixed size (PyTorch's interpolate)."""

    name = "upsample"
    fusion = Fusion.INJECTIVE
    attrs = (
        Attr("scale", optional(positive_pair), None, doc="integer factor, n or [sh, sw]"),
        Attr("mode", one_of("nearest", "bilinear"), "nearest"),
        Attr("size", optional(positive_pair), None, doc="output size instead of a scale"),
        Attr("align_corners", boolean, False, doc="bilinear only"),
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
