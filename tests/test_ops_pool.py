"""Forward and backward of maxpool, avgpool, global_avgpool, adaptive_avgpool and upsample,
against PyTorch (float32) and finite differences (float64), over many hyperparameters."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from opcheck import check  # noqa: E402


def net(body: str, shape=(3, 7, 6)) -> str:
    return f"network t {{\n    input x: {list(shape)}\n    {body}\n}}\n"


def distinct(shape, batch=2, seed=0):
    """Inputs without ties, spaced far beyond the finite-difference step, so the max is smooth."""
    n = batch * int(np.prod(shape))
    rng = np.random.default_rng(seed)
    # A shuffled grid, jittered so that sums of values (after interpolation) do not tie either.
    values = (rng.permutation(n) + rng.uniform(0.0, 0.5, n)) * (4.0 / n) - 2.0
    return {"x": values.reshape(batch, *shape).astype(np.float32)}


# (input shape, cnnc call, PyTorch keyword arguments)
MAXPOOL = [
    ((3, 7, 6), "maxpool(2)", dict(kernel_size=2)),
    ((3, 7, 6), "maxpool(3, stride=2, pad=1)", dict(kernel_size=3, stride=2, padding=1)),
    ((3, 7, 6), "maxpool(3, stride=2, pad=1, ceil=true)", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((2, 7, 7), "maxpool(3, ceil=true)", dict(kernel_size=3, ceil_mode=True)),
    ((2, 6, 7), "maxpool([2, 3], stride=[1, 2], pad=[1, 0])", dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0))),
    ((2, 8, 7), "maxpool(2, stride=3)", dict(kernel_size=2, stride=3)),
    ((2, 8, 7), "maxpool(2, stride=3, ceil=true)", dict(kernel_size=2, stride=3, ceil_mode=True)),
    ((2, 7, 6), "maxpool(3, stride=1, pad=1, dilation=2)", dict(kernel_size=3, stride=1, padding=1, dilation=2)),
    ((2, 9, 8), "maxpool([3, 2], stride=2, pad=1, dilation=[2, 3], ceil=true)",
     dict(kernel_size=(3, 2), stride=2, padding=1, dilation=(2, 3), ceil_mode=True)),
    ((19, 5, 4), "maxpool(2, stride=1, pad=1)", dict(kernel_size=2, stride=1, padding=1)),  # two channel blocks
]


@pytest.mark.parametrize("shape, call, kw", MAXPOOL, ids=[c for _, c, _ in MAXPOOL])
def test_maxpool(shape, call, kw):
    check(net(call, shape), lambda i, p: F.max_pool2d(i["x"], **kw), inputs=distinct(shape))


@pytest.mark.parametrize("call, kw", [
    ("maxpool(3, stride=2, pad=1)", dict(kernel_size=3, stride=2, padding=1)),
    ("maxpool(2, stride=1, dilation=2, ceil=true)", dict(kernel_size=2, stride=1, dilation=2, ceil_mode=True)),
    ("maxpool(2)", dict(kernel_size=2)),  # windows that tile the input: each pixel written once
    ("maxpool([2, 3])", dict(kernel_size=(2, 3))),  # and two columns that no window reaches
])
def test_maxpool_ties_go_to_the_first_maximum(call, kw):
    shape = (17, 6, 5)
    x = np.random.default_rng(1).integers(-1, 2, size=(2, *shape)).astype(np.float32)  # many ties
    check(net(call, shape), lambda i, p: F.max_pool2d(i["x"], **kw), inputs={"x": x}, fd=False)


AVGPOOL = [
    ((3, 7, 6), "avgpool(2)", dict(kernel_size=2)),
    ((3, 7, 6), "avgpool(3, stride=2, pad=1)", dict(kernel_size=3, stride=2, padding=1)),
    ((3, 7, 6), "avgpool(3, stride=2, pad=1, count_pad=false)", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ((3, 7, 6), "avgpool(3, stride=2, pad=1, ceil=true)", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((3, 7, 6), "avgpool(3, stride=2, pad=1, ceil=true, count_pad=false)",
     dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ((2, 7, 8), "avgpool(2, stride=3, ceil=true)", dict(kernel_size=2, stride=3, ceil_mode=True)),
    ((2, 6, 7), "avgpool([3, 2], stride=[1, 3], pad=[1, 1])", dict(kernel_size=(3, 2), stride=(1, 3), padding=(1, 1))),
    ((2, 9, 7), "avgpool([4, 3], stride=[3, 2], pad=[2, 1], ceil=true)",
     dict(kernel_size=(4, 3), stride=(3, 2), padding=(2, 1), ceil_mode=True)),
    ((2, 9, 7), "avgpool([4, 3], stride=[3, 2], pad=[2, 1], ceil=true, count_pad=false)",
     dict(kernel_size=(4, 3), stride=(3, 2), padding=(2, 1), ceil_mode=True, count_include_pad=False)),
    ((2, 5, 5), "avgpool(5)", dict(kernel_size=5)),
]


@pytest.mark.parametrize("shape, call, kw", AVGPOOL, ids=[c for _, c, _ in AVGPOOL])
def test_avgpool(shape, call, kw):
    check(net(call, shape), lambda i, p: F.avg_pool2d(i["x"], **kw))


@pytest.mark.parametrize("shape", [(3, 7, 6), (2, 1, 1), (4, 1, 5)])
def test_global_avgpool(shape):
    check(net("global_avgpool", shape), lambda i, p: F.adaptive_avg_pool2d(i["x"], 1))


@pytest.mark.parametrize("size", [1, [4, 5], [3, 3], [7, 6], [2, 6], [9, 8]])
def test_adaptive_avgpool(size):
    check(net(f"adaptive_avgpool({size})"), lambda i, p: F.adaptive_avg_pool2d(i["x"], size))


def upsample_cases():
    cases = []
    for mode, aligns in (("nearest", [None]), ("bilinear", [False, True])):
        for align in aligns:
            extra = f', mode="{mode}"' + (", align_corners=true" if align else "")
            kw = dict(mode=mode, align_corners=align)
            for scale in (1, 2, 3, [2, 3]):
                cases.append(((2, 4, 5), f"upsample({scale}{extra})", dict(scale_factor=scale if isinstance(scale, int) else tuple(scale), **kw)))
            for size in ([3, 4], [11, 13], [1, 1], [1, 7], [5, 4]):
                cases.append(((2, 4, 5), f"upsample(size={size}{extra})", dict(size=tuple(size), **kw)))
    # floor(dst * in / out) in float32 rounds down here (dst 11: 12, not 13), as in PyTorch
    cases.append(((1, 26, 3), "upsample(size=[22, 2])", dict(size=(22, 2))))
    return cases


UPSAMPLE = upsample_cases()


@pytest.mark.parametrize("shape, call, kw", UPSAMPLE, ids=[c for _, c, _ in UPSAMPLE])
def test_upsample(shape, call, kw):
    check(net(call, shape), lambda i, p: F.interpolate(i["x"], **kw))


def test_pools_in_a_network():
    """Pools and resizing chained, with a parameter upstream: gradients flow through each in turn."""
    program = net("""a = x -> upsample(2, mode="bilinear") -> maxpool(3, stride=2, pad=1)
    b = x -> avgpool(3, stride=1, pad=1, count_pad=false) -> upsample(size=[7, 6])
    a + b -> adaptive_avgpool([3, 2]) -> mul(w) -> global_avgpool""", (3, 7, 6)).replace(
        "input x: [3, 7, 6]", "input x: [3, 7, 6]\n    input w: [3, 3, 2]")
    check(program, lambda i, p: F.adaptive_avg_pool2d(
        F.adaptive_avg_pool2d(
            F.max_pool2d(F.interpolate(i["x"], scale_factor=2, mode="bilinear"), 3, 2, 1)
            + F.interpolate(F.avg_pool2d(i["x"], 3, 1, 1, count_include_pad=False), size=(7, 6)), (3, 2)) * i["w"], 1),
        inputs=distinct((3, 7, 6)) | {"w": np.random.default_rng(2).standard_normal((2, 3, 3, 2)).astype(np.float32)})


def test_maxpool_output_smaller_than_its_phases():
    """One output row: the gradient's row phases outnumber the rows."""
    check(net("maxpool(3, stride=1)", (2, 3, 4)), lambda i, p: F.max_pool2d(i["x"], 3, 1), inputs=distinct((2, 3, 4)))


