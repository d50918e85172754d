"""sum, mean, expand and gram: forward and gradients against PyTorch and finite differences.

Images are stored channels-last, so a reduction or a broadcast may take its input and give
its output in different physical orders: the cases below reduce and expand images, other
ranks, and ranks that become images (read by a conv afterwards, which reads them as images).
"""

import numpy as np
import pytest

import cnnc
from opcheck import check

torch = pytest.importorskip("torch")
F = torch.nn.functional


def net(body: str, inputs: str = "x: [3, 4, 5]") -> str:
    lines = "\n".join(f" input {spec}" for spec in inputs.split(";"))
    return f"network n {{\n{lines}\n{body}\n}}"


def tutorial_gram(t):
    """gram_matrix of the PyTorch neural style tutorial: it divides by the batch too."""
    a, b, c, d = t.size()
    features = t.view(a * b, c * d)
    return torch.mm(features, features.t()).div(a * b * c * d)


def gram_per_example(t):
    f = t.reshape(t.shape[0], t.shape[1], -1)
    return f @ f.transpose(1, 2) / f[0].numel()


def conv(t, p):
    return F.conv2d(t, p["conv.weight"], p["conv.bias"])


# (program, PyTorch's forward of the inputs `x` and parameters `p`)
CASES = {
    # axis=none: everything, the batch included, to a scalar (the network's own loss)
    "sum_all": (net(" output y = sum"), lambda x, p: x["x"].sum()),
    "mean_all": (net(" output y = mean", "x: [2, 5]"), lambda x, p: x["x"].mean()),
    # the channels of an image: its last physical axis
    "sum_channels": (net(" output y = sum(axis=1)"), lambda x, p: x["x"].sum(1)),
    "sum_height": (net(" output y = sum(axis=2)"), lambda x, p: x["x"].sum(2)),
    "mean_spatial": (net(" output y = mean(axis=[2, 3])"), lambda x, p: x["x"].mean((2, 3))),
    "mean_channels_width_kept": (net(" output y = mean(axis=[-1, 1], keepdims=true)"),
                                 lambda x, p: x["x"].mean((1, 3), keepdim=True)),
    "sum_width_kept": (net(" output y = sum(axis=3, keepdims=true)"), lambda x, p: x["x"].sum(3, keepdim=True)),
    # an image whose channel axis of 1 is kept is still an image: a conv reads it
    "sum_channels_kept_then_conv": (net(" output y = sum(axis=1, keepdims=true) -> conv(2, kernel=2)"),
                                    lambda x, p: conv(x["x"].sum(1, keepdim=True), p)),
    # other ranks, and a rank-5 value that becomes an image
    "sum_vector": (net(" output y = sum(axis=1)", "x: [4, 5]"), lambda x, p: x["x"].sum(1)),
    "mean_last_rank3": (net(" output y = mean(axis=-1, keepdims=true)", "x: [4, 5]"), lambda x, p: x["x"].mean(-1, keepdim=True)),
    "sum_rank5_to_image_then_conv": (net(" output y = sum(axis=2) -> conv(2, kernel=2)", "x: [3, 2, 4, 5]"),
                                     lambda x, p: conv(x["x"].sum(2), p)),
    "mean_rank5_axes": (net(" output y = mean(axis=[1, 3])", "x: [3, 2, 4, 5]"), lambda x, p: x["x"].mean((1, 3))),
    # expand: size-1 axes of an image, of another rank, and an image read by a conv afterwards
    "expand_image": (net(" output y = expand([3, 4, -1])", "x: [1, 4, 1]"), lambda x, p: x["x"].expand(2, 3, 4, 1)),
    "expand_image_all": (net(" output y = expand([3, -1, 5])", "x: [1, 4, 1]"), lambda x, p: x["x"].expand(2, 3, 4, 5)),
    "expand_vector": (net(" output y = expand([3, 6])", "x: [3, 1]"), lambda x, p: x["x"].expand(2, 3, 6)),
    "expand_then_conv": (net(" output y = expand([3, -1, -1]) -> conv(2, kernel=2)", "x: [1, 3, 4]"),
                         lambda x, p: conv(x["x"].expand(2, 3, 3, 4), p)),
    # the Gram matrix of an image, of [C, L], and a style loss over a conv's features
    "gram_image": (net(" output y = gram"), lambda x, p: gram_per_example(x["x"])),
    "gram_rows": (net(" output y = gram", "x: [3, 7]"), lambda x, p: gram_per_example(x["x"])),
    "style_loss": (net(" f = x -> conv(4, kernel=2)\n output loss = mse(gram(f), t)", "x: [3, 4, 5];t: [4, 4]"),
                   lambda x, p: F.mse_loss(gram_per_example(conv(x["x"], p)), x["t"])),
}


