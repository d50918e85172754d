"""prelu (PyTorch's nn.PReLU with a slope per channel): forward, input and weight gradients, on both targets.

The op was added in the shape every op now has: its record in cnnc/ops/activation.py,
the weight gradient's kernels in cnnc/kernels/{cpu,cuda}/prelu.py.
"""

import numpy as np
import pytest

import cnnc
from opcheck import check

torch = pytest.importorskip("torch")


def with_zeros(shape, seed=0):
    """Standard normal values with some exact zeros (where the slope's gradient switches)."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    return x


@pytest.mark.parametrize("program, shape", [
    ("network n {\n input x: [3, 4, 5]\n output y = prelu\n}", (2, 3, 4, 5)),
    ("network n {\n input x: [6]\n output y = prelu\n}", (3, 6)),
])
def test_prelu_matches_torch_and_finite_differences(program, shape):
    def reference(x, p):
        return torch.nn.functional.prelu(x["x"], p["prelu.weight"])

    slopes = {"prelu.weight": np.linspace(-0.5, 0.75, shape[1]).astype(np.float32)}  # trained slopes, not 0.25
    # At x = 0 the slope applies (dx = weight * dy), as in PyTorch; finite differences cannot see a kink.
    check(program, reference, inputs={"x": with_zeros(shape)}, batch=shape[0], params=slopes, fd=False)
    check(program, reference, batch=shape[0], params=slopes)


def test_prelu_initialises_as_pytorch_and_fuses_into_the_conv_epilogue():
    net = cnnc.compile("network n {\n input x: [2, 5, 5]\n c = conv(4, kernel=3) -> prelu(init=0.1)\n output c\n}")
    assert list(net.state_dict()) == ["conv.weight", "conv.bias", "prelu.weight"]
    np.testing.assert_array_equal(net.state_dict()["prelu.weight"], np.full(4, 0.1, np.float32))
    assert torch.nn.PReLU(4).weight.detach().numpy().tolist() == [0.25] * 4
    from cnnc.passes.pipeline import optimize

    groups = optimize(net.graph, training=False).groups
    assert [g.nodes for g in groups] == [["conv", "prelu"]] and groups[0].kind == "epilogue"


def test_prelu_trains_in_a_fused_training_step_as_unfused():
    program = "network n {\n input x: [3, 6, 6]\n c = conv(4, kernel=3, pad=1) -> prelu -> conv(2, kernel=3)\n output c\n}"
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)
    target = np.random.default_rng(2).standard_normal((2, 2, 4, 4)).astype(np.float32)
    fused, unfused = cnnc.compile(program, seed=3), cnnc.compile(program, seed=3, fuse=False)
    a, ga = fused.grad(x, target, loss="mse")
    b, gb = unfused.grad(x, target, loss="mse")
    assert abs(a - b) < 1e-6
    for name in ga:
        np.testing.assert_allclose(ga[name], gb[name], rtol=1e-5, atol=1e-6)


def test_prelu_refuses_other_ranks():
    with pytest.raises(cnnc.CnncError, match=r"prelu expects \[channels\] or \[channels, height, width\] input"):
        cnnc.load("network n {\n input x: [3, 4]\n output y = prelu\n}")
