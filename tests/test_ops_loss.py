"""The losses against PyTorch (float32: values and every gradient) and finite differences (float64).

cross_entropy in every combination of class axis (and so of physical layout), target (labels,
labels with an ignored value, probabilities), per-element weight and reduction; bce_with_logits
and mse with weights, reductions and pos_weight; the loss and its gradient as one kernel in a
fused training step; label checks and errors. test_cuda_loss.py runs the CUDA kernels.
"""

import itertools

import numpy as np
import pytest

import cnnc
from cnnc import CnncError
from cnnc.passes.autodiff import differentiate
from cnnc.passes.pipeline import optimize
from opcheck import check

torch = pytest.importorskip("torch")
F = torch.nn.functional

BATCH = 3
IGNORED = 1
# name: (logits of one example, class axis)
LAYOUTS = {
    "classes": ((5,), 1),
    "tokens": ((3, 4), -1),  # a captioning model's per-token loss: logits [T, V], labels [T]
    "pixels": ((3, 2, 2), 1),  # an image, stored channels-last: classes along the rows
    "image_height": ((3, 2, 4), 2),  # classes along an image's height: the labels [C, W] list the rows in another order
    "volume": ((2, 3, 2, 2), 1),  # rank 5: its labels [3, 2, 2] are an image, stored channels-last
}
TARGETS = ("labels", "ignore", "probabilities")


