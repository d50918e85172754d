"""Runs a user composes: chosen outputs, chosen gradients, a seeded backward, optimizer steps on chosen
parameters from given gradients, and a training-mode forward that leaves batchnorm's statistics alone.

A GAN's generator step is the case that needs them all: the discriminator's input gradient
(`grad(..., params=False, inputs=...)`) seeds the generator's backward (`vjp`), and an
optimizer steps on the generator's parameters from it. Checked against PyTorch's autograd
through both networks at once.
"""

import numpy as np
import pytest

import cnnc
from cnnc.errors import CnncError

torch = pytest.importorskip("torch")
F = torch.nn.functional

TWO_HEADS = """network n {
    input x: [3, 6, 6]
    input y: [4]
    feat = conv(4, kernel=3) -> bn: batchnorm -> relu
    output feat
    output out = feat -> flatten -> fc: dense(4)
    output other = y -> side: { dense(2) -> bn: batchnorm }
}"""


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def two_heads():
    return cnnc.compile(TWO_HEADS, seed=1)


def test_outputs_computes_only_what_they_need(two_heads):
    net = two_heads.eval()
    x, y = rand(2, 3, 6, 6), rand(2, 4, seed=1)
    everything = net(x, y)
    assert set(everything) == {"feat", "out", "other"}
    feat = net(x, outputs="feat")  # `y` feeds only `other`: not needed
    np.testing.assert_array_equal(feat, everything["feat"])
    both = net(x=x, outputs=["out", "feat"])
    assert list(both) == ["out", "feat"]
    np.testing.assert_array_equal(both["out"], everything["out"])
    other = net(y=y, outputs=["other"])
    np.testing.assert_array_equal(other["other"], everything["other"])
    with pytest.raises(CnncError, match="missing input"):
        net(y=y, outputs="out")
    with pytest.raises(CnncError, match="no output 'ot'.*did you mean 'out'"):
        net(x, outputs="ot")


def test_training_mode_runs_update_only_the_statistics_they_use(two_heads):
    net = two_heads.train()
    try:
        x = rand(4, 3, 6, 6)
        before = net.buffers
        before = {k: v.copy() for k, v in before.items()}
        net(x, outputs="feat")
        after = net.buffers
        assert not np.array_equal(after["bn.running_mean"], before["bn.running_mean"])
        np.testing.assert_array_equal(after["side.bn.running_mean"], before["side.bn.running_mean"])
        kept = {k: v.copy() for k, v in after.items()}
        frozen_run = net(x, outputs="feat", update_stats=False)
        for name, value in net.buffers.items():
            np.testing.assert_array_equal(value, kept[name])
        np.testing.assert_array_equal(frozen_run, net(x, outputs="feat"))  # the same batch statistics
    finally:
        net.eval()


def test_params_chooses_the_gradients(two_heads):
    net = two_heads.eval()
    x, t = {"x": rand(2, 3, 6, 6), "y": rand(2, 4, seed=1)}, rand(2, 4, seed=2)  # `y` feeds a batchnorm, whose statistics a step moves
    loss, everything = net.grad(x, t, loss="mse", output="out", inputs=["x"])
    assert list(everything) == [*net.trainable, "x"]
    for name in ("side.0.weight", "side.bn.weight"):  # `out` does not depend on them: zero, whatever ran before
        assert not everything[name].any()
    again, only_input = net.grad(x, t, loss="mse", output="out", params=False, inputs=["x"])
    assert again == loss and list(only_input) == ["x"]
    np.testing.assert_array_equal(only_input["x"], everything["x"])
    _, some = net.grad(x, t, loss="mse", output="out", params=["fc.bias", "conv.weight"])
    assert list(some) == ["conv.weight", "fc.bias"]  # definition order
    for name in some:
        np.testing.assert_array_equal(some[name], everything[name])
    with pytest.raises(CnncError, match="no parameter 'fc.bia'.*did you mean 'fc.bias'"):
        net.grad(x, t, loss="mse", output="out", params=["fc.bia"])
    with pytest.raises(CnncError, match="bn.running_mean does not train"):
        net.grad(x, t, loss="mse", output="out", params=["bn.running_mean"])


