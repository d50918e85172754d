"""Per-layer conv benchmark: cnnc's conv algorithms against PyTorch on every distinct conv of ResNet-18
CIFAR and VGG-16 (CIFAR size), forward, input gradient and weight gradient.

    python benchmarks/kernels.py [--batch 32] [--repeats 10] [--only resnet18_cifar]

For each layer shape and pass it times cnnc's kernel with each algorithm that can
run it (im2col + GEMM; Winograd F(4x4, 3x3) for 3x3 stride-1 convs, which cnnc
picks where it has work enough), PyTorch's NCHW and channels-last convs, and
prints effective GFLOP/s (direct-conv FLOPs / time: 2 x MACs) beside the
machine's measured peak (a float32 GEMM through NumPy's BLAS), and the ratio
PyTorch's best time / cnnc's (>1: cnnc is faster). Medians of --repeats calls.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

# (model, cin, size, cout, kernel, stride, pad): each distinct conv once, in the order of the network
LAYERS = [
    ("resnet18_cifar", 3, 32, 64, 3, 1, 1),
    ("resnet18_cifar", 64, 32, 64, 3, 1, 1),
    ("resnet18_cifar", 64, 32, 128, 3, 2, 1),
    ("resnet18_cifar", 64, 32, 128, 1, 2, 0),
    ("resnet18_cifar", 128, 16, 128, 3, 1, 1),
    ("resnet18_cifar", 128, 16, 256, 3, 2, 1),
    ("resnet18_cifar", 128, 16, 256, 1, 2, 0),
    ("resnet18_cifar", 256, 8, 256, 3, 1, 1),
    ("resnet18_cifar", 256, 8, 512, 3, 2, 1),
    ("resnet18_cifar", 256, 8, 512, 1, 2, 0),
    ("resnet18_cifar", 512, 4, 512, 3, 1, 1),
    ("vgg16_bn_cifar", 3, 32, 64, 3, 1, 1),
    ("vgg16_bn_cifar", 64, 32, 64, 3, 1, 1),
    ("vgg16_bn_cifar", 64, 16, 128, 3, 1, 1),
    ("vgg16_bn_cifar", 128, 16, 128, 3, 1, 1),
    ("vgg16_bn_cifar", 128, 8, 256, 3, 1, 1),
    ("vgg16_bn_cifar", 256, 8, 256, 3, 1, 1),
    ("vgg16_bn_cifar", 256, 4, 512, 3, 1, 1),
    ("vgg16_bn_cifar", 512, 4, 512, 3, 1, 1),
    ("vgg16_bn_cifar", 512, 2, 512, 3, 1, 1),
]
PASSES = ("forward", "input grad", "weight grad")


def program(cin, size, cout, kernel, stride, pad) -> str:
    return (f"network layer {{\n    input x: [{cin}, {size}, {size}]\n"
            f"    c: conv({cout}, kernel={kernel}, stride={stride}, pad={pad}, bias=false)\n}}\n")


def cnnc_kernels(layer, batch: int, winograd: bool) -> dict[str, tuple]:
    """pass -> (kernel entry, the call) of cnnc's kernels for one conv, Winograd allowed or not."""
    import numpy as np

    import cnnc

    _, cin, size, cout, kernel, stride, pad = layer
    os.environ["CNNC_WINOGRAD"] = "1" if winograd else "0"  # read when the kernels are chosen
    try:
        net = cnnc.compile(program(cin, size, cout, kernel, stride, pad))
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, cin, size, size)).astype(np.float32)
        out = next(iter(net.graph.output_types().values())).sample_shape
        net.grad(x, rng.standard_normal((batch, *out)).astype(np.float32), loss="mse", inputs=["x"])
    finally:
        del os.environ["CNNC_WINOGRAD"]
    executor = list(net._executors.values())[-1]
    found = {}
    for name, fn, args in executor.steps:
        entry = fn.__name__
        if name == "c":
            found["forward"] = (entry, fn, args)
        elif "grad_weight" in entry:
            found["weight grad"] = (entry, fn, args)
        elif entry in ("conv_grad_input", "winograd_forward", "direct_grad_input"):
            found["input grad"] = (entry, fn, args)
    return found


def torch_calls(layer, batch: int) -> dict[str, dict]:
    """pass -> {"NCHW": call, "CL": call}: PyTorch's conv and its two gradients."""
    import torch
    from torch.nn import functional as F

    _, cin, size, cout, kernel, stride, pad = layer
    x = torch.randn(batch, cin, size, size)
    w = torch.randn(cout, cin, kernel, kernel)
    y = F.conv2d(x, w, stride=stride, padding=pad)
    dy = torch.randn_like(y)
    calls = {}
    for fmt, memory in (("NCHW", torch.contiguous_format), ("CL", torch.channels_last)):
        xf, dyf = x.contiguous(memory_format=memory), dy.contiguous(memory_format=memory)
        calls.setdefault("forward", {})[fmt] = lambda xf=xf: F.conv2d(xf, w, stride=stride, padding=pad)
        calls.setdefault("input grad", {})[fmt] = lambda dyf=dyf: torch.nn.grad.conv2d_input(
            x.shape, w, dyf, stride=stride, padding=pad)
        calls.setdefault("weight grad", {})[fmt] = lambda xf=xf, dyf=dyf: torch.nn.grad.conv2d_weight(
            xf, w.shape, dyf, stride=stride, padding=pad)
    return calls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--only", help="only the layers of this model (resnet18_cifar or vgg16_bn_cifar)")
    args = parser.parse_args(argv)
    import torch
    from models import interleaved_medians

    from cnnc.dev.harness import measured_peak, median_seconds

    torch.set_num_threads(2)
    print(f"batch {args.batch}; medians of {args.repeats}; measured peak (float32 GEMM, 2 threads): "
          f"{measured_peak():.0f} GFLOP/s; GF/s = 2 x MACs / time; torch/cnnc > 1: cnnc is faster")
    head = (f"{'model':<16}{'layer':<22}{'pass':<12}{'cnnc kernel':<18}{'ms':>8}{'GF/s':>7}"
            f"{'torch ms':>10}{'CL ms':>8}{'GF/s':>7}{'torch/cnnc':>12}")
    print(head)
    print("-" * len(head))
    for layer in LAYERS:
        model, cin, size, cout, kernel, stride, pad = layer
        if args.only and model != args.only:
            continue
        out = (size + 2 * pad - kernel) // stride + 1
        flops = 2 * args.batch * out * out * cout * cin * kernel * kernel
        variants = [cnnc_kernels(layer, args.batch, winograd=False)]
        if kernel == 3 and stride == 1:
            variants.append(cnnc_kernels(layer, args.batch, winograd=True))
        peers = torch_calls(layer, args.batch)
        name = f"{cin}->{cout} {kernel}x{kernel}/{stride} @{size}"
        for step in PASSES:
            torch_ms = {fmt: t * 1e3 for fmt, t in interleaved_medians(peers[step], args.repeats).items()}
            best_torch = min(torch_ms.values())
            seen = set()
            for found in variants:
                entry, fn, fargs = found[step]
                if entry in seen:
                    continue
                seen.add(entry)
                ms = median_seconds(fn, fargs, args.repeats) * 1e3
                print(f"{model:<16}{name:<22}{step:<12}{entry:<18}{ms:>8.3f}{flops / ms / 1e6:>7.0f}"
                      f"{torch_ms['NCHW']:>10.3f}{torch_ms['CL']:>8.3f}{flops / best_torch / 1e6:>7.0f}"
                      f"{best_torch / ms:>11.2f}x")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
