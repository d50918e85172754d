"""Which convolutions run as Winograd F(4x4, 3x3), and that the switch turns it off.

Its numerics are checked with the other convs (tests/test_ops_conv.py: the cases with 16+
channels against PyTorch in float32 and finite differences in float64) and in every model test
whose 3x3 convs have work enough.
"""

import numpy as np
import pytest

import cnnc
from cnnc.ops.conv import WINOGRAD_MIN_MACS


@pytest.fixture(autouse=True)
def winograd_by_tiles(monkeypatch):
    # These convs are small: choose Winograd by the tiles alone, as for convs of real size.
    monkeypatch.setenv("CNNC_WINOGRAD", "1")

PROGRAM = """network t {
    input x: [16, 15, 13]
    c: conv(16, kernel=3, pad=1) -> relu
    d: conv(16, kernel=3, stride=2, pad=1)
}
"""


def kernels(net, kind_index: int = -1) -> dict[str, str]:
    """Group name -> the kernel entry it calls, for the executor built last."""
    executor = list(net._executors.values())[kind_index]
    return {name: fn.__name__ for name, fn, _ in executor.steps}


def test_winograd_runs_3x3_stride_1_convs_with_tiles_enough_forward_and_both_gradients():
    net = cnnc.compile(PROGRAM)
    x = np.random.default_rng(0).standard_normal((4, 16, 15, 13)).astype(np.float32)
    net(x)  # 4 images of 4 x 4 output tiles: 64 tiles
    chosen = kernels(net)
    assert chosen["c"] == "winograd_forward"
    assert chosen["d"] == "conv_forward"  # stride 2: im2col + GEMM
    net.grad(x, np.zeros((4, 16, 8, 7), np.float32), loss="mse", inputs=["x"])
    entries = sorted(kernels(net).values())
    assert entries.count("winograd_forward") == 2  # c's forward and its input gradient
    assert entries.count("winograd_grad_weight") == 1  # c's weight gradient
    assert "conv_grad_input" in entries and "conv_grad_weight" in entries  # d's, at stride 2


def test_too_few_tiles_stay_on_im2col():
    net = cnnc.compile(PROGRAM)
    net(np.zeros((1, 16, 15, 13), np.float32))  # 16 tiles: the weight transform would not pay
    assert kernels(net)["c"] == "conv_forward"


def test_by_default_only_convs_with_work_enough_compile_winograd(monkeypatch):
    monkeypatch.delenv("CNNC_WINOGRAD")
    small = cnnc.compile(PROGRAM)
    small(np.zeros((4, 16, 15, 13), np.float32))
    assert kernels(small)["c"] == "conv_forward"  # 1.8M multiply-adds: the compile would not be repaid
    big = cnnc.compile("network t {\n    input x: [64, 32, 32]\n    c: conv(64, kernel=3, pad=1)\n}\n")
    big(np.zeros((4, 64, 32, 32), np.float32))
    assert 4 * 32 * 32 * 64 * 64 * 9 >= WINOGRAD_MIN_MACS
    assert kernels(big)["c"] == "winograd_forward"


def test_few_output_pixels_split_over_channels_and_the_smallest_run_serially():
    net = cnnc.compile("network t {\n    input x: [64, 4, 4]\n    a: conv(64, kernel=3, pad=1)\n"
                       "    b: conv(16, kernel=1)\n}\n")
    net(np.zeros((2, 64, 4, 4), np.float32))  # 32 output pixels
    assert kernels(net) == {"a": "few_rows_forward", "b": "serial_forward"}


def test_the_switch_turns_winograd_off(monkeypatch):
    monkeypatch.setenv("CNNC_WINOGRAD", "0")
    net = cnnc.compile(PROGRAM)
    net(np.zeros((4, 16, 15, 13), np.float32))
    assert kernels(net)["c"] == "conv_forward"


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float64", 1e-13)])
def test_winograd_equals_im2col_at_resnet_width(monkeypatch, dtype, tol):
    # A ResNet stage's conv (64 channels at 16 x 16) both ways on the same weights and input.
    program = "network t {\n    input x: [64, 16, 16]\n    c: conv(64, kernel=3, pad=1)\n}\n"
    x = np.random.default_rng(1).standard_normal((4, 64, 16, 16)).astype(dtype)
    fast = cnnc.compile(program, dtype=dtype)
    monkeypatch.setenv("CNNC_WINOGRAD", "0")
    plain = cnnc.compile(program, dtype=dtype)
    plain.load_params(fast.state_dict())
    y_plain = plain(x)
    monkeypatch.setenv("CNNC_WINOGRAD", "1")
    y_fast = fast(x)
    assert kernels(fast)["c"] == "winograd_forward" and kernels(plain)["c"] == "conv_forward"
    assert np.abs(y_fast - y_plain).max() <= tol * np.abs(y_plain).max()
