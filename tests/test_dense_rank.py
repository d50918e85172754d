"""dense over the last axis of any rank (PyTorch's nn.Linear): forward, input, weight and bias gradients
against PyTorch and finite differences; the bias and activation epilogue fused as unfused; the costs and
initialization; and the refusal of images, whose last axis is not stored last."""

import numpy as np
import pytest

import cnnc
from cnnc.passes.pipeline import optimize
from opcheck import check

torch = pytest.importorskip("torch")
F = torch.nn.functional


def net(inputs: str, body: str) -> str:
    return f"network n {{\n    input x: {inputs}\n    output y = {body}\n}}\n"


def linear(layer: str, after=lambda y: y):
    """PyTorch's Linear over the last axis with the parameters of `layer`, then `after`."""
    return lambda i, p: after(F.linear(i["x"], p[f"{layer}.weight"], p.get(f"{layer}.bias")))


@pytest.mark.parametrize("inputs, body, reference", [
    ("[3, 4]", "fc: dense(5)", linear("fc")),  # [T, F]
    ("[3, 4]", "fc: dense(5, bias=false)", linear("fc")),
    ("[2, 3, 2, 4]", "fc: dense(3)", linear("fc")),  # [A, B, C, F]
    ("[2, 3, 2, 4]", "fc: dense(3, bias=false)", linear("fc")),
    ("[3, 4]", "fc: dense(5) -> tanh", linear("fc", torch.tanh)),  # the activation in the epilogue
], ids=["sequence", "sequence-no-bias", "rank-5", "rank-5-no-bias", "sequence-tanh"])
def test_dense_on_the_last_axis_matches_torch_and_finite_differences(inputs, body, reference):
    check(net(inputs, body), reference, batch=2)


def test_the_recipe_the_refusal_of_images_gives_is_linear_on_the_last_axis():
    # [A, B, F] is an image [C, H, W] (stored channels-last): dense refuses it and says what to write.
    with pytest.raises(cnnc.CnncError) as info:
        cnnc.load(net("[4, 2, 3]", "fc: dense(5)"))
    message = info.value.message
    assert message == ("dense expects [features] or [..., features] input, got the image [4, 2, 3] (stored channels-last); "
                       "add flatten before it, or apply it to the last axis as reshape([8, 3]) -> dense(5) -> reshape([4, 2, 5]) (in fc)")
    check(net("[4, 2, 3]", "reshape([8, 3]) -> fc: dense(5) -> reshape([4, 2, 5])"), linear("fc"), batch=2)


def test_dense_refuses_a_value_without_a_features_axis():
    program = "network n {\n input a: [3]\n input b: [3]\n output y = mse(a, b) -> dense(2)\n}"
    with pytest.raises(cnnc.CnncError, match=r"dense expects \[features\] or \[\.\.\., features\] input, got \[\]"):
        cnnc.load(program)


PROGRAM = """network n {
    input x: [3, 4]
    input t: [3, 2]
    y = x -> fc: dense(6) -> relu -> g: dense(2, bias=false) -> tanh
    output loss = mse(y, t)
}"""


def test_fused_epilogues_train_as_unfused():
    groups = optimize(cnnc.load(PROGRAM), training=False).groups
    assert [["fc", "relu"], ["g", "tanh"]] == [g.nodes for g in groups if g.kind == "epilogue"]
    rng = np.random.default_rng(4)
    feeds = {"x": rng.standard_normal((2, 3, 4)).astype(np.float32), "t": rng.standard_normal((2, 3, 2)).astype(np.float32)}
    fused, unfused = cnnc.compile(PROGRAM, seed=1), cnnc.compile(PROGRAM, seed=1, fuse=False)
    a, ga = fused.grad(feeds, loss=None, inputs=["x"])
    b, gb = unfused.grad(feeds, loss=None, inputs=["x"])
    assert abs(a - b) <= 1e-6 * max(1.0, abs(b))
    assert set(ga) == set(gb) == {"x", "fc.weight", "fc.bias", "g.weight"}
    for name in ga:
        np.testing.assert_allclose(ga[name], gb[name], rtol=1e-5, atol=1e-6)


def test_parameters_costs_and_initialization_count_the_features_axis_only():
    g = cnnc.load(net("[7, 4]", "l: dense(50)"))
    assert g.output_types()["y"].shape == (cnnc.BATCH, 7, 50)
    assert g.param_shapes == {"l.weight": (50, 4), "l.bias": (50,)}
    assert g.params["l.weight"].fan_in == g.params["l.bias"].fan_in == 4  # PyTorch's in_features
    node = g["l"]
    macs = node.op.macs(node.attrs, node.type, g["x"].type)
    assert macs == 7 * 4 * 50 and node.op.flops(node.attrs, node.type, g["x"].type) == 2 * macs
    weight = cnnc.compile(net("[7, 4]", "l: dense(50)")).state_dict()["l.weight"]
    assert 0.4 < np.abs(weight).max() <= 0.5  # U(-1/sqrt(4), 1/sqrt(4)): the bound of 4 features, not 28


def test_features_keep_their_2d_kernels_and_other_ranks_share_one_flat_kernel():
    def entries(inputs, target):
        g = cnnc.load(net(inputs, "l: dense(3)"))
        node = g["l"]
        kernel = getattr(node.op, target)(node.attrs, node.type, g["x"].type)
        return kernel.entry, [getattr(arg, "flat", None) for arg in kernel.args[:3]]

    assert entries("[4]", "cpu") == ("dense", [False, None, False])
    assert entries("[3, 4]", "cpu") == entries("[2, 3, 2, 4]", "cpu") == ("dense_rows", [True, None, True])
    assert entries("[4]", "cuda") == entries("[3, 4]", "cuda") == ("dense", [False, None, False])
