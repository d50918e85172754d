"""GPU benchmark: cnnc's cuda target against PyTorch on CUDA, measured in the same run.

    python benchmarks/gpu.py [--repeats 20] [--only resnet18_cifar] [--kernels-only | --models-only]

Needs an NVIDIA GPU, numba-cuda (`pip install 'cnnc[cuda]'`) and a CUDA build of
PyTorch. Prints two tables, each with medians over --repeats runs after warm-up,
the device synchronized around every timed call:

- kernels: single layers at ResNet-like shapes, batch 32 (a network of one op,
  so the time is that op's kernel plus the input copy, which is also timed for
  PyTorch by copying the input from the host);
- models: lenet, resnet18_cifar and resnet50 at batch 32, inference and a
  training step (SGD with momentum), same weights and inputs.

The ratio is torch / cnnc: above 1, cnnc is faster.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the independent PyTorch models

KERNELS = [
    # (label, program body after `input image: [C, H, W]`, input [C, H, W])
    ("conv 3x3 64->64 32x32", "conv(64, kernel=3, pad=1, bias=false)", (64, 32, 32)),
    ("conv 3x3 s2 64->128 32x32", "conv(128, kernel=3, stride=2, pad=1, bias=false)", (64, 32, 32)),
    ("conv 1x1 256->64 16x16", "conv(64, kernel=1, bias=false)", (256, 16, 16)),
    ("conv+bn+relu (eval) 64 32x32", "conv(64, kernel=3, pad=1, bias=false) -> batchnorm -> relu", (64, 32, 32)),
    ("maxpool 2 64x32x32", "maxpool(2)", (64, 32, 32)),
    ("relu 64x32x32", "relu", (64, 32, 32)),
    ("dense 512->1000", "flatten -> dense(1000)", (512, 1, 1)),
]

MODELS = [("lenet", "inference"), ("lenet", "training step"), ("resnet18_cifar", "inference"),
          ("resnet18_cifar", "training step"), ("resnet50", "inference"), ("resnet50", "training step")]


def timed(fn, sync, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_layer(body: str, shape):
    """The PyTorch module for one KERNELS body."""
    import torch.nn as nn

    c = shape[0]
    layers = {
        "conv(64, kernel=3, pad=1, bias=false)": lambda: nn.Conv2d(c, 64, 3, padding=1, bias=False),
        "conv(128, kernel=3, stride=2, pad=1, bias=false)": lambda: nn.Conv2d(c, 128, 3, stride=2, padding=1, bias=False),
        "conv(64, kernel=1, bias=false)": lambda: nn.Conv2d(c, 64, 1, bias=False),
        "conv(64, kernel=3, pad=1, bias=false) -> batchnorm -> relu": lambda: nn.Sequential(
            nn.Conv2d(c, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()),
        "maxpool(2)": lambda: nn.MaxPool2d(2),
        "relu": lambda: nn.ReLU(),
        "flatten -> dense(1000)": lambda: nn.Sequential(nn.Flatten(), nn.Linear(c, 1000)),
    }
    return layers[body]()


def bench_kernels(repeats: int, batch: int = 32):
    import numpy as np
    import torch
    from numba import cuda

    import cnnc

    rows = []
    for label, body, shape in KERNELS:
        text = f"network k {{\n    input image: [{', '.join(map(str, shape))}]\n    {body}\n}}\n"
        net = cnnc.compile(text, target="cuda").eval()
        x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
        module = torch_layer(body, shape).cuda().eval()
        # The same weights: cnnc's and PyTorch's parameters are in the same order (names differ).
        tensors = [v.detach().cpu().numpy() for k, v in module.state_dict().items() if "num_batches" not in k]
        net.load_params(dict(zip(net.graph.params, tensors)))
        cnnc_s = timed(lambda: net(x), cuda.synchronize, repeats)

        def run_torch():
            with torch.no_grad():
                module(torch.from_numpy(x).cuda()).cpu()

        torch_s = timed(run_torch, torch.cuda.synchronize, repeats)
        rows.append((label, cnnc_s, torch_s))
    return rows


def bench_models(repeats: int, only: str | None, batch: int = 32):
    import numpy as np
    import torch
    from numba import cuda

    import cnnc
    import torch_reference

    rows = []
    for name, mode in MODELS:
        if only and name != only:
            continue
        net = cnnc.compile(name, target="cuda")
        shape = net.graph.input_types()["image"].sample_shape
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        model = torch_reference.MODELS[name](num_classes=10) if name != "resnet50" else torch_reference.MODELS[name]()
        net.load_params(model.state_dict())
        model = model.cuda()
        if mode == "inference":
            net.eval()
            model.eval()

            def run_torch():
                with torch.no_grad():
                    model(torch.from_numpy(x).cuda()).cpu()

            run_cnnc = lambda: net(x)  # noqa: E731
        else:
            net.train()
            model.train()
            trainer = net.trainer(optimizer=cnnc.optim.SGD(lr=0.01, momentum=0.9))
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            loss_fn = torch.nn.CrossEntropyLoss()

            def run_torch():
                opt.zero_grad()
                loss = loss_fn(model(torch.from_numpy(x).cuda()), torch.from_numpy(y).cuda())
                loss.backward()
                opt.step()
                loss.item()

            run_cnnc = lambda: trainer.step(x, y)  # noqa: E731
        cnnc_s = timed(run_cnnc, cuda.synchronize, repeats)
        torch_s = timed(run_torch, torch.cuda.synchronize, repeats)
        rows.append((f"{name} {mode}", cnnc_s, torch_s))
    return rows


def table(title: str, rows) -> str:
    lines = [title, f"{'case':34} {'cnnc ms':>10} {'torch ms':>10} {'torch/cnnc':>11}", "-" * 68]
    for label, c, t in rows:
        lines.append(f"{label:34} {c * 1e3:10.3f} {t * 1e3:10.3f} {t / c:10.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--only", help="one model of the models table")
    parser.add_argument("--kernels-only", action="store_true")
    parser.add_argument("--models-only", action="store_true")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a GPU and a CUDA build of PyTorch")
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; medians of {args.repeats}; batch 32")
    if not args.models_only:
        print(table("kernels (one-op networks)", bench_kernels(args.repeats)))
        print()
    if not args.kernels_only:
        print(table("models", bench_models(args.repeats, args.only)))


if __name__ == "__main__":
    main()
