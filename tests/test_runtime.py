"""The model API: running, checking inputs, parameters and weights files, gradients, optimizers."""

import numpy as np
import pytest

import cnnc
from cnnc import CnncError

MLP = """
network mlp(classes = 4) {
    input x: [2, 3, 3]
    flatten -> fc1: dense(8) -> tanh -> fc2: dense(classes)
    output logits
}
"""

TWO_IN_TWO_OUT = """
network two {
    input a: [3]
    input b: [3]
    s = a + b
    output sum = s
    output scaled = s -> fc: dense(2)
}
"""


@pytest.fixture
def net():
    return cnnc.compile(MLP, seed=3)


def batch(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2, 3, 3)).astype(np.float32), rng.integers(0, 4, n)


def torch_mlp(net):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(18, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
    model.load_state_dict({k.replace("fc1", "1").replace("fc2", "3"): torch.tensor(v) for k, v in net.state_dict().items()})
    return model


def test_params_are_named_and_initialized_like_pytorch(net):
    assert list(net.params) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    bound = 1 / np.sqrt(18)
    w = net.params["fc1.weight"]
    assert w.shape == (8, 18) and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert net.buffers == {}


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = cnnc.compile(MLP, seed=1), cnnc.compile(MLP, seed=1), cnnc.compile(MLP, seed=2)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["fc1.weight"], c.params["fc1.weight"])