def dims(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def cross_entropy_case(layout: str, target: str, weighted: bool, reduction: str, seed: int = 0):
    """(program, PyTorch's loss, inputs) of `output loss = cross_entropy(x, t[, w], ...)`."""
    shape, axis = LAYOUTS[layout]
    a = axis % (len(shape) + 1)
    classes, per_element = shape[a - 1], shape[: a - 1] + shape[a:]
    rng = np.random.default_rng(seed)
    inputs = {}
    if target == "probabilities":
        inputs["t"] = rng.uniform(0.0, 1.0, (BATCH, *shape)).astype(np.float32)  # not normalized: sum(t) counts too
        decl = f"input t: {dims(shape)}"
    else:
        labels = rng.integers(0, classes, (BATCH, *per_element))
        if target == "ignore":
            labels.reshape(-1)[::3] = IGNORED
            labels.reshape(-1)[1] = 0
        inputs["t"] = labels
        decl = f"input t: int64{dims(per_element)}"
    args = "x, t"
    if weighted:
        inputs["w"] = rng.uniform(0.25, 2.0, (BATCH, *per_element)).astype(np.float32)
        decl += f"\n input w: {dims(per_element)}"
        args += ", w"
    args += f', axis={axis}, reduction="{reduction}"' + (f", ignore={IGNORED}" if target == "ignore" else "")
    program = f"network n {{\n input x: {dims(shape)}\n {decl}\n output loss = cross_entropy({args})\n}}"

    def reference(i, p):
        x = i["x"].movedim(a, 1)
        t = i["t"].movedim(a, 1) if target == "probabilities" else i["t"]
        options = {"ignore_index": IGNORED} if target == "ignore" else {}
        if not weighted:  # PyTorch's own reductions
            return F.cross_entropy(x, t, reduction=reduction, **options)
        terms = F.cross_entropy(x, t, reduction="none", **options) * i["w"]
        count = (i["t"] != IGNORED).sum() if target == "ignore" else terms.numel()
        return terms.sum() / count if reduction == "mean" else terms.sum()

    return program, reference, inputs


# Every combination; the quick subset takes each layout once, every target, weight and reduction among them.
QUICK = {("classes", "labels", False, "mean"), ("tokens", "ignore", True, "sum"), ("pixels", "probabilities", True, "mean"),
         ("image_height", "ignore", True, "mean"), ("volume", "probabilities", False, "sum")}
COMBINATIONS = [
    pytest.param(*case, id=f"{case[0]}-{case[1]}-{'weighted' if case[2] else 'unweighted'}-{case[3]}",
                 marks=() if case in QUICK else pytest.mark.slow)
    for case in itertools.product(LAYOUTS, TARGETS, (False, True), ("mean", "sum"))
]


@pytest.mark.parametrize("layout, target, weighted, reduction", COMBINATIONS)
def test_cross_entropy_matches_torch_and_finite_differences(layout, target, weighted, reduction):
    program, reference, inputs = cross_entropy_case(layout, target, weighted, reduction)
    # Gradients of the logits, and of the probabilities and the weight where they are inputs.
    check(program, reference, inputs=inputs, batch=BATCH, max_fd=12)


def test_cross_entropy_of_tokens_reads_the_last_axis():
    program, reference, inputs = cross_entropy_case("tokens", "labels", False, "mean")
    net = cnnc.compile(program)
    x = np.random.default_rng(1).standard_normal((BATCH, 3, 4)).astype(np.float32)
    expected = F.cross_entropy(torch.tensor(x).reshape(-1, 4), torch.tensor(inputs["t"]).reshape(-1))
    assert abs(float(net(x=x, t=inputs["t"])) - expected.item()) < 1e-6


def test_every_label_ignored_gives_nan_for_a_mean_and_zero_for_a_sum():
    labels = np.full((2, 2, 2), IGNORED)
    x = np.random.default_rng(2).standard_normal((2, 3, 2, 2)).astype(np.float32)
    for reduction, expected in (("mean", np.nan), ("sum", 0.0)):
        net = cnnc.compile(f"network n {{\n input x: [3, 2, 2]\n input t: int64[2, 2]\n"
                           f' output loss = cross_entropy(x, t, ignore={IGNORED}, reduction="{reduction}")\n}}')
        value, grads = net.grad({"x": x, "t": labels}, loss=None, inputs=["x"])
        assert np.isnan(value) if np.isnan(expected) else value == expected
        np.testing.assert_array_equal(grads["x"], np.zeros_like(x))
    torch_mean = F.cross_entropy(torch.tensor(x), torch.tensor(labels), ignore_index=IGNORED)
    assert torch.isnan(torch_mean)


def test_labels_are_range_checked_along_the_class_axis():
    net = cnnc.compile("network n {\n input x: [3, 4]\n input t: int64[3]\n output loss = cross_entropy(x, t, axis=-1, ignore=9)\n}")
    x = np.zeros((2, 3, 4), np.float32)
    assert float(net(x=x, t=np.array([[0, 3, 9], [9, 1, 2]]))) == pytest.approx(np.log(4))
    with pytest.raises(CnncError, match=r"label 4 is out of range: the network has 4 classes"):
        net(x=x, t=np.array([[0, 4, 1], [1, 1, 1]]))


# -- the fused training step -------------------------------------------------

FUSED = {
    "pixels_weighted": ("""network n {
        input image: [2, 4, 4]
        input t: int64[4, 4]
        input w: [4, 4]
        logits = image -> conv(3, kernel=3, pad=1)
        output loss = cross_entropy(logits, t, w, ignore=1)
    }""", lambda rng: {"t": rng.integers(0, 3, (2, 4, 4)), "w": rng.uniform(0.5, 2, (2, 4, 4)).astype(np.float32)}),
    "probabilities_summed": ("""network n {
        input image: [2, 3, 3]
        input t: [3, 3, 3]
        logits = image -> conv(3, kernel=1)
        output loss = cross_entropy(logits, t, reduction="sum")
    }""", lambda rng: {"t": rng.uniform(0, 1, (2, 3, 3, 3)).astype(np.float32)}),
    "last_axis": ("""network n {
        input image: [2, 3, 3]
        input t: int64[4, 3]
        logits = image -> conv(4, kernel=1)
        output loss = cross_entropy(logits, t, axis=-1)
    }""", lambda rng: {"t": rng.integers(0, 3, (2, 4, 3))}),
}


@pytest.mark.parametrize("name", FUSED)
def test_a_fused_training_step_computes_the_loss_with_its_gradient_as_unfused(name):
    program, targets = FUSED[name]
    graph = cnnc.load(program)
    schedule = optimize(differentiate(graph, graph.outputs["loss"]), training=True)
    assert any(g.kind == "horizontal" and g.pattern == "cross_entropy" for g in schedule.groups)
    rng = np.random.default_rng(0)
    feeds = {"image": rng.standard_normal((2, *graph.input_types()["image"].sample_shape)).astype(np.float32), **targets(rng)}
    fused, unfused = cnnc.compile(program, seed=1), cnnc.compile(program, seed=1, fuse=False)
    a, ga = fused.grad(feeds, loss=None)
    b, gb = unfused.grad(feeds, loss=None)
    assert abs(a - b) <= 1e-6 * max(1.0, abs(b))
    assert ga.keys() == gb.keys() and ga
    for key in ga:
        np.testing.assert_allclose(ga[key], gb[key], rtol=1e-5, atol=1e-6)


def test_a_loss_attached_by_the_runtime_still_takes_labels():
    net = cnnc.compile("network n {\n input x: [6]\n logits = dense(4)\n output logits\n}", seed=0)
    x = np.random.default_rng(3).standard_normal((3, 6)).astype(np.float32)
    labels = np.array([0, 3, 1])
    value, grads = net.grad(x, labels, loss="cross_entropy")
    weight, bias = (torch.tensor(net.state_dict()[k], requires_grad=True) for k in ("dense.weight", "dense.bias"))
    expected = F.cross_entropy(torch.tensor(x) @ weight.T + bias, torch.tensor(labels))
    expected.backward()
    assert abs(value - expected.item()) < 1e-6
    np.testing.assert_allclose(grads["dense.weight"], weight.grad.numpy(), rtol=1e-5, atol=1e-6)


# -- bce_with_logits and mse -------------------------------------------------


def pointwise_case(op: str, weighted: bool, reduction: str, pos_weight: float | None = None):
    args = "a, b" + (", w" if weighted else "") + f', reduction="{reduction}"'
    args += f", pos_weight={pos_weight}" if pos_weight is not None else ""
    extra = "\n input w: [3, 2]" if weighted else ""
    program = f"network n {{\n input a: [3, 2]\n input b: [3, 2]{extra}\n output loss = {op}({args})\n}}"
    rng = np.random.default_rng(4)
    inputs = {"b": rng.uniform(0, 1, (2, 3, 2)).astype(np.float32)}
    if weighted:
        inputs["w"] = rng.uniform(0.25, 2.0, (2, 3, 2)).astype(np.float32)

    def reference(i, p):
        if op == "mse":
            terms = (i["a"] - i["b"]) ** 2
        else:
            pos = None if pos_weight is None else torch.tensor(pos_weight)
            terms = F.binary_cross_entropy_with_logits(i["a"], i["b"], pos_weight=pos, reduction="none")
        if weighted:  # as F.binary_cross_entropy_with_logits(weight=w), which gives no gradient to w
            terms = terms * i["w"]
        return terms.mean() if reduction == "mean" else terms.sum()

    return program, reference, inputs


POINTWISE = [("mse", False, "sum", None), ("mse", True, "mean", None), ("mse", True, "sum", None),
             ("bce_with_logits", False, "sum", None), ("bce_with_logits", True, "mean", None),
             ("bce_with_logits", True, "sum", None), ("bce_with_logits", False, "mean", 3.0),
             ("bce_with_logits", True, "sum", 0.5)]


@pytest.mark.parametrize("op, weighted, reduction, pos_weight", POINTWISE,
                         ids=[f"{o}-{'weighted' if w else 'unweighted'}-{r}-pos{p}" for o, w, r, p in POINTWISE])
def test_pointwise_losses_match_torch_and_finite_differences(op, weighted, reduction, pos_weight):
    program, reference, inputs = pointwise_case(op, weighted, reduction, pos_weight)
    # Gradients of the prediction, the target and the weight.
    check(program, reference, inputs=inputs, batch=2)


def test_bce_with_logits_is_stable_for_large_logits():
    program, reference, _ = pointwise_case("bce_with_logits", True, "mean", 2.0)
    net = cnnc.compile(program, dtype="float64")
    feeds = {"a": np.array([[[-200.0, 150.0], [40.0, -40.0], [0.0, 1e4]]] * 2), "b": np.full((2, 3, 2), 0.3),
             "w": np.full((2, 3, 2), 1.5)}
    value, grads = net.grad(feeds, loss=None, inputs=["a", "b", "w"])
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in feeds.items()}
    expected = reference(tensors, {})
    expected.backward()
    assert np.isfinite(value) and abs(value - expected.item()) <= 1e-12 * abs(expected.item())
    for key in feeds:
        np.testing.assert_allclose(grads[key], tensors[key].grad.numpy(), rtol=1e-12)


