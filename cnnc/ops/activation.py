"""Activations: elementwise nonlinearities and the softmax family."""

from __future__ import annotations

from ..backend.cpu.kernel import OUT, CpuKernel, In
from ..backend.cuda.kernel import CudaKernel
from .base import Attr, AttrError, Expr, Fusion, Op, ShapeError, TensorType, expect_float, integer, number, register
from .templates import elementwise, parallel_kernel


class _Elementwise(Op):
    """An elementwise function y = f(x), given as an expression over `a` (x).

    Its gradient is another elementwise op, dx = g(dy, v), over `a` (dy) and
    `b` (v: the input x or the output y, as `grad_reads` says).
    """

    fusion = Fusion.ELEMENTWISE
    expr = ""
    grad_expr = ""
    grad_reads = "output"  # or "input"

    def scalars(self, a) -> dict:
        return {}

    def infer(self, a, x):
        expect_float(self.name, x)
        return x

    def expression(self, a, out, x):
        return Expr(self.expr, tuple(self.scalars(a).items()))

    def cpu(self, a, out, x):
        return elementwise(self.name, self.expr, 1, **self.scalars(a))

    def grad(self, g, dy):
        v = g.node.name if self.grad_reads == "output" else g.node.inputs[0]
        g.input_grad(0, g.apply(f"{self.name}_grad", [dy, v], **g.node.attrs))


class _ElementwiseGrad(Op):
    """dx = grad_expr(dy, v) of the elementwise op `forward`."""

    inputs = 2
    internal = True
    fusion = Fusion.ELEMENTWISE
    forward: type[_Elementwise]

    def infer(self, a, dy, v):
        return dy

    def expression(self, a, out, dy, v):
        fwd = self.forward()
        return Expr(fwd.grad_expr, tuple(fwd.scalars(a).items()))

    def cpu(self, a, out, dy, v):
        fwd = self.forward()
        return elementwise(self.name, fwd.grad_expr, 2, **fwd.scalars(a))


def _with_grad(cls: type[_Elementwise]) -> type[_Elementwise]:
    """Register an elementwise op and its gradient op together."""
    register(cls)
    grad = type(f"{cls.__name__}Grad", (_ElementwiseGrad,), {"name": f"{cls.name}_grad", "forward": cls, "attrs": cls.attrs})
    register(grad)
    return cls


@_with_grad
class Relu(_Elementwise):
    """max(x, 0)."""

    name = "relu"
    expr = "0.0 if a < 0 else a"  # NaN stays NaN, as in PyTorch
    grad_expr = "a if b > 0 else 0.0"


@_with_grad
class LeakyRelu(_Elementwise):
    """x if x > 0 else slope * x."""

    name = "leaky_relu"
    attrs = (Attr("slope", number, 0.01, doc="negative slope"),)
    expr = "a if a > 0 else a * slope"
    grad_expr = "a if b > 0 else a * slope"
    grad_reads = "input"

    def scalars(self, a):
        return {"slope": a.slope}


@_with_grad
class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x))."""

    name = "sigmoid"
    expr = "1.0 / (1.0 + math.exp(-a)) if a >= 0 else math.exp(a) / (1.0 + math.exp(a))"
    grad_expr = "a * b * (1.0 - b)"


@_with_grad
class Tanh(_Elementwise):
    """Hyperbolic tangent."""

    name = "tanh"
    expr = "math.tanh(a)"
    grad_expr = "a * (1.0 - b * b)"


def axis(value):
    value = integer(value)
    if value == 0:
        raise AttrError("axis 0 is the batch; softmax runs within one example")
    return value


class _SoftmaxFamily(Op):
    fusion = Fusion.REDUCTION
    attrs = (Attr("axis", axis, 1, doc="the axis to normalize over (1 = channels, -1 = last)"),)

    def infer(self, a, x):
        expect_float(self.name, x)
        if not -x.rank <= a.axis < x.rank or a.axis % x.rank == 0:
            raise ShapeError(f"{self.name}: axis {a.axis} is out of range for {x}")
        return x

    def flops(self, a, out, x):
        return 4 * out.sample_elements()

    def cpu(self, a, out, x):
        return CpuKernel(SOFTMAX_SOURCE, self.name, (In(0), OUT, *axis_split(x, a.axis)))

    def cuda(self, a, out, x):
        return CudaKernel(SOFTMAX_CUDA_SOURCE, self.name, (In(0), OUT, *axis_split(x, a.axis)))

    def grad(self, g, dy):
        g.input_grad(0, g.apply(f"{self.name}_grad", [dy, g.node.name], axis=g.node.attrs["axis"]))


def axis_split(t: TensorType, axis: int) -> tuple[int, int, int]:
    """(outer, n, inner): the physical buffer seen as [outer, n, inner] with the logical `axis` as n.

    The batch size is not known here, so `outer` counts per example; kernels
    multiply by the buffer's first dimension.
    """
    from ..backend.layout import physical_axis, physical_shape

    shape = physical_shape(t, 1)
    p = physical_axis(t, axis)
    outer = 1
    for d in shape[1:p]:
        outer *= d
    inner = 1
    for d in shape[p + 1 :]:
        inner *= d
    return outer, shape[p], inner


# Softmax along one axis of a buffer seen as [batch * outer, n, inner]: each target runs
# these line bodies over every line (the line starting at `base`, its n values `inner` apart),
# in parallel on the CPU and a thread per line on the GPU, where neighbouring threads take
# neighbouring `inner` positions so that their reads along a channel axis coalesce.
SOFTMAX_LINE = """
m = -math.inf
for k in range(n):
    m = max(m, float(x[base + k * inner]))
