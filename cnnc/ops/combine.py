"""Ops that combine several values: add, mul (with broadcasting) and concat."""

from __future__ import annotations

from .base import Attr, AttrError, Fusion, Op, ShapeError, TensorType, expect_float, integer, register
from ..graph import BATCH


def broadcast(op: str, xs: tuple[TensorType, ...]) -> TensorType:
    """NumPy broadcasting over whole shapes (the batch axis included)."""
    rank = max(x.rank for x in xs)
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

    def infer(self, a, *xs):
        for x in xs:
            expect_float(self.name, x)
        return broadcast(self.name, xs)


@register
class Add(_Broadcasting):
    """Sum of two or more values (`a + b`); shapes broadcast as in NumPy."""

    name = "add"


@register
class Mul(_Broadcasting):
    """Product of two or more values (`a * b`); shapes broadcast as in NumPy."""

    name = "mul"


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
