"""Forward and backward of batchnorm, dropout and concat, against PyTorch (float32)
and finite differences (float64); batchnorm's running statistics; dropout's masks."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import cnnc  # noqa: E402
from opcheck import check, check_finite_differences, check_gradient_reuses_the_forward_mask  # noqa: E402


def net(body: str, inputs: str = "input x: [3, 4, 5]") -> str:
    return f"network t {{\n    {inputs}\n    {body}\n}}\n"


def bn_params(c: int, affine: bool, seed: int = 1) -> dict:
    """Non-trivial weights and running statistics, so that every term of the formulas counts."""
    rng = np.random.default_rng(seed)
    params = {
        "l.running_mean": rng.standard_normal(c).astype(np.float32),
        "l.running_var": rng.uniform(0.5, 2.0, c).astype(np.float32),
    }
    if affine:
        params["l.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        params["l.bias"] = rng.standard_normal(c).astype(np.float32)
    return params


def torch_bn(train: bool, eps: float):
    def forward(i, p):
        # Clones: PyTorch updates the running statistics in place in training mode.
        return F.batch_norm(i["x"], p["l.running_mean"].clone(), p["l.running_var"].clone(),
                            p.get("l.weight"), p.get("l.bias"), training=train, eps=eps)
    return forward


# -- batchnorm ------------------------------------------------------------------

@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape, args, affine, eps", [
    ("[6]", "", True, 1e-5),
    ("[3, 4, 5]", "", True, 1e-5),
    ("[6]", "(eps=0.1, momentum=0.3, affine=false)", False, 0.1),
    ("[3, 4, 5]", "(eps=1e-3, momentum=0.5, affine=false)", False, 1e-3),
])
def test_batchnorm(shape, args, affine, eps, train):
    c = int(shape.strip("[]").split(",")[0])
    check(net(f"l: batchnorm{args}", f"input x: {shape}"), torch_bn(train, eps),
          batch=4 if shape == "[6]" else 2, train=train, params=bn_params(c, affine))


@pytest.mark.parametrize("shape, args, momentum, eps", [
    ("[6]", "", 0.1, 1e-5),
    ("[3, 4, 5]", "(momentum=0.3)", 0.3, 1e-5),
    ("[3, 4, 5]", "(eps=0.01, momentum=0.9, affine=false)", 0.9, 0.01),
])
def test_batchnorm_running_statistics_match_torch(shape, args, momentum, eps):
    dims = [int(d) for d in shape.strip("[]").split(",")]
    model = cnnc.compile(net(f"l: batchnorm{args}", f"input x: {shape}"))
    affine = "affine=false" not in args
    start = bn_params(dims[0], affine)
    model.load_params({**model.state_dict(), **start})
    # A mean far from zero: the variance must not lose digits to cancellation.
    x = (np.random.default_rng(2).standard_normal((5, *dims)) * 3 + 50).astype(np.float32)

    model.train()(x)
    module = (torch.nn.BatchNorm1d if len(dims) == 1 else torch.nn.BatchNorm2d)(dims[0], eps=eps, momentum=momentum, affine=affine)
    module.load_state_dict({k[2:]: torch.tensor(v) for k, v in start.items()}, strict=False)
    module.train()(torch.tensor(x))
    for name in ("running_mean", "running_var"):
        expected = getattr(module, name).numpy()
        np.testing.assert_allclose(model.buffers[f"l.{name}"], expected, rtol=1e-5, atol=1e-5)

    # Evaluation reads the running statistics and leaves them as they are.
    before = {k: v.copy() for k, v in model.buffers.items()}
    y = model.eval()(x)
    module.eval()
    np.testing.assert_allclose(y, module(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-4)
    for k, v in model.buffers.items():
        np.testing.assert_array_equal(v, before[k])


def test_batchnorm_inside_a_network():
    """Gradients flow through batchnorm to the layers before it and from the layers after it."""
    # No bias before batchnorm: its exact gradient is zero, so a relative comparison means nothing.
    program = net("flatten -> fc: dense(6, bias=false) -> l: batchnorm -> tanh -> g: dense(3)")
    check(program, lambda i, p: F.linear(torch.tanh(F.batch_norm(
        F.linear(i["x"].flatten(1), p["fc.weight"]), None, None, p["l.weight"], p["l.bias"], training=True)),
        p["g.weight"], p["g.bias"]), batch=3, params=bn_params(6, True))


# -- concat -----------------------------------------------------------------------

@pytest.mark.parametrize("axis", [1, 2, 3, -1])
def test_concat_two(axis):
    other = [3, 4, 5]
    other[axis % 4 - 1] = 2
    check(net(f"concat(x, y, axis={axis})", f"input x: [3, 4, 5]\n    input y: {other}"),
          lambda i, p: torch.cat([i["x"], i["y"]], axis))


@pytest.mark.parametrize("axis", [1, 2, 3])
def test_concat_three_with_a_value_twice(axis):
    other = [3, 4, 5]
    other[axis - 1] = 1
    check(net(f"concat(x, y, x, axis={axis})", f"input x: [3, 4, 5]\n    input y: {other}"),
          lambda i, p: torch.cat([i["x"], i["y"], i["x"]], axis))


def test_concat_features_and_rank_three():
    check(net("concat(x, y, z)", "input x: [4]\n    input y: [1]\n    input z: [3]"),
          lambda i, p: torch.cat([i["x"], i["y"], i["z"]], 1))
    check(net("concat(x, y, axis=2)", "input x: [2, 3]\n    input y: [2, 4]"),
          lambda i, p: torch.cat([i["x"], i["y"]], 2))


# -- dropout ----------------------------------------------------------------------

def test_dropout_eval_is_identity():
    check(net("dropout(0.5)"), lambda i, p: i["x"], train=False)
    model = cnnc.compile(net("dropout(0.9)")).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(model(x), x)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keeps_one_minus_p_scaled(p):
    model = cnnc.compile(net(f"dropout({p})", "input x: [1000]")).train()
    x = np.ones((200, 1000), np.float32)
    y = model(x)
    kept = y != 0
    n = y.size
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y[kept], np.float32(1 / (1 - p)), rtol=1e-6)
    # The mask changes from step to step, and is uncorrelated across positions.
    assert (model(x) != y).any()
    assert abs(kept[:, 0].mean() - (1 - p)) < 0.15


def test_dropout_p_zero_and_reproducible_masks():
    x = np.random.default_rng(0).standard_normal((4, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(cnnc.compile(net("dropout(0)")).train()(x), x)
    a = cnnc.compile(net("dropout(0.5)"), seed=7).train()
    b = cnnc.compile(net("dropout(0.5)"), seed=7).train()
    c = cnnc.compile(net("dropout(0.5)"), seed=8).train()
    first = a(x)
    np.testing.assert_array_equal(first, b(x))
    assert ((first != 0) != (c(x) != 0)).any()
    # Two dropout layers draw different masks.
    two = cnnc.compile(net("a = x -> dropout(0.5)\n    b = x -> dropout(0.5)\n    output y = concat(a, b)")).train()
    y = two(x)
    assert ((y[:, :3] != 0) != (y[:, 3:] != 0)).any()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dropout_gradient_uses_the_forward_mask(dtype):
    p = 0.4
    model = cnnc.compile(net(f"dropout({p})"), dtype=dtype).train()
    x = np.random.default_rng(1).standard_normal((3, 3, 4, 5)).astype(dtype)
    check_gradient_reuses_the_forward_mask(model, x, p)


def test_dropout_finite_differences_in_training():
    program = net("flatten -> fc: dense(5) -> dropout(0.5) -> g: dense(4)")
    model = cnnc.compile(program)
    rng = np.random.default_rng(3)
    feeds = {"x": rng.standard_normal((3, 3, 4, 5)).astype(np.float32)}
    target = rng.standard_normal((3, 4)).astype(np.float32)
    check_finite_differences(program, feeds, target, "mse", model.state_dict(), True, 0, 1e-5, 40)
