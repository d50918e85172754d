"""Forward and backward of conv and conv_transpose over many hyperparameters,
against PyTorch (float32) and finite differences (float64)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import cnnc  # noqa: E402
from cnnc.passes.autodiff import differentiate  # noqa: E402
from opcheck import check  # noqa: E402

# PyTorch warns that its own "same" padding of an even kernel copies the input.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


def _pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def _lang(v):
    """A value as the .cnn language writes it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v)


def _program(op, cin, size, cout, attrs):
    h, w = _pair(size)
    args = ", ".join(f"{k}={_lang(v)}" for k, v in attrs.items())
    return f"network t {{\n    input x: [{cin}, {h}, {w}]\n    c: {op}({cout}, {args})\n}}\n"


# (cin, [h, w], cout, attributes, batch)
CONV_CASES = [
    (3, [7, 6], 4, dict(kernel=1), 2),  # a plain GEMM
    (3, [7, 6], 4, dict(kernel=1, stride=2), 2),
    (3, [5, 5], 4, dict(kernel=1, pad=1, bias=False), 1),
    (3, [6, 7], 5, dict(kernel=3, pad=1), 3),
    (3, [7, 6], 4, dict(kernel=3, stride=2, pad=1), 3),
    (2, [8, 7], 3, dict(kernel=3, stride=3), 2),
    (3, [6, 6], 4, dict(kernel=3, stride=2), 2),  # the last row and column reach no window
    (2, [9, 8], 3, dict(kernel=5, pad=2), 2),
    (2, [9, 7], 3, dict(kernel=5, stride=2, pad=[1, 2]), 1),
    (3, [5, 7], 4, dict(kernel=[1, 3], pad=[0, 1]), 2),
    (2, [7, 6], 3, dict(kernel=[3, 2], stride=[2, 1], pad=[1, 0]), 2),
    (2, [6, 7], 3, dict(kernel=[2, 4], pad="same"), 2),  # the odd pixel goes at the end
    (2, [7, 7], 3, dict(kernel=3, pad="same", dilation=2), 2),
    (2, [9, 8], 3, dict(kernel=3, stride=2, pad=1, dilation=2), 3),
    (2, [7, 9], 3, dict(kernel=[3, 2], stride=[1, 2], dilation=[2, 1], pad="valid"), 2),
    (4, [6, 5], 6, dict(kernel=3, pad=1, groups=2), 2),
    (4, [7, 7], 6, dict(kernel=3, stride=2, groups=2, bias=False), 3),
    (4, [6, 7], 2, dict(kernel=[3, 2], stride=[2, 1], pad=1, groups=2), 2),  # narrow groups: the direct kernels
    (4, [5, 6], 6, dict(kernel=1, groups=2), 2),
    (4, [6, 5], 4, dict(kernel=3, pad=1, groups=4), 2),  # depthwise
    (3, [7, 6], 6, dict(kernel=3, stride=2, pad=1, groups=3, bias=False), 1),  # depthwise, multiplier 2
    (1, [7, 6], 3, dict(kernel=3, stride=2, pad=1), 2),  # one input channel: the direct kernels
    (8, [28, 28], 8, dict(kernel=3, pad=1), 3),  # full-size tiles (512 rows)
    # few taps and output channels at stride 1: the planar kernel (LeNet's first conv)
    (1, [14, 12], 6, dict(kernel=5, pad=2), 2),
    (2, [12, 11], 3, dict(kernel=[2, 4], pad="same"), 2),  # the odd pixel at the end
    (3, [11, 10], 4, dict(kernel=3, bias=False), 2),
    # an input gradient into few channels from many: scattered (LeNet's second conv)
    (2, [9, 8], 6, dict(kernel=3, stride=2, pad=1), 2),
    (3, [7, 7], 8, dict(kernel=3, pad="same", dilation=2), 2),
    # Winograd F(4x4, 3x3): 3x3 stride 1, 16+ channels, 64+ output tiles; partial tiles at the edges
    (16, [15, 13], 16, dict(kernel=3, pad=1), 4),
    (16, [18, 17], 17, dict(kernel=3, bias=False), 4),  # no padding: the input gradient pads by 2
    (17, [14, 14], 16, dict(kernel=3, pad=2), 4),  # padding 2: the input gradient pads by 0
    (64, [4, 4], 48, dict(kernel=3, stride=2, pad=1), 2),  # 8 output pixels, 1.2M multiply-adds: few_rows_forward
]