def test_a_parameter_the_loss_does_not_reach_gets_a_zero_gradient_not_a_stale_one(two_heads):
    net = two_heads.eval()
    x, y = rand(2, 3, 6, 6), rand(2, 4, seed=1)
    net.grad({"x": x, "y": y}, rand(2, 2, seed=3), loss="mse", output="other")  # fills side.*'s gradients
    _, grads = net.grad({"x": x, "y": y}, rand(2, 4, seed=3), loss="mse", output="out")
    assert not grads["side.0.weight"].any() and grads["fc.weight"].any()


def test_a_training_step_computes_only_what_its_loss_and_the_statistics_need():
    net = cnnc.compile("""network n {
        input x: [4]
        input y: [3]
        out = x -> fc: dense(2)
        output out
        output probs = y -> dense(3) -> softmax
        input t: [2]
        output loss = mse(out, t)
    }""", seed=1)
    x, t = rand(2, 4), rand(2, 2, seed=1)
    loss, grads = net.grad({"x": x, "t": t}, loss=None, output="loss")  # `y` feeds only `probs`: not needed
    with torch.no_grad():
        want = F.mse_loss(torch.tensor(x) @ torch.tensor(net.params["fc.weight"]).T + torch.tensor(net.params["fc.bias"]),
                          torch.tensor(t))
    assert abs(loss - want.item()) < 1e-6
    assert not grads["dense.weight"].any() and grads["fc.weight"].any()
    net.trainer(loss=None, output="loss").step({"x": x, "t": t}, None)
    for kind in (("own", "loss", (), None), ("grad", "mse", "out", (), None)):
        ops = {node.op.name for node in net.scheduled(kind, True).graph.nodes()}
        assert "softmax" not in ops and "mse" in ops, (kind, ops)


