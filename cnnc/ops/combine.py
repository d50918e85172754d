"""Ops that combine values and take them apart: add, sub, mul (with broadcasting), concat, slice and crop."""

from __future__ import annotations

import math
from dataclasses import replace

from ..kernels import FLAT_OUT, OUT, In, Kernel, Pack
from ..layout import physical_axis, physical_shape
from .base import (
    EXPR_INPUTS,
    Attr,
    AttrError,
    Expr,
    Fusion,
    Op,
    ShapeError,
    TensorType,
    expect_float,
    expect_rank,
    integer,
    nonnegative_pair,
    optional,
    positive_pair,
    register,
)


def _padded_dims(t: TensorType) -> tuple[int, int, int]:
    """A physical shape after its first axis, padded to three dimensions."""
    dims = physical_shape(t, 1)[1:]
    if len(dims) > 3:
        raise ShapeError(f"broadcasting over {t} is not supported by the CPU backend")
    return (*dims, 1, 1, 1)[:3]


def broadcast(op: str, xs: tuple[TensorType, ...]) -> TensorType:
    """NumPy broadcasting over whole shapes (the batch axis included)."""
    rank = max(x.rank for x in xs)
    if any(x.rank != rank for x in xs):  # right-aligning would mix the batch into an example's axes
        raise ShapeError(f"{op}: {' and '.join(str(x) for x in xs)} differ in rank")
    dims = []
    for i in range(rank):
        sizes = {x.shape[i - rank + x.rank] for x in xs if i - rank + x.rank >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            shapes = " and ".join(str(x) for x in xs)
            raise ShapeError(f"{op}: {shapes} differ")
        dims.append(sizes.pop() if sizes else 1)
    dtypes = {x.dtype for x in xs}
    if len(dtypes) > 1:
        raise ShapeError(f"{op}: dtypes {' and '.join(sorted(dtypes))} differ")
    return TensorType(tuple(dims), xs[0].dtype)


class _Broadcasting(Op):
    inputs = Op.VARIADIC
    fusion = Fusion.BROADCAST
    symbol = ""

    def infer(self, a, *xs):
        for x in xs:
            expect_float(self.name, x)
        return broadcast(self.name, xs)

    def expression(self, a, out, *xs):
        if all(x.shape == out.shape for x in xs) and len(xs) <= len(EXPR_INPUTS):
            return Expr(f" {self.symbol} ".join(EXPR_INPUTS[: len(xs)]))
        return None

    def passes_input(self, a, training, out, *xs):
        return len(xs) == 1 and xs[0] == out  # what is left once identity constants are dropped

    # Equal shapes are lowered from expression() (an elementwise loop); these kernels are for two inputs that broadcast.
    def cpu(self, a, out, *xs):
        if len(xs) != 2 or xs[0].rank != xs[1].rank:
            raise ShapeError(f"{self.name}: the CPU backend broadcasts two inputs of equal rank, got {', '.join(map(str, xs))}")
        return Kernel("combine", "broadcast", (In(0), In(1), OUT, ("add", "sub", "mul").index(self.name)))

    def cuda(self, a, out, *xs):
        if len(xs) != 2 or xs[0].rank != xs[1].rank or out.rank > 4:
            raise ShapeError(f"{self.name}: the CUDA backend broadcasts two inputs of equal rank up to 4, got {', '.join(map(str, xs))}")
        return Kernel("combine", f"broadcast_{self.name}", (In(0), In(1), OUT))


@register
class Add(_Broadcasting):
    """Sum of two or more values (`a + b`); shapes broadcast as in NumPy."""

    name = "add"
    symbol = "+"
    identity = 0.0

    def fold(self, a, values):
        return sum(values)

    def grad(self, g, dy):
        for i, x in enumerate(g.node.inputs):
            g.input_grad(i, g.sum_to(dy, x))


@register
class Mul(_Broadcasting):
    """Product of two or more values (`a * b`); shapes broadcast as in NumPy."""

    name = "mul"
    symbol = "*"
    identity = 1.0  # mul by 0 is never folded away: 0 * NaN is NaN

    def fold(self, a, values):
        return math.prod(values)

    def grad(self, g, dy):
        inputs = g.node.inputs
        for i, x in enumerate(inputs):
            if g.needs_input_grad(i):
                others = [y for j, y in enumerate(inputs) if j != i]
                g.input_grad(i, g.sum_to(g.apply("mul", [dy, *others]), x))


@register
class Sub(_Broadcasting):
    """Difference of two values (`a - b`); shapes broadcast as in NumPy."""

    name = "sub"
    inputs = 2
    symbol = "-"

    def fold(self, a, values):
        return values[0] - values[1]

    def grad(self, g, dy):
        a, b = g.node.inputs
        g.input_grad(0, g.sum_to(dy, a))
        if g.needs_input_grad(1):
            g.input_grad(1, g.apply("neg", [g.sum_to(dy, b)]))


@register
class SumTo(Op):
    """A broadcast gradient summed back to the shape of the value that was broadcast."""

    name = "sum_to"
    internal = True
    fusion = Fusion.REDUCTION
    attrs = (Attr("shape", tuple),)

    def infer(self, a, x):
        return TensorType(tuple(a.shape), x.dtype)

    def passes_input(self, a, training, out, x):
        return x == out

    def cpu(self, a, out, x):
        return Kernel("combine", "sum_to", (In(0), OUT, *_padded_dims(x), *_padded_dims(out)))

    def cuda(self, a, out, x):
        return Kernel("combine", "sum_to", (In(0, flat=True), FLAT_OUT, *_padded_dims(x), *_padded_dims(out)))


def concat_axis(value):
    value = integer(value)
    if value == 0:
        raise AttrError("axis 0 is the batch; concat joins values within one example")
    return value


def slice_axis(value):
    value = integer(value)
    if value == 0:
        raise AttrError("axis 0 is the batch; slice takes a range within one example")
    return value


@register
class Concat(Op):
    """Join two or more values along an axis (default 1: channels)."""

    name = "concat"
    inputs = Op.VARIADIC
    fusion = Fusion.INJECTIVE
    attrs = (Attr("axis", concat_axis, 1),)

    def infer(self, a, *xs):
        rank = xs[0].rank
        if any(x.rank != rank for x in xs) or not -rank <= a.axis < rank:
            raise ShapeError(f"concat: cannot join {' and '.join(str(x) for x in xs)} along axis {a.axis}")
        axis = a.axis % rank
        if axis == 0:
            raise ShapeError("concat: axis 0 is the batch")
        for x in xs[1:]:
            for i in range(rank):
                if i != axis and x.shape[i] != xs[0].shape[i]:
                    raise ShapeError(
                        f"concat: {xs[0]} and {x} differ outside axis {a.axis}"
                    )
            if x.dtype != xs[0].dtype:
                raise ShapeError(f"concat: dtypes {xs[0].dtype} and {x.dtype} differ")
        shape = list(xs[0].shape)
        shape[axis] = sum(x.shape[axis] for x in xs)
        return TensorType(tuple(shape), xs[0].dtype)

    def flops(self, a, out, *xs):
        return 0

    def cpu(self, a, out, *xs):
        # The inputs as one tuple of flat arrays and their lengths along the axis as one tuple of ints:
        # the same kernel joins any number of inputs (one compile per number of inputs and dtype).
        inner = _axis_split(out, a.axis)[1]
        inputs = Pack(tuple(In(i, flat=True) for i in range(len(xs))))
        sizes = Pack(tuple(_axis_split(x, a.axis)[0] for x in xs))
        return Kernel("combine", "concat", (inputs, FLAT_OUT, inner, sizes))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/combine.py

    def grad(self, g, dy):
        axis = g.node.attrs["axis"]
        start = 0
        for i, x in enumerate(g.node.inputs):
            size = g.type_of(x).shape[axis]
            if g.needs_input_grad(i):
                g.input_grad(i, g.apply("slice", [dy], axis=axis, start=start, stop=start + size))
            start += size


def _axis_split(t: TensorType, axis: int) -> tuple[int, int]:
    """(n, inner): the length of the logical `axis` in the physical buffer and the elements after it.

    Seen flat, a buffer is [rows, n, inner] with rows = size // (n * inner), so
    the batch size is read from the array inside the kernel.
    """
    shape = physical_shape(t, 1)
    p = physical_axis(t, axis)
    inner = 1
    for d in shape[p + 1 :]:
        inner *= d
    return shape[p], inner


def _slice_range(a, x: TensorType) -> tuple[int, int, int]:
    """(axis, start, stop) of a slice of `x`, counted from 0: negative values count from the end, as in Python."""
    rank = x.rank
    if not x.batched or not -rank < a.axis < rank or a.axis % rank == 0:
        raise ShapeError(f"slice: axis {a.axis} is out of range for {x} (axis 0 is the batch)")
    axis = a.axis % rank
    n = x.shape[axis]
    if not -n <= a.start < n:
        raise ShapeError(f"slice: start {a.start} is out of range for axis {a.axis} of {x} (length {n})")
    given = n if a.stop is None else a.stop
    if not -n <= given <= n:
        raise ShapeError(f"slice: stop {given} is out of range for axis {a.axis} of {x} (length {n})")
    start, stop = a.start % n, given % n if given < 0 else given
    if stop <= start:
        raise ShapeError(f"slice: [{a.start}, {given}) is empty for axis {a.axis} of {x} (length {n})")
    return axis, start, stop


@register
class Slice(Op):
    """The range [start, stop) of a value along an axis, as Python's x[..., start:stop] (also concat's gradient)."""

    name = "slice"
    fusion = Fusion.INJECTIVE
    attrs = (Attr("axis", slice_axis), Attr("start", integer), Attr("stop", optional(integer), None))

    def infer(self, a, x):
        axis, start, stop = _slice_range(a, x)
        shape = list(x.shape)
        shape[axis] = stop - start
        return replace(x, shape=tuple(shape))

    def flops(self, a, out, x):
        return 0

    def passes_input(self, a, training, out, x):
        return out == x

    def cpu(self, a, out, x):
        # The buffer seen as [rows, 1, n, inner]: a window of one row and columns start to stop.
        axis, start, stop = _slice_range(a, x)
        n, inner = _axis_split(x, axis)
        return Kernel("combine", "crop", (In(0, flat=True), FLAT_OUT, 1, n, inner, 0, start, 1, stop - start))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/combine.py

    def grad(self, g, dy):
        x = g.type_of(g.node.inputs[0])
        axis, start, _ = _slice_range(g.node.attrs, x)
        g.input_grad(0, g.apply("slice_grad", [dy], axis=axis, start=start, shape=x.shape))


@register
class SliceGrad(Op):
    """The gradient of slice: dy placed at `start` along `axis` of a zero value of `shape`."""

    name = "slice_grad"
    internal = True
    fusion = Fusion.INJECTIVE
    attrs = (Attr("axis", int), Attr("start", int), Attr("shape", tuple))

    def infer(self, a, dy):
        return replace(dy, shape=tuple(a.shape))

    def flops(self, a, out, dy):
        return 0

    def cpu(self, a, out, dy):
        n, inner = _axis_split(out, a.axis)
        return Kernel("combine", "uncrop", (In(0, flat=True), FLAT_OUT, 1, n, inner, 0, a.start, 1, dy.shape[a.axis]))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/combine.py


def _window(t: TensorType) -> tuple[int, int, int]:
    """(h, w, inner): the buffer of an image seen as [rows, h, w, inner] (NHWC: rows N, inner C; NCHW: rows N * C)."""
    shape = physical_shape(t, 1)
    p = physical_axis(t, 2)  # width follows height in both layouts
    return shape[p], shape[p + 1], math.prod(shape[p + 2 :])


@register
class Crop(Op):
    """A window of [C, H, W]: `size` rows and columns from `offset` on (FCN's x[:, :, 5:5 + H, 5:5 + W])."""

    name = "crop"
    fusion = Fusion.INJECTIVE
    attrs = (Attr("offset", nonnegative_pair), Attr("size", positive_pair))

    def infer(self, a, x):
        expect_rank("crop", x, 4)
        (top, left), (h, w) = a.offset, a.size
        if top + h > x.shape[2] or left + w > x.shape[3]:
            raise ShapeError(f"crop: a window of size [{h}, {w}] at offset [{top}, {left}] does not fit in {x}")
        return replace(x, shape=(*x.shape[:2], h, w))

    def flops(self, a, out, x):
        return 0

    def passes_input(self, a, training, out, x):
        return out == x

    def cpu(self, a, out, x):
        return Kernel("combine", "crop", (In(0, flat=True), FLAT_OUT, *_window(x), *a.offset, *a.size))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/combine.py

    def grad(self, g, dy):
        g.input_grad(0, g.apply("crop_grad", [dy], offset=g.node.attrs["offset"], shape=g.type_of(g.node.inputs[0]).shape))


@register
class CropGrad(Op):
    """The gradient of crop: dy placed at `offset` in a zero image of `shape`."""

    name = "crop_grad"
    internal = True
    fusion = Fusion.INJECTIVE
    attrs = (Attr("offset", tuple), Attr("shape", tuple))

    def infer(self, a, dy):
        return replace(dy, shape=tuple(a.shape))

    def flops(self, a, out, dy):
        return 0

    def cpu(self, a, out, dy):
        return Kernel("combine", "uncrop", (In(0, flat=True), FLAT_OUT, *_window(out), *a.offset, *dy.shape[2:]))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/combine.py