def test_forward_and_gradients_match_pytorch(net):
    torch = pytest.importorskip("torch")
    x, y = batch()
    model = torch_mlp(net)
    np.testing.assert_allclose(net(x), model(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    loss, grads = net.grad(x, y, inputs=True)
    tx = torch.tensor(x, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(model(tx), torch.tensor(y))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-5)
    np.testing.assert_allclose(grads["fc1.weight"], model[1].weight.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["x"], tx.grad.numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("loss", ["mse", "bce_with_logits"])
def test_other_losses(net, loss):
    torch = pytest.importorskip("torch")
    x, _ = batch()
    target = np.random.default_rng(1).random((5, 4)).astype(np.float32)
    value, grads = net.grad(x, target, loss=loss)
    model = torch_mlp(net)
    fn = torch.nn.functional.mse_loss if loss == "mse" else torch.nn.functional.binary_cross_entropy_with_logits
    tloss = fn(model(torch.tensor(x)), torch.tensor(target))
    tloss.backward()
    assert value == pytest.approx(tloss.item(), rel=1e-5)
    np.testing.assert_allclose(grads["fc2.bias"], model[3].bias.grad.numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "make, options",
    [
        (lambda: cnnc.optim.SGD(lr=0.1), {}),
        (lambda: cnnc.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01), {"momentum": 0.9, "weight_decay": 0.01}),
        (lambda: cnnc.optim.SGD(lr=0.1, momentum=0.9, nesterov=True), {"momentum": 0.9, "nesterov": True}),
        (lambda: cnnc.optim.Adam(lr=0.01, weight_decay=0.1), {"weight_decay": 0.1}),
    ],
)
def test_optimizers_follow_pytorch_over_several_steps(make, options):
    torch = pytest.importorskip("torch")
    net = cnnc.compile(MLP, seed=5)
    model = torch_mlp(net)
    opt = make()
    torch_opt = (torch.optim.Adam(model.parameters(), lr=0.01, **options) if isinstance(opt, cnnc.optim.Adam)
                 else torch.optim.SGD(model.parameters(), lr=0.1, **options))  # fmt: skip
    trainer = net.trainer(optimizer=opt)
    for step in range(4):
        x, y = batch(seed=step)
        loss = trainer.step(x, y)
        torch_opt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(model(torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        torch_opt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-5)
    np.testing.assert_allclose(net.params["fc1.weight"], model[1].weight.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_several_inputs_and_outputs():
    net = cnnc.compile(TWO_IN_TWO_OUT)
    a = np.ones((2, 3), np.float32)
    out = net(a, b=2 * a)
    assert set(out) == {"sum", "scaled"} and np.allclose(out["sum"], 3)
    assert net(b=a, a=a)["scaled"].shape == (2, 2)


def test_loss_written_in_the_network():
    net = cnnc.compile("network n {\n input x: [3]\n input t: [2]\n output loss = x -> fc: dense(2) -> mse(t)\n}\n")
    x, t = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
    value, grads = net.grad({"x": x, "t": t}, loss=None)
    assert value == pytest.approx(float(np.mean(net(x, t=t))))
    assert set(grads) == {"fc.weight", "fc.bias"}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda n: n(np.zeros((5, 3, 3), np.float32)), "input 'x' has shape [5, 3, 3]; the network expects [N, 2, 3, 3]"),
        (lambda n: n(np.zeros((5, 2, 3, 4), np.float32)), "input 'x' has shape [5, 2, 3, 4]; the network expects [N, 2, 3, 3]"),
        (lambda n: n(np.zeros((5, 2, 3, 3))), "input 'x' has dtype float64; the model takes float32"),
        (lambda n: n(np.full((1, 2, 3, 3), np.nan, np.float32)), "input 'x' holds NaN or infinity (first at index [0, 0, 0, 0])"),
        (lambda n: n(np.zeros((0, 2, 3, 3), np.float32)), "the batch is empty"),
        (lambda n: n(y=np.zeros((1, 2, 3, 3), np.float32)), "the network has no input 'y'"),
        (lambda n: n.grad(batch()[0], np.array([0, 1, 2, 3, 4])), "label 4 is out of range: the network has 4 classes"),
        (lambda n: n.grad(batch()[0], np.zeros(3, np.int64)), "the target has batch size 3, the input 5"),
        (lambda n: n.grad(batch()[0], np.zeros(5, np.float32)), "input 'target' must hold integers"),
        (lambda n: n.grad(batch()[0], batch()[1], loss="hinge"), "unknown loss 'hinge'"),
    ],
)
def test_bad_inputs_are_named(net, call, message):
    with pytest.raises(CnncError) as info:
        call(net)
    assert message in str(info.value)


def test_train_and_eval_modes(net):
    assert net.training
    assert net.eval() is net and not net.training
    assert net.train().training


def test_load_params_accepts_a_state_dict_and_checks_it(net):
    state = net.state_dict()
    state["fc1.weight"] = np.full((8, 18), 0.5, np.float32)
    state["fc1.num_batches_tracked"] = np.array(3)
    net.load_params(state)
    assert np.all(net.params["fc1.weight"] == 0.5)
    before = net.state_dict()
    with pytest.raises(CnncError, match=r"parameter 'fc2.weight' has shape \[4, 9\] in the weights; the network expects \[4, 8\]"):
        net.load_params({**state, "fc2.weight": np.zeros((4, 9))})
    with pytest.raises(CnncError, match="missing: fc2.bias"):
        net.load_params({k: v for k, v in state.items() if k != "fc2.bias"})
    with pytest.raises(CnncError, match="unexpected: extra.weight"):
        net.load_params({**state, "extra.weight": np.zeros(1)})
    with pytest.raises(CnncError, match="parameter 'fc1.bias' holds NaN"):
        net.load_params({**state, "fc1.bias": np.full(8, np.nan)})
    assert all(np.array_equal(before[k], v) for k, v in net.state_dict().items())  # a failed load changes nothing
    net.load_params({"fc1.bias": np.ones(8)}, strict=False)
    assert np.all(net.params["fc1.bias"] == 1)


def test_load_params_from_torch_tensors(net):
    torch = pytest.importorskip("torch")
    net.load_params({k: torch.tensor(v) + 1 for k, v in net.state_dict().items()})


def test_save_and_load_round_trip(net, tmp_path):
    path = tmp_path / "w.npz"
    net.save(path)
    other = cnnc.compile(MLP, seed=99)
    other.load(path)
    assert all(np.array_equal(other.params[k], net.params[k]) for k in net.params)
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]  # no temporary file left behind


