"""Softmax and log-softmax along one line of a buffer seen as [outer, n, inner], and their gradients.

The line starting at `base` holds n values `inner` apart. The CPU runs the lines in
parallel; the GPU gives each line a thread, neighbouring threads taking neighbouring
`inner` positions so that their reads along a channel axis coalesce.
"""

import math


def softmax_line(x, out, base, n, inner, log):
    m = -math.inf
    for k in range(n):
        m = max(m, float(x[base + k * inner]))
    s = 0.0
    for k in range(n):
        s += math.exp(x[base + k * inner] - m)
    if log:
        ls = math.log(s)
        for k in range(n):
            out[base + k * inner] = x[base + k * inner] - m - ls
    else:
        for k in range(n):
            out[base + k * inner] = math.exp(x[base + k * inner] - m) / s


def softmax_grad_line(dy, y, dx, base, n, inner, log):
    s = 0.0
    if log:  # dx = dy - softmax * sum(dy)
        for k in range(n):
            s += dy[base + k * inner]
        for k in range(n):
            j = base + k * inner
            dx[j] = dy[j] - math.exp(y[j]) * s
    else:  # dx = y * (dy - sum(dy * y))
        for k in range(n):
            s += dy[base + k * inner] * y[base + k * inner]
        for k in range(n):
            j = base + k * inner
            dx[j] = y[j] * (dy[j] - s)


def line_start(line, n, inner):
    """Where line `line` (of outer * inner lines) starts."""
    o = line // inner
    return o * n * inner + (line - o * inner)
