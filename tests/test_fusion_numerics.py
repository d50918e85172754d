"""Every library model computes the same with and without fusion (forward, loss, gradients, statistics).

The optimized graph (simplified, fused, memory-planned) against the same graph
with one kernel per node and a buffer per value, on the same weights and inputs,
in eval and in training mode: within 1e-5 relative to each tensor's largest value.
"""

import numpy as np
import pytest

import cnnc

TOLERANCE = 1e-5


def rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(float(np.abs(np.asarray(b)).max()), 1e-30))


def pair(name):
    fused = cnnc.compile(name, seed=1)
    unfused = cnnc.compile(name, seed=1, fuse=False)
    rng = np.random.default_rng(0)
    # Non-trivial batchnorm statistics, so that eval mode is not the identity.
    for net in (fused, unfused):
        for key, buf in net.buffers.items():
            buf[...] = np.random.default_rng(abs(hash(key)) % 2**32).uniform(0.5, 1.5, buf.shape) if "var" in key else 0.1
    return fused, unfused, rng


def check_forward(fused, unfused, x):
    a, b = fused(x), unfused(x)
    if isinstance(b, dict):
        for key in b:
            assert rel(a[key], b[key]) < TOLERANCE, key
    else:
        assert rel(a, b) < TOLERANCE


def check_gradients(fused, unfused, x, y):
    la, ga = fused.grad(x, y)
    lb, gb = unfused.grad(x, y)
    assert abs(la - lb) <= TOLERANCE * abs(lb)
    worst = max(ga, key=lambda k: rel(ga[k], gb[k]))
    assert rel(ga[worst], gb[worst]) < TOLERANCE, worst
    for key in fused.buffers:  # running statistics updated the same way
        assert rel(fused.buffers[key], unfused.buffers[key]) < TOLERANCE, key


def run_model(name, batch):
    fused, unfused, rng = pair(name)
    shape = fused.graph.input_types()["image"].sample_shape
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    for mode in ("eval", "train"):
        getattr(fused, mode)()
        getattr(unfused, mode)()
        check_forward(fused, unfused, x)
        check_gradients(fused, unfused, x, y)


def test_lenet_fused_equals_unfused():
    run_model("lenet", 4)


@pytest.mark.slow  # a whole model, compiled cold in tens of seconds
def test_resnet18_cifar_fused_equals_unfused():
    run_model("resnet18_cifar", 2)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16", "resnet18", "resnet34", "resnet50"])
def test_imagenet_models_fused_equal_unfused(name):
    run_model(name, 2)


MIXED = """
network mixed(classes = 5) {
    input image: [3, 12, 12]
    a = conv(8, kernel=3, pad=1) -> leaky_relu(0.1)
    b = a -> maxpool(2) -> relu -> batchnorm(affine=false) -> tanh
    c = image -> sigmoid -> tanh -> conv(8, kernel=3, stride=2, pad=1, bias=false)
    d = b * c + b
    e = d -> conv_transpose(6, kernel=2, stride=2) -> relu
    g = a -> conv(2, kernel=1, bias=false)  # batchnorm follows: a bias would get no gradient
    f = concat(e, g) -> avgpool(2) -> upsample(2) -> batchnorm -> relu
    flatten
    dense(16, bias=false) -> batchnorm -> relu -> dropout(0.25)  # a bias before batchnorm has no gradient
    logits: dense(classes)
    output logits
}
"""


@pytest.mark.slow  # a whole model, compiled cold in tens of seconds
def test_a_model_of_many_fusion_kinds_fused_equals_unfused():
    fused = cnnc.compile(MIXED, seed=3)
    unfused = cnnc.compile(MIXED, seed=3, fuse=False)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    y = rng.integers(0, 5, 4)
    for mode in ("eval", "train"):
        getattr(fused, mode)()
        getattr(unfused, mode)()
        check_forward(fused, unfused, x)
        check_gradients(fused, unfused, x, y)
    kinds = {g.kind for g in fused.scheduled(("grad", "cross_entropy", None, (), None), True).groups}
    assert {"epilogue", "batchnorm", "elementwise", "horizontal", "single"} <= kinds
