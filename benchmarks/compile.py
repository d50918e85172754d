"""Cold compile: each model's first eval forward and first training step, from an empty kernel cache.

    python benchmarks/compile.py [--only resnet] [--workers 0,2]

Each case runs in a process of its own with an empty kernel cache: it builds the
model, runs one eval forward, then one training step, and reports the time of each
(compiling included) and the whole. With --workers it runs every case once per
setting of CNNC_COMPILE_WORKERS (default: `0,default`, in-process compiling, then
the compile workers cnnc starts by default), so the two are measured in the same run.
The programs are library models at the sizes their demos and tests use, and three
shapes of network the library lacks: Inception-style branches, a U-Net and a DenseNet
(DID-MDN's dense blocks).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from peers import VGG16_BN_CIFAR  # noqa: E402  (benchmarks/ is on the path when this file runs)

ROOT = Path(__file__).resolve().parent.parent

INCEPTION = """
block inception(c1, r3, c3, r5, c5, pool) {
    a = in -> conv(c1, kernel=1) -> relu
    b = in -> conv(r3, kernel=1) -> relu -> conv(c3, kernel=3, pad=1) -> relu
    c = in -> conv(r5, kernel=1) -> relu -> conv(c5, kernel=5, pad=2) -> relu
    d = in -> maxpool(3, stride=1, pad=1) -> conv(pool, kernel=1) -> relu
    concat(a, b, c, d)
}
network inception_net(classes = 10) {
    input image: [3, 32, 32]
    conv(64, kernel=3, pad=1) -> batchnorm -> relu
    inception(64, 96, 128, 16, 32, 32) -> inception(128, 128, 192, 32, 96, 64) -> maxpool(2)
    inception(192, 96, 208, 16, 48, 64) -> inception(160, 112, 224, 24, 64, 64) -> maxpool(2)
    inception(256, 160, 320, 32, 128, 128)
    global_avgpool -> flatten -> dense(classes)
    output logits
}
"""

UNET = """
block double(c) {
    conv(c, kernel=3, pad=1) -> batchnorm -> relu -> conv(c, kernel=3, pad=1) -> batchnorm -> relu
}
network unet(classes = 2, w = 16) {
    input image: [1, 64, 64]
    e1 = double(w)
    e2 = e1 -> maxpool(2) -> double(2 * w)
    e3 = e2 -> maxpool(2) -> double(4 * w)
    m = e3 -> maxpool(2) -> double(8 * w)
    u3 = m -> conv_transpose(4 * w, kernel=2, stride=2)
    d3 = concat(u3, e3) -> double(4 * w)
    u2 = d3 -> conv_transpose(2 * w, kernel=2, stride=2)
    d2 = concat(u2, e2) -> double(2 * w)
    u1 = d2 -> conv_transpose(w, kernel=2, stride=2)
    d1 = concat(u1, e1) -> double(w)
    output logits = d1 -> conv(classes, kernel=1)
}
"""

# (name, source or library model, hyperparameters, batch, input shape, how to train: "classes" or "own")
CASES = [
    ("lenet", "lenet", {}, 64, "classes"),
    ("resnet18_cifar", "resnet18_cifar", {}, 32, "classes"),
    ("vgg16_bn_cifar", VGG16_BN_CIFAR, {}, 32, "classes"),
    ("inception", INCEPTION, {}, 32, "classes"),
    ("unet", UNET, {}, 8, "pixels"),
    ("densenet (did_mdn derain)", "did_mdn", {"network": "derain", "size": 64}, 8, "own"),
    ("dcgan generator", "dcgan", {"network": "generator", "size": 32, "nc": 1}, 64, "vjp"),
    ("dcgan discriminator", "dcgan", {"network": "discriminator", "size": 32, "nc": 1}, 64, "binary"),
    ("colorization", "colorization", {"size": 64, "width": 8, "bins": 32}, 16, "own"),
    ("fcn8s", "fcn8s", {"size": 64, "width": 8, "fc": 64, "pad100": False, "classes": 5}, 8, "own"),
]

CHILD = r"""
import json, sys, time
import numpy as np
import cnnc
source, hyper, batch, how = json.loads(sys.argv[1])
t0 = time.perf_counter()
net = cnnc.compile(source, seed=0, **hyper)
rng = np.random.default_rng(0)
feeds = {k: (rng.integers(0, 2, (batch, *t.sample_shape)) if t.dtype.startswith("int")
             else rng.uniform(0, 1, (batch, *t.sample_shape)).astype(np.float32))
         for k, t in net.graph.input_types().items()}
first = next(iter(net.graph.input_types()))
net.eval()
net(**({first: feeds[first]} if how != "own" else feeds))
t1 = time.perf_counter()
net.train()
optimizer = cnnc.optim.SGD(lr=0.01, momentum=0.9)
if how == "own":  # the network's own scalar loss
    net.trainer(loss=None, output="loss", optimizer=optimizer).step(feeds, None)
elif how == "vjp":  # a generator: the gradient of its output given from outside
    out = net.graph.output_types()
    name = next(iter(out))
    net.vjp(feeds, {name: np.ones((batch, *out[name].sample_shape), np.float32)})
elif how == "binary":  # a discriminator's logit
    out = next(iter(net.graph.output_types().values()))
    net.trainer(loss="bce_with_logits", optimizer=optimizer).step(feeds[first], np.ones((batch, *out.sample_shape), np.float32))
else:  # class labels, per example or per pixel
    out = net.graph.output_types()["logits"]
    net.trainer(optimizer=optimizer).step(feeds[first], rng.integers(0, out.shape[1], (batch, *out.shape[2:])))
t2 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1]))
"""


def run_case(case, workers: str | None) -> tuple[float, float] | str:
    name, source, hyper, batch, how = case
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "CNNC_CACHE_DIR": cache}
        if workers is None:
            env.pop("CNNC_COMPILE_WORKERS", None)
        else:
            env["CNNC_COMPILE_WORKERS"] = workers
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps([source, hyper, batch, how])], env=env,
                              capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
    forward, step = json.loads(done.stdout.strip().splitlines()[-1])
    return forward, step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="cases whose name contains this")
    parser.add_argument("--workers", default="0,default", help="comma-separated CNNC_COMPILE_WORKERS settings")
    args = parser.parse_args(argv)
    settings = [None if w == "default" else w for w in args.workers.split(",")]
    cases = [c for c in CASES if not args.only or args.only in c[0]]
    print(f"cold compile, empty kernel cache, each case in its own process; {os.cpu_count()} cores; seconds")
    head = f"{'model':28s}" + "".join(f"{'workers ' + (w or 'default'):>30s}" for w in settings)
    print(head + "\n" + f"{'':28s}" + "".join(f"{'forward':>10s}{'step':>10s}{'total':>10s}" for _ in settings))
    print("-" * len(head))
    for case in cases:
        line = f"{case[0]:28s}"
        for workers in settings:
            result = run_case(case, workers)
            if isinstance(result, str):
                line += f"  failed: {result}"
                continue
            forward, step = result
            line += f"{forward:10.1f}{step:10.1f}{forward + step:10.1f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
