"""Checking one op against PyTorch and against finite differences, forward and backward.

`check(program, inputs, torch_forward)` compiles a tiny network around the op,
gives PyTorch the same inputs and parameters, and compares
  - the outputs (float32, relative to the output's scale),
  - the gradients of a loss mean((y - t)^2) (or the network's own scalar loss)
    with respect to every parameter and every float input,
and, in float64, those gradients against central finite differences.
"""

from __future__ import annotations

import numpy as np

import cnnc


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(b).max(initial=0.0), 1e-6)
    return float(np.abs(a - b).max(initial=0.0) / scale)


def _inputs(graph, shapes: dict, batch: int, rng, dtype):
    out = {}
    for name, t in graph.input_types().items():
        given = shapes.get(name)
        if isinstance(given, np.ndarray):
            out[name] = given if given.dtype.kind in "iu" else given.astype(dtype)
        elif t.dtype.startswith("int"):
            high = given if isinstance(given, int) else 2
            out[name] = rng.integers(0, high, size=(batch, *t.sample_shape))
        else:
            out[name] = rng.standard_normal((batch, *t.sample_shape)).astype(dtype)
    return out


def _loss_args(net, rng, feeds):
    """(target, loss) for net.grad: the network's own scalar loss, or mse against a random target."""
    outputs = net.graph.output_types()
    if any(t.rank == 0 for t in outputs.values()):
        return None, None
    t = next(iter(outputs.values()))
    batch = next(iter(feeds.values())).shape[0]
    return rng.standard_normal((batch, *t.sample_shape)).astype(net.dtype), "mse"


def check(
    program: str,
    torch_forward,
    inputs: dict | None = None,
    batch: int = 2,
    train: bool = True,
    seed: int = 0,
    tol: float = 1e-4,
    fd_tol: float = 1e-5,
    fd: bool = True,
    max_fd: int = 40,
    params: dict | None = None,
) -> None:
    """`torch_forward(inputs: dict[str, Tensor], params: dict[str, Tensor]) -> Tensor` computes the same output."""
    import torch

    rng = np.random.default_rng(seed)
    net = cnnc.compile(program, seed=seed)
    if params:
        net.load_params({**net.state_dict(), **params})
    (net.train() if train else net.eval())
    feeds = _inputs(net.graph, inputs or {}, batch, rng, np.float32)
    target, loss = _loss_args(net, rng, feeds)
    state = net.state_dict()

    # Forward and backward against PyTorch, float32.
    float_inputs = [n for n, x in feeds.items() if x.dtype.kind == "f"]
    out = net(**feeds)
    out = next(iter(out.values())) if isinstance(out, dict) else out
    value, grads = net.grad(feeds, target, loss=loss, inputs=float_inputs)
    tin = {n: torch.tensor(x, requires_grad=x.dtype.kind == "f") for n, x in feeds.items()}
    tparams = {n: torch.tensor(v, requires_grad=n in net.params) for n, v in state.items()}
    ty = torch_forward(tin, tparams)
    assert tuple(ty.shape) == tuple(np.shape(out)), (ty.shape, np.shape(out))
    assert rel_err(out, ty.detach().numpy()) < tol, f"forward differs: {rel_err(out, ty.detach().numpy())}"
    tloss = ty if loss is None else torch.mean((ty - torch.tensor(target)) ** 2)
    tloss.backward()
    assert abs(value - tloss.item()) <= tol * max(1.0, abs(tloss.item())), (value, tloss.item())
    for name in float_inputs:
        expected = tin[name].grad
        expected = np.zeros(feeds[name].shape) if expected is None else expected.numpy()
        assert rel_err(grads[name], expected) < tol, f"gradient of input {name} differs: {rel_err(grads[name], expected)}"
    for name in net.params:
        expected = tparams[name].grad
        expected = np.zeros(state[name].shape) if expected is None else expected.numpy()
        assert rel_err(grads[name], expected) < tol, f"gradient of {name} differs: {rel_err(grads[name], expected)}"

    if fd:
        check_finite_differences(program, feeds, target, loss, state, train, seed, fd_tol, max_fd)


def check_finite_differences(program, feeds, target, loss, state, train, seed, tol, max_fd) -> None:
    """Gradients of a float64 model against central differences of its loss."""
    net = cnnc.compile(program, dtype="float64", seed=seed)
    net.load_params(state)
    (net.train() if train else net.eval())
    feeds = {n: (x.astype(np.float64) if x.dtype.kind == "f" else x) for n, x in feeds.items()}
    if target is not None:
        target = target.astype(np.float64)
    float_inputs = [n for n, x in feeds.items() if x.dtype.kind == "f"]
    rng = np.random.default_rng(seed + 1)

    def loss_value():
        net._state.step = 0  # the same dropout mask on every evaluation
        return net.grad(feeds, target, loss=loss)[0]

    net._state.step = 0
    _, grads = net.grad(feeds, target, loss=loss, inputs=float_inputs)
    tensors = {**{n: feeds[n] for n in float_inputs}, **net.params}
    eps = 1e-6
    for name, array in tensors.items():
        flat = array.reshape(-1)
        picks = rng.choice(flat.size, size=min(flat.size, max_fd), replace=False)
        for i in picks:
            keep = flat[i]
            flat[i] = keep + eps
            up = loss_value()
            flat[i] = keep - eps
            down = loss_value()
            flat[i] = keep
            numeric = (up - down) / (2 * eps)
            analytic = grads[name].reshape(-1)[i]
            scale = max(1.0, np.abs(grads[name]).max())
            assert abs(numeric - analytic) <= tol * scale, f"{name}[{i}]: finite difference {numeric}, gradient {analytic}"


def check_gradient_reuses_the_forward_mask(model, x: np.ndarray, p: float) -> None:
    """A dropout-like layer's gradient applies the mask its forward drew: with the forward and the
    training step at the same step, dx = dy * mask / (1 - p), the mask read off the forward's zeros."""
    target = np.random.default_rng(1).standard_normal(x.shape).astype(x.dtype)
    model._state.step = 5
    y = model(x)
    model._state.step = 5
    loss, grads = model.grad(x, target, loss="mse", inputs=True)
    mask = y != 0
    assert 0 < mask.mean() < 1
    np.testing.assert_allclose(loss, np.mean((y - target) ** 2), rtol=1e-5)
    dy = 2 * (y - target) / y.size
    np.testing.assert_allclose(grads["x"], dy * mask / (1 - p), rtol=1e-5, atol=1e-7)
