"""Pooling: maxpool, avgpool, global_avgpool and adaptive_avgpool."""

from __future__ import annotations

from .base import (
    Attr,
    Fusion,
    Op,
    ShapeError,
    TensorType,
    boolean,
    expect_float,
    expect_rank,
    nonnegative_pair,
    optional,
    positive_pair,
    register,
    window_out,
)
from ..graph import BATCH


class _WindowPool(Op):
    """Shared shape rule of the sliding-window pools (stride defaults to the kernel)."""

    fusion = Fusion.REDUCTION

    def window(self, a):
        return a.kernel, a.stride or a.kernel

    def infer(self, a, x):
        expect_rank(self.name, x, 4)
        expect_float(self.name, x)
        kernel, stride = self.window(a)
        dilation = getattr(a, "dilation", (1, 1))
        for i in range(2):
            if a.pad[i] * 2 > kernel[i]:
                raise ShapeError(f"{self.name}: pad {list(a.pad)} must be at most half the kernel {list(kernel)}")
        _, c, h, w = x.shape
        oh = window_out(h, kernel[0], stride[0], a.pad[0], a.pad[0], dilation[0], a.ceil)
        ow = window_out(w, kernel[1], stride[1], a.pad[1], a.pad[1], dilation[1], a.ceil)
        if oh < 1 or ow < 1:
            raise ShapeError(f"{self.name}: window {list(kernel)} does not fit the input {x}")
        return TensorType((BATCH, c, oh, ow), x.dtype)

    def flops(self, a, out, x):
        kernel, _ = self.window(a)
        return out.sample_elements() * kernel[0] * kernel[1]


@register
class MaxPool(_WindowPool):
    """Max over each window; padding counts as minus infinity."""

    name = "maxpool"
    attrs = (
        Attr("kernel", positive_pair),
        Attr("stride", optional(positive_pair), None, doc="defaults to the kernel"),
        Attr("pad", nonnegative_pair, 0),
        Attr("dilation", positive_pair, 1),
        Attr("ceil", boolean, False, doc="round the output size up (PyTorch's ceil_mode)"),
    )


@register
class AvgPool(_WindowPool):
    """Mean over each window."""

    name = "avgpool"
    attrs = (
        Attr("kernel", positive_pair),
        Attr("stride", optional(positive_pair), None, doc="defaults to the kernel"),
        Attr("pad", nonnegative_pair, 0),
        Attr("ceil", boolean, False),
        Attr("count_pad", boolean, True, doc="count padded zeros in the divisor (PyTorch's count_include_pad)"),
    )


@register
class GlobalAvgPool(Op):
    """Mean over height and width: [C, H, W] -> [C, 1, 1]."""

    name = "global_avgpool"
    fusion = Fusion.REDUCTION

    def infer(self, a, x):
        expect_rank(self.name, x, 4)
        expect_float(self.name, x)
        return TensorType((BATCH, x.shape[1], 1, 1), x.dtype)

    def flops(self, a, out, x):
        return x.sample_elements()


@register
class AdaptiveAvgPool(Op):
    """Mean over an adaptive grid of windows giving a fixed output size (PyTorch's AdaptiveAvgPool2d)."""

    name = "adaptive_avgpool"
    fusion = Fusion.REDUCTION
    attrs = (Attr("size", positive_pair, doc="output size, n or [h, w]"),)

    def infer(self, a, x):
        expect_rank(self.name, x, 4)
        expect_float(self.name, x)
        return TensorType((BATCH, x.shape[1], *a.size), x.dtype)

    def flops(self, a, out, x):
        return x.sample_elements()
