"""The CUDA conv and dense kernels against the CPU's, in Numba's CUDA simulator.

Each program ends in a small dense layer so that the loss is a cheap [N, classes]
cross-entropy; check() compares the outputs, the loss and every parameter and input
gradient, so one program tests an op's forward, input-gradient and weight-gradient
kernels (and bias_grad). Convs behave the same in both modes: train mode is enough.
"""

import pytest

import cudacheck

# Simulated GPU kernels are slow: these run in CI, not in the quick subset.
pytestmark = pytest.mark.slow


def through_dense(image: str, layer: str) -> str:
    return f"network n {{\n input image: {image}\n {layer}\n flatten\n logits: dense(2)\n output logits\n}}"


UNFUSED = {
    "conv": through_dense("[2, 4, 4]", "conv(3, kernel=3, pad=1)"),
    "conv_no_bias_stride2": through_dense("[2, 5, 5]", "conv(3, kernel=3, stride=2, bias=false)"),
    "conv_dilation2": through_dense("[2, 5, 5]", "conv(2, kernel=3, dilation=2, pad=1)"),
    "conv_groups2": through_dense("[4, 4, 4]", "conv(4, kernel=3, groups=2, pad=1)"),
    "conv_depthwise": through_dense("[3, 4, 4]", "conv(3, kernel=3, groups=3, pad=1)"),
    "conv_1x1": through_dense("[3, 3, 3]", "conv(4, kernel=1)"),
    "conv_transpose_stride2": through_dense("[2, 3, 3]", "conv_transpose(2, kernel=3, stride=2, pad=1, output_pad=1)"),
    "dense": "network n {\n input image: [5]\n h: dense(4)\n logits: dense(3, bias=false)\n output logits\n}",
}

# Fused: relu runs in the anchor's epilogue, after the bias.
FUSED = {
    "conv_relu": through_dense("[2, 4, 4]", "conv(3, kernel=3, pad=1) -> relu"),
    "dense_relu": "network n {\n input image: [5]\n h: dense(4) -> relu\n logits: dense(3)\n output logits\n}",
}


@pytest.mark.parametrize("name", UNFUSED)
def test_unfused_op_matches_cpu(name):
    cudacheck.check(UNFUSED[name], fuse=False, modes=("train",))


@pytest.mark.parametrize("name", FUSED)
def test_fused_epilogue_matches_cpu(name):
    cudacheck.check(FUSED[name], fuse=True, modes=("train",))


# At batch 2 the dense weight gradient's K (the batch) is shorter than a tile and takes the
# thread-per-output kernel; at batch 17 all three dense GEMMs run the tiled kernel, the last tile part-filled.
WIDE_DENSE = "network n {\n input image: [20]\n h: dense(18) -> relu\n logits: dense(3)\n output logits\n}"


@pytest.mark.parametrize("batch", [2, 17])
def test_dense_gemms_at_short_and_tiled_k(batch):
    cudacheck.check(WIDE_DENSE, batch=batch, modes=("train",))
