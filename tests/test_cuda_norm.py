"""CUDA kernels of batchnorm, dropout, the losses and the softmax family against the CPU's (CUDA simulator).

Shapes are tiny: the simulator runs each GPU thread as a Python thread.
"""

import numpy as np
import pytest

import cnnc
from cnnc.passes.fuse import fuse
from cudacheck import TOLERANCE, check, pair, rel

# The simulator evaluates the dropout hash on NumPy uint64 scalars, which warn when they wrap.
# Simulated GPU kernels are slow: these run in CI, not in the quick subset.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

IMAGE_BATCHNORM = """network n {
    input image: [3, 3, 3]
    batchnorm -> relu
    output loss = mse(relu, image)
}"""

VECTOR_BATCHNORM = """network n {
    input x: [4]
    batchnorm(affine=false) -> sigmoid
    output loss = mse(sigmoid, x)
}"""

DENSE_BATCHNORM = """network n {
    input x: [5]
    dense(4, bias=false) -> batchnorm -> relu
    logits: dense(3)
    output logits
}"""


def test_batchnorm_image_train_and_eval():
    check(IMAGE_BATCHNORM)


def test_batchnorm_vector_without_affine():
    check(VECTOR_BATCHNORM)


def test_batchnorm_running_statistics_move_on_the_gpu():
    cpu, gpu = pair(IMAGE_BATCHNORM)
    x = np.random.default_rng(1).standard_normal((2, 3, 3, 3)).astype(np.float32) * 3 + 1
    for net in (cpu, gpu):
        net.train()
        net(image=x)
    mean = [k for k in cpu.buffers if k.endswith("running_mean")][0]
    assert np.abs(gpu.buffers[mean]).max() > 0.01  # the running mean moved toward the batch's
    for key in cpu.buffers:
        assert rel(gpu.buffers[key], cpu.buffers[key]) < TOLERANCE, key


BATCHNORM_AFTER_ELEMENTWISE = """network n {
    input image: [2, 3, 3]
    r = relu -> batchnorm -> relu
    output loss = mse(r, image)
}"""


def test_fused_batchnorm_group_after_elementwise():
    source = BATCHNORM_AFTER_ELEMENTWISE
    assert any(g.kind == "batchnorm" for g in fuse(cnnc.load(source), training=True).groups)
    check(source, fuse=True)


def test_fused_batchnorm_group_after_dense():
    groups = fuse(cnnc.load(DENSE_BATCHNORM), training=True).groups
    assert any(g.kind == "batchnorm" and g.anchor is not None for g in groups)
    check(DENSE_BATCHNORM, fuse=True)


DROPOUT = """network n {
    input x: [16]
    dropout(0.5) -> tanh
    output loss = mse(tanh, x)
}"""


def test_dropout_masks_equal_the_cpu():
    source = DROPOUT
    cpu, gpu = pair(source)
    x = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
    for mode in ("train", "eval"):
        getattr(cpu, mode)()
        getattr(gpu, mode)()
        assert rel(gpu(x=x), cpu(x=x)) < 1e-6
        lw, gw = cpu.grad({"x": x}, loss=None, inputs=True)
        lg, gg = gpu.grad({"x": x}, loss=None, inputs=True)
        assert np.array_equal(gg["x"] == 0, gw["x"] == 0), mode  # the same dropped elements
        assert rel(gg["x"], gw["x"]) < TOLERANCE
    check(source)


def _check_own_loss(source, feeds, inputs):
    """The network's scalar output and its gradients with respect to `inputs`, cuda against cpu."""
    cpu, gpu = pair(source)
    lw, gw = cpu.grad(feeds, loss=None, inputs=inputs)
    lg, gg = gpu.grad(feeds, loss=None, inputs=inputs)
    assert abs(lg - lw) <= TOLERANCE * abs(lw), (lg, lw)
    for key in gw:
        assert rel(gg[key], gw[key]) < TOLERANCE, key
    return lw


def test_cross_entropy_on_classes():
    source = "network n {\n input x: [5]\n input y: int64[]\n output loss = cross_entropy(x, y)\n}"
    rng = np.random.default_rng(3)
    feeds = {"x": rng.standard_normal((3, 5)).astype(np.float32), "y": np.array([0, 4, 2])}
    loss = _check_own_loss(source, feeds, ["x"])
    assert loss > 0


def test_cross_entropy_dense_prediction_with_ignore():
    source = """network n {
        input x: [3, 2, 2]
        input y: int64[2, 2]
        output loss = cross_entropy(x, y, ignore=1)
    }"""
    rng = np.random.default_rng(4)
    feeds = {"x": rng.standard_normal((2, 3, 2, 2)).astype(np.float32), "y": rng.integers(0, 3, (2, 2, 2))}
    feeds["y"][0, 0, 0] = 1  # at least one ignored pixel
    _check_own_loss(source, feeds, ["x"])


def test_default_cross_entropy_on_logits():
    check("network n {\n input x: [4]\n logits = tanh\n output logits\n}")


MSE = "network n {\n input a: [2, 2, 2]\n input b: [2, 2, 2]\n output loss = mse(a, b)\n}"
BCE = "network n {\n input a: [5]\n input b: [5]\n output loss = bce_with_logits(a, b)\n}"


def test_mse_and_bce_with_logits():
    check(MSE)
    check(BCE)


def softmaxes(axis: int) -> str:
    return f"""network n {{
        input image: [3, 2, 2]
        s = softmax(axis={axis})
        l = image -> log_softmax(axis={axis})
        output loss = mse(s, l)
    }}"""


@pytest.mark.parametrize("axis", [1, -1])
def test_softmax_and_log_softmax(axis):
    check(softmaxes(axis))
