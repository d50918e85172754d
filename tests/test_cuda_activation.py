"""CUDA kernels of the elementwise ops (activations, add, mul and their gradients) against the CPU's.

Unfused, each op is its own grid-stride loop; fused, a chain of them is one loop
(the CUDA simulator runs both; shapes are tiny).
"""

import pytest

import cnnc
from cnnc.passes.fuse import fuse
from cudacheck import check

# Simulated GPU kernels are slow: these run in CI, not in the quick subset.
pytestmark = pytest.mark.slow

ACTIVATIONS = ["relu", "leaky_relu(0.2)", "sigmoid", "tanh"]

# Every activation and its gradient, then equal-shape add and mul (whose gradients are elementwise too).
CHAIN = """network n {
    input a: [2, 3, 3]
    input b: [2, 3, 3]
    r = a -> relu
    l = b -> leaky_relu(0.2)
    s = r + l -> sigmoid
    t = s * b -> tanh
    output loss = mse(t, a)
}"""


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_and_its_gradient(activation):
    check(f"network n {{\n input x: [5]\n y = {activation}\n output loss = mse(y, x)\n}}")


def test_a_chain_of_elementwise_ops_unfused_and_fused():
    assert any(g.kind == "elementwise" and len(g.nodes) > 2 for g in fuse(cnnc.load(CHAIN), training=True).groups)
    check(CHAIN)
    check(CHAIN, fuse=True)


PRELU = {
    "image": "network n {\n input x: [3, 2, 2]\n y = prelu(0.3)\n output loss = mse(y, x)\n}",
    "vector": "network n {\n input x: [4]\n y = prelu\n output loss = mse(y, x)\n}",
    "epilogue": "network n {\n input x: [2, 3, 3]\n input t: [3, 2, 2]\n y = x -> conv(3, kernel=2) -> prelu\n output loss = mse(y, t)\n}",
}


@pytest.mark.parametrize("program", PRELU.values(), ids=PRELU.keys())
def test_prelu_and_its_gradients(program):
    check(program)
    check(program, fuse=True)
