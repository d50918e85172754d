"""DCGAN on scikit-learn's digits: generated 16x16 digits, scored by a classifier trained on real ones.

The generator and discriminator are lib/dcgan.cnn at 16x16 (nz 32, 32 filters), trained as
pytorch/examples' dcgan/main.py trains them: Adam (2e-4, betas 0.5 and 0.999), the
discriminator on a real and a fake batch (its gradients summed), then the generator through
the updated discriminator with the real label. The generator's step is a seeded backward:
the discriminator's input gradient drives the generator's `vjp`.

The judge, a small CNN trained here on the real digits, scores the samples: the inception
score exp(E KL(p(y|x) || p(y))) (10 at best) and the entropy of the predicted classes
(ln 10 = 2.30 when every digit is drawn equally often).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

import cnnc

from ..runtime.data import batches, digits
from ..runtime.pictures import grid, side_by_side, to_pixels, write_png
from . import Metric, Result

TITLE = "DCGAN"
PAPER = "Radford, Metz and Chintala: Unsupervised Representation Learning with Deep Convolutional GANs (2015)"
SHOWS = "a grid of generated digits beside real ones, from a GAN trained on scikit-learn's digits"

SIZE, NZ, WIDTH, BATCH = 16, 32, 32, 64
BUDGET = 75.0  # seconds of GAN training; the judge's training and the scoring take the rest of 90 s
SAMPLES = 1024  # generated digits scored

JUDGE = """network judge {
    input image: [1, 16, 16]
    conv(16, kernel=3, pad=1) -> relu -> maxpool(2)
    conv(32, kernel=3, pad=1) -> relu -> maxpool(2)
    flatten -> dense(64) -> relu
    output logits = dense(10)
}"""


def train_judge(data, quick: bool, seed: int, say) -> cnnc.Model:
    judge = cnnc.compile(JUDGE, seed=seed)
    trainer = judge.trainer(optimizer=cnnc.optim.Adam(lr=2e-3))
    rng = np.random.default_rng(seed)
    x = data.train_x * 2 - 1
    for epoch in range(1 if quick else 12):
        for k, (xb, yb) in enumerate(batches(x, data.train_y, BATCH, shuffle=True, rng=rng)):
            if quick and k == 2:
                break
            trainer.step(xb, yb)
    judge.eval()
    predicted = np.concatenate([judge(xb, outputs="logits").argmax(1) for xb, _ in batches(data.test_x * 2 - 1, data.test_y, 256)])
    say(f"judge: a small CNN trained on real digits, {np.mean(predicted == data.test_y):.1%} right on {len(predicted)} held-out ones")
    return judge


def scores(judge: cnnc.Model, images: np.ndarray) -> tuple[float, float]:
    """(inception score, entropy of the predicted classes) of images in [-1, 1]."""
    logits = np.concatenate([judge(xb, outputs="logits") for xb, _ in batches(images, np.zeros(len(images)), 256)]).astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    marginal = p.mean(0)
    inception = math.exp(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(marginal + 1e-12)), axis=1)))
    counts = np.bincount(p.argmax(1), minlength=10) / len(p)
    entropy = float(-np.sum(counts[counts > 0] * np.log(counts[counts > 0]))) + 0.0  # not -0.0
    return inception, entropy


def sample(g: cnnc.Model, z: np.ndarray) -> np.ndarray:
    """The generator's images in training mode (batch statistics, as the example draws its samples),
    leaving its running statistics alone."""
    return np.concatenate([g(z[k : k + BATCH], update_stats=False) for k in range(0, len(z), BATCH)])


def run(out: Path, quick: bool, seed: int, say) -> Result:
    start = time.perf_counter()
    data = digits(SIZE)
    real = np.concatenate([data.train_x, data.test_x]) * 2 - 1  # the generator's tanh range
    judge = train_judge(data, quick, seed, say)

    g = cnnc.compile("dcgan", network="generator", nz=NZ, ngf=WIDTH, nc=1, size=SIZE, seed=seed).train()
    d = cnnc.compile("dcgan", network="discriminator", ndf=WIDTH, nc=1, size=SIZE, seed=seed + 1).train()
    adam = {"lr": 2e-4, "betas": (0.5, 0.999)}
    g_step, d_step = g.trainer(optimizer=cnnc.optim.Adam(**adam)), d.trainer(optimizer=cnnc.optim.Adam(**adam))
    rng = np.random.default_rng(seed)
    ones, zeros = np.ones((BATCH, 1), np.float32), np.zeros((BATCH, 1), np.float32)
    losses, steps, began = [], 0, time.perf_counter()
    say(f"training G ({g.graph.parameter_count():,} parameters) and D ({d.graph.parameter_count():,}) "
        f"{'for 6 steps' if quick else f'for {BUDGET:.0f} s'} on {len(real)} digits, batch {BATCH}")
    while (steps < 6) if quick else (time.perf_counter() - began < BUDGET):
        x = real[rng.choice(len(real), BATCH, replace=False)]
        z = rng.standard_normal((BATCH, NZ, 1, 1)).astype(np.float32)
        fake = g(z, update_stats=False)  # the generator's statistics move once per step, in its vjp below
        loss_real, grads_real = d.grad(x, ones, loss="bce_with_logits")
        loss_fake, grads_fake = d.grad(fake, zeros, loss="bce_with_logits")
        d_step.update(grads_real, grads_fake)
        loss_g, seed_grad = d.grad(fake, ones, loss="bce_with_logits", params=False, inputs=["image"])
        g_step.update(g.vjp(z, {"image": seed_grad["image"]}))
        losses.append(loss_real + loss_fake)
        steps += 1
        if steps % 200 == 0:
            say(f"  step {steps}: D loss {loss_real + loss_fake:.3f}, G loss {loss_g:.3f}")
    trained = time.perf_counter() - began
    say(f"{steps} steps in {trained:.1f} s ({trained / steps * 1000:.0f} ms each)")

    z = np.random.default_rng(seed + 2).standard_normal((SAMPLES, NZ, 1, 1)).astype(np.float32)
    generated = sample(g, z)
    inception, entropy = scores(judge, generated)
    real_inception, real_entropy = scores(judge, real[:SAMPLES])
    say(f"real digits under the same judge: inception score {real_inception:.2f}, class entropy {real_entropy:.2f}")

    picture = side_by_side(grid(to_pixels(generated[:64], -1, 1), 8, scale=3), grid(to_pixels(real[:64], -1, 1), 8, scale=3), gap=12)
    pictures = [write_png(out / "dcgan_samples.png", picture)]
    metrics = [Metric("inception score", inception, 4.0), Metric("predicted-class entropy", entropy, 2.0),
               Metric("time", time.perf_counter() - start, 90.0, at_most=True, unit=" s")]
    return Result(metrics, pictures, losses, time.perf_counter() - start)
