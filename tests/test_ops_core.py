"""Forward and backward of the activation, softmax, dense, reshape, add/mul and loss ops,
against PyTorch (float32) and finite differences (float64)."""

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from opcheck import check  # noqa: E402


def net(body: str, inputs: str = "input x: [3, 4, 5]") -> str:
    return f"network t {{\n    {inputs}\n    {body}\n}}\n"


@pytest.mark.parametrize(
    "op, fn",
    [
        ("relu", F.relu),
        ("sigmoid", torch.sigmoid),
        ("tanh", torch.tanh),
        ("leaky_relu(slope=0.2)", lambda x: F.leaky_relu(x, 0.2)),
        ("softmax", lambda x: F.softmax(x, 1)),
        ("softmax(axis=-1)", lambda x: F.softmax(x, -1)),
        ("log_softmax", lambda x: F.log_softmax(x, 1)),
        ("log_softmax(axis=2)", lambda x: F.log_softmax(x, 2)),
    ],
)
def test_unary(op, fn):
    check(net(op), lambda i, p: fn(i["x"]))


@pytest.mark.parametrize("inputs", ["input x: [7]", "input x: [3, 2, 2]"])
def test_softmax_on_features(inputs):
    check(net("softmax", inputs), lambda i, p: F.softmax(i["x"], 1))


def test_dense_with_and_without_bias():
    check(net("flatten -> fc: dense(6) -> g: dense(4, bias=false)"),
          lambda i, p: F.linear(F.linear(i["x"].flatten(1), p["fc.weight"], p["fc.bias"]), p["g.weight"]))


def test_reshape_between_layouts():
    check(net("reshape([5, 12]) -> reshape([2, 3, 10]) -> reshape([6, 5, 2]) -> flatten"),
          lambda i, p: i["x"].reshape(-1, 6, 5, 2).flatten(1))


@pytest.mark.parametrize("expr, fn", [
    ("x + y", lambda x, y: x + y),
    ("x * y", lambda x, y: x * y),
    ("add(x, y, x)", lambda x, y: x + y + x),
    ("mul(x, y, y)", lambda x, y: x * y * y),
])
def test_add_mul(expr, fn):
    check(net(expr, "input x: [3, 4, 5]\n    input y: [3, 4, 5]"), lambda i, p: fn(i["x"], i["y"]))


@pytest.mark.parametrize("shape", ["[3, 1, 1]", "[1, 4, 5]", "[3, 4, 1]"])
def test_broadcasting(shape):
    check(net("x + y -> z: mul(y)", f"input x: [3, 4, 5]\n    input y: {shape}"),
          lambda i, p: (i["x"] + i["y"]) * i["y"])


@pytest.mark.parametrize("x_shape, y_shape", [("[3, 1, 5]", "[1, 4, 1]"), ("[6]", "[1]"), ("[2, 1, 3]", "[1, 4, 1]")])
def test_broadcasting_both_ways_and_subtracting(x_shape, y_shape):
    # Both inputs broadcast (each along its own axes), over ranks 2, 3 and 4 (an image, stored NHWC).
    check(net("x - y -> z: mul(y)", f"input x: {x_shape}\n    input y: {y_shape}"),
          lambda i, p: (i["x"] - i["y"]) * i["y"])


def test_value_used_twice_sums_its_gradients():
    check(net("a = sigmoid\n    b = x -> tanh\n    a * b + a"), lambda i, p: torch.sigmoid(i["x"]) * torch.tanh(i["x"]) + torch.sigmoid(i["x"]))


def test_cross_entropy():
    check(net("output loss = cross_entropy(x, labels)", "input x: [5]\n    input labels: int64[]"),
          lambda i, p: F.cross_entropy(i["x"], i["labels"]), inputs={"labels": 5}, batch=4)


def test_cross_entropy_dense_prediction_with_ignore():
    import numpy as np
    labels = np.array([[[0, 2], [9, 1]], [[1, 9], [2, 0]]])
    check(net("output loss = cross_entropy(x, labels, ignore=9)", "input x: [3, 2, 2]\n    input labels: int64[2, 2]"),
          lambda i, p: F.cross_entropy(i["x"], i["labels"], ignore_index=9), inputs={"labels": labels})


def test_mse_and_bce_with_logits():
    check(net("output loss = mse(x, y)", "input x: [3, 2]\n    input y: [3, 2]"), lambda i, p: F.mse_loss(i["x"], i["y"]))
    check(net("output loss = bce_with_logits(x, y)", "input x: [3, 2]\n    input y: [3, 2]"),
          lambda i, p: F.binary_cross_entropy_with_logits(i["x"], i["y"]))
