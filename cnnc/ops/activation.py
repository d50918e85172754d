"""Activations: elementwise nonlinearities and the softmax family."""

from __future__ import annotations

from .base import Attr, AttrError, Fusion, Op, ShapeError, TensorType, expect_float, integer, number, register


class _Elementwise(Op):
    """An elementwise function: the output has the input's type."""

    fusion = Fusion.ELEMENTWISE

    def infer(self, a, x):
        expect_float(self.name, x)
        return x


@register
class Relu(_Elementwise):
    """max(x, 0)."""

    name = "relu"


@register
class LeakyRelu(_Elementwise):
    """x if x > 0 else slope * x."""

    name = "leaky_relu"
    attrs = (Attr("slope", number, 0.01, doc="negative slope"),)


@register
class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x))."""

    name = "sigmoid"


@register
class Tanh(_Elementwise):
    """Hyperbolic tangent."""

    name = "tanh"


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


@register
class Softmax(_SoftmaxFamily):
    """exp(x) / sum(exp(x)) along an axis, computed stably."""

    name = "softmax"


@register
class LogSoftmax(_SoftmaxFamily):
    """x - log(sum(exp(x))) along an axis, computed stably."""

    name = "log_softmax"
