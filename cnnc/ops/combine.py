"""Ops that combine several values: add, mul (with broadcasting) and concat."""

from __future__ import annotations

import math

from ..kernels import FLAT_OUT, OUT, In, Kernel, Pack
from ..layout import physical_axis, physical_shape
from .base import EXPR_INPUTS, Attr, AttrError, Expr, Fusion, Op, ShapeError, TensorType, expect_float, integer, register


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
        return Kernel("combine", f"broadcast_{self.name}", (In(0), In(1), OUT))

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


@register
class Slice(Op):
    """The range [start, stop) of a value along an axis (the gradient of concat)."""

    name = "slice"
    internal = True
    fusion = Fusion.INJECTIVE
    attrs = (Attr("axis", int), Attr("start", int), Attr("stop", int))

    def infer(self, a, x):
        axis = a.axis % x.rank
        if not 0 <= a.start < a.stop <= x.shape[axis]:
            raise ShapeError(f"slice: [{a.start}, {a.stop}) is out of range for axis {a.axis} of {x}")
        shape = list(x.shape)
        shape[axis] = a.stop - a.start
        return TensorType(tuple(shape), x.dtype)

    def flops(self, a, out, x):
        return 0

    def cpu(self, a, out, x):
        n, inner = _axis_split(x, a.axis)
        return Kernel("combine", "slice_axis", (In(0, flat=True), FLAT_OUT, n, inner, a.start, a.stop))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/combine.py
