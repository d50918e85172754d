"""Colorization of grey synthetic scenes whose colours follow the shapes: circles red, squares blue,
triangles green, the background grey.

The lightness of every shape is random (the scenes of cnnc/demos/scenes.py), so the colour must
come from the outline, not from the grey level. lib/colorization.cnn at a small size (64x64 input,
widths / 8, a 16x16 map of bin distributions) trains from scratch with Adam on soft-encoded
targets (5 nearest bins, sigma 5) weighted by the rarity of each pixel's colour (alpha 1, gamma
0.5), as the paper trains it. The metric is the top-1 bin accuracy on object pixels of held-out
scenes against the best constant guess, the most common bin of object pixels; the pictures are
grey inputs, the network's colours (the annealed mean) and the truth.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import cnnc

from ..runtime.data import batches
from ..runtime.pictures import grid, side_by_side, to_pixels, write_png
from ..vision.color import ab_bins, lab_to_rgb, nearest_bins, rebalancing_weights, rgb_to_lab, soft_encode
from . import Metric, Result
from .scenes import shapes

TITLE = "colorful image colorization"
PAPER = "Zhang, Isola and Efros: Colorful Image Colorization (ECCV 2016)"
SHOWS = "grey scenes coloured by the network beside the truth: each shape has its own colour, whatever its grey level"

SIZE, BATCH = 64, 16
BUDGET = 70.0  # seconds of training; the data and the evaluation take the rest of 90 s
COLOURS = np.array([[0, 0], [60, 40], [10, -50], [-50, 50]], np.float64)  # ab of background, circle, square, triangle


def scenes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lightness [N, 1, S, S], ab [N, 2, S, S], labels [N, S, S]): the shapes' lightness from random colours."""
    images, labels = shapes(count, SIZE, seed)
    lightness = rgb_to_lab(images)[:, :1].astype(np.float32)
    return lightness, COLOURS[labels].transpose(0, 3, 1, 2), labels


def targets(ab: np.ndarray, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(soft targets [N, Q, S/4, S/4], true bin [N, S/4, S/4]) at the centre pixel of each 4x4 cell."""
    small = ab[:, :, 2::4, 2::4]
    true = nearest_bins(small.transpose(0, 2, 3, 1).reshape(-1, 2), bins, 1)[1].reshape(small.shape[0], *small.shape[2:])
    return soft_encode(small, bins), true


def run(out: Path, quick: bool, seed: int, say) -> Result:
    start = time.perf_counter()
    bins = ab_bins()
    train_l, train_ab, train_labels = scenes(64 if quick else 1200, seed)
    test_l, test_ab, test_labels = scenes(16 if quick else 300, seed + 1)
    train_target, train_true = targets(train_ab, bins)
    prior = np.bincount(train_true.ravel(), minlength=len(bins)) / train_true.size
    train_weight = rebalancing_weights(prior)[train_true].astype(np.float32)

    net = cnnc.compile("colorization", size=SIZE, width=8, bins=len(bins), seed=seed)
    net.load_params({"model_out.weight": (bins.T / 110)[:, :, None, None]}, strict=False)  # the bin centres, frozen
    trainer = net.trainer(loss=None, output="loss", optimizer=cnnc.optim.Adam(lr=1e-3))
    rng = np.random.default_rng(seed)
    order = np.arange(len(train_l))
    losses, steps, began = [], 0, time.perf_counter()
    say(f"training the colorization network ({net.graph.parameter_count():,} parameters, {len(bins)} ab bins) on "
        f"{len(train_l)} scenes, batch {BATCH}, {'for 4 steps' if quick else f'for {BUDGET:.0f} s'}")
    while (steps < 4) if quick else (time.perf_counter() - began < BUDGET):
        for pick, _ in batches(order, order, BATCH, shuffle=True, rng=rng):
            feeds = {"lightness": train_l[pick], "target": train_target[pick], "weight": train_weight[pick]}
            losses.append(trainer.step(feeds, None))
            steps += 1
            if (steps >= 4) if quick else (time.perf_counter() - began >= BUDGET):
                break
        if not quick:
            say(f"  {steps} steps, {time.perf_counter() - began:.0f} s: loss {np.mean(losses[-20:]):.3f}")

    net.eval()
    outs = [net(lb, outputs=["logits", "ab"]) for lb, _ in batches(test_l, test_l, 50)]
    predicted = np.concatenate([o["logits"] for o in outs]).argmax(1)
    colours = np.concatenate([o["ab"] for o in outs])
    _, test_true = targets(test_ab, bins)
    objects = test_labels[:, 2::4, 2::4] > 0
    accuracy = float(np.mean(predicted[objects] == test_true[objects]))
    constant = np.bincount(train_true[train_labels[:, 2::4, 2::4] > 0], minlength=len(bins)).argmax()  # the best single guess
    baseline = float(np.mean(test_true[objects] == constant))
    say(f"{steps} steps in {time.perf_counter() - began:.1f} s; object pixels with the right bin: {accuracy:.1%} "
        f"(the most common object colour everywhere: {baseline:.1%})")

    shown = 8
    grey = np.repeat(test_l[:shown] / 100, 3, axis=1)
    coloured = lab_to_rgb(np.concatenate([test_l[:shown], colours[:shown]], axis=1))
    truth = lab_to_rgb(np.concatenate([test_l[:shown], test_ab[:shown]], axis=1))
    triples = [side_by_side(*parts, gap=2) for parts in zip(to_pixels(grey), to_pixels(coloured), to_pixels(truth))]
    pictures = [write_png(out / "colorization.png", grid(np.stack(triples), 4, gap=8, scale=2))]
    metrics = [Metric("object-pixel bin accuracy / the constant guess's", accuracy / baseline, 2.0),
               Metric("time", time.perf_counter() - start, 90.0, at_most=True, unit=" s")]
    return Result(metrics, pictures, losses, time.perf_counter() - start)
