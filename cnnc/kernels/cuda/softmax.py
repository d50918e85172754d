"""Softmax and log-softmax along any axis, and their gradients: a thread per line, with a grid stride."""

from numba import cuda

from ..shared.softmax import line_start, softmax_grad_line, softmax_line
from .common import THREADS, blocks


@cuda.jit(cache=True)
def _softmax_lines(x, out, lines, n, inner, log):
    for line in range(cuda.grid(1), lines, cuda.gridsize(1)):
        softmax_line(x, out, line_start(line, n, inner), n, inner, log)


@cuda.jit(cache=True)
def _softmax_grad_lines(dy, y, dx, lines, n, inner, log):
    for line in range(cuda.grid(1), lines, cuda.gridsize(1)):
        softmax_grad_line(dy, y, dx, line_start(line, n, inner), n, inner, log)


# Launchers: the buffers seen as [batch * outer, n, inner], flat.
def softmax(x, out, outer, n, inner):
    lines = x.shape[0] * outer * inner
    _softmax_lines[blocks(lines), THREADS](x.reshape(x.size), out.reshape(out.size), lines, n, inner, False)


def log_softmax(x, out, outer, n, inner):
    lines = x.shape[0] * outer * inner
    _softmax_lines[blocks(lines), THREADS](x.reshape(x.size), out.reshape(out.size), lines, n, inner, True)


def softmax_grad(dy, y, dx, outer, n, inner):
    lines = dy.shape[0] * outer * inner
    _softmax_grad_lines[blocks(lines), THREADS](dy.reshape(dy.size), y.reshape(y.size), dx.reshape(dx.size), lines, n, inner, False)


def log_softmax_grad(dy, y, dx, outer, n, inner):
    lines = dy.shape[0] * outer * inner
    _softmax_grad_lines[blocks(lines), THREADS](dy.reshape(dy.size), y.reshape(y.size), dx.reshape(dx.size), lines, n, inner, True)
