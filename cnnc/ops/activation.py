"""Elementwise functions (activations, math, arithmetic with a number) and the softmax family."""

from __future__ import annotations

from ..kernels import OUT, In, Kernel
from .base import (
    Attr,
    AttrError,
    Expr,
    Fusion,
    Op,
    ShapeError,
    TensorType,
    evaluate_expression,
    expect_float,
    integer,
    number,
    param,
    register,
)


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

    def fold(self, a, values):
        return evaluate_expression(self.expr, {"a": values[0], **self.scalars(a)})

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

    def fold(self, a, values):
        fwd = self.forward()
        return evaluate_expression(fwd.grad_expr, {"a": values[0], "b": values[1], **fwd.scalars(a)})


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
    attrs = (Attr("slope", number, 0.01),)
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


# -- elementwise math, as PyTorch computes it (values and gradients at 0, negatives and infinities alike).
# A division by zero raises in Numba's CPU kernels, so each one is guarded and gives the IEEE quotient.


@_with_grad
class Sqrt(_Elementwise):
    """Square root; NaN below 0. Its gradient dy / (2 * y) is infinite at 0."""

    name = "sqrt"
    expr = "math.sqrt(a)"
    grad_expr = "a / (b + b) if b != 0.0 else a * math.copysign(math.inf, b)"


@_with_grad
class Abs(_Elementwise):
    """Absolute value; its gradient is dy * sign(x), 0 at 0 (as torch.sign)."""

    name = "abs"
    expr = "math.fabs(a)"
    grad_expr = "a if b > 0 else (-a if b < 0 else a * b * 0.0)"  # the last: 0, or NaN where x or dy is NaN
    grad_reads = "input"


@_with_grad
class Exp(_Elementwise):
    """e ** x."""

    name = "exp"
    expr = "math.exp(a)"
    grad_expr = "a * b"


@_with_grad
class Log(_Elementwise):
    """Natural logarithm: -inf at 0, NaN below 0. Its gradient is dy / x."""

    name = "log"
    expr = "math.log(a)"
    grad_expr = "a / b if b != 0.0 else a * math.copysign(math.inf, b)"
    grad_reads = "input"


@_with_grad
class Square(_Elementwise):
    """x * x."""

    name = "square"
    expr = "a * a"
    grad_expr = "a * (b + b)"
    grad_reads = "input"


@_with_grad
class Reciprocal(_Elementwise):
    """1 / x (infinite at 0); `k / x` in the language is `k * reciprocal(x)`, as PyTorch computes it."""

    name = "reciprocal"
    expr = "1.0 / a if a != 0.0 else math.copysign(math.inf, a)"
    grad_expr = "-a * (b * b)"


# -- arithmetic with a number: `-x`, `k * x`, `x / k`, `x + k`, `x - k`, `k - x` in the language.
# Their gradients are these ops again, reading dy alone.


@register
class Neg(_Elementwise):
    """-x."""

    name = "neg"
    expr = "-a"

    def grad(self, g, dy):
        g.input_grad(0, g.apply("neg", [dy]))


@register
class Scale(_Elementwise):
    """x * factor (`x / k` is x * (1 / k))."""

    name = "scale"
    attrs = (Attr("factor", number),)
    expr = "a * factor"

    def scalars(self, a):
        return {"factor": a.factor}

    def passes_input(self, a, training, out, x):
        return a.factor == 1.0

    def grad(self, g, dy):
        g.input_grad(0, g.apply("scale", [dy], factor=g.node.attrs["factor"]))


@register
class Shift(_Elementwise):
    """x + offset (`x - k` is x + (-k))."""

    name = "shift"
    attrs = (Attr("offset", number),)
    expr = "a + offset"

    def scalars(self, a):
        return {"offset": a.offset}

    def passes_input(self, a, training, out, x):
        return a.offset == 0.0

    def grad(self, g, dy):
        g.input_grad(0, dy)


def axis(value):
    value = integer(value)
    if value == 0:
        raise AttrError("axis 0 is the batch; softmax runs within one example")
    return value


