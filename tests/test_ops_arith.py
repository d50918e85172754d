"""Tensor arithmetic (sub, neg, scale, shift, reciprocal and the operators that make them), elementwise
math (sqrt, abs, exp, log, square) and windows (slice, crop): against PyTorch and finite differences,
at their edge cases, and in the language.
"""

import math

import numpy as np
import pytest

import cnnc
from cnnc import CnncError
from cnnc.graph import Graph
from cnnc.ops import REGISTRY, Attrs
from cnnc.passes.fuse import fuse
from cnnc.passes.simplify import fold_constants, run_simplify_passes
from opcheck import check

torch = pytest.importorskip("torch")


def net(body: str, inputs: str = "input x: [3, 4, 5]") -> str:
    return f"network t {{\n    {inputs}\n    {body}\n}}\n"


def away_from_zero(shape, seed=0, low=0.5):
    """Standard normal values pushed at least `low` away from 0 (where 1 / x and abs' jump)."""
    r = np.random.default_rng(seed).standard_normal(shape)
    return (np.sign(r) * (low + np.abs(r))).astype(np.float32)


def positive(shape, seed=0):
    return (0.5 + np.abs(np.random.default_rng(seed).standard_normal(shape))).astype(np.float32)


# -- against PyTorch and finite differences --------------------------------------------------------


# Tests that compile many kernels (over ten seconds with an empty kernel cache) are marked slow.
@pytest.mark.slow
@pytest.mark.parametrize("shape", ["[3, 4, 5]", "[3, 1, 1]", "[1, 4, 5]", "[3, 4, 1]"])
def test_sub_broadcasts_both_ways(shape):
    check(net("x - y -> z: sub(y)", f"input x: [3, 4, 5]\n    input y: {shape}"), lambda i, p: (i["x"] - i["y"]) - i["y"])


def test_a_value_minus_itself_has_cancelling_gradients():
    check(net("y = x - x\n    output y = y + x"), lambda i, p: i["x"] - i["x"] + i["x"])


@pytest.mark.slow
def test_arithmetic_with_numbers():
    def reference(i, p):
        x, b = i["x"], i["b"]
        y = 2 * x - b / 4
        z = -y + 1.5 - x * 3
        return 0.5 - z + (x - 2) * 0.25 + 3 + z

    body = "y = 2 * x - b / 4\n    z = -y + 1.5 - x * 3\n    output w = 0.5 - z + (x - 2) * 0.25 + 3 + z"
    check(net(body, "input x: [3, 4, 5]\n    input b: [3, 1, 5]"), reference)


def test_arithmetic_ops_by_name():
    check(net("neg -> scale(0.5) -> shift(offset=-2) -> scale(factor=3)"), lambda i, p: (-i["x"] * 0.5 - 2) * 3)


@pytest.mark.slow
def test_number_divided_by_a_tensor():
    check(net("y = 3 / x + 1 / x"), lambda i, p: 3 / i["x"] + 1 / i["x"], inputs={"x": away_from_zero((2, 3, 4, 5))})


@pytest.mark.parametrize("op, fn, inputs", [
    ("sqrt", torch.sqrt, positive),
    ("log", torch.log, positive),
    ("abs", torch.abs, away_from_zero),
    ("exp", torch.exp, None),
    ("square", torch.square, None),
    ("reciprocal", torch.reciprocal, away_from_zero),
])
def test_elementwise_math(op, fn, inputs):
    feeds = {"x": inputs((2, 3, 4))} if inputs else None
    check(net(op, "input x: [3, 4]"), lambda i, p: fn(i["x"]), inputs=feeds)


# Every op at once on 0, -0, negatives and tiny values, each on its own input (the outputs are
# concatenated, so that one network compiles). The gradients flow from mse against -0.5, so that
# they are not all 0 * inf.
EDGES = np.array([[0.0, -0.0, -1.0, 1.0, 1e-30, 100.0, 4.0, -2.5]], np.float32)
MATH = {"sqrt": torch.sqrt, "abs": torch.abs, "exp": torch.exp, "log": torch.log, "square": torch.square,
        "reciprocal": torch.reciprocal, "neg": torch.neg}


