"""DID-MDN deraining of synthetic rain at three densities over crops of scikit-learn's two photos.

Rain is drawn with NumPy: streaks of random length, a slant shared by the streaks of an image,
random brightness, softened by a 3x3 blur and added to the photo; light, medium and heavy rain
differ in the number of streaks. The held-out set has crops and rain of its own (another seed):
with two photos offline, held-out backgrounds from another part of them would be mostly the sky
and the lake that training rarely sees.

Two stages, as the paper runs them: lib/did_mdn.cnn's density classifier (vgg19ca at 64x64, three
levels) learns the rain level; the derain network, given the true level in training and the
classifier's at test time, learns the residual and the clean image (the sum of their mean
squared errors). Both train with Adam, the classifier's learning rate annealed to 0 on a cosine
over its time budget. Metrics: the classifier's accuracy and the derained images' PSNR against the
rainy inputs', on held-out crops; the pictures are rainy, derained and clean crops.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

import cnnc

from ..runtime.data import batches, resize
from ..runtime.pictures import grid, side_by_side, to_pixels, write_png
from . import Metric, Result

TITLE = "DID-MDN deraining"
PAPER = "Zhang and Patel: Density-aware Single Image De-raining using a Multi-stream Dense Network (CVPR 2018)"
SHOWS = "rainy crops, derained by the network, beside the clean ones; the rain density classified first"

SIZE, BATCH = 64, 8
STREAKS = (12, 40, 110)  # light, medium, heavy rain per 64x64 crop
CLASSIFIER_BUDGET, DERAIN_BUDGET = 20.0, 88.0  # seconds; the data and the evaluation take the rest of 120 s


def photo_crops(count: int, rng: np.random.Generator) -> np.ndarray:
    """Crops [count, 3, SIZE, SIZE] in [0, 1] of 64 to 192 pixels anywhere in the photos, resized to SIZE."""
    from sklearn.datasets import load_sample_images

    photos = [image.astype(np.float32) / 255.0 for image in load_sample_images().images]
    crops = np.empty((count, 3, SIZE, SIZE), np.float32)
    for k in range(count):
        photo = photos[k % len(photos)]
        h, w, _ = photo.shape
        side = int(rng.integers(64, 193))
        top, left = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        crop = photo[top : top + side, left : left + side].transpose(2, 0, 1)[None]
        crops[k] = resize(crop, SIZE, SIZE)[0]
    return np.clip(crops, 0.0, 1.0)


def rain(count: int, level: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Streak maps [count, 1, SIZE, SIZE] in [0, 1] with STREAKS[level] streaks each."""
    maps = np.zeros((count, SIZE + 8, SIZE + 8), np.float32)
    for k in range(count):
        n = STREAKS[level[k]]
        slant = rng.uniform(-0.5, 0.5)  # radians from vertical, one per image
        length = rng.uniform(6, 18, n)
        y0, x0 = rng.uniform(0, SIZE + 8, n), rng.uniform(0, SIZE + 8, n)
        steps = np.linspace(0.0, 1.0, 20)
        ys = np.clip(np.round(y0[:, None] + np.outer(length, steps) * np.cos(slant)), 0, SIZE + 7).astype(int)
        xs = np.clip(np.round(x0[:, None] + np.outer(length, steps) * np.sin(slant)), 0, SIZE + 7).astype(int)
        brightness = np.repeat(rng.uniform(0.4, 0.9, n)[:, None], len(steps), axis=1)
        np.maximum.at(maps[k], (ys.ravel(), xs.ravel()), brightness.ravel())
    padded = np.pad(maps, ((0, 0), (1, 1), (1, 1)))
    blurred = sum(padded[:, i : i + SIZE + 8, j : j + SIZE + 8] for i in range(3) for j in range(3)) / 9.0
    return blurred[:, None, 4 : 4 + SIZE, 4 : 4 + SIZE]