def _conv_ref(attrs):
    pad = attrs.get("pad", 0)
    padding = pad if isinstance(pad, str) else _pair(pad)
    bias = attrs.get("bias", True)

    def forward(i, p):
        return F.conv2d(i["x"], p["c.weight"], p["c.bias"] if bias else None, stride=_pair(attrs.get("stride", 1)),
                        padding=padding, dilation=_pair(attrs.get("dilation", 1)), groups=attrs.get("groups", 1))

    return forward


def _case_id(case):
    cin, (h, w), cout, attrs, batch = case
    return f"{cin}x{h}x{w}->{cout} " + " ".join(f"{k}={_lang(v)}" for k, v in attrs.items()) + f" n={batch}"


@pytest.fixture(autouse=True)
def winograd_wherever_it_can_run(monkeypatch):
    # The Winograd cases are small: choose it by the tiles alone, not by the work as for real models.
    monkeypatch.setenv("CNNC_WINOGRAD", "1")


@pytest.mark.parametrize("cin, size, cout, attrs, batch", CONV_CASES, ids=[_case_id(c) for c in CONV_CASES])
def test_conv(cin, size, cout, attrs, batch):
    check(_program("conv", cin, size, cout, attrs), _conv_ref(attrs), batch=batch, max_fd=12)


CONV_TRANSPOSE_CASES = [
    (3, [4, 5], 4, dict(kernel=3), 2),
    (3, [4, 5], 4, dict(kernel=1), 2),  # a plain GEMM both ways
    (3, [4, 3], 4, dict(kernel=1, stride=2), 2),  # phases that no tap reaches: the bias alone
    (2, [4, 3], 3, dict(kernel=2, stride=3, bias=False), 1),
    (3, [4, 5], 4, dict(kernel=3, stride=2, pad=1, output_pad=1), 3),
    (3, [5, 4], 2, dict(kernel=4, stride=2, pad=1), 2),
    (2, [4, 5], 3, dict(kernel=[3, 5], stride=[2, 3], pad=[1, 2], output_pad=[1, 2]), 2),
    (2, [4, 4], 3, dict(kernel=3, stride=2, dilation=2, output_pad=1), 2),
    (2, [4, 5], 3, dict(kernel=3, dilation=2, pad=1, output_pad=1), 2),  # output_pad >= stride
    (4, [4, 5], 6, dict(kernel=3, stride=2, pad=1, groups=2), 2),
    (4, [5, 4], 4, dict(kernel=3, stride=2, pad=1, output_pad=1, groups=4, bias=False), 3),  # depthwise
    (6, [4, 4], 3, dict(kernel=3, pad=1, groups=3), 1),
    (2, [4, 3], 1, dict(kernel=[2, 3], stride=[1, 2], pad=[0, 1]), 2),  # one output channel: the direct kernels
    (8, [5, 4], 3, dict(kernel=4, stride=2, pad=1), 2),  # into an image (a GAN's last layer): scattered
    (8, [14, 14], 8, dict(kernel=3, stride=2, pad=1, output_pad=1), 3),  # several tiles per phase
    (16, [15, 13], 16, dict(kernel=3, pad=1), 4),  # Winograd both ways
    (16, [14, 12], 17, dict(kernel=3), 4),  # Winograd both ways, the forward padded by 2
]


def _conv_transpose_ref(attrs):
    bias = attrs.get("bias", True)

    def forward(i, p):
        return F.conv_transpose2d(i["x"], p["c.weight"], p["c.bias"] if bias else None,
                                  stride=_pair(attrs.get("stride", 1)), padding=_pair(attrs.get("pad", 0)),
                                  output_padding=_pair(attrs.get("output_pad", 0)), groups=attrs.get("groups", 1),
                                  dilation=_pair(attrs.get("dilation", 1)))

    return forward