def test_elementwise_math_edge_cases_match_torch():
    inputs = "\n    ".join(f"input {op}_x: [8]" for op in MATH)
    body = "output y = concat(" + ", ".join(f"{op}({op}_x)" for op in MATH) + ")"
    model = cnnc.compile(net(body, inputs)).train()
    feeds = {f"{op}_x": EDGES for op in MATH}
    target = np.full((1, 8 * len(MATH)), -0.5, np.float32)
    y = model(**feeds)
    _, grads = model.grad(feeds, target, loss="mse", inputs=list(feeds), params=False)
    tx = {op: torch.tensor(EDGES, requires_grad=True) for op in MATH}
    ty = torch.cat([fn(tx[op]) for op, fn in MATH.items()], dim=1)
    torch.nn.functional.mse_loss(ty, torch.tensor(target)).backward()
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-6, equal_nan=True)
    for op in MATH:
        np.testing.assert_allclose(grads[f"{op}_x"], tx[op].grad.numpy(), rtol=1e-5, equal_nan=True, err_msg=op)
    y = y.reshape(len(MATH), 8)
    assert math.isnan(y[0, 2]) and y[3, 0] == -math.inf and math.isnan(y[3, 2])  # sqrt(-1), log(0), log(-1)
    assert grads["abs_x"][0, 0] == 0.0 and grads["sqrt_x"][0, 0] == math.inf and grads["log_x"][0, 0] == -math.inf


@pytest.mark.parametrize("body, fn", [
    ("slice(1, 1, 3)", lambda x: x[:, 1:3]),  # channels, the last physical axis
    ("slice(-1, -3)", lambda x: x[:, :, :, -3:]),
    ("slice(2, 1, -1)", lambda x: x[:, :, 1:-1]),
    ("slice(axis=3, start=0, stop=5)", lambda x: x),  # the whole axis
    ("crop(1, 2)", lambda x: x[:, :, 1:3, 1:3]),
    ("crop([1, 0], [3, 5])", lambda x: x[:, :, 1:4, 0:5]),
])
def test_windows_of_images(body, fn):
    check(net(body), lambda i, p: fn(i["x"]))


@pytest.mark.parametrize("inputs, body, fn", [
    ("input x: [7]", "slice(1, 2, 5)", lambda x: x[:, 2:5]),
    ("input x: [3, 6]", "slice(-1, 1, -2)", lambda x: x[:, :, 1:-2]),
    ("input x: [2, 3, 4, 5]", "slice(3, 1, 3)", lambda x: x[:, :, :, 1:3]),
    ("input x: [2, 3, 4, 5]", "slice(1, 1)", lambda x: x[:, 1:]),
])
def test_slices_of_other_ranks(inputs, body, fn):
    check(net(body, inputs), lambda i, p: fn(i["x"]))


def test_fcn_crop_to_the_size_of_the_input():
    # FCN upsamples its scores past the image and crops them back: h[:, :, 5:5 + H, 5:5 + W].
    check(net("output y = crop(h, 5, [x.height, x.width]) + x", "input x: [2, 6, 7]\n    input h: [2, 16, 16]"),
          lambda i, p: i["h"][:, :, 5:11, 5:12] + i["x"])


# -- fusion and folding ---------------------------------------------------------------------------


CHAIN = net("y = sqrt(square(x) + 1) * 2 - exp(-x) / 3 -> abs -> log\n    output y = 1 / y - y", "input x: [3, 4]")


def test_a_chain_of_the_new_ops_fuses_into_loops():
    groups = fuse(cnnc.load(CHAIN), training=False).groups
    assert {g.kind for g in groups} == {"elementwise"} and sum(len(g.nodes) for g in groups) == 12
    assert len(groups) == 2  # the two operands of the first `-`, the second joining the rest
    training = fuse(cnnc.load(CHAIN), training=True).groups
    assert all(len(g.nodes) > 1 for g in training if g.kind == "elementwise")

    def reference(i, p):
        x = i["x"]
        y = torch.log(torch.abs(torch.sqrt(x**2 + 1) * 2 - torch.exp(-x) / 3))
        return 1 / y - y

    check(CHAIN, reference)