def test_bad_weights_files(net, tmp_path):
    path = tmp_path / "w.npz"
    net.save(path)
    data = path.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CnncError, match="truncated.npz is not a readable weights file"):
        net.load(tmp_path / "truncated.npz")
    with pytest.raises(CnncError, match="no such weights file"):
        net.load(tmp_path / "absent.npz")
    small = cnnc.compile(MLP.replace("classes = 4", "classes = 3"))
    with pytest.raises(CnncError, match="parameter 'fc2.weight' has shape \\[4, 8\\]"):
        small.load(path)


def test_a_failed_save_leaves_the_old_file_whole(net, tmp_path, monkeypatch):
    path = tmp_path / "w.npz"
    net.save(path)
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError):
        net.save(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]


def test_training_reduces_the_loss_and_is_reproducible():
    def run():
        net = cnnc.compile(MLP, seed=0)
        trainer = net.trainer(optimizer=cnnc.optim.SGD(lr=0.1, momentum=0.9))
        x, y = batch(32, seed=7)
        losses = [trainer.step(x, y) for _ in range(60)]
        return losses, net.params["fc1.weight"].copy()

    (l1, w1), (l2, w2) = run(), run()
    assert l1[-1] < 0.5 * l1[0]
    assert l1 == l2 and np.array_equal(w1, w2)


def test_float64_models():
    net = cnnc.compile(MLP, dtype="float64")
    x = batch()[0].astype(np.float64)
    assert net(x).dtype == np.float64
    with pytest.raises(CnncError, match="dtype must be float32 or float64"):
        cnnc.compile(MLP, dtype="float16")


def test_batchnorm_refuses_one_value_per_channel_in_training():
    net = cnnc.compile("network n {\n input x: [3]\n fc: dense(4) -> bn: batchnorm\n}\n")
    with pytest.raises(CnncError, match="batchnorm bn needs more than one value per channel in training mode"):
        net(np.ones((1, 3), np.float32))
    assert net.eval()(np.ones((1, 3), np.float32)).shape == (1, 4)
    assert net.train()(np.ones((2, 3), np.float32)).shape == (2, 4)


def test_cosine_schedule():
    from cnnc.runtime.train import cosine_lr

    assert cosine_lr(0.1, 1, 10) == pytest.approx(0.1)
    assert cosine_lr(0.1, 6, 10) == pytest.approx(0.05)
    assert 0 < cosine_lr(0.1, 10, 10) < 0.003


@pytest.mark.slow
def test_a_second_process_loads_every_kernel_from_the_disk_cache(tmp_path):
    """The first process compiles and writes the cache; the second compiles nothing."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json, cnnc\n"
        "net = cnnc.compile('network n {\\n input x: [2, 6, 6]\\n conv(3, kernel=3) -> relu -> flatten -> dense(4)\\n}\\n')\n"
        "trainer = net.trainer(optimizer=cnnc.optim.SGD(lr=0.1))\n"
        "trainer.compile(4)\n"
        "ex = next(iter(net._executors.values()))\n"
        "stats = [fn.stats for _, fn, _ in ex.steps]\n"
        "print(json.dumps([sum(s.cache_hits.values()) for s in stats] + [-sum(s.cache_misses.values()) for s in stats]))\n"
    )
    env = {**os.environ, "CNNC_CACHE_DIR": str(tmp_path), "CNNC_COMPILE_WORKERS": "0"}
    runs = [json.loads(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout)
            for _ in range(2)]  # fmt: skip
    half = len(runs[0]) // 2
    assert any(m < 0 for m in runs[0][half:])  # the first process compiled
    assert all(h > 0 for h in runs[1][:half]) and all(m == 0 for m in runs[1][half:])  # the second only loaded
    # With compile workers, the workers compile into the cache and the process itself only loads.
    pooled = {**env, "CNNC_CACHE_DIR": str(tmp_path / "pooled"), "CNNC_COMPILE_WORKERS": "2"}
    run = json.loads(subprocess.run([sys.executable, "-c", script], env=pooled, capture_output=True, text=True,
                                    check=True).stdout)
    assert all(h > 0 for h in run[:half]) and all(m == 0 for m in run[half:])
