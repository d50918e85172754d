"""Initializers chosen per layer (`init=`, `bias_init=`) and parameters that do not train (`frozen=true`).

The fills follow torch.nn.init: the fans are compared with PyTorch's own computation, the
distributions by their statistics (the generators differ), FCN's bilinear kernel with
get_upsampling_weight as pytorch-fcn writes it.
"""

import math

import numpy as np
import pytest

import cnnc
from cnnc.errors import CnncError
from cnnc.initializers import bilinear_kernel, fans


def network(layer: str, shape="[4, 6, 6]") -> str:
    return f"network n {{\n input x: {shape}\n {layer}\n}}"


@pytest.mark.parametrize("shape", [(6, 4), (8, 3, 5, 5), (3, 8, 4, 4), (5, 2, 3, 1)])
def test_fans_are_pytorchs(shape):
    torch = pytest.importorskip("torch")
    assert fans(shape) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


def weight(program: str, name: str = "l.weight", seed: int = 0) -> np.ndarray:
    return cnnc.compile(program, seed=seed, dtype="float64").params[name]


def test_normal_uniform_and_constants():
    w = weight(network("l: conv(64, kernel=3, init=normal(0.02))"))
    assert abs(w.std() - 0.02) < 0.001 and abs(w.mean()) < 0.001
    w = weight(network("l: conv(64, kernel=3, init=normal(0.02, mean=1))"))
    assert abs(w.std() - 0.02) < 0.001 and abs(w.mean() - 1) < 0.001
    w = weight(network("l: conv(64, kernel=3, init=uniform(-0.5, 2))"))
    assert w.min() >= -0.5 and w.max() <= 2 and abs(w.mean() - 0.75) < 0.05
    net = cnnc.compile(network("l: conv(8, kernel=3, init=constant(0.5), bias_init=zeros)"))
    assert (net.params["l.weight"] == 0.5).all() and (net.params["l.bias"] == 0).all()
    net = cnnc.compile(network("l: conv(8, kernel=3, init=ones, bias_init=constant(-2))"))
    assert (net.params["l.weight"] == 1).all() and (net.params["l.bias"] == -2).all()


@pytest.mark.parametrize("layer, name, shape", [
    ("l: conv(32, kernel=3)", "l.weight", (32, 4, 3, 3)),
    ("l: conv_transpose(32, kernel=4, stride=2)", "l.weight", (4, 32, 4, 4)),
    ("flatten -> l: dense(50)", "l.weight", (50, 144)),
])
def test_xavier_and_kaiming_follow_torch_nn_init(layer, name, shape):
    fin, fout = fans(shape)
    spread = {
        "xavier": math.sqrt(6 / (fin + fout)),  # uniform bound
        "xavier_uniform(gain=2)": 2 * math.sqrt(6 / (fin + fout)),
        "kaiming_uniform": math.sqrt(2) * math.sqrt(3 / fin),
        "kaiming_uniform(a=1)": math.sqrt(3 / fin),
    }
    for init, bound in spread.items():
        w = weight(network(layer.replace(")", f", init={init})", 1)), name)
        assert w.shape == shape and np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound, init
    for init, std in {"xavier_normal": math.sqrt(2 / (fin + fout)), "kaiming_normal": math.sqrt(2 / fin)}.items():
        w = weight(network(layer.replace(")", f", init={init})", 1)), name)
        assert abs(w.std() / std - 1) < 0.1, init


