"""Optimizers, updating the parameters in one pass over the model's flat arenas (PyTorch's rules).

An optimizer trains every parameter, or some (a trainer's `params=`): then it passes over the
ranges of the arena those occupy, and the others keep their values and their state.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..errors import CnncError


def _on_device(array) -> bool:
    return hasattr(array, "copy_to_host")


def all_finite(arena: np.ndarray) -> bool:
    """Whether every value of a flat host arena is finite.

    The trainer checks the gradients before an update and the parameters after it.
    """
    if arena.size < 2**20:  # NumPy's single-threaded pass beats starting the threads (7 us for LeNet)
        return bool(np.isfinite(arena).all())
    # Above, the parallel kernel (cnnc/kernels/cpu/finite.py): 1.1 ms for ResNet-18's 11M parameters, NumPy 3.7 ms.
    from ..backend.cpu.kernel import load
    from ..kernels import Kernel

    return load(Kernel("finite", "count_nonfinite"))(arena) == 0


def hyperparameter(owner: str, name: str, value, low: float = 0.0, high: float = math.inf, high_open: bool = False,
                   low_open: bool = False) -> float:
    """A finite real number in [low, high] (either end open if asked), else a CnncError saying which."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise CnncError(f"{owner}: {name} must be a finite number, got {value!r}")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        if math.isinf(high):
            bound = f"more than {low:g}" if low_open else f"at least {low:g}"
        else:
            bound = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise CnncError(f"{owner}: {name} must be {bound}, got {value!r}")
    return float(value)


class Optimizer:
    params = None  # the flat parameter arena it updates, once bound
    rule = ""  # its update rule: an entry of cnnc/kernels/{cpu,cuda}/optim.py

    def check(self) -> None:
        """Refuse hyperparameters that would turn parameters into NaN (called by every step: they may be set later)."""

    def bind(self, params, grads, segments: list[tuple[int, int]] | None = None) -> None:
        """Update `params` (a flat arena, in host or GPU memory) from `grads`, keeping state beside them;
        only the ranges `segments` (default: all of it)."""
        if self.params is not None and self.params is not params:
            raise CnncError("this optimizer already updates another model's parameters; give each trainer its own optimizer")
        self.check()
        self.params, self.grads = params, grads
        self.segments = [(0, params.shape[0])] if segments is None else list(segments)
        self.steps = 0
        from ..kernels import Kernel

        if _on_device(params):
            from ..backend.cuda.kernel import load
        else:
            from ..backend.cpu.kernel import load
        self._update = load(Kernel("optim", self.rule))  # its rule, written once for both targets in kernels/shared/optim.py
        self.reset()

    def zeros(self):
        """An arena of zeros beside the parameters (on the same device)."""
        if _on_device(self.params):
            from numba import cuda

            return cuda.to_device(np.zeros(self.params.shape, self.params.dtype))
        from .. import budget

        budget.require(self.params.nbytes, f"{type(self).__name__}'s state", "the parameter arena", "Use a smaller model.")
        return np.zeros_like(self.params)

    def reset(self) -> None:
        pass

    def _apply(self, arrays: tuple, scalars: tuple) -> None:
        """Run the update rule on each range of the arena: `arrays` are arena-sized (parameters,
        gradients, state), `scalars` the rule's hyperparameters."""
        for start, stop in self.segments:
            self._update(*(a[start:stop] for a in arrays), *scalars)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay, as torch.optim.SGD."""

    DEFAULT_LR = 0.02
    rule = "sgd"

    def __init__(self, lr: float = DEFAULT_LR, momentum: float = 0.0, weight_decay: float = 0.0, dampening: float = 0.0, nesterov: bool = False):
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.dampening, self.nesterov = dampening, nesterov
        self.check()

    def check(self) -> None:
        hyperparameter("SGD", "lr", self.lr)
        hyperparameter("SGD", "momentum", self.momentum)
        hyperparameter("SGD", "weight_decay", self.weight_decay)
        hyperparameter("SGD", "dampening", self.dampening, high=1.0)
        if not isinstance(self.nesterov, bool):
            raise CnncError(f"SGD: nesterov must be true or false, got {self.nesterov!r}")
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise CnncError("SGD: nesterov needs a momentum and no dampening (as in PyTorch)")

    def reset(self) -> None:
        self.buf = self.zeros()

    def step(self) -> None:
        self.check()
        self._apply((self.params, self.grads, self.buf), (self.lr, self.momentum, self.weight_decay, self.dampening, self.nesterov, self.steps == 0))
        self.steps += 1


class Adam(Optimizer):
    """Adam (Kingma and Ba), with L2 weight decay added to the gradient, as torch.optim.Adam."""

    DEFAULT_LR = 1e-3
    rule = "adam"

    def __init__(self, lr: float = DEFAULT_LR, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.check()

    def check(self) -> None:
        hyperparameter("Adam", "lr", self.lr)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise CnncError(f"Adam: betas must be a pair of numbers, got {self.betas!r}")
        for k, beta in enumerate(self.betas):
            hyperparameter("Adam", f"betas[{k}]", beta, high=1.0, high_open=True)
        # PyTorch accepts eps = 0, but then every parameter whose gradient is zero becomes 0/0 = NaN.
        hyperparameter("Adam", "eps", self.eps, low_open=True)
        hyperparameter("Adam", "weight_decay", self.weight_decay)

    def reset(self) -> None:
        self.m = self.zeros()
        self.v = self.zeros()

    def step(self) -> None:
        self.check()
        self.steps += 1
        self._apply((self.params, self.grads, self.m, self.v), (self.lr, self.betas[0], self.betas[1], self.eps, self.weight_decay, self.steps))
