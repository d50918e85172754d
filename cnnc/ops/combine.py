"""Ops that combine several values: add, mul (with broadcasting) and concat."""

from __future__ import annotations

from ..backend.cpu.kernel import FLAT_OUT, OUT, CpuKernel, In
from ..backend.cuda.kernel import CudaKernel
from ..backend.layout import physical_axis, physical_shape
from .base import Attr, AttrError, Expr, Fusion, Op, ShapeError, TensorType, expect_float, integer, register
from .templates import INPUT_NAMES, elementwise

BROADCAST_SOURCE = """
@njit(cache=True)
def broadcast_add(x0, x1, out):
    np.add(x0, x1, out)


@njit(cache=True)
def broadcast_mul(x0, x1, out):
    np.multiply(x0, x1, out)


@njit(cache=True)
def sum_to(x, out, s1, s2, s3, t1, t2, t3):
    n = x.shape[0]
    tn = out.shape[0]
    v = x.reshape((n, s1, s2, s3))
    o = out.reshape((tn, t1, t2, t3))
    acc = np.zeros(o.shape)
    for i in range(n):
        for j in range(s1):
            for k in range(s2):
                for m in range(s3):
                    acc[min(i, tn - 1), min(j, t1 - 1), min(k, t2 - 1), min(m, t3 - 1)] += v[i, j, k, m]
    o[...] = acc
"""

# CUDA: one thread per output element. Broadcasting reads each input through
# strides that are 0 along its broadcast axes (physical shapes right-aligned
# into four axes). sum_to gathers: each output element sums the inputs that
# map onto it (index min(i, t - 1) per axis, as on the CPU), so no atomics.
BROADCAST_CUDA_SOURCE = """
@cuda.jit(cache=True)
def _broadcast(x0, x1, out, mul, d1, d2, d3, a0, a1, a2, a3, b0, b1, b2, b3):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        k0, k1, k2, k3 = unflatten(i, d1, d2, d3)
        u = x0[k0 * a0 + k1 * a1 + k2 * a2 + k3 * a3]
        v = x1[k0 * b0 + k1 * b1 + k2 * b2 + k3 * b3]
        out[i] = u * v if mul else u + v


def _strides(shape, dims):
    # Element strides of a contiguous array of `shape` read at the indices of `dims` (0: broadcast).
    shape = (1,) * (4 - len(shape)) + tuple(shape)
    strides, step = [0, 0, 0, 0], 1
    for axis in range(3, -1, -1):
        strides[axis] = step if shape[axis] > 1 else 0
        step *= shape[axis]
    return strides


def _launch_broadcast(x0, x1, out, mul):
    dims = (1,) * (4 - out.ndim) + tuple(out.shape)
    args = (*dims[1:], *_strides(x0.shape, dims), *_strides(x1.shape, dims))
    _broadcast[blocks(out.size), THREADS](x0.reshape(x0.size), x1.reshape(x1.size), out.reshape(out.size), mul, *args)


def broadcast_add(x0, x1, out):
    _launch_broadcast(x0, x1, out, 0)


def broadcast_mul(x0, x1, out):
    _launch_broadcast(x0, x1, out, 1)


@cuda.jit(device=True)
def _sources(k, t, s):
    # The input indices i along one axis with min(i, t - 1) == k.
    return k, (k + 1 if k < t - 1 else s)


@cuda.jit(cache=True)
def _sum_to(x, out, s1, s2, s3, t1, t2, t3):
    n = x.size // (s1 * s2 * s3)
    tn = out.size // (t1 * t2 * t3)
    for o in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        k0, k1, k2, k3 = unflatten(o, t1, t2, t3)
        lo0, hi0 = _sources(k0, tn, n)
        lo1, hi1 = _sources(k1, t1, s1)
        lo2, hi2 = _sources(k2, t2, s2)
        lo3, hi3 = _sources(k3, t3, s3)
        acc = 0.0
        for i in range(lo0, hi0):
            for j in range(lo1, hi1):
                for k in range(lo2, hi2):
                    base = ((i * s1 + j) * s2 + k) * s3
                    for m in range(lo3, hi3):
                        acc += x[base + m]
        out[o] = acc


def sum_to(x, out, s1, s2, s3, t1, t2, t3):
    _sum_to[blocks(out.size), THREADS](x, out, s1, s2, s3, t1, t2, t3)
"""


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
        if all(x.shape == out.shape for x in xs) and len(xs) <= len(INPUT_NAMES):
            return Expr(f" {self.symbol} ".join(INPUT_NAMES[: len(xs)]))
        return None

    def cpu(self, a, out, *xs):
        if all(x.shape == out.shape for x in xs) and len(xs) <= len(INPUT_NAMES):
            expr = f" {self.symbol} ".join(INPUT_NAMES[: len(xs)])
            return elementwise(f"{self.name}{len(xs)}", expr, len(xs))
        if len(xs) != 2 or xs[0].rank != xs[1].rank:
            raise ShapeError(f"{self.name}: the CPU backend broadcasts two inputs of equal rank, got {', '.join(map(str, xs))}")
        return CpuKernel(BROADCAST_SOURCE, f"broadcast_{self.name}", (In(0), In(1), OUT))

    def cuda(self, a, out, *xs):
        # Equal shapes are rendered from expression(); this kernel is for two inputs that broadcast.
        if len(xs) != 2 or xs[0].rank != xs[1].rank or out.rank > 4:
            raise ShapeError(f"{self.name}: the CUDA backend broadcasts two inputs of equal rank up to 4, got {', '.join(map(str, xs))}")
        return CudaKernel(BROADCAST_CUDA_SOURCE, f"broadcast_{self.name}", (In(0), In(1), OUT))