def random_window_cases(op: str, count: int, seed: int):
    """Random window hyperparameters that both cnnc and PyTorch accept."""
    import cnnc

    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 10)), int(rng.integers(1, 10)))
        kernel = [int(k) for k in rng.integers(1, 5, 2)]
        stride = [int(s) for s in rng.integers(1, 4, 2)]
        pad = [int(rng.integers(0, k // 2 + 1)) for k in kernel]
        ceil = bool(rng.integers(0, 2))
        kw = dict(kernel_size=tuple(kernel), stride=tuple(stride), padding=tuple(pad), ceil_mode=ceil)
        call = f"{op}({kernel}, stride={stride}, pad={pad}, ceil={str(ceil).lower()}"
        if op == "maxpool":
            dilation = [int(d) for d in rng.integers(1, 3, 2)]
            kw["dilation"] = tuple(dilation)
            call += f", dilation={dilation})"
        else:
            count_pad = bool(rng.integers(0, 2))
            kw["count_include_pad"] = count_pad
            call += f", count_pad={str(count_pad).lower()})"
        try:
            cnnc.load(net(call, shape))
        except cnnc.CnncError:  # the window does not fit
            continue
        if op == "maxpool" and not torch.isfinite(F.max_pool2d(torch.zeros(1, *shape), **kw)).all():
            continue  # a dilated window that misses the input: -inf, in PyTorch as in cnnc
        cases.append((shape, call, kw))
    return cases


@pytest.mark.parametrize("op, fn", [("maxpool", F.max_pool2d), ("avgpool", F.avg_pool2d)])
def test_random_windows(op, fn):
    """Forward and backward against PyTorch over random hyperparameters (finite differences above)."""
    for shape, call, kw in random_window_cases(op, 30, seed=len(op)):
        inputs = distinct(shape) if op == "maxpool" else None
        check(net(call, shape), lambda i, p: fn(i["x"], **kw), inputs=inputs, fd=False)

