"""Peers benchmark: cnnc against the fastest tools a user could pick instead, measured side by side.

    python benchmarks/peers.py [--repeats 10] [--only resnet18_cifar] [--peers eager,onnxruntime]
                               [--isolated] [--cold]

For every workload of the table below it times cnnc, PyTorch eager (NCHW and
channels-last), torch.compile (Inductor; with freezing for inference) and
onnxruntime (the model exported with torch.onnx.export from the same PyTorch
module, same weights), all on 2 threads, and prints one table: each contender's
median milliseconds, the ratio cnnc / best peer (the peers the workload's target
names; < 1: cnnc is faster), the target, and each contender's compile time
(building the model plus its first call).

By default every contender of a workload runs in this one process, interleaved
(each repeat runs them all once, in a rotating order, so a slow spell of the
shared machine hits them alike). Their OpenMP pools then share the two cores:
--isolated runs each contender in a process of its own instead (not
interleaved), to show what each does alone. --cold compiles cnnc's kernels into
an empty cache. Peers that are not installed are skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the independent PyTorch models
sys.path.insert(0, str(ROOT / "benchmarks"))

from models import interleaved_medians, torch_runner  # noqa: E402

THREADS = 2
CONTENDERS = ("cnnc", "eager", "eager_cl", "inductor", "onnxruntime")
TITLES = {"cnnc": "cnnc", "eager": "eager", "eager_cl": "eager CL", "inductor": "Inductor", "onnxruntime": "ORT"}


@dataclass(frozen=True)
class Workload:
    model: str
    mode: str  # "inference" or "training"
    batch: int
    versus: tuple[str, ...]  # the peers the target compares against: the fastest of them
    target: float  # cnnc time / best peer's time must be at most this

    @property
    def name(self) -> str:
        return f"{self.model} {self.mode} b{self.batch}"


WORKLOADS = [
    Workload("lenet", "inference", 1, ("onnxruntime",), 1.0),
    Workload("lenet", "inference", 64, ("onnxruntime",), 1.0),
    Workload("lenet", "training", 64, ("eager", "eager_cl", "inductor"), 0.7),
    Workload("resnet18_cifar", "inference", 1, ("onnxruntime",), 0.9),
    Workload("resnet18_cifar", "inference", 32, ("onnxruntime", "inductor"), 0.9),
    Workload("resnet18_cifar", "training", 32, ("inductor",), 0.8),
    Workload("vgg16_bn_cifar", "training", 32, ("eager_cl",), 0.8),
]

# VGG-16 with batch normalization at CIFAR's size: the 13 convolutions of configuration D, then one
# dense layer on the 512 features left at 1x1 (as CIFAR training recipes size it).
VGG16_BN_CIFAR = """
network vgg16_bn_cifar(classes = 10) {
    input image: [3, 32, 32]
    features: {
        repeat 2 { conv(64, kernel=3, pad=1) -> batchnorm -> relu } -> maxpool(2)
        repeat 2 { conv(128, kernel=3, pad=1) -> batchnorm -> relu } -> maxpool(2)
        repeat 3 { conv(256, kernel=3, pad=1) -> batchnorm -> relu } -> maxpool(2)
        repeat 3 { conv(512, kernel=3, pad=1) -> batchnorm -> relu } -> maxpool(2)
        repeat 3 { conv(512, kernel=3, pad=1) -> batchnorm -> relu } -> maxpool(2)
    }
    flatten
    classifier: dense(classes)
    output logits
}
"""


def _vgg_cifar_class():
    from torch import nn

    class VggCifar(nn.Module):
        def __init__(self, features, classifier):
            super().__init__()
            self.features, self.classifier = features, classifier

        def forward(self, x):
            return self.classifier(self.features(x).flatten(1))

    return VggCifar


def torch_model(name: str):
    """The independent PyTorch module of a workload's model, with 10 classes."""
    from torch import nn

    import torch_reference

    if name != "vgg16_bn_cifar":
        return torch_reference.MODELS[name](num_classes=10)
    layers, channels = [], 3
    for width, count in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(count):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.MaxPool2d(2))
    return _vgg_cifar_class()(nn.Sequential(*layers), nn.Linear(512, 10))


