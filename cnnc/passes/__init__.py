"""Graph -> graph passes. Each is a function of a Graph; none knows about kernels."""

from .shapes import concrete_shapes, infer_shapes

__all__ = ["infer_shapes", "concrete_shapes"]
