"""The cuda target as a whole (in Numba's CUDA simulator): errors, training, the command line."""

import os
import subprocess
import sys

import numpy as np
import pytest

import cnnc
from cnnc.cli import main
from cudacheck import rel

# LeNet's ops (conv, ReLU, max-pool, fully connected, softmax) at a size the simulator runs quickly.
SMALL_LENET = """
network small_lenet(classes = 10) {
    input image: [1, 28, 28]
    maxpool(4)
    conv1: conv(3, kernel=3, pad=1) -> relu -> maxpool(2)
    flatten
    fc1: dense(8) -> relu
    fc2: dense(classes)
    output logits
    output probabilities = softmax
}
"""


def test_asking_for_cuda_without_a_gpu_or_the_simulator_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = "import cnnc\ntry:\n    cnnc.compile('lenet', target='cuda')\nexcept cnnc.CnncError as e:\n    print(e)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "NUMBA_ENABLE_CUDASIM=1" in done.stdout, done.stdout + done.stderr
    assert "target 'cuda'" in done.stdout


@pytest.mark.slow  # a whole model, compiled cold in tens of seconds
def test_training_steps_give_the_same_losses_and_weights_as_the_cpu():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 4)
    results = []
    for target in ("cpu", "cuda"):
        net = cnnc.compile(SMALL_LENET, target=target, seed=2)
        trainer = net.trainer(optimizer=cnnc.optim.SGD(lr=0.1, momentum=0.9, weight_decay=1e-4))
        losses = [trainer.step(x, y) for _ in range(3)]
        results.append((losses, net.state_dict(), net.eval()(x)["probabilities"]))
    (cpu_losses, cpu_weights, cpu_out), (gpu_losses, gpu_weights, gpu_out) = results
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-5)
    assert cpu_losses[2] < cpu_losses[0]
    for name in cpu_weights:
        assert rel(gpu_weights[name], cpu_weights[name]) < 1e-4, name
    assert rel(gpu_out, cpu_out) < 1e-4


def test_params_read_back_from_the_device_and_loads_reach_it():
    net = cnnc.compile(SMALL_LENET, target="cuda", seed=1)
    other = cnnc.compile(SMALL_LENET, seed=5)
    net.load_params(other.state_dict())
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    assert rel(net.eval()(x)["logits"], other.eval()(x)["logits"]) < 1e-5
    net.params["fc2.bias"][...] = 1.0  # a write into the read-back arrays reaches the device
    other.params["fc2.bias"][...] = 1.0
    assert rel(net(x)["logits"], other(x)["logits"]) < 1e-5
    trainer = net.trainer(optimizer=cnnc.optim.Adam(lr=0.01))
    before = net.params["fc1.weight"].copy()
    trainer.step(x, np.array([1, 2]))
    assert not np.array_equal(net.params["fc1.weight"], before)


@pytest.mark.slow
def test_a_lenet_training_step_equals_the_cpu():
    # The library's LeNet itself, at batch 1: about a minute of simulated GPU threads.
    rng = np.random.default_rng(3)
    x = rng.random((1, 1, 28, 28), dtype=np.float32)
    y = np.array([7])
    results = []
    for target in ("cpu", "cuda"):
        net = cnnc.compile("lenet", target=target, seed=4)
        loss = net.trainer(optimizer=cnnc.optim.SGD(lr=0.05, momentum=0.9)).step(x, y)
        results.append((loss, net.state_dict()))
    (cpu_loss, cpu_weights), (gpu_loss, gpu_weights) = results
    assert abs(gpu_loss - cpu_loss) <= 1e-5 * cpu_loss
    for name in cpu_weights:
        assert rel(gpu_weights[name], cpu_weights[name]) < 1e-4, name


@pytest.mark.slow
def test_cnnc_train_and_run_on_the_cuda_target(tmp_path, capsys):
    source = tmp_path / "small_lenet.cnn"
    source.write_text(SMALL_LENET)
    weights = tmp_path / "small.npz"
    args = ["train", str(source), "--dataset", "digits", "--target", "cuda", "--epochs", "1", "--batch", "8",
            "--limit-batches", "2", "--out", str(weights)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "on the cuda target" in out and "CUDA kernels compile as the first step runs" in out
    assert "epoch   1  loss" in out and "held-out accuracy" in out
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 28, 28), np.float32))
    assert main(["run", str(source), "--target", "cuda", "--weights", str(weights), "--input", str(tmp_path / "x.npy")]) == 0
    assert capsys.readouterr().out.startswith("example 0: class ")