s = 0.0
for k in range(n):
    s += math.exp(x[base + k * inner] - m)
if log:
    ls = math.log(s)
    for k in range(n):
        out[base + k * inner] = x[base + k * inner] - m - ls
else:
    for k in range(n):
        out[base + k * inner] = math.exp(x[base + k * inner] - m) / s
"""

SOFTMAX_GRAD_LINE = """
s = 0.0
if log:  # dx = dy - softmax * sum(dy)
    for k in range(n):
        s += dy[base + k * inner]
    for k in range(n):
        j = base + k * inner
        dx[j] = dy[j] - math.exp(y[j]) * s
else:  # dx = y * (dy - sum(dy * y))
    for k in range(n):
        s += dy[base + k * inner] * y[base + k * inner]
    for k in range(n):
        j = base + k * inner
        dx[j] = y[j] * (dy[j] - s)
"""

def _over_lines(target: str, name: str, arrays: str, body: str) -> str:
    line = "o = line // inner\nbase = o * n * inner + (line - o * inner)\n"
    return parallel_kernel(target, name, f"{arrays}, lines, n, inner, log", line + body.strip(), "line", "lines")


def _line_kernels(target: str) -> str:
    return (_over_lines(target, "_softmax_lines", "x, out", SOFTMAX_LINE) + "\n\n"
            + _over_lines(target, "_softmax_grad_lines", "dy, y, dx", SOFTMAX_GRAD_LINE))


# The four entries of each target (name, arrays), which run the line kernels on flat views.
_ENTRIES = (("softmax", "x, out"), ("log_softmax", "x, out"), ("softmax_grad", "dy, y, dx"), ("log_softmax_grad", "dy, y, dx"))


def _entries(target: str) -> str:
    parts = []
    for name, arrays in _ENTRIES:
        log = name.startswith("log")
        kernel = "_softmax_grad_lines" if name.endswith("grad") else "_softmax_lines"
        names = arrays.split(", ")
        flat = ", ".join(f"{a}.reshape({a}.size)" for a in names)
        lines = f"{names[0]}.shape[0] * outer * inner"
        if target == "cpu":
            parts.append(f"@njit(cache=True)\ndef {name}({arrays}, outer, n, inner):\n"
                         f"    {kernel}({flat}, {lines}, n, inner, {log})\n")
        else:
            parts.append(f"def {name}({arrays}, outer, n, inner):\n    lines = {lines}\n"
                         f"    {kernel}[blocks(lines), THREADS]({flat}, lines, n, inner, {log})\n")
    return "\n\n".join(parts)


SOFTMAX_SOURCE = _line_kernels("cpu") + "\n\n" + _entries("cpu")
SOFTMAX_CUDA_SOURCE = _line_kernels("cuda") + "\n\n" + _entries("cuda")


@register
class Softmax(_SoftmaxFamily):
    """exp(x) / sum(exp(x)) along an axis, computed stably."""

    name = "softmax"


@register
class LogSoftmax(_SoftmaxFamily):
    """x - log(sum(exp(x))) along an axis, computed stably."""

    name = "log_softmax"


class _SoftmaxGrad(Op):
    """The gradient of softmax or log_softmax from dy and the forward output y."""

    inputs = 2
    internal = True
    fusion = Fusion.REDUCTION
    attrs = (Attr("axis", int),)

    def infer(self, a, dy, y):
        return dy

    def cpu(self, a, out, dy, y):
        return CpuKernel(SOFTMAX_SOURCE, self.name, (In(0), In(1), OUT, *axis_split(dy, a.axis)))

    def cuda(self, a, out, dy, y):
        return CudaKernel(SOFTMAX_CUDA_SOURCE, self.name, (In(0), In(1), OUT, *axis_split(dy, a.axis)))


register(type("SoftmaxGrad", (_SoftmaxGrad,), {"name": "softmax_grad"}))
register(type("LogSoftmaxGrad", (_SoftmaxGrad,), {"name": "log_softmax_grad"}))
