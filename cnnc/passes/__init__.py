"""Graph -> graph passes. Each is a function of a Graph; none knows about kernels."""

from .shapes import infer_shapes

__all__ = ["infer_shapes"]