def get_upsampling_weight(in_channels, out_channels, kernel_size):
    """pytorch-fcn's bilinear kernel (torchfcn/models/fcn32s.py), restated."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = np.ogrid[:kernel_size, :kernel_size]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    weight = np.zeros((in_channels, out_channels, kernel_size, kernel_size), dtype=np.float64)
    weight[range(in_channels), range(out_channels), :, :] = filt
    return weight


@pytest.mark.parametrize("kernel, stride", [(4, 2), (16, 8), (3, 1)])
def test_bilinear_equals_fcns_upsampling_weight(kernel, stride):
    w = weight(network(f"l: conv_transpose(4, kernel={kernel}, stride={stride}, bias=false, init=bilinear)"))
    np.testing.assert_array_equal(w, get_upsampling_weight(4, 4, kernel))
    assert bilinear_kernel(4, 2).shape == (4, 2)


def test_a_bilinear_transposed_conv_upsamples_a_smooth_image():
    torch = pytest.importorskip("torch")
    net = cnnc.compile(network("up: conv_transpose(2, kernel=4, stride=2, pad=1, bias=false, init=bilinear)", "[2, 5, 5]"))
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = torch.tensor(get_upsampling_weight(2, 2, 4), dtype=torch.float32)
    expected = torch.nn.functional.conv_transpose2d(torch.tensor(x), w, stride=2, padding=1).numpy()
    np.testing.assert_allclose(net(x), expected, rtol=1e-5, atol=1e-6)


def test_batchnorm_weight_as_in_dcgan():
    net = cnnc.compile(network("bn: batchnorm(init=normal(0.02, mean=1), bias_init=zeros)", "[2000]"), dtype="float64")
    w = net.params["bn.weight"]
    assert abs(w.mean() - 1) < 0.003 and abs(w.std() - 0.02) < 0.003 and (net.params["bn.bias"] == 0).all()


def test_prelu_keeps_its_own_init_argument():
    net = cnnc.compile(network("p: prelu(init=0.1)", "[3]"))
    assert (net.params["p.weight"] == np.float32(0.1)).all()


def test_seeds_decide_the_draws():
    program = network("l: conv(8, kernel=3, init=xavier_normal)")
    np.testing.assert_array_equal(weight(program, seed=3), weight(program, seed=3))
    assert not np.array_equal(weight(program, seed=3), weight(program, seed=4))


@pytest.mark.parametrize("layer, message", [
    ("relu(init=zeros)", "relu has no parameters, so 'init=' does not apply"),
    ("conv(4, kernel=3, init=3)", "expected an initializer such as normal(0.02)"),
    ("conv(4, kernel=3, bias=false, bias_init=zeros)", "conv has no bias here"),
    ("conv(4, kernel=3, init=normal(1, 2))", "normal takes the standard deviation by position and the mean by keyword"),
    ("conv(4, kernel=3, init=normal(std=-1))", "describes no distribution"),
    ("conv(4, kernel=3, init=uniform(high=1, width=2))", "uniform has no argument 'width' (it takes low, high)"),
    ("conv(4, kernel=3, init=constant)", "constant needs argument 'value'"),
    ("conv(4, kernel=3, bias_init=xavier)", "xavier_uniform needs a weight of two or more dimensions"),
    ("conv(4, kernel=3, frozen=1)", "frozen: expected true or false"),
    ("flatten -> dense(4, init=bilinear)", "bilinear initializes a conv_transpose weight"),
])
def test_mistakes_name_the_layer_and_what_is_expected(layer, message):
    with pytest.raises(CnncError, match=None) as info:
        cnnc.load(network(layer))
    assert message in str(info.value)
    assert info.value.line == 3


def test_initializer_names_are_reserved():
    with pytest.raises(CnncError, match="'normal' is the name of a built-in"):
        cnnc.load(network("normal = relu"))


FROZEN = """network n {
    input x: [3, 5, 5]
    c = conv(4, kernel=3, frozen=true) -> bn: batchnorm(frozen=true) -> relu -> flatten
    output logits = fc: dense(2) -> sigmoid
}"""


def test_frozen_parameters_are_saved_and_counted_but_do_not_train(tmp_path):
    net = cnnc.compile(FROZEN, seed=1)
    assert list(net.state_dict()) == ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                      "fc.weight", "fc.bias"]
    assert net.trainable == ["fc.weight", "fc.bias"]
    assert list(net.params) == ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "fc.weight", "fc.bias"]
    assert net.graph.parameter_count() == 4 * 3 * 9 + 4 + 4 + 4 + 2 * 36 + 2
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(np.float32)
    y = np.random.default_rng(1).uniform(size=(4, 2)).astype(np.float32)
    _, grads = net.grad(x, y, loss="mse")
    assert list(grads) == ["fc.weight", "fc.bias"]
    before = net.state_dict()
    net.trainer(loss="mse", optimizer=cnnc.optim.SGD(lr=0.5)).step(x, y)
    after = net.state_dict()
    for name in ("conv.weight", "conv.bias", "bn.weight", "bn.bias"):
        np.testing.assert_array_equal(before[name], after[name])
    assert not np.array_equal(before["fc.weight"], after["fc.weight"])
    assert not np.array_equal(before["bn.running_mean"], after["bn.running_mean"])  # statistics still update
    net.save(tmp_path / "w.npz")
    other = cnnc.compile(FROZEN, seed=2)
    other.load(tmp_path / "w.npz")
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[name], value)
    with pytest.raises(CnncError, match="conv.weight does not train"):
        net.grad(x, y, loss="mse", params=["conv.weight"])
