"""The op registry: every op the language knows, each defined once in a family module."""

from . import activation, combine, conv, dense, io, loss, norm, pool, reduce, reshape, resize  # noqa: F401  (registers the ops)
from .base import REGISTRY, Attr, Attrs, Fusion, Op, ShapeError, register

__all__ = ["REGISTRY", "Attr", "Attrs", "Fusion", "Op", "ShapeError", "register"]
