"""dropout2d (PyTorch's nn.Dropout2d): whole channels of each example dropped with probability p in
training, the rest scaled by 1/(1-p); the gradient through the same mask; identity in eval and at p = 0.

Random masks cannot be compared with PyTorch's: the tests check their statistics and structure, that
the gradient reads the forward's mask, and that seeds reproduce them. Images [C, H, W] are stored
channels-last and [C, L] as they are: both layouts are checked."""

import numpy as np
import pytest

import cnnc
from opcheck import check, check_finite_differences, check_gradient_reuses_the_forward_mask

# [C, H, W] (channels-last) and [C, L]: (input declaration, the example shape)
LAYOUTS = {"image": ("[40, 2, 3]", (40, 2, 3)), "sequence": ("[40, 5]", (40, 5))}


def net(inputs: str, body: str) -> str:
    return f"network n {{\n    input x: {inputs}\n    output y = {body}\n}}\n"


def per_channel(y: np.ndarray) -> np.ndarray:
    """[N, C, everything else] of a batch."""
    return y.reshape(y.shape[0], y.shape[1], -1)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("p", [0.25, 0.5])
def test_whole_channels_drop_with_probability_p_and_the_rest_scale(layout, p):
    inputs, shape = LAYOUTS[layout]
    model = cnnc.compile(net(inputs, f"dropout2d({p})")).train()
    x = np.random.default_rng(0).uniform(0.5, 1.5, (50, *shape)).astype(np.float32)  # no zeros of its own
    y = per_channel(model(x))
    dropped = (y == 0).all(axis=2)
    assert np.array_equal((y == 0).any(axis=2), dropped)  # a channel is dropped whole or not at all
    draws = dropped.size
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / draws)
    kept = ~dropped
    np.testing.assert_allclose(y[kept], per_channel(x)[kept] / (1 - p), rtol=1e-6)
    # Each example draws its own channels, and every channel is dropped somewhere.
    assert len({row.tobytes() for row in dropped}) > 1
    assert dropped.any(axis=0).all() and kept.any(axis=0).all()
    # The next step draws another mask.
    assert not np.array_equal((per_channel(model(x)) == 0).all(axis=2), dropped)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_gradient_uses_the_forward_mask(layout, dtype):
    p = 0.4
    inputs, shape = LAYOUTS[layout]
    model = cnnc.compile(net(inputs, f"dropout2d({p})"), dtype=dtype).train()
    x = np.random.default_rng(1).uniform(0.5, 1.5, (3, *shape)).astype(dtype)
    check_gradient_reuses_the_forward_mask(model, x, p)


def test_eval_and_p_zero_are_the_identity():
    pytest.importorskip("torch")
    check(net("[3, 4, 5]", "dropout2d(0.5)"), lambda i, p: i["x"], train=False)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(cnnc.compile(net("[3, 4, 5]", "dropout2d(0.9)")).eval()(x), x)
    np.testing.assert_array_equal(cnnc.compile(net("[3, 4, 5]", "dropout2d(0)")).train()(x), x)


def test_seeds_reproduce_masks_and_two_layers_draw_their_own():
    program = net("[6, 4, 5]", "dropout2d(0.5)")
    x = np.random.default_rng(0).uniform(0.5, 1.5, (4, 6, 4, 5)).astype(np.float32)
    first = cnnc.compile(program, seed=7).train()(x)
    np.testing.assert_array_equal(first, cnnc.compile(program, seed=7).train()(x))
    assert not np.array_equal(first != 0, cnnc.compile(program, seed=8).train()(x) != 0)
    two = cnnc.compile("network n {\n input x: [6, 4, 5]\n a = x -> dropout2d(0.5)\n b = x -> dropout2d(0.5)\n"
                       " output y = concat(a, b)\n}").train()
    y = two(x)
    assert not np.array_equal(y[:, :6] != 0, y[:, 6:] != 0)


def test_finite_differences_in_training():
    program = "network n {\n    input x: [3, 2, 2]\n    input t: [3, 2, 2]\n    y = x -> dropout2d(0.5) -> tanh\n    output loss = mse(y, t)\n}"
    rng = np.random.default_rng(3)
    feeds = {name: rng.standard_normal((4, 3, 2, 2)) for name in ("x", "t")}
    check_finite_differences(program, feeds, None, None, {}, True, 0, 1e-5, 40)


def test_dropout2d_refuses_other_ranks():
    with pytest.raises(cnnc.CnncError, match=r"dropout2d expects \[channels, height, width\] or \[channels, length\] input, got \[8\]"):
        cnnc.load(net("[8]", "dropout2d(0.5)"))
