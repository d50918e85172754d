"""CUDA kernels of tensor arithmetic, elementwise math and windows against the CPU's (in the simulator).

sub that broadcasts has a kernel of its own (equal shapes are an elementwise loop, like neg, scale,
shift and the math ops, unfused and fused); slice and crop, and their gradients, have theirs.
"""

import pytest

from cudacheck import check

# Simulated GPU kernels are slow: these run in CI, not in the quick subset.
pytestmark = pytest.mark.slow

ARITH = {
    # a - b and b - a broadcast both ways; their gradients sum over the broadcast axes
    "sub": "network n {\n input a: [2, 3, 3]\n input b: [2, 1, 3]\n y = a - b\n z = b - a\n output loss = mse(y * z, a)\n}",
    # every elementwise op and operator with a number, and their gradients
    "math": "network n {\n input x: [2, 3]\n"
            " y = sqrt(square(x) + 1) * 2 - exp(-x) / 3 + log(abs(x) + 1) + 1 / (square(x) + 1) - (1 - x) + 2 / (x * x + 1)\n"
            " output loss = mse(y, x)\n}",
    # windows of channels-last images, their channels and their pixels
    "windows": "network n {\n input x: [3, 4, 4]\n a = crop(x, 1, 2) -> slice(1, 1, 3)\n b = slice(x, 1, 0, 2) -> crop([0, 1], [2, 2])\n"
               " output loss = mse(a, b)\n}",
    "slices": "network n {\n input x: [6]\n input y: [3, 5]\n a = slice(x, 1, 1, 4) - slice(x, 1, -3)\n"
              " b = slice(y, -1, 2) -> slice(1, 0, 1) -> reshape([3])\n output loss = mse(a, b)\n}",
}


@pytest.mark.parametrize("program", ARITH.values(), ids=ARITH.keys())
def test_arithmetic_math_and_windows(program):
    check(program)
    check(program, fuse=True)