def cnnc_model(name: str):
    import cnnc

    return cnnc.compile(VGG16_BN_CIFAR if name == "vgg16_bn_cifar" else name)


def inputs(work: Workload, shape):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((work.batch, *shape)).astype(np.float32)
    return x, rng.integers(0, 10, work.batch)


# -- one runner per contender: build it (timed as its compile), return the call to time ----------------
def run_cnnc(work: Workload, module, x, y):
    import cnnc

    net = cnnc_model(work.model)
    net.load_params(module.state_dict())
    if work.mode == "inference":
        net.eval()
        return lambda: net(x)
    trainer = net.trainer(optimizer=cnnc.optim.SGD(lr=0.01, momentum=0.9))
    return lambda: trainer.step(x, y)


def _torch_step(model, tx, ty, inference: bool):
    if not inference:
        model.train()
    return torch_runner(model, "inference" if inference else "training step", tx, ty)


def run_eager(work: Workload, module, x, y, channels_last: bool = False):
    import torch

    tx, ty = torch.tensor(x), torch.tensor(y)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
        tx = tx.contiguous(memory_format=torch.channels_last)
    return _torch_step(module, tx, ty, work.mode == "inference")


def run_inductor(work: Workload, module, x, y):
    import torch
    import torch._inductor.config as inductor

    inductor.freezing = work.mode == "inference"  # weights folded in as constants: inference only
    return _torch_step(torch.compile(module), torch.tensor(x), torch.tensor(y), work.mode == "inference")


def run_onnxruntime(work: Workload, module, x, y):
    import onnxruntime
    import torch

    module.eval()
    exported = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.tensor(x),), exported, dynamo=False, input_names=["image"],
                          output_names=["logits"])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(exported.getvalue(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"image": x})


RUNNERS = {
    "cnnc": run_cnnc,
    "eager": run_eager,
    "eager_cl": lambda *a: run_eager(*a, channels_last=True),
    "inductor": run_inductor,
    "onnxruntime": run_onnxruntime,
}
INFERENCE_ONLY = {"onnxruntime"}
NEEDS = {"eager": "torch", "eager_cl": "torch", "inductor": "torch", "onnxruntime": "onnxruntime"}


def available(contenders) -> tuple[list[str], list[str]]:
    """(contenders whose packages import, lines naming those skipped)."""
    import importlib.util

    kept, skipped = [], []
    for name in contenders:
        package = NEEDS.get(name)
        if package is None or importlib.util.find_spec(package) is not None:
            kept.append(name)
        else:
            skipped.append(f"skipped {TITLES[name]}: {package} is not installed")
    if "onnxruntime" in kept and importlib.util.find_spec("onnx") is None:
        kept.remove("onnxruntime")
        skipped.append("skipped ORT: exporting the model needs onnx, which is not installed")
    return kept, skipped


def applying(work: Workload, contenders) -> list[str]:
    return [c for c in contenders if work.mode == "inference" or c not in INFERENCE_ONLY]


def build(work: Workload, contenders) -> tuple[dict, dict]:
    """The calls to time and each one's compile seconds (building it plus its first call)."""
    import torch

    torch.manual_seed(0)
    reference = torch_model(work.model)
    state = reference.state_dict()
    shape = cnnc_model(work.model).graph.input_types()["image"].sample_shape
    x, y = inputs(work, shape)
    runs, compile_s = {}, {}
    for name in applying(work, contenders):
        module = torch_model(work.model)
        module.load_state_dict(state)  # the same weights for everyone
        start = time.perf_counter()
        run = RUNNERS[name](work, module, x, y)
        run()
        compile_s[name] = time.perf_counter() - start
        runs[name] = run
    return runs, compile_s


def measure(work: Workload, contenders, repeats: int) -> dict:
    runs, compile_s = build(work, contenders)
    return {"ms": {k: v * 1e3 for k, v in interleaved_medians(runs, repeats).items()}, "compile": compile_s}


