"""Filling a model's parameters and buffers from their specs, with a seeded generator."""

from __future__ import annotations

import numpy as np

from ..graph import ParamSpec
from ..initializers import fill


def initialize(spec: ParamSpec, out: np.ndarray, rng: np.random.Generator) -> None:
    """Fill `out` as the spec's initializer says (PyTorch's defaults unless the program chose another).

    Values are drawn in float64 and rounded once into `out`, so a float32 and a float64 model of
    one seed start from the same numbers.
    """
    values = np.empty(out.shape, np.float64)
    fill(spec.init, spec.args, values, rng, spec.fan_in)
    out[...] = values
