"""CUDA kernels of pooling, resizing, reshaping and combining against the CPU target (Numba's CUDA simulator).

Each program ends in per-pixel logits, so the loss's gradient flows straight
into the op under test and back to the inputs.
"""

import numpy as np
import pytest

import cudacheck
from cnnc.ops.pool import GlobalAvgPoolGrad

# Simulated GPU kernels are slow: these run in CI, not in the quick subset.
pytestmark = pytest.mark.slow


def check(source, fuse=False):
    # Training mode only: these ops behave the same in both modes, and the simulator is slow.
    cudacheck.check(source, fuse=fuse, modes=("train",))


def net(body: str, inputs: str = "image: [2, 4, 5]") -> str:
    lines = "\n".join(f" input {spec}" for spec in inputs.split(";"))
    return f"network n {{\n{lines}\n logits: {body}\n output logits\n}}"


POOLS = {
    "maxpool_ceil_pad": "maxpool(3, stride=2, pad=1, ceil=true)",
    "maxpool_overlap_dilated": "maxpool(2, stride=1, dilation=2)",
    "avgpool_ceil_pad": "avgpool(3, stride=2, pad=1, ceil=true)",
    "avgpool_count_pad_false": "avgpool(3, stride=2, pad=1, ceil=true, count_pad=false)",
    "avgpool_overlap": "avgpool(2, stride=1)",
    "global_avgpool": "global_avgpool",
    "adaptive_avgpool": "adaptive_avgpool([2, 3])",
    "upsample_nearest_scale": "upsample([2, 1])",
    "upsample_nearest_size": "upsample(size=[5, 7])",
    "upsample_bilinear": "upsample(size=[6, 7], mode=\"bilinear\")",
    "upsample_bilinear_align": "upsample(size=[6, 7], mode=\"bilinear\", align_corners=true)",
    "upsample_bilinear_down": "upsample(size=[3, 3], mode=\"bilinear\")",
}


@pytest.mark.parametrize("body", POOLS.values(), ids=POOLS.keys())
def test_pool_and_resize(body):
    check(net(body))


def test_maxpool_ties_go_where_the_cpu_sends_them():
    # Pixels of 0 and 1 tie in almost every window; each window's dy must reach the same pixel as on the CPU.
    cpu, gpu = cudacheck.pair(net("maxpool(3, stride=2, pad=1)"))
    rng = np.random.default_rng(1)
    image = rng.integers(0, 2, (2, 2, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 2, (2, 2, 3))
    _, want = cpu.grad({"image": image}, labels, inputs=["image"])
    _, got = gpu.grad({"image": image}, labels, inputs=["image"])
    assert cudacheck.rel(got["image"], want["image"]) < cudacheck.TOLERANCE


RESHAPES = net("flatten -> reshape([3, 4, 2]) -> relu -> flatten -> reshape([2, 4, 3])", "image: [3, 2, 4]")


def test_flatten_and_reshape_keep_logical_order():
    check(RESHAPES)


GLOBAL_GRAD_EPILOGUE = net("relu -> global_avgpool -> relu")


def test_global_avgpool_grad_stores_through_the_epilogue(monkeypatch):
    # relu's gradient after global_avgpool_grad fuses into its epilogue.
    epilogues = []
    plain = GlobalAvgPoolGrad.cuda

    def recording(self, a, out, dy, epilogue=None):
        epilogues.append(epilogue)
        return plain(self, a, out, dy, epilogue=epilogue)

    monkeypatch.setattr(GlobalAvgPoolGrad, "cuda", recording)
    check(GLOBAL_GRAD_EPILOGUE, fuse=True)
    assert epilogues and all(e is not None and e.lines for e in epilogues)


def broadcast(op: str) -> str:
    return f"network n {{\n input image: [3, 3, 4]\n pooled = global_avgpool(image)\n output logits = image {op} pooled\n}}"


@pytest.mark.parametrize("op", ["+", "*"])
def test_broadcast_against_per_channel_values(op):
    check(broadcast(op))


CONCAT_TWO = net("concat(a, b)", "a: [2, 3, 3];b: [3, 3, 3]")
CONCAT_THREE = net("concat(a, b, c, axis=2)", "a: [2, 2, 3];b: [2, 3, 3];c: [2, 1, 3]")


def test_concat_of_two_along_channels():
    check(CONCAT_TWO)


def test_concat_of_three_along_rows():
    check(CONCAT_THREE)
