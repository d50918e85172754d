"""Initializers with PyTorch's defaults, from a seeded generator."""

from __future__ import annotations

import math

import numpy as np

from ..graph import ParamSpec


def initialize(spec: ParamSpec, out: np.ndarray, rng: np.random.Generator) -> None:
    """Fill `out` as PyTorch initializes a fresh layer.

    conv and dense weights: Kaiming-uniform with a = sqrt(5), i.e. U(-b, b) with
    b = 1 / sqrt(fan_in); their biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    if spec.init == "zeros":
        out[...] = 0
    elif spec.init == "ones":
        out[...] = 1
    elif spec.init == "constant":
        out[...] = spec.value
    elif spec.init in ("kaiming_uniform", "fan_in_uniform"):
        # kaiming_uniform(a=sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in)
        bound = 1.0 / math.sqrt(spec.fan_in) if spec.fan_in > 0 else 0.0
        out[...] = rng.uniform(-bound, bound, size=out.shape)
    else:  # pragma: no cover - the op registry only names the ones above
        raise ValueError(f"unknown initializer {spec.init}")
