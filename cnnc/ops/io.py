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
    attrs = (Attr("type", lambda t: t),)

    def infer(self, a):
        return a.type

    def flops(self, a, out):
        return 0