@pytest.mark.slow
def test_arithmetic_fuses_into_a_conv_epilogue():
    program = net("output y = conv(4, kernel=3) * 2 - 1 -> sqrt -> neg", "input x: [3, 5, 5]")
    groups = fuse(cnnc.load(program), training=False).groups
    assert [g.nodes for g in groups] == [["conv", "scale", "shift", "sqrt", "neg"]] and groups[0].kind == "epilogue"
    x = positive((2, 3, 5, 5))
    fused, unfused = cnnc.compile(program), cnnc.compile(program, fuse=False)
    np.testing.assert_allclose(fused(x), unfused(x), rtol=1e-6, equal_nan=True)


def test_constants_fold_through_the_new_ops():
    g = cnnc.load("network t {\n input x: [4]\n output y = relu\n}")

    def apply(name, op, inputs, **attrs):
        attrs = Attrs(attrs)
        node_type = REGISTRY[op].infer(attrs, *(g[i].type for i in inputs))
        g.add(cnnc.Node(name, REGISTRY[op], attrs, list(inputs), node_type, {}))
        g.outputs[name] = name

    apply("c", "fill", [], value=4.0, shape=(1, 4))
    apply("z", "fill", [], value=0.0, shape=(1, 4))
    values = {"sqrt": 2.0, "abs": 4.0, "exp": math.exp(4.0), "log": math.log(4.0), "square": 16.0, "reciprocal": 0.25, "neg": -4.0}
    for op in values:
        apply(f"f_{op}", op, ["c"])
    apply("f_scale", "scale", ["c"], factor=-0.5)
    apply("f_shift", "shift", ["c"], offset=1.5)
    apply("f_sub", "sub", ["c", "f_shift"])
    apply("f_sqrt_grad", "sqrt_grad", ["c", "f_sqrt"])
    apply("f_log0", "log", ["z"])  # -inf: left to the kernels
    apply("f_r0", "reciprocal", ["z"])
    out = fold_constants(g)
    expected = {**{f"f_{op}": v for op, v in values.items()}, "f_scale": -2.0, "f_shift": 5.5, "f_sub": -1.5, "f_sqrt_grad": 1.0}
    for name, value in expected.items():
        assert out[name].op.name == "fill" and out[name].attrs["value"] == pytest.approx(value), name
    assert out["f_log0"].op.name == "log" and out["f_r0"].op.name == "reciprocal"


def test_scale_by_one_and_shift_by_zero_are_removed():
    g = cnnc.load(net("output y = x * 1 + 0 - 0 -> scale(1) -> relu"))
    assert [n.op.name for n in run_simplify_passes(g, training=False).nodes()] == ["input", "relu"]


# -- the language ---------------------------------------------------------------------------------


def ops(graph: Graph) -> list[tuple]:
    return [(n.op.name, dict(n.attrs), list(n.inputs)) for n in graph.nodes() if n.op.name != "input"]


def test_operators_build_these_ops():
    g = cnnc.load(net("y = 2 * x - b / 4\n    output z = -x * 2 + +x", "input x: [3]\n    input b: [3]"))
    assert ops(g) == [
        ("scale", {"factor": 2.0}, ["x"]),
        ("scale", {"factor": 0.25}, ["b"]),
        ("sub", {}, ["scale", "scale_1"]),
        ("neg", {}, ["x"]),  # unary minus binds tighter than *
        ("scale", {"factor": 2.0}, ["neg"]),
        ("add", {}, ["scale_2", "x"]),
    ]
    g = cnnc.load(net("output z = 1 - x + (3 - x) / 2 + 1 / x + 2 / x", "input x: [3]"))
    assert [(op, attrs) for op, attrs, _ in ops(g)] == [
        ("neg", {}), ("shift", {"offset": 1.0}), ("neg", {}), ("shift", {"offset": 3.0}), ("scale", {"factor": 0.5}),
        ("add", {}), ("reciprocal", {}), ("add", {}), ("reciprocal", {}), ("scale", {"factor": 2.0}), ("add", {}),
    ]


def test_abs_is_the_builtin_on_numbers_and_the_op_on_tensors():
    g = cnnc.load(net("k = abs(-3)\n    output y = abs(x) -> dense(k + abs(-1))", "input x: [3]"))
    assert [n.op.name for n in g.nodes()] == ["input", "abs", "dense"] and g["dense"].type.sample_shape == (4,)