class _SoftmaxFamily(Op):
    fusion = Fusion.REDUCTION
    attrs = (Attr("axis", axis, 1),)

    def infer(self, a, x):
        expect_float(self.name, x)
        if not -x.rank <= a.axis < x.rank or a.axis % x.rank == 0:
            raise ShapeError(f"{self.name}: axis {a.axis} is out of range for {x}")
        return x

    def flops(self, a, out, x):
        return 4 * out.sample_elements()

    def cpu(self, a, out, x):
        return Kernel("softmax", self.name, (In(0), OUT, *axis_split(x, a.axis)))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/softmax.py

    def grad(self, g, dy):
        g.input_grad(0, g.apply(f"{self.name}_grad", [dy, g.node.name], axis=g.node.attrs["axis"]))


def axis_split(t: TensorType, axis: int) -> tuple[int, int, int]:
    """(outer, n, inner): the physical buffer seen as [outer, n, inner] with the logical `axis` as n.

    The batch size is not known here, so `outer` counts per example; kernels
    multiply by the buffer's first dimension.
    """
    from ..layout import physical_axis, physical_shape

    shape = physical_shape(t, 1)
    p = physical_axis(t, axis)
    outer = 1
    for d in shape[1:p]:
        outer *= d
    inner = 1
    for d in shape[p + 1 :]:
        inner *= d
    return outer, shape[p], inner


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
        return Kernel("softmax", self.name, (In(0), In(1), OUT, *axis_split(dy, a.axis)))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/softmax.py


register(type("SoftmaxGrad", (_SoftmaxGrad,), {"name": "softmax_grad"}))
register(type("LogSoftmaxGrad", (_SoftmaxGrad,), {"name": "log_softmax_grad"}))


@register
class PRelu(Op):
    """x if x > 0 else weight[c] * x: a learned slope per channel (PyTorch's nn.PReLU(channels), init 0.25).

    An elementwise expression with a per-channel parameter, so it fuses as an epilogue like
    any activation. Its input gradient is one too; its weight gradient sums dy * x over every
    axis but the channels (where x <= 0), a reduction of its own (cnnc/kernels/*/prelu.py).
    """

    name = "prelu"
    fusion = Fusion.ELEMENTWISE
    attrs = (Attr("init", number, 0.25),)

    def infer(self, a, x):
        expect_float(self.name, x)
        if x.rank not in (2, 4) or not x.batched:
            raise ShapeError(f"prelu expects [channels] or [channels, height, width] input, got {x}")
        return x

    def params(self, a, x):
        return [param("weight", (x.shape[1],), "constant", args=(a.init,))]

    def expression(self, a, out, x):
        return Expr("a if a > 0 else P_weight * a", params=("weight",))

    def grad(self, g, dy):
        x, weight = g.node.inputs[0], {"weight": g.node.params["weight"]}
        if g.needs_input_grad(0):
            g.input_grad(0, g.apply("prelu_grad_input", [dy, x], weight))
        g.param_grad("weight", g.apply("prelu_grad_weight", [x, dy]))


@register
class PReluGradInput(Op):
    """dx = dy if x > 0 else weight[c] * dy."""

    name = "prelu_grad_input"
    inputs = 2
    internal = True
    fusion = Fusion.ELEMENTWISE

    def infer(self, a, dy, x):
        return dy

    def expression(self, a, out, dy, x):
        return Expr("a if b > 0 else P_weight * a", params=("weight",))


@register
class PReluGradWeight(Op):
    """dweight[c] = the sum of dy * x over every axis but the channels, where x <= 0."""

    name = "prelu_grad_weight"
    inputs = 2
    internal = True
    fusion = Fusion.REDUCTION

    def infer(self, a, x, dy):
        return TensorType((x.shape[1],), x.dtype)

    def flops(self, a, out, x, dy):
        return 2 * x.sample_elements()

    def cpu(self, a, out, x, dy):
        # Channels are the last physical axis of both [N, C] and NHWC buffers.
        return Kernel("prelu", "prelu_grad_weight", (In(0, flat=True), In(1, flat=True), OUT))

    cuda = cpu  # the same entry in cnnc/kernels/cuda/prelu.py