def rainy_set(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rainy, clean, level) with images in [-1, 1], as the networks take them."""
    rng = np.random.default_rng(seed)
    clean = photo_crops(count, rng)
    level = rng.integers(0, len(STREAKS), count)
    rainy = np.clip(clean + rain(count, level, rng), 0.0, 1.0)
    return rainy * 2 - 1, clean * 2 - 1, level


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean PSNR (dB) of images in [-1, 1], measured in [0, 1]."""
    mse = np.mean(((a - b) / 2) ** 2, axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))


def train(trainer, feeds: dict, budget: float, steps_if_quick: int, quick: bool, rng, say, what: str,
          anneal: bool = False) -> list[float]:
    """Steps for `budget` seconds; `anneal`: the learning rate falls to 0 on a cosine over the budget
    (the classifier's held-out accuracy then ends near its best instead of wherever the clock stops;
    the derain network, still far from its best when the time is up, does better without)."""
    losses, began = [], time.perf_counter()
    order = np.arange(len(next(iter(feeds.values()))))
    optimizer, peak = trainer.optimizer, trainer.optimizer.lr
    while (len(losses) < steps_if_quick) if quick else (time.perf_counter() - began < budget):
        for pick, _ in batches(order, order, BATCH, shuffle=True, rng=rng):
            if anneal:
                done = len(losses) / steps_if_quick if quick else (time.perf_counter() - began) / budget
                optimizer.lr = peak * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
            batch = {name: value[pick] for name, value in feeds.items()}
            labels = batch.pop("labels", None)
            losses.append(trainer.step(batch if labels is None else batch["image"], labels))
            if (len(losses) >= steps_if_quick) if quick else (time.perf_counter() - began >= budget):
                break
    say(f"{what}: {len(losses)} steps in {time.perf_counter() - began:.1f} s, loss {np.mean(losses[:10]):.3f} -> {np.mean(losses[-10:]):.3f}")
    return losses


def run(out: Path, quick: bool, seed: int, say) -> Result:
    start = time.perf_counter()
    rainy, clean, level = rainy_set(48 if quick else 3000, seed)  # many crops: the classifier overfits 800
    test_rainy, test_clean, test_level = rainy_set(16 if quick else 200, seed + 1)
    classifier = cnnc.compile("did_mdn", network="density_classifier", size=SIZE, levels=len(STREAKS), seed=seed)
    train(classifier.trainer(optimizer=cnnc.optim.Adam(lr=3e-4)), {"image": rainy, "labels": level},
          CLASSIFIER_BUDGET, 3, quick, np.random.default_rng(seed), say, "density classifier", anneal=True)
    classifier.eval()
    predicted = np.concatenate([classifier(xb, outputs="logits").argmax(1) for xb, _ in batches(test_rainy, test_level, 50)])
    accuracy = float(np.mean(predicted == test_level))

    derain = cnnc.compile("did_mdn", network="derain", size=SIZE, seed=seed)
    levels = level.astype(np.float32).reshape(-1, 1, 1, 1)
    losses = train(derain.trainer(loss=None, output="loss", optimizer=cnnc.optim.Adam(lr=2e-3)),
                   {"image": rainy, "level": levels, "target": clean}, DERAIN_BUDGET, 4, quick, np.random.default_rng(seed + 1), say, "derain network")
    derain.eval()
    guessed = predicted.astype(np.float32).reshape(-1, 1, 1, 1)
    derained = np.concatenate([derain(test_rainy[k : k + 50], guessed[k : k + 50], outputs="clean") for k in range(0, len(test_rainy), 50)])
    before, after = psnr(test_rainy, test_clean), psnr(derained, test_clean)
    say(f"held out: density level right for {accuracy:.1%}; PSNR {before:.2f} dB rainy -> {after:.2f} dB derained")

    triples = [side_by_side(*parts, gap=2) for parts in zip(*(to_pixels(x[:8], -1, 1) for x in (test_rainy, derained, test_clean)))]
    pictures = [write_png(out / "did_mdn.png", grid(np.stack(triples), 4, gap=8, scale=2))]
    metrics = [Metric("density accuracy", accuracy, 0.8), Metric("PSNR gain", after - before, 3.0, unit=" dB"),
               Metric("time", time.perf_counter() - start, 120.0, at_most=True, unit=" s")]
    return Result(metrics, pictures, losses, time.perf_counter() - start)
