"""One optimizer step over the model's flat parameter arena: a thread per element, with a grid stride."""

from numba import cuda

from ..shared.optim import adam_update, sgd_update
from .common import THREADS, blocks


@cuda.jit(cache=True)
def _sgd(p, g, buf, lr, momentum, weight_decay, dampening, nesterov, first):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        sgd_update(p, g, buf, i, lr, momentum, weight_decay, dampening, nesterov, first)


@cuda.jit(cache=True)
def _adam(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    c1 = 1.0 - beta1**step
    c2 = 1.0 - beta2**step
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        adam_update(p, g, m, v, i, lr, beta1, beta2, eps, weight_decay, c1, c2)


def sgd(p, *args):
    _sgd[blocks(p.size), THREADS](p, *args)


def adam(p, *args):
    _adam[blocks(p.size), THREADS](p, *args)