# -- errors --------------------------------------------------------------------

ERRORS = [
    ("input x: [4, 5]\ninput t: int64[4]\ninput w: [5]\ny = cross_entropy(x, t, w, axis=-1)",
     r"cross_entropy: weight \[5\] does not match labels \[4\] int64: expected weight \[4\], one per element"),
    ("input x: [4, 5]\ninput t: [4, 5]\ninput w: [4, 5]\ny = cross_entropy(x, t, w)",
     r"cross_entropy: weight \[4, 5\] does not match target \[4, 5\]: expected weight \[5\], one per element"),
    ("input x: [4, 5]\ninput t: [5, 4]\ny = cross_entropy(x, t, axis=-1)",
     r"cross_entropy: target \[5, 4\] does not match logits \[4, 5\]: expected probabilities \[4, 5\] or labels \[4\] int64"),
    ("input x: [4, 5]\ninput t: int64[5]\ny = cross_entropy(x, t, axis=-1)",
     r"cross_entropy: labels \[5\] int64 do not match logits \[4, 5\]: expected labels \[4\] int64"),
    ("input x: [4]\ninput t: [4]\ny = cross_entropy(x, t, ignore=0)",
     r"cross_entropy: ignore applies to integer labels, not to probabilities"),
    ("input x: [4]\ninput t: int64[]\ninput w: []\ny = cross_entropy(x, t, w, w)",
     r"cross_entropy takes 2 or 3 inputs \(a prediction, a target and an optional weight\), got 4"),
    ("input x: [4]\ninput t: int64[]\ninput w: int64[]\ny = cross_entropy(x, t, w)",
     r"cross_entropy expects a floating-point weight, got \[\] int64"),
    ("input x: [4, 5]\ninput t: int64[4]\ny = cross_entropy(x, t, axis=3)", r"cross_entropy: axis 3 is out of range for logits \[4, 5\]"),
    ("input x: [4, 5]\ninput t: int64[4]\ny = cross_entropy(x, t, axis=0)", r"cross_entropy: axis: axis 0 is the batch"),
    ('input x: [4]\ninput t: int64[]\ny = cross_entropy(x, t, reduction="none")',
     r'cross_entropy: reduction: expected one of "mean", "sum", got "none"'),
    ("input a: [5]\ninput b: [5]\ninput w: [4]\ny = mse(a, b, w)", r"mse: weight \[4\] and prediction \[5\] differ"),
    ("input a: [5]\ninput b: [5]\ninput w: [5]\ny = bce_with_logits(a, b, w, w)", r"bce_with_logits takes 2 or 3 inputs"),
    ("input a: [5]\ninput b: [5]\ny = bce_with_logits(a, b, pos_weight=[1, 2])", r"bce_with_logits: pos_weight: expected a number"),
]


@pytest.mark.parametrize("body, message", ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_loss_errors_name_the_op_and_the_shapes(body, message):
    with pytest.raises(CnncError, match=message):
        cnnc.load("network n {\n" + body + "\n}")