# Cases that compile a conv's kernels too (tens of seconds with a cold kernel cache).
WITH_CONV = {name for name, (program, _) in CASES.items() if "conv(" in program}


@pytest.mark.parametrize("program, forward", [
    pytest.param(*case, id=name, marks=[pytest.mark.slow] if name in WITH_CONV else []) for name, case in CASES.items()
])
def test_matches_torch_and_finite_differences(program, forward):
    check(program, forward, batch=2)


def test_an_own_loss_written_with_mean_trains_as_mse():
    """`output loss = mean(e * e)` is the network's loss for grad(loss=None): mse(y, -t) by another name."""
    own = net(" y = x -> fc: dense(3)\n e = y + t\n output loss = mean(e * e)", "x: [4];t: [3]")
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)
    model = cnnc.compile(own, seed=1)
    value, grads = model.grad({"x": x, "t": t}, loss=None, inputs=["x"])
    w, b = (torch.tensor(model.params[k], requires_grad=True) for k in ("fc.weight", "fc.bias"))
    tx = torch.tensor(x, requires_grad=True)
    loss = F.mse_loss(F.linear(tx, w, b), -torch.tensor(t))
    loss.backward()
    assert value == pytest.approx(loss.item(), rel=1e-5)
    np.testing.assert_allclose(grads["fc.weight"], w.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["fc.bias"], b.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["x"], tx.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_gram_is_the_style_tutorials_gram_matrix_per_example():
    model = cnnc.compile(net(" output y = gram"))
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    one = tutorial_gram(torch.tensor(x[:1])).numpy()
    np.testing.assert_allclose(model(x[:1])[0], one, rtol=1e-5, atol=1e-7)  # batch 1: the same formula
    got = model(x)
    for e in range(2):  # batch 2: each example as the tutorial's batch 1
        np.testing.assert_allclose(got[e], tutorial_gram(torch.tensor(x[e : e + 1])).numpy(), rtol=1e-5, atol=1e-7)


def test_costs_per_example():
    body = " s = l: sum(axis=1)\n output m = k: mean(s)\n output g = q: gram(x)\n output e = z -> r: expand([3, 4, 5])"
    g = cnnc.load(net(body, "x: [3, 4, 5];z: [1, 4, 5]"))
    cost = {}
    for name in ("l", "k", "q", "r"):
        node = g[name]
        cost[name] = node.op.flops(node.attrs, node.type, *(g[i].type for i in node.inputs))
    assert cost == {"l": 60, "k": 20 + 1, "q": 2 * 3 * 3 * 20, "r": 0}


ERRORS = [
    ("sum(axis=0)", "axis 0 is the batch"),
    ("sum(axis=[1, 0])", "axis 0 is the batch"),
    ("mean(axis=-4)", "mean: axis -4 is the batch axis of [3, 4, 5]"),
    ("sum(axis=[1, 1])", "axes [1, 1] name an axis twice"),
    ("mean(axis=[2, -2])", "mean: axes [2, -2] name one axis of [3, 4, 5] twice"),
    ("sum(axis=4)", "sum: axis 4 is out of range for [3, 4, 5]"),
    ("sum(axis=[])", "expected an axis or a non-empty list of axes"),
    ("sum(keepdims=true)", "sum: keepdims needs an axis"),
    ("expand([3, 4])", "expand: shape [3, 4] has 2 axes, [3, 4, 5] has 3"),
    ("expand([3, 8, 5])", "expand: cannot expand [3, 4, 5] to [3, 8, 5]: axis 2 has size 4, not 1"),
    ("expand([3, 0, 5])", "expected a non-empty list of sizes >= 1 or -1"),
]


@pytest.mark.parametrize("layer, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(layer, message):
    with pytest.raises(cnnc.CnncError, match=message.replace("[", r"\[").replace("]", r"\]")):
        cnnc.load(net(f" output y = {layer}"))


def test_gram_refuses_other_ranks():
    with pytest.raises(cnnc.CnncError, match=r"gram expects \[channels, height, width\] or \[channels, length\] input, got \[6\]"):
        cnnc.load(net(" output y = gram", "x: [6]"))
