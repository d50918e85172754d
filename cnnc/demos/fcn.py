"""FCN-8s segmentation of synthetic scenes: background, circles, squares and triangles.

lib/fcn8s.cnn at its small size (64x64 input, widths / 8, fc 128, no Caffe padding) trained
from scratch with Adam on 1,200 scenes (cnnc/demos/scenes.py), with the network's own
per-pixel cross-entropy. The metric is the mean intersection over union of the four classes on
300 held-out scenes; the pictures are held-out scenes beside their true and predicted labels.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import cnnc

from ..runtime.data import batches
from ..runtime.pictures import grid, side_by_side, to_pixels, write_png
from . import Metric, Result
from .scenes import KINDS, mean_iou, shapes

TITLE = "FCN-8s semantic segmentation"
PAPER = "Long, Shelhamer and Darrell: Fully Convolutional Networks for Semantic Segmentation (CVPR 2015)"
SHOWS = "per-pixel labels of synthetic scenes (circles, squares, triangles) beside the truth"

SIZE, BATCH = 64, 16
BUDGET = 105.0  # seconds of training; the data and the evaluation take the rest of 120 s
CLASSES = 1 + len(KINDS)
PALETTE = np.array([[0, 0, 0], [230, 80, 60], [60, 140, 230], [250, 210, 60]], np.uint8)  # background, circle, square, triangle


def predict(net: cnnc.Model, images: np.ndarray) -> np.ndarray:
    return np.concatenate([net(xb, outputs="logits").argmax(1) for xb, _ in batches(images, np.zeros(len(images)), 50)])


def run(out: Path, quick: bool, seed: int, say) -> Result:
    start = time.perf_counter()
    train_x, train_y = shapes(64 if quick else 1200, SIZE, seed)
    test_x, test_y = shapes(16 if quick else 300, SIZE, seed + 1)
    net = cnnc.compile("fcn8s", classes=CLASSES, size=SIZE, width=8, fc=128, pad100=False, seed=seed)
    trainer = net.trainer(loss=None, output="loss", optimizer=cnnc.optim.Adam(lr=2e-3))
    rng = np.random.default_rng(seed)
    losses, steps, began = [], 0, time.perf_counter()
    say(f"training FCN-8s ({net.graph.parameter_count():,} parameters) on {len(train_x)} scenes, batch {BATCH}, "
        f"{'for 4 steps' if quick else f'for {BUDGET:.0f} s'}")
    while (steps < 4) if quick else (time.perf_counter() - began < BUDGET):
        for xb, yb in batches(train_x, train_y, BATCH, shuffle=True, rng=rng):
            losses.append(trainer.step({"image": xb, "labels": yb}, None))
            steps += 1
            if (steps >= 4) if quick else (time.perf_counter() - began >= BUDGET):
                break
        if not quick:
            say(f"  {steps} steps, {time.perf_counter() - began:.0f} s: loss {np.mean(losses[-20:]):.3f}")
    net.eval()
    predicted = predict(net, test_x)
    miou, ious = mean_iou(predicted, test_y, CLASSES)
    say(f"{steps} steps in {time.perf_counter() - began:.1f} s; IoU per class: "
        + ", ".join(f"{name} {iou:.2f}" for name, iou in zip(("background", *KINDS), ious)))

    shown = 8  # each scene, its true labels and the predicted ones, side by side
    triples = [side_by_side(image, truth, guess, gap=2)
               for image, truth, guess in zip(to_pixels(test_x[:shown]), PALETTE[test_y[:shown]], PALETTE[predicted[:shown]])]
    picture = grid(np.stack(triples), 4, gap=8, scale=2)
    pictures = [write_png(out / "fcn_segmentation.png", picture)]
    metrics = [Metric("mean IoU", miou, 0.45), Metric("time", time.perf_counter() - start, 120.0, at_most=True, unit=" s")]
    return Result(metrics, pictures, losses, time.perf_counter() - start)
