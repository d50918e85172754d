"""Synthetic scenes for the demos: shapes drawn with NumPy, seeded, a thousand in about a second.

Each image has a smooth random background with noise and one to three shapes (circles,
squares, triangles) of random sizes and colours, later ones drawn over earlier ones. The label
of a pixel is 0 for the background and 1 + the kind of shape that covers it, so telling the
classes apart takes the shapes' outlines, not their colours.
"""

from __future__ import annotations

import numpy as np

KINDS = ("circle", "square", "triangle")


def _mask(kind: int, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    if kind == 0:
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == 1:
        side = r * 0.85
        return (np.abs(yy - cy) <= side) & (np.abs(xx - cx) <= side)
    # an upward triangle: apex at (cy - r, cx), base at cy + r / 2 (inscribed in the circle of radius r)
    top, base = cy - r, cy + r / 2
    half_width = (yy - top) * np.tan(np.pi / 6)
    return (yy >= top) & (yy <= base) & (np.abs(xx - cx) <= half_width)


def shapes(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images [count, 3, size, size] float32 in [0, 1], labels [count, size, size] int64 in 0..3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((count, 3, size, size), np.float32)
    labels = np.zeros((count, size, size), np.int64)
    for i in range(count):
        base, tilt = rng.uniform(0.0, 1.0, 3), rng.uniform(-0.3, 0.3, (2, 3))
        ramp = (yy / size - 0.5)[None] * tilt[0][:, None, None] + (xx / size - 0.5)[None] * tilt[1][:, None, None]
        images[i] = base[:, None, None] + ramp + rng.normal(0.0, 0.04, (3, size, size))
        for _ in range(rng.integers(1, 4)):
            kind = int(rng.integers(0, len(KINDS)))
            r = rng.uniform(0.12, 0.25) * size
            cy, cx = rng.uniform(r * 0.6, size - r * 0.6, 2)
            mask = _mask(kind, yy, xx, cy, cx, r)
            images[i][:, mask] = rng.uniform(0.0, 1.0, (3, 1))
            labels[i][mask] = kind + 1
    return np.clip(images, 0.0, 1.0), labels


def mean_iou(predicted: np.ndarray, labels: np.ndarray, classes: int) -> tuple[float, np.ndarray]:
    """The mean over classes of |predicted ∩ true| / |predicted ∪ true| (classes absent from both are left out)."""
    ious = np.full(classes, np.nan)
    for c in range(classes):
        union = np.sum((predicted == c) | (labels == c))
        if union:
            ious[c] = np.sum((predicted == c) & (labels == c)) / union
    return float(np.nanmean(ious)), ious