def test_vjp_equals_the_gradient_of_the_seeded_sum(two_heads):
    net = two_heads.eval()
    x, y = rand(2, 3, 6, 6), rand(2, 4, seed=1)
    seeds = {"out": rand(2, 4, seed=5), "feat": rand(2, 4, 4, 4, seed=6)}
    grads = net.vjp({"x": x, "y": y}, seeds, inputs=["x"])
    # The same vector-Jacobian product in PyTorch: the gradient of sum(out * seed_out) + sum(feat * seed_feat).
    state = {k: torch.tensor(v, requires_grad=k in net.trainable) for k, v in net.state_dict().items()}
    tx = torch.tensor(x, requires_grad=True)
    feat = F.relu(F.batch_norm(F.conv2d(tx, state["conv.weight"], state["conv.bias"]), state["bn.running_mean"],
                               state["bn.running_var"], state["bn.weight"], state["bn.bias"], training=False))
    out = F.linear(feat.flatten(1), state["fc.weight"], state["fc.bias"])
    ((out * torch.tensor(seeds["out"])).sum() + (feat * torch.tensor(seeds["feat"])).sum()).backward()
    for name in ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "fc.weight", "fc.bias"):
        np.testing.assert_allclose(grads[name], state[name].grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads["x"], tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert not grads["side.0.weight"].any()
    with pytest.raises(CnncError, match="input 'out_grad' has shape"):
        net.vjp({"x": x, "y": y}, {"out": rand(2, 5)})
    with pytest.raises(CnncError, match="seeds must map"):
        net.vjp(x, {})


GENERATOR = """network generator {
    input z: [8]
    fc: dense(32) -> reshape([2, 4, 4])
    up: conv_transpose(3, kernel=4, stride=2, pad=1, bias=false, init=normal(0.02))
    bn: batchnorm(init=normal(0.02, mean=1))
    output image = tanh
}"""

DISCRIMINATOR = """network discriminator {
    input image: [3, 8, 8]
    conv(4, kernel=4, stride=2, pad=1, init=normal(0.02)) -> leaky_relu(0.2) -> flatten
    output logit = head: dense(1)
}"""


def test_a_gan_generator_step_through_the_discriminator_matches_pytorch():
    g, d = cnnc.compile(GENERATOR, seed=1).train(), cnnc.compile(DISCRIMINATOR, seed=2).train()
    z, ones = rand(4, 8, seed=7), np.ones((4, 1), np.float32)
    gs = {k: torch.tensor(v, requires_grad=k in g.trainable) for k, v in g.state_dict().items()}
    ds = {k: torch.tensor(v) for k, v in d.state_dict().items()}

    # cnnc: the discriminator's input gradient seeds the generator's backward; Adam steps on the generator.
    fake = g(z, update_stats=False)
    _, dfake = d.grad(fake, ones, loss="bce_with_logits", params=False, inputs=["image"])
    grads = g.vjp(z, {"image": dfake["image"]})
    trainer = g.trainer(optimizer=cnnc.optim.Adam(lr=2e-4, betas=(0.5, 0.999)))
    trainer.update(grads)

    # PyTorch: one graph through both networks.
    h = F.linear(torch.tensor(z), gs["fc.weight"], gs["fc.bias"]).reshape(4, 2, 4, 4)
    h = F.conv_transpose2d(h, gs["up.weight"], stride=2, padding=1)
    running = {name: gs[f"bn.{name}"].clone() for name in ("running_mean", "running_var")}
    h = torch.tanh(F.batch_norm(h, running["running_mean"], running["running_var"], gs["bn.weight"], gs["bn.bias"], training=True))
    np.testing.assert_allclose(fake, h.detach().numpy(), rtol=1e-4, atol=1e-5)
    logit = F.linear(F.leaky_relu(F.conv2d(h, ds["conv.weight"], ds["conv.bias"], stride=2, padding=1), 0.2).flatten(1),
                     ds["head.weight"], ds["head.bias"])
    F.binary_cross_entropy_with_logits(logit, torch.tensor(ones)).backward()
    params = [gs[name] for name in g.trainable]
    for name, p in zip(g.trainable, params):
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
    optimizer = torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))
    optimizer.step()
    for name, p in zip(g.trainable, params):
        np.testing.assert_allclose(g.params[name], p.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    # update_stats=False: the sampling forward left the statistics alone; vjp's forward moved them once, as PyTorch's.
    for name, value in running.items():
        np.testing.assert_allclose(g.buffers[f"bn.{name}"], value.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_an_optimizer_on_chosen_parameters_with_accumulated_gradients():
    net = cnnc.compile(DISCRIMINATOR, seed=3)
    x, t = rand(3, 3, 8, 8), np.ones((3, 1), np.float32)
    _, first = net.grad(x, t, loss="bce_with_logits")
    _, second = net.grad(x[::-1].copy(), 0 * t, loss="bce_with_logits")
    state = {k: torch.tensor(v, requires_grad=True) for k, v in net.state_dict().items()}
    trainer = net.trainer(optimizer=cnnc.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01), params=["head.weight", "conv.weight"])
    trainer.update(first, second)
    trainer.update(second)
    reference = torch.optim.SGD([state["conv.weight"], state["head.weight"]], lr=0.1, momentum=0.9, weight_decay=0.01)
    for grads in ([first, second], [second]):
        for name in ("conv.weight", "head.weight"):
            state[name].grad = torch.tensor(sum(g[name] for g in grads))
        reference.step()
    for name, value in net.state_dict().items():
        np.testing.assert_allclose(value, state[name].detach().numpy(), rtol=1e-6, atol=1e-7, err_msg=name)
    with pytest.raises(CnncError, match="no gradient given for parameter head.weight"):
        trainer.update({"conv.weight": first["conv.weight"]})
    with pytest.raises(CnncError, match="the gradient of conv.weight has shape"):
        trainer.update({"conv.weight": first["head.weight"], "head.weight": first["head.weight"]})
    with pytest.raises(CnncError, match="needs parameters to train"):
        net.trainer(params=False)


def test_a_trainer_on_chosen_parameters_steps_only_them():
    net = cnnc.compile(DISCRIMINATOR, seed=4)
    x, t = rand(3, 3, 8, 8), np.ones((3, 1), np.float32)
    before = net.state_dict()
    net.trainer(loss="bce_with_logits", optimizer=cnnc.optim.Adam(lr=0.01), params=["head.bias"]).step(x, t)
    after = net.state_dict()
    assert [name for name in before if not np.array_equal(before[name], after[name])] == ["head.bias"]


def test_an_update_from_a_non_finite_gradient_is_refused_and_changes_nothing():
    net = cnnc.compile(DISCRIMINATOR, seed=5)
    trainer = net.trainer(optimizer=cnnc.optim.SGD(lr=0.1))
    before = net.state_dict()
    grads = {name: np.zeros_like(value) for name, value in net.params.items()}
    grads["head.bias"] = np.array([np.nan], np.float32)
    with pytest.raises(CnncError, match="update 1: the gradient of head.bias holds NaN"):
        trainer.update(grads)
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
