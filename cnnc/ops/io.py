"""The graph's entry points: a network input is a node too, with no inputs of its own."""

from __future__ import annotations

from .base import Attr, Fusion, Op, register


@register
class Input(Op):
    """A network input (written `input name: [dims]`); its type is fixed when it is declared."""

    name = "input"
    inputs = 0
    internal = True  # not callable from the language: `input` is a statement
    fusion = Fusion.OPAQUE
    placeholder = True
    attrs = (Attr("type", lambda t: t),)

    def infer(self, a):
        return a.type

    def flops(self, a, out):
        return 0


@register
class Fill(Op):
    """A constant tensor: autodiff seeds the loss's gradient with fill(1.0).

    It has no kernel: the executor computes constants itself, once, in buffers of their own.
    """

    name = "fill"
    inputs = 0
    internal = True
    constant = True
    attrs = (Attr("value", float), Attr("shape", tuple, ()))

    def infer(self, a):
        from ..graph import TensorType

        return TensorType(tuple(a.shape), "float32")

    def flops(self, a, out):
        return 0
