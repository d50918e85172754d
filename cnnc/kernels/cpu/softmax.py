"""Softmax and log-softmax along any axis, and their gradients: a parallel loop over the lines."""

from numba import njit, prange

from ..shared.softmax import line_start, softmax_grad_line, softmax_line


@njit(parallel=True, cache=True)
def _softmax_lines(x, out, lines, n, inner, log):
    for line in prange(lines):
        softmax_line(x, out, line_start(line, n, inner), n, inner, log)


@njit(parallel=True, cache=True)
def _softmax_grad_lines(dy, y, dx, lines, n, inner, log):
    for line in prange(lines):
        softmax_grad_line(dy, y, dx, line_start(line, n, inner), n, inner, log)


# Entries: the buffers seen as [batch * outer, n, inner], flat.
@njit(cache=True)
def softmax(x, out, outer, n, inner):
    _softmax_lines(x.reshape(x.size), out.reshape(out.size), x.shape[0] * outer * inner, n, inner, False)


@njit(cache=True)
def log_softmax(x, out, outer, n, inner):
    _softmax_lines(x.reshape(x.size), out.reshape(out.size), x.shape[0] * outer * inner, n, inner, True)


@njit(cache=True)
def softmax_grad(dy, y, dx, outer, n, inner):
    _softmax_grad_lines(dy.reshape(dy.size), y.reshape(y.size), dx.reshape(dx.size), dy.shape[0] * outer * inner, n, inner, False)


@njit(cache=True)
def log_softmax_grad(dy, y, dx, outer, n, inner):
    _softmax_grad_lines(dy.reshape(dy.size), y.reshape(y.size), dx.reshape(dx.size), dy.shape[0] * outer * inner, n, inner, True)
