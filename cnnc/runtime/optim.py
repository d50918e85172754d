"""Optimizers, updating every parameter in one pass over the model's flat arenas (PyTorch's rules)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..errors import CnncError


# Each update rule once, for element i of the flat arenas; each target runs it in its parallel
# loop (prange on the CPU, a grid-stride loop on the GPU) and compiles it like any kernel.
RULES = {  # name: (parameters, setup before the loop, the rule)
    "sgd": ("p, g, buf, lr, momentum, weight_decay, dampening, nesterov, first", "", """
d = g[i] + weight_decay * p[i]
if momentum != 0.0:
    if first:
        buf[i] = d
    else:
        buf[i] = momentum * buf[i] + (1.0 - dampening) * d
    d = d + momentum * buf[i] if nesterov else buf[i]
p[i] -= lr * d
"""),
    "adam": ("p, g, m, v, lr, beta1, beta2, eps, weight_decay, step", """
c1 = 1.0 - beta1**step
c2 = 1.0 - beta2**step
""", """
d = g[i] + weight_decay * p[i]
m[i] = beta1 * m[i] + (1.0 - beta1) * d
v[i] = beta2 * v[i] + (1.0 - beta2) * d * d
p[i] -= lr * (m[i] / c1) / (math.sqrt(v[i] / c2) + eps)
"""),
}


def source(target: str) -> str:
    """The kernels `sgd` and `adam` of a target (on the GPU, host launchers of `_sgd` and `_adam`)."""
    from ..ops.templates import parallel_kernel

    parts = []
    for name, (params, setup, rule) in RULES.items():
        kernel = name if target == "cpu" else "_" + name
        parts.append(parallel_kernel(target, kernel, params, rule, "i", "p.size", setup))
        if target == "cuda":
            parts.append(f"def {name}(p, *args):\n    _{name}[blocks(p.size), THREADS](p, *args)\n")
    return "\n\n".join(parts)


def _on_device(array) -> bool:
    return hasattr(array, "copy_to_host")


# A finite-values check over a whole arena, in parallel: the trainer runs it on the gradients
# before an update and on the parameters after it (1.1 ms for ResNet-18's 11M parameters, NumPy 3.7 ms).
FINITE_SOURCE = """
@njit(parallel=True, cache=True)
def count_nonfinite(a):
    n = 0
    for i in prange(a.size):
        if not np.isfinite(a[i]):
            n += 1
    return n
"""


def all_finite(arena: np.ndarray) -> bool:
    """Whether every value of a flat host arena is finite."""
    if arena.size < 2**20:  # NumPy's single-threaded pass beats starting the threads (7 us for LeNet)
        return bool(np.isfinite(arena).all())
    from ..backend.cpu.kernel import CpuKernel, load

    return load(CpuKernel(FINITE_SOURCE, "count_nonfinite"))(arena) == 0


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

    def check(self) -> None:
        """Refuse hyperparameters that would turn parameters into NaN (called by every step: they may be set later)."""

    def bind(self, params, grads) -> None:
        """Update `params` (a flat arena, in host or GPU memory) from `grads`, keeping state beside them."""
        if self.params is not None and self.params is not params:
            raise CnncError("this optimizer already updates another model's parameters; give each trainer its own optimizer")
        self.check()
        self.params, self.grads = params, grads
        self.steps = 0
        if _on_device(params):
            from ..backend.cuda.kernel import CudaKernel, load

            self._kernels = {name: load(CudaKernel(source("cuda"), name)) for name in RULES}
        else:
            from ..backend.cpu.kernel import CpuKernel, load

            self._kernels = {name: load(CpuKernel(source("cpu"), name)) for name in RULES}
        self.reset()

    def zeros(self):
        """An arena of zeros beside the parameters (on the same device)."""
        if _on_device(self.params):
            from numba import cuda

            return cuda.to_device(np.zeros(self.params.shape, self.params.dtype))
        from ..backend import budget

        budget.require(self.params.nbytes, f"{type(self).__name__}'s state", "the parameter arena", "Use a smaller model.")
        return np.zeros_like(self.params)

    def reset(self) -> None:
        pass


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay, as torch.optim.SGD."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0, dampening: float = 0.0, nesterov: bool = False):
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
        self._kernels["sgd"](self.params, self.grads, self.buf, self.lr, self.momentum, self.weight_decay, self.dampening, self.nesterov, self.steps == 0)
        self.steps += 1


class Adam(Optimizer):
    """Adam (Kingma and Ba), with L2 weight decay added to the gradient, as torch.optim.Adam."""

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
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
        self._kernels["adam"](self.params, self.grads, self.m, self.v, self.lr, self.betas[0], self.betas[1], self.eps, self.weight_decay, self.steps)
