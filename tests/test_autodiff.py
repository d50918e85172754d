"""The autodiff pass as a graph transformation."""

import pytest

import cnnc
from cnnc import CnncError
from cnnc.passes.autodiff import differentiate
from cnnc.runtime.losses import with_loss

NET = """
network n {
    input x: [6]
    input y: [6]
    h = x -> fc: dense(4) -> relu
    output logits = h + (y -> g: dense(4, bias=false))
}
"""


def test_gradients_for_every_parameter_in_order():
    graph, target, loss = with_loss(cnnc.load(NET), "cross_entropy")
    g = differentiate(graph, loss)
    assert list(g.grads) == ["fc.weight", "fc.bias", "g.weight"]
    for param, node in g.grads.items():
        assert g[node].type.shape == g.params[param].shape
    assert g.input_grads == {}
    # The original graph is untouched.
    assert not graph.grads and len(graph) < len(g)


def test_backward_nodes_are_registered_ops_and_unused_ones_are_pruned():
    graph, _, loss = with_loss(cnnc.load(NET), "cross_entropy")
    g = differentiate(graph, loss)
    names = {n.op.name for n in g.nodes()}
    assert {"dense_grad_weight", "bias_grad", "relu_grad", "cross_entropy_grad", "fill"} <= names
    # No input gradient was asked for, so nothing computes d/dx or d/dy.
    assert "dense_grad_input" not in names


def test_input_gradients_on_request():
    graph, _, loss = with_loss(cnnc.load(NET), "cross_entropy")
    g = differentiate(graph, loss, wrt_inputs=("x", "y"))
    assert set(g.input_grads) == {"x", "y"}
    assert g[g.input_grads["x"]].type == g["x"].type


def test_a_value_used_twice_sums_its_gradients_with_add():
    net = "network n {\n input x: [3]\n a = relu\n output loss = mse(a * a, x)\n}\n"
    g = differentiate(cnnc.load(net), "mse", wrt_inputs=("x",))
    relu_grad = [n for n in g.nodes() if n.op.name == "relu_grad"][0]
    assert g[relu_grad.inputs[0]].op.name == "add"


def test_the_loss_must_be_a_scalar():
    with pytest.raises(CnncError, match="must be a scalar"):
        differentiate(cnnc.load(NET), "fc")


def test_an_input_the_loss_ignores():
    net = "network n {\n input x: [3]\n input unused: [3]\n output loss = x -> fc: dense(3) -> mse(x)\n}\n"
    with pytest.raises(CnncError, match="does not depend on input 'unused'"):
        differentiate(cnnc.load(net), "mse", wrt_inputs=("unused",))
