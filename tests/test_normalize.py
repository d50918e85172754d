"""normalize: (x - mean[c]) / std[c] with constant per-channel statistics (torchvision's Normalize).

Its mean and std are constants of the layer: in the model's arenas for the kernels, never in the
state dict. An elementwise expression, so it fuses; its gradient (dy / std) fuses too.
"""

import numpy as np
import pytest

import cnnc
from cnnc.passes.pipeline import optimize
from opcheck import check

torch = pytest.importorskip("torch")

IMAGENET = "mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]"

PROGRAMS = {
    "image": f"network n {{\n input x: [3, 4, 5]\n output y = normalize({IMAGENET})\n}}",
    "vector": "network n {\n input x: [4]\n output y = normalize(0.5, [1, 2, 3, 4])\n}",
}


def reference(mean, std, shape):
    view = (1, -1) + (1,) * (len(shape) - 2)
    return lambda x, p: (x["x"] - torch.tensor(mean).view(view)) / torch.tensor(std).view(view)


def test_normalize_matches_torchvision_and_finite_differences():
    check(PROGRAMS["image"], reference([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], (2, 3, 4, 5)))
    check(PROGRAMS["vector"], reference([0.5] * 4, [1.0, 2, 3, 4], (2, 4)))


def test_the_statistics_are_constants_not_state():
    net = cnnc.compile(f"network n {{\n input x: [3, 4, 4]\n normalize({IMAGENET}) -> c: conv(2, kernel=3)\n}}")
    assert list(net.state_dict()) == ["c.weight", "c.bias"]
    assert net.graph.parameter_count() == 2 * 27 + 2 and not net.buffers
    net.load_params(net.state_dict())  # a strict load does not ask for them


def test_normalize_fuses_and_passes_the_input_gradient():
    program = f"network n {{\n input image: [3, 6, 6]\n normalize({IMAGENET}) -> relu -> c: conv(2, kernel=3)\n}}"
    groups = optimize(cnnc.load(program), training=False).groups
    assert [g.nodes for g in groups if g.kind == "elementwise"] == [["normalize", "relu"]]
    net = cnnc.compile(program)
    x = np.random.default_rng(0).uniform(size=(2, 3, 6, 6)).astype(np.float32)
    target = np.zeros((2, 2, 4, 4), np.float32)
    _, grads = net.grad(x, target, loss="mse", params=False, inputs=["image"])
    assert list(grads) == ["image"]
    tx = torch.tensor(x, requires_grad=True)
    w = {k: torch.tensor(v) for k, v in net.state_dict().items()}
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    y = torch.nn.functional.conv2d(torch.relu((tx - mean) / std), w["c.weight"], w["c.bias"])
    torch.mean(y**2).backward()
    np.testing.assert_allclose(grads["image"], tx.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("call, message", [
    ("normalize([1, 2], 1)", "normalize: mean has 2 values; [3, 4, 4] has 3 channels"),
    ("normalize(0, [1, 0, 1])", "normalize: std: expected positive numbers"),
    ("normalize(0, [])", "expected a number or a list of numbers"),
    ("flatten -> reshape([3, 4, 2, 2]) -> normalize(0, 1)", "normalize expects [channels] or [channels, height, width]"),
])
def test_mistakes(call, message):
    with pytest.raises(cnnc.CnncError) as info:
        cnnc.load(f"network n {{\n input x: [3, 4, 4]\n {call}\n}}")
    assert message in str(info.value)


# The CUDA programs (also compiled to PTX by tests/ptxcheck.py).
CUDA = {
    "image": f"network n {{\n input x: [3, 2, 3]\n y = normalize({IMAGENET}) -> relu\n output loss = mse(y, x)\n}}",
    "vector": "network n {\n input x: [4]\n y = normalize(0.5, [1, 2, 3, 4])\n output loss = mse(y, x)\n}",
}


@pytest.mark.slow
@pytest.mark.parametrize("program", CUDA.values(), ids=CUDA)
def test_normalize_on_the_cuda_target_equals_the_cpu(program):
    from cudacheck import check as cuda_check

    cuda_check(program, modes=("eval",))
    cuda_check(program, modes=("eval",), fuse=True)
