"""Parameter initializers: each one's name, arguments and fill, side by side.

A layer's parameters start as PyTorch starts a fresh layer (`fan_in_uniform`,
`zeros`, `ones`, ...). A program may choose another per layer with
`init=` / `bias_init=`, e.g. `conv(64, kernel=4, init=normal(0.02))`; the
language calls the public ones by name (`normal(0.02)`, `xavier`, `bilinear`).
Every fill follows `torch.nn.init` (fans from the tensor's shape as
`_calculate_fan_in_and_fan_out` computes them), drawing from the model's
seeded generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Initializer:
    """One initializer and its arguments, as a program or an op chose it: `normal(0.02)` is
    Initializer("normal", (0.02, 0.0))."""

    name: str
    args: tuple[float, ...] = ()

    def __str__(self) -> str:
        spec = PUBLIC.get(self.name)
        if spec is None or not spec.arguments:
            return self.name
        return f"{self.name}({', '.join(f'{a}={v:g}' for a, v in zip(spec.arguments, self.args))})"


@dataclass(frozen=True)
class Spec:
    """An initializer's arguments (with defaults; None: required) and its fill(out, rng, fan_in, *args)."""

    arguments: tuple[str, ...]
    defaults: tuple[float | None, ...]
    fill: Callable[..., None]
    public: bool = True


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight as PyTorch computes them from its shape: [out, in, *kernel]."""
    if len(shape) < 2:
        raise ValueError(f"fans need a weight of two or more dimensions, got shape {list(shape)}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan_in_uniform(out, rng, fan_in):
    # PyTorch's default for conv and dense weights (kaiming_uniform with a = sqrt(5)) and their biases:
    # U(-b, b) with b = 1 / sqrt(fan_in).
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    out[...] = rng.uniform(-bound, bound, size=out.shape)


def _constant(out, rng, fan_in, value):
    out[...] = value


def _values(out, rng, fan_in, *values):
    out[...] = np.asarray(values).reshape(out.shape)


def _normal(out, rng, fan_in, std, mean):
    out[...] = rng.normal(mean, std, size=out.shape)


def _uniform(out, rng, fan_in, low, high):
    out[...] = rng.uniform(low, high, size=out.shape)


def _xavier_uniform(out, rng, fan_in, gain):
    fin, fout = fans(out.shape)
    bound = gain * math.sqrt(6.0 / (fin + fout))
    out[...] = rng.uniform(-bound, bound, size=out.shape)


def _xavier_normal(out, rng, fan_in, gain):
    fin, fout = fans(out.shape)
    out[...] = rng.normal(0.0, gain * math.sqrt(2.0 / (fin + fout)), size=out.shape)


def _kaiming_gain(a: float) -> float:
    return math.sqrt(2.0 / (1.0 + a * a))  # leaky_relu's gain, torch.nn.init.calculate_gain


def _kaiming_uniform(out, rng, fan_in, a):
    bound = _kaiming_gain(a) * math.sqrt(3.0 / fans(out.shape)[0])
    out[...] = rng.uniform(-bound, bound, size=out.shape)


def _kaiming_normal(out, rng, fan_in, a):
    out[...] = rng.normal(0.0, _kaiming_gain(a) / math.sqrt(fans(out.shape)[0]), size=out.shape)


def bilinear_kernel(height: int, width: int) -> np.ndarray:
    """The bilinear interpolation filter of a transposed convolution that upsamples by about size / 2
    (FCN's get_upsampling_weight, per axis so that non-square kernels work)."""

    def axis(size: int) -> np.ndarray:
        factor = (size + 1) // 2
        center = factor - 1 if size % 2 == 1 else factor - 0.5
        return 1.0 - np.abs(np.arange(size) - center) / factor

    return np.outer(axis(height), axis(width))


def _bilinear(out, rng, fan_in):
    # weight [in, out / groups, kh, kw] of a conv_transpose: channel i upsamples into channel i, the others
    # start at zero; with one output channel per group (depthwise) every channel gets the filter.
    if out.ndim != 4:
        raise ValueError(f"bilinear initializes a conv_transpose weight [in, out, kh, kw], got shape {list(out.shape)}")
    out[...] = 0.0
    filt = bilinear_kernel(out.shape[2], out.shape[3])
    if out.shape[1] == 1:
        out[:, 0] = filt
    else:
        for i in range(min(out.shape[0], out.shape[1])):
            out[i, i] = filt


TABLE: dict[str, Spec] = {
    # the defaults of the ops (not written in programs)
    "fan_in_uniform": Spec((), (), _fan_in_uniform, public=False),
    "values": Spec((), (), _values, public=False),  # a constant array given by the op (normalize's mean)
    # what programs choose
    "zeros": Spec((), (), lambda out, rng, fan_in: _constant(out, rng, fan_in, 0.0)),
    "ones": Spec((), (), lambda out, rng, fan_in: _constant(out, rng, fan_in, 1.0)),
    "constant": Spec(("value",), (None,), _constant),
    "normal": Spec(("std", "mean"), (1.0, 0.0), _normal),
    "uniform": Spec(("low", "high"), (0.0, 1.0), _uniform),
    "xavier_uniform": Spec(("gain",), (1.0,), _xavier_uniform),
    "xavier_normal": Spec(("gain",), (1.0,), _xavier_normal),
    "kaiming_uniform": Spec(("a",), (0.0,), _kaiming_uniform),
    "kaiming_normal": Spec(("a",), (0.0,), _kaiming_normal),
    "bilinear": Spec((), (), _bilinear),
}
ALIASES = {"xavier": "xavier_uniform", "kaiming": "kaiming_uniform"}
PUBLIC = {name: spec for name, spec in TABLE.items() if spec.public}
NAMES = (*PUBLIC, *ALIASES)  # the names a program may use


def make(name: str, positional: list, keywords: dict) -> Initializer:
    """The initializer a program wrote (`normal(0.02)`, `xavier`); raises ValueError with what is wrong."""
    spec = PUBLIC[ALIASES.get(name, name)]
    if name == "normal" and len(positional) > 1:  # torch.nn.init.normal_ takes (mean, std): say which is which
        raise ValueError("normal takes the standard deviation by position and the mean by keyword: normal(0.02, mean=1)")
    if len(positional) > len(spec.arguments):
        raise ValueError(f"{name} takes at most {len(spec.arguments)} argument(s), got {len(positional)}")
    values = dict(zip(spec.arguments, positional))
    for key, value in keywords.items():
        if key not in spec.arguments:
            takes = ", ".join(spec.arguments) or "no arguments"
            raise ValueError(f"{name} has no argument '{key}' (it takes {takes})")
        if key in values:
            raise ValueError(f"{name}: argument '{key}' given twice")
        values[key] = value
    args = []
    for argument, default in zip(spec.arguments, spec.defaults):
        value = values.get(argument, default)
        if value is None:
            raise ValueError(f"{name} needs argument '{argument}'")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name}: {argument} must be a finite number, got {value!r}")
        args.append(float(value))
    if name == "normal" and args[0] < 0 or name == "uniform" and args[0] > args[1]:
        raise ValueError(f"{name}({', '.join(f'{a:g}' for a in args)}) describes no distribution")
    return Initializer(ALIASES.get(name, name), tuple(args))


def fill(init: str, args: tuple[float, ...], out: np.ndarray, rng: np.random.Generator, fan_in: int) -> None:
    """Fill `out` in place with the initializer `init`."""
    TABLE[init].fill(out, rng, fan_in, *args)