@register
class Add(_Broadcasting):
    """Sum of two or more values (`a + b`); shapes broadcast as in NumPy."""

    name = "add"
    symbol = "+"

    def grad(self, g, dy):
        for i, x in enumerate(g.node.inputs):
            g.input_grad(i, g.sum_to(dy, x))


@register
class Mul(_Broadcasting):
    """Product of two or more values (`a * b`); shapes broadcast as in NumPy."""

    name = "mul"
    symbol = "*"

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

    def cpu(self, a, out, x):
        return CpuKernel(BROADCAST_SOURCE, "sum_to", (In(0), OUT, *_padded_dims(x), *_padded_dims(out)))

    def cuda(self, a, out, x):
        return CudaKernel(BROADCAST_CUDA_SOURCE, "sum_to", (In(0, flat=True), FLAT_OUT, *_padded_dims(x), *_padded_dims(out)))


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
        inner = _axis_split(out, a.axis)[1]
        sizes = [_axis_split(x, a.axis)[0] for x in xs]
        return CpuKernel(_concat_source(len(xs)), f"concat{len(xs)}", (*(In(i, flat=True) for i in range(len(xs))), FLAT_OUT, inner, *sizes))

    def cuda(self, a, out, *xs):
        inner = _axis_split(out, a.axis)[1]
        sizes = [_axis_split(x, a.axis)[0] for x in xs]
        args = (*(In(i, flat=True) for i in range(len(xs))), FLAT_OUT, inner, *sizes)
        return CudaKernel(_concat_cuda_source(len(xs)), f"concat{len(xs)}", args)

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


def _concat_source(count: int) -> str:
    """A concat kernel for `count` inputs: each output row is the inputs' rows laid end to end.

    The source depends on the number of inputs only, so one compile serves every shape.
    Rows are 2-D views, so the copy loops index with provably non-negative
    range variables and vectorize.
    """
    xs = [f"x{i}" for i in range(count)]
    ns = [f"n{i}" for i in range(count)]
    setup, copies = [], []
    for i in range(count):
        offset = " + ".join(f"m{j}" for j in range(i)) or "0"
        setup += [
            f"    m{i} = {ns[i]} * inner",
            f"    o{i} = {offset}",
            f"    v{i} = {xs[i]}.reshape((rows, m{i}))",
        ]
        copies += [
            f"        for q in range(m{i}):",
            f"            o[r, o{i} + q] = v{i}[r, q]",
        ]
    lines = "\n".join(setup)
    body = "\n".join(copies)
    return f"""
@njit(parallel=True, cache=True)
def concat{count}({", ".join(xs)}, out, inner, {", ".join(ns)}):
    total = ({" + ".join(ns)}) * inner
    rows = out.size // total
    o = out.reshape((rows, total))
{lines}
    for r in prange(rows):
{body}
"""


def _concat_cuda_source(count: int) -> str:
    """A CUDA concat of `count` inputs: each output element finds the input whose part of the row holds it."""
    xs = [f"x{i}" for i in range(count)]
    ns = [f"n{i}" for i in range(count)]
    setup = [f"    m{i} = {ns[i]} * inner" for i in range(count)]
    picks = []
    for i in range(count):
        before = "".join(f" - m{j}" for j in range(i))  # q minus the parts before input i
        test = "if" if i == 0 else "elif"
        line = f"        {test} q{before} < m{i}:" if i < count - 1 else "        else:"
        picks += [line, f"            out[o] = x{i}[r * m{i} + q{before}]"]
    lines = "\n".join(setup)
    body = "\n".join(picks)
    return f"""
@cuda.jit(cache=True)
def _concat{count}({", ".join(xs)}, out, inner, {", ".join(ns)}):
{lines}
    total = {" + ".join(f"m{i}" for i in range(count))}
    for o in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        r = o // total
        q = o - r * total
{body}


def concat{count}({", ".join(xs)}, out, inner, {", ".join(ns)}):
    _concat{count}[blocks(out.size), THREADS]({", ".join(xs)}, out, inner, {", ".join(ns)})
"""


SLICE_SOURCE = """
@njit(parallel=True, cache=True)
def slice_axis(x, out, n, inner, start, stop):
    m = (stop - start) * inner
    rows = out.size // m
    o = out.reshape((rows, m))
    total = n * inner
    first = start * inner
    for r in prange(rows):
        src = x[r * total + first : r * total + first + m]  # one view per row, indexed from 0
        for q in range(m):
            o[r, q] = src[q]
"""

# CUDA: one thread per output element, reading its row's part of the input.
SLICE_CUDA_SOURCE = """
@cuda.jit(cache=True)
def _slice_axis(x, out, n, inner, start, stop):
    m = (stop - start) * inner
    total = n * inner
    first = start * inner
    for o in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        r = o // m
        out[o] = x[r * total + first + o - r * m]


def slice_axis(x, out, n, inner, start, stop):
    _slice_axis[blocks(out.size), THREADS](x, out, n, inner, start, stop)
"""


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
        return CpuKernel(SLICE_SOURCE, "slice_axis", (In(0, flat=True), FLAT_OUT, n, inner, a.start, a.stop))

    def cuda(self, a, out, x):
        n, inner = _axis_split(x, a.axis)
        return CudaKernel(SLICE_CUDA_SOURCE, "slice_axis", (In(0, flat=True), FLAT_OUT, n, inner, a.start, a.stop))
