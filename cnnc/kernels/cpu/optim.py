"""One optimizer step over the model's flat parameter arena, in parallel."""

from numba import njit, prange

from ..shared.optim import adam_update, sgd_update


@njit(parallel=True, cache=True)
def sgd(p, g, buf, lr, momentum, weight_decay, dampening, nesterov, first):
    for i in prange(p.size):
        sgd_update(p, g, buf, i, lr, momentum, weight_decay, dampening, nesterov, first)


@njit(parallel=True, cache=True)
def adam(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    c1 = 1.0 - beta1**step
    c2 = 1.0 - beta2**step
    for i in prange(p.size):
        adam_update(p, g, m, v, i, lr, beta1, beta2, eps, weight_decay, c1, c2)