@pytest.mark.parametrize("expr, message", [
    ("x / y", "'/' is not defined for a tensor [3] and a tensor [3]; tensors take +, - and * with each other "
              "and +, -, * and / with a number (x / y is x * reciprocal(y))"),
    ("x ** 2", "'**' is not defined for a tensor [3] and 2; tensors take +, - and * with each other and +, -, * and / "
               "with a number (x ** 2 is square(x), x ** 0.5 is sqrt(x))"),
    ("2 // x", "'//' is not defined for 2 and a tensor [3]"),
    ("x % 2", "'%' is not defined for a tensor [3] and 2"),
    ("x + [1]", "'+' is not defined for a tensor [3] and [1]"),
    ("x * true", "'*' is not defined for a tensor [3] and true"),
    ("x == y", "'==' is not defined for a tensor [3] and a tensor [3]"),
    ("x / 0", "division of a tensor by zero"),
    ("x / 1e-320", "division of a tensor by 1e-320: its reciprocal is too large"),
    ("-labels", "neg expects a floating-point input, got int64"),
    ("2 * labels", "scale expects a floating-point input, got int64"),
    ("x - labels", "sub expects a floating-point input, got int64"),
    ('-"a"', "unary '-' needs a number or a tensor, got \"a\""),
])
def test_operator_errors_say_what_is_supported(expr, message):
    text = net(f"output z = {expr}", "input x: [3]\n    input y: [3]\n    input labels: int64[3]")
    with pytest.raises(CnncError) as info:
        cnnc.load(text)
    assert info.value.message.startswith(message), info.value.message
    assert (info.value.line, info.value.column) == (5, 16)  # the expression's start


def test_a_number_operand_is_finite():
    # The language has no infinite numbers (a literal or a result that overflows is an error), nor do hyperparameters.
    text = net("output z = x * k", "input x: [3]").replace("network t", "network t(k)")
    with pytest.raises(CnncError, match="hyperparameter 'k' of t: inf is not a finite number"):
        cnnc.load(text, k=math.inf)
    with pytest.raises(CnncError, match="number too large"):
        cnnc.load(net("output z = x * (1e300 * 1e300)", "input x: [3]"))


@pytest.mark.parametrize("body, message, marker", [
    ("slice(0, 1, 2)", "slice: axis: axis 0 is the batch; slice takes a range within one example", "0, 1"),
    ("slice(4, 0, 1)", "slice: axis 4 is out of range for [3, 4, 5] (axis 0 is the batch)", "slice("),
    ("slice(-4, 0, 1)", "slice: axis -4 is out of range for [3, 4, 5] (axis 0 is the batch)", "slice("),
    ("slice(1, 3)", "slice: start 3 is out of range for axis 1 of [3, 4, 5] (length 3)", "slice("),
    ("slice(1, -4)", "slice: start -4 is out of range for axis 1 of [3, 4, 5] (length 3)", "slice("),
    ("slice(2, 0, 5)", "slice: stop 5 is out of range for axis 2 of [3, 4, 5] (length 4)", "slice("),
    ("slice(2, 2, -2)", "slice: [2, -2) is empty for axis 2 of [3, 4, 5] (length 4)", "slice("),
    ("slice(2, 1.5, 3)", "slice: start: expected an integer, got 1.5", "1.5"),
    ("crop(1, [4, 4])", "crop: a window of size [4, 4] at offset [1, 1] does not fit in [3, 4, 5]", "crop("),
    ("crop(-1, 2)", "crop: offset: expected an integer >= 0, got -1", "-1"),
    ("crop(0, [2, 0])", "crop: size: expected an integer >= 1, got 0", "[2, 0]"),
    ("flatten -> crop(0, 1)", "crop expects [channels, height, width] input, got [60]", "crop("),
])
def test_window_errors(body, message, marker):
    text = net(f"output z = {body}")
    with pytest.raises(CnncError) as info:
        cnnc.load(text)
    assert info.value.message == message
    line = text.splitlines()[info.value.line - 1]
    assert line.index(marker) + 1 == info.value.column, (line, info.value.column)
