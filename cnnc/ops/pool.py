"""Pooling: maxpool, avgpool, global_avgpool and adaptive_avgpool, and their gradients.

The kernels are in cnnc/kernels/{cpu,cuda}/pool.py. Max pooling has its own.
The average pools are separable linear maps of the input (one sparse matrix
per axis, built by cnnc/kernels/shared/pool.py; resizing uses the same map),
so one kernel per target serves all of them and their gradients.
"""

from __future__ import annotations

from ..graph import BATCH
from ..kernels import EPILOGUE, FLAT_OUT, OUT, In, Kernel
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

    def grad_attrs(self, g) -> dict:
        """The window with the stride made explicit, for the gradient op."""
        a = g.node.attrs
        kernel, stride = self.window(a)
        return {"kernel": kernel, "stride": stride, "pad": a.pad}


@register
class MaxPool(_WindowPool):
    """Max over each window; padding counts as minus infinity."""

    name = "maxpool"
    attrs = (
        Attr("kernel", positive_pair),
        Attr("stride", optional(positive_pair), None),
        Attr("pad", nonnegative_pair, 0),
        Attr("dilation", positive_pair, 1),
        Attr("ceil", boolean, False),
    )

    def cpu(self, a, out, x):
        kernel, stride = self.window(a)
        return Kernel("pool", "maxpool", (In(0), OUT, *kernel, *stride, *a.pad, *a.dilation))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/pool.py

    def grad(self, g, dy):
        if g.needs_input_grad(0):
            attrs = self.grad_attrs(g)
            g.input_grad(0, g.apply("maxpool_grad", [g.node.inputs[0], dy], dilation=g.node.attrs.dilation, **attrs))


@register
class MaxPoolGrad(Op):
    """dx of maxpool from x and dy: each window's dy goes to its (recomputed) argmax."""

    name = "maxpool_grad"
    inputs = 2
    internal = True
    fusion = Fusion.REDUCTION
    attrs = (Attr("kernel", tuple), Attr("stride", tuple), Attr("pad", tuple), Attr("dilation", tuple))

    def infer(self, a, x, dy):
        return x

    def cpu(self, a, out, x, dy):
        return Kernel("pool", "maxpool_grad", (In(0), In(1), OUT, *a.kernel, *a.stride, *a.pad, *a.dilation))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/pool.py


@register
class AvgPool(_WindowPool):
    """Mean over each window."""

    name = "avgpool"
    attrs = (
        Attr("kernel", positive_pair),
        Attr("stride", optional(positive_pair), None),
        Attr("pad", nonnegative_pair, 0),
        Attr("ceil", boolean, False),
        Attr("count_pad", boolean, True),
    )

    def cpu(self, a, out, x):
        kernel, stride = self.window(a)
        return Kernel("pool", "avgpool", (In(0), OUT, *kernel, *stride, *a.pad, int(a.count_pad)))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/pool.py

    def grad(self, g, dy):
        if g.needs_input_grad(0):
            a = g.node.attrs
            x = g.type_of(g.node.inputs[0])
            dx = g.apply("avgpool_grad", [dy], count_pad=a.count_pad, in_size=x.shape[2:], **self.grad_attrs(g))
            g.input_grad(0, dx)


class _ToInputSize(Op):
    """A gradient op from dy alone: dx has dy's channels and the forward input's `in_size`."""

    internal = True
    fusion = Fusion.REDUCTION

    def infer(self, a, dy):
        return TensorType((BATCH, dy.shape[1], *a.in_size), dy.dtype)


@register
class AvgPoolGrad(_ToInputSize):
    """dx of avgpool: each input gathers dy / divisor from the windows holding it."""

    name = "avgpool_grad"
    attrs = (Attr("kernel", tuple), Attr("stride", tuple), Attr("pad", tuple), Attr("count_pad", bool), Attr("in_size", tuple))

    def cpu(self, a, out, dy):
        return Kernel("pool", "avgpool_grad", (In(0), OUT, *a.kernel, *a.stride, *a.pad, int(a.count_pad)))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/pool.py


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

    def cpu(self, a, out, x):
        return Kernel("pool", "adaptive_avgpool", (In(0), OUT))  # one window: the whole image

    cuda = cpu  # the same entry in cnnc/kernels/cuda/pool.py

    def grad(self, g, dy):
        if g.needs_input_grad(0):
            x = g.type_of(g.node.inputs[0])
            g.input_grad(0, g.apply("global_avgpool_grad", [dy], in_size=x.shape[2:]))


@register
class GlobalAvgPoolGrad(_ToInputSize):
    """dx of global_avgpool: dy / (H * W) at every position."""

    name = "global_avgpool_grad"
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (Attr("in_size", tuple),)

    def cpu(self, a, out, dy, epilogue=None):
        return Kernel("pool", "global_avgpool_grad", (In(0), OUT, EPILOGUE), epilogue=epilogue)

    def cuda(self, a, out, dy, epilogue=None):
        hw = a.in_size[0] * a.in_size[1]
        args = (In(0, flat=True), FLAT_OUT, EPILOGUE, dy.shape[1], hw)
        return Kernel("pool", "global_avgpool_grad", args, epilogue=epilogue)


@register
class AdaptiveAvgPool(Op):
    """Mean over an adaptive grid of windows giving a fixed output size (PyTorch's AdaptiveAvgPool2d)."""

    name = "adaptive_avgpool"
    fusion = Fusion.REDUCTION
    attrs = (Attr("size", positive_pair),)

    def infer(self, a, x):
        expect_rank(self.name, x, 4)
        expect_float(self.name, x)
        return TensorType((BATCH, x.shape[1], *a.size), x.dtype)

    def flops(self, a, out, x):
        return x.sample_elements()

    def cpu(self, a, out, x):
        return Kernel("pool", "adaptive_avgpool", (In(0), OUT))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/pool.py

    def grad(self, g, dy):
        if g.needs_input_grad(0):
            x = g.type_of(g.node.inputs[0])
            g.input_grad(0, g.apply("adaptive_avgpool_grad", [dy], in_size=x.shape[2:]))


@register
class AdaptiveAvgPoolGrad(_ToInputSize):
    """dx of adaptive_avgpool: each input gathers dy / window area from the windows holding it."""

    name = "adaptive_avgpool_grad"
    attrs = (Attr("in_size", tuple),)

    def cpu(self, a, out, dy):
        return Kernel("pool", "adaptive_avgpool_grad", (In(0), OUT))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/pool.py
