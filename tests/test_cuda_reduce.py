"""CUDA kernels of sum, mean, expand and gram, and their gradients, against the CPU's (CUDA simulator).

Each program ends in a scalar loss, so the gradients flow back through the op under test.
Shapes are tiny, except where a case needs a reduction long enough to be split over
blocks, or a Gram matrix of more than one GEMM tile.
"""

import pytest

import cudacheck

# Simulated GPU kernels are slow: these run in CI, not in the quick subset.
pytestmark = pytest.mark.slow


def net(body: str, inputs: str = "x: [3, 2, 3]") -> str:
    lines = "\n".join(f" input {spec}" for spec in inputs.split(";"))
    return f"network n {{\n{lines}\n{body}\n}}"


REDUCE = {
    "sum_all": net(" output loss = sum(x * x)"),
    "mean_all": net(" output loss = mean(x)"),
    # 1,200 elements into one: a block reduction split over several blocks, then their parts added
    "mean_all_split": net(" output loss = mean(x * x)", "x: [600]"),
    "sum_channels": net(" output loss = mse(sum(x, axis=1), t)", "x: [3, 2, 3];t: [2, 3]"),
    "sum_height": net(" output loss = mse(sum(x, axis=2), t)", "x: [3, 2, 3];t: [3, 3]"),
    "mean_spatial_kept": net(" output loss = mse(mean(x, axis=[2, 3], keepdims=true), t)", "x: [3, 2, 3];t: [3, 1, 1]"),
    "sum_long_rows": net(" output loss = mse(sum(x, axis=-1), t)", "x: [2, 40];t: [2]"),
    "sum_rank5_to_image": net(" output loss = mse(sum(x, axis=2), t)", "x: [2, 2, 3, 2];t: [2, 3, 2]"),
    "expand": net(" output loss = mse(expand(x, [3, 2, -1]), t)", "x: [1, 2, 1];t: [3, 2, 1]"),
    "gram_image": net(" output loss = mse(gram(x), t)", "x: [3, 2, 3];t: [3, 3]"),
    "gram_rows": net(" output loss = mse(gram(x), t)", "x: [3, 5];t: [3, 3]"),
    # 18 channels and 17 pixels: two GEMM tiles along every axis
    "gram_tiles": net(" output loss = mse(gram(x), t)", "x: [18, 17];t: [18, 18]"),
}


@pytest.mark.parametrize("program", REDUCE.values(), ids=REDUCE.keys())
def test_reductions_and_their_gradients(program):
    # Training mode only: these ops behave the same in both modes, and the simulator is slow.
    cudacheck.check(program, modes=("train",))
    cudacheck.check(program, modes=("train",), fuse=True)