@pytest.mark.parametrize("cin, size, cout, attrs, batch", CONV_TRANSPOSE_CASES,
                         ids=[_case_id(c) for c in CONV_TRANSPOSE_CASES])
def test_conv_transpose(cin, size, cout, attrs, batch):
    check(_program("conv_transpose", cin, size, cout, attrs), _conv_transpose_ref(attrs), batch=batch, max_fd=12)


def test_conv_chain_with_transpose():
    program = """network t {
    input x: [3, 9, 8]
    a: conv(4, kernel=3, stride=2, pad=1) -> relu
    b: conv_transpose(3, kernel=3, stride=2, pad=1, output_pad=[0, 1], bias=false)
}
"""

    def forward(i, p):
        y = F.relu(F.conv2d(i["x"], p["a.weight"], p["a.bias"], stride=2, padding=1))
        return F.conv_transpose2d(y, p["b.weight"], stride=2, padding=1, output_padding=(0, 1))

    check(program, forward, batch=2, max_fd=12)


def test_input_gradient_only_when_needed():
    """The first conv reads the image, which needs no gradient: no conv_grad_input node for it."""
    program = """network t {
    input x: [3, 6, 6]
    input y: [2, 6, 6]
    z = x -> a: conv(4, kernel=3, pad=1) -> b: conv(2, kernel=3, pad=1)
    output loss = mse(z, y)
}
"""
    net = cnnc.compile(program)
    graph = differentiate(net.graph, net.graph.outputs["loss"])
    grad_inputs = [n.name.split(".")[0] for n in graph.nodes() if n.op.name == "conv_grad_input"]
    grad_weights = [n.name.split(".")[0] for n in graph.nodes() if n.op.name == "conv_grad_weight"]
    assert grad_inputs == ["b"] and sorted(grad_weights) == ["a", "b"]

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    y = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    value, grads = net.grad({"x": x, "y": y}, loss=None)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in net.state_dict().items()}
    out = F.conv2d(F.conv2d(torch.tensor(x), p["a.weight"], p["a.bias"], padding=1), p["b.weight"], p["b.bias"], padding=1)
    loss = F.mse_loss(out, torch.tensor(y))
    loss.backward()
    assert abs(value - loss.item()) < 1e-5 * max(1.0, loss.item())
    for name, t in p.items():
        expected = t.grad.numpy()
        assert np.abs(grads[name] - expected).max() < 1e-4 * np.abs(expected).max(), name


def test_the_conv_algorithm_is_chosen_by_shape():
    from cnnc.ops.conv import forward_kernel, grad_input_kernel, grad_weight_kernel

    def entry(cin, cout, kernel, stride, pads, size, batch):
        return forward_kernel(cin, cout, kernel, stride, pads, (1, 1), 1, None, size, batch).entry

    assert entry(1, 6, (5, 5), (1, 1), (2, 2), (28, 28), 64) == "planar_forward"  # LeNet's first conv
    assert entry(1, 6, (5, 5), (1, 1), (2, 2), (28, 28), 1) == "planar_forward"
    assert entry(3, 16, (3, 3), (1, 1), (1, 1), (32, 32), 32) == "conv_forward"  # 16 outputs: a GEMM wide enough
    assert entry(1, 6, (5, 5), (2, 2), (2, 2), (14, 14), 64) != "planar_forward"  # stride 2
    assert entry(3, 4, (3, 3), (1, 1), (1, 1), (4, 4), 2) == "serial_forward"  # 32 output pixels: one thread
    assert entry(64, 64, (3, 3), (1, 1), (1, 1), (32, 32), 32) == "winograd_forward"
    lenet = grad_weight_kernel(1, 6, (5, 5), (1, 1), (2, 2), (1, 1), 1, (28, 28), 64)
    assert lenet.entry == "planar_grad_weight"  # and its weight gradient as one GEMM per image
    conv2 = grad_input_kernel(6, 16, (5, 5), (1, 1), (0, 0), (1, 1), 1, None, (14, 14), 64)
    assert conv2.entry == "scatter_grad_input"  # into 6 channels from 16
    assert grad_input_kernel(64, 128, (3, 3), (2, 2), (1, 1), (1, 1), 1, None, (32, 32), 32).entry == "conv_grad_input"
