"""CUDA kernels of dense over the last axis of any rank (an image's among them) and of dropout2d against the CPU's (CUDA simulator).

Shapes are tiny: the simulator runs each GPU thread as a Python thread.
"""

import numpy as np
import pytest

from cudacheck import TOLERANCE, check, pair, rel

# The simulator evaluates the dropout hash on NumPy uint64 scalars, which warn when they wrap.
# Simulated GPU kernels are slow: these run in CI, not in the quick subset.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

DENSE_RANK = {
    # [T, F] with the bias and an activation in the epilogue, then a layer without bias
    "sequence": "network n {\n input x: [3, 4]\n input t: [3, 2]\n"
                " y = x -> dense(5) -> relu -> dense(2, bias=false)\n output loss = mse(y, t)\n}",
    # [A, B, C, F]: a tile's K is the 18 features, more than a GEMM tile
    "rank5": "network n {\n input x: [2, 1, 2, 18]\n input t: [2, 1, 2, 3]\n y = x -> dense(3) -> tanh\n"
             " output loss = mse(y, t)\n}",
    # An image [C, H, W]: over its width (stored second to last), the bias along the units and a
    # per-channel prelu in the epilogue along the image's channels
    "image": "network n {\n input x: [3, 2, 4]\n input t: [3, 2, 2]\n y = x -> dense(5) -> prelu -> dense(2, bias=false)\n"
             " output loss = mse(y, t)\n}",
}

DROPOUT2D = {
    "image": "network n {\n input x: [3, 2, 2]\n y = dropout2d(0.5) -> tanh\n output y\n output loss = mse(y, x)\n}",
    "sequence": "network n {\n input x: [4, 3]\n y = dropout2d(0.5) -> tanh\n output y\n output loss = mse(y, x)\n}",
}


@pytest.mark.parametrize("program", DENSE_RANK.values(), ids=DENSE_RANK.keys())
def test_dense_on_the_last_axis_and_its_gradients(program):
    check(program)
    check(program, fuse=True)


@pytest.mark.parametrize("program", DROPOUT2D.values(), ids=DROPOUT2D.keys())
def test_dropout2d_masks_equal_the_cpu(program):
    cpu, gpu = pair(program)
    shape = (2, *cpu.graph.input_types()["x"].sample_shape)
    x = np.random.default_rng(2).uniform(0.5, 1.5, shape).astype(np.float32)
    for mode in ("train", "eval"):
        getattr(cpu, mode)()
        getattr(gpu, mode)()
        lw, gw = cpu.grad({"x": x}, loss=None, inputs=True)
        lg, gg = gpu.grad({"x": x}, loss=None, inputs=True)
        assert abs(lg - lw) <= TOLERANCE * max(abs(lw), 1e-6), mode
        assert rel(gg["x"], gw["x"]) < TOLERANCE, mode
    # The same channels dropped, and in training some are.
    cpu.train()
    gpu.train()
    y = cpu(x=x, outputs="y")
    assert np.array_equal(gpu(x=x, outputs="y") == 0, y == 0)
    assert 0 < (y == 0).mean() < 1
    check(program)
