"""Strided loops over physical buffers, for reductions and broadcasts along any axes.

A loop nest is given as two tuples, sizes and strides (in elements), outermost first,
as cnnc/ops/reduce.py builds them: the kept axes of a reduction in the output's physical
order, the summed axes in the input's, or every axis of a broadcast's output with
stride 0 where it repeats one element.
"""


def loop_count(sizes):
    """The number of iterations of the nest."""
    n = 1
    for d in sizes:
        n *= d
    return n


def strided_offset(i, sizes, strides):
    """The offset that iteration i of the nest (counted in row-major order) reaches."""
    offset = 0
    for k in range(len(sizes) - 1, -1, -1):
        q = i // sizes[k]
        offset += (i - q * sizes[k]) * strides[k]
        i = q
    return offset


def strided_sum(x, base, sizes, strides):
    """The sum (in float64) of x[base + offset] over the whole nest; its innermost loop runs without divisions."""
    last = len(sizes) - 1
    inner = sizes[last]
    stride = strides[last]
    acc = 0.0
    for r in range(loop_count(sizes) // inner):
        b = base + strided_offset(r * inner, sizes, strides)
        for j in range(inner):
            acc += x[b + j * stride]
    return acc
