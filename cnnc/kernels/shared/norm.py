"""Per-channel numerics of batchnorm and the dropout hashes, the same on the CPU and the GPU.

Batchnorm's statistics come from sums of x - shift (shift: a value near each
channel's mean, which avoids cancellation in sum((x - s)^2) - sum(x - s)^2 / n),
accumulated in float64 by each target its own way. From those sums, one channel
at a time, these give the constants with y = (x - m) * s + b, the running
averages' update, and the gradients' constants.
"""

import math

from numba import float64, uint64


def bn_moments(s1, s2, rows):
    """(mean of x - shift, biased variance) of a channel from sum(x - shift) and sum((x - shift)^2) over rows."""
    d = s1 / rows
    return d, max(s2 / rows - d * d, 0.0)


def bn_update_running(running_mean, running_var, c, mean, var, rows, momentum):
    # PyTorch's running variance uses the unbiased batch variance (it refuses
    # one value per channel; here that case keeps the biased one, zero).
    unbias = rows / (rows - 1.0) if rows > 1 else 1.0
    running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean
    running_var[c] = (1.0 - momentum) * running_var[c] + momentum * var * unbias


def bn_channel_constants(m, s, b, c, mean, var, weight, bias, eps, affine):
    # m, s, b in the buffers' dtype; the scale is computed in float64, then rounded.
    w = float64(weight[c]) if affine else 1.0
    m[c] = mean
    s[c] = w / math.sqrt(var + eps)
    b[c] = bias[c] if affine else 0.0


def bn_grad_constants(s1, s2, s3, s4, shift, running_var, weight, dw, db, m, a, k, b, c, rows, eps, affine, train,
                      want_dw, want_db):
    # From the sums of (x - s), (x - s)^2, dy and dy * (x - s) of channel c: dw and db (those wanted),
    # and the constants of dx = dy * a + (x - m) * k + b. In training, with inv = 1 / sqrt(var + eps):
    # dx = w * inv * (dy - mean(dy) - (x - mean) * inv^2 * mean(dy * (x - mean)));
    # in eval mode the statistics are constants and dx = dy * w * inv.
    d = 0.0
    var = float64(running_var[c])
    if train:
        d, var = bn_moments(s1, s2, rows)
    inv = 1.0 / math.sqrt(var + eps)
    if want_dw:
        dw[c] = (s4 - d * s3) * inv
    if want_db:
        db[c] = s3
    w = float64(weight[c]) if affine else 1.0
    m[c] = float64(shift[c]) + d
    a[c] = w * inv
    if train:
        dy_mean = s3 / rows
        dyxc_mean = s4 / rows - d * dy_mean
        k[c] = -w * inv * inv * inv * dyxc_mean
        b[c] = -w * inv * dy_mean
    else:
        k[c] = 0.0
        b[c] = 0.0


# Dropout's mask is a pure function of (seed, step, key, draw index: an element's, or for
# dropout2d an (example, channel)'s): splitmix64's
# finalizer over a counter, so the gradient recomputes the forward's mask exactly (it
# reads the RNG array of the forward node's key) and a seeded run is reproducible.
def mix64(z):
    z = (z ^ (z >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
    return z ^ (z >> uint64(31))


def dropout_stream(seed, step, key):
    """The base every draw of a dropout node at a step hashes from."""
    return mix64(mix64(mix64(seed + uint64(0x9E3779B97F4A7C15)) ^ step) ^ key)


def dropout_drops(base, draw, threshold):
    """Whether draw number `draw` drops: its top 53 bits of hash, as a uniform in [0, 1), fall below
    p (`threshold` is p * 2^53)."""
    return (mix64(base + uint64(draw + 1) * uint64(0x9E3779B97F4A7C15)) >> uint64(11)) < threshold


def channel_draw(i, channels, stride, per_example):
    """dropout2d's draw for element i of a flat buffer: one per (example, channel). Channels are
    `stride` elements apart (1 channels-last) and an example spans `per_example` elements."""
    return (i // per_example) * channels + (i // stride) % channels