def measure_isolated(work: Workload, contenders, repeats: int, cold: bool) -> dict:
    """Each contender in a process of its own (this script's --worker mode)."""
    result = {"ms": {}, "compile": {}}
    for name in applying(work, contenders):
        argv = [sys.executable, __file__, "--worker", name, "--only", work.model, "--mode", work.mode,
                "--batch", str(work.batch), "--repeats", str(repeats)] + (["--cold"] if cold else [])
        done = subprocess.run(argv, capture_output=True, text=True, env=os.environ)
        if done.returncode != 0:
            raise RuntimeError(f"{name} on {work.name} failed:\n{done.stderr[-2000:]}")
        one = json.loads(done.stdout.strip().splitlines()[-1])
        for key in ("ms", "compile"):
            result[key].update(one[key])
    return result


def best_peer(work: Workload, ms: dict) -> tuple[str, float] | None:
    times = [(ms[p], p) for p in work.versus if p in ms]
    if not times:
        return None
    t, p = min(times)
    return p, t


def table(rows: list[tuple[Workload, dict]], contenders) -> list[str]:
    """The printed table: milliseconds per contender, then cnnc / best peer against the target."""
    head = f"{'workload':<32}" + "".join(f"{TITLES[c] + ' ms':>12}" for c in contenders)
    head += f"{'cnnc/best':>11}{'target':>8}  best peer"
    lines = [head, "-" * len(head)]
    for work, r in rows:
        ms = r["ms"]
        line = f"{work.name:<32}" + "".join(f"{ms[c]:>12.3f}" if c in ms else f"{'-':>12}" for c in contenders)
        best = best_peer(work, ms)
        if best is None or "cnnc" not in ms:
            line += f"{'-':>11}{work.target:>8.2f}  (no peer of the target measured)"
        else:
            ratio = ms["cnnc"] / best[1]
            verdict = "met" if ratio <= work.target else "not met"
            line += f"{ratio:>11.2f}{work.target:>8.2f}  {TITLES[best[0]]} ({verdict})"
        lines.append(line)
    lines += ["", "compile s (building the model plus its first call)"]
    for work, r in rows:
        lines.append(f"{work.name:<32}" + "".join(
            f"{r['compile'][c]:>12.2f}" if c in r["compile"] else f"{'-':>12}" for c in contenders))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--only", help="run only the workloads of this model")
    parser.add_argument("--mode", help="run only workloads of this mode (inference or training)")
    parser.add_argument("--batch", type=int, help="run only workloads of this batch size")
    parser.add_argument("--peers", default=",".join(CONTENDERS[1:]), help="comma-separated peers to run beside cnnc")
    parser.add_argument("--isolated", action="store_true", help="each contender in a process of its own")
    parser.add_argument("--cold", action="store_true", help="compile cnnc's kernels into an empty cache")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # --isolated's child: one contender, JSON out
    args = parser.parse_args(argv)
    if args.cold and not os.environ.get("CNNC_COLD_CACHE"):
        os.environ["CNNC_CACHE_DIR"] = os.environ["CNNC_COLD_CACHE"] = tempfile.mkdtemp(prefix="cnnc-cold-")
    import torch

    torch.set_num_threads(THREADS)
    works = [w for w in WORKLOADS if (not args.only or w.model == args.only) and (not args.mode or w.mode == args.mode)
             and (args.batch is None or w.batch == args.batch)]
    if args.worker:
        work, = works
        print(json.dumps(measure(work, [args.worker], args.repeats)))
        return 0
    wanted = ["cnnc"] + [p for p in args.peers.split(",") if p and p != "cnnc"]
    unknown = [p for p in wanted if p not in CONTENDERS]
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {', '.join(CONTENDERS[1:])}")
    contenders, skipped = available(wanted)
    import numba

    how = "each in its own process" if args.isolated else "interleaved in one process"
    print(f"torch {torch.__version__}; {THREADS} threads everywhere (Numba: {numba.config.NUMBA_NUM_THREADS}); "
          f"medians of {args.repeats} runs after warm-up, {how}")
    for line in skipped:
        print(line)
    rows = []
    for work in works:
        if args.isolated:
            r = measure_isolated(work, contenders, args.repeats, args.cold)
        else:
            r = measure(work, contenders, args.repeats)
        rows.append((work, r))
        print(f"measured {work.name}", file=sys.stderr, flush=True)
    print("\n".join(table(rows, contenders)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
