"""dense over the last axis of any rank (PyTorch's nn.Linear): forward, input, weight and bias gradients
against PyTorch and finite differences; the bias and activation epilogue fused as unfused; the costs and
initialization; and images, whose last axis (the width) is not the last one stored."""

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


def batchnorm(y, p, name):
    c = y.shape[1]
    return F.batch_norm(y, torch.zeros(c, dtype=y.dtype), torch.ones(c, dtype=y.dtype), p[f"{name}.weight"], p[f"{name}.bias"],
                        training=True)


@pytest.mark.parametrize("body, reference", [
    ("fc: dense(5)", linear("fc")),
    ("fc: dense(5, bias=false)", linear("fc")),
    # a per-channel epilogue reads the image's channels, not the units the bias lies along
    ("fc: dense(3) -> p: prelu", lambda i, p: F.prelu(linear("fc")(i, p), p["p.weight"])),
    # a batchnorm (over the channels) normalizing the dense's value, which runs as its stage
    ("fc: dense(3) -> b: batchnorm -> relu", lambda i, p: torch.relu(batchnorm(linear("fc")(i, p), p, "b"))),
    ("fc: dense(6) -> g: dense(3)", lambda i, p: F.linear(linear("fc")(i, p), p["g.weight"], p["g.bias"])),
], ids=["bias", "no-bias", "prelu", "batchnorm", "twice"])
def test_dense_over_an_image_is_linear_on_its_width(body, reference):
    # [C, H, W] is stored channels-last, [N, H, W, C]: the width is not the last stored axis.
    check(net("[4, 2, 3]", body), reference, batch=3)


def test_dense_over_an_image_keeps_an_image_and_its_kernels_their_layout():
    g = cnnc.load(net("[4, 2, 3]", "fc: dense(5)"))
    y = g.output_types()["y"]
    assert y.shape == (cnnc.BATCH, 4, 2, 5) and y.image  # still stored channels-last
    node = g["fc"]
    kernel = node.op.cpu(node.attrs, node.type, g["x"].type)
    assert kernel.entry == "dense_image_bias"  # the bias lies along the units: the kernel adds it
    assert not node.op.bias_in_epilogue(node.attrs, g["x"].type)


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
