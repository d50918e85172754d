"""CIE Lab colour and the quantised ab space of colorization (Zhang, Isola and Efros, 2016).

sRGB (D65) <-> Lab as scikit-image's rgb2lab and lab2rgb compute them; the 313 ab bins in gamut;
soft encoding of ab values over their nearest bins (a Gaussian kernel, as the reference's
NNEncode); class-rebalancing weights from the bins' empirical prior (PriorFactor); and the
annealed-mean decoding of predicted bin distributions.
"""

from __future__ import annotations

import numpy as np

_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
_WHITE = np.array([0.95047, 1.0, 1.08883])  # D65
_EPSILON, _KAPPA = 0.008856, 7.787


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] with the channels on axis -3 ([..., 3, H, W]) to Lab (L in [0, 100])."""
    rgb = np.moveaxis(np.asarray(rgb, np.float64), -3, -1)
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > _EPSILON, np.cbrt(xyz), _KAPPA * xyz + 16 / 116)
    lab = np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)
    return np.moveaxis(lab, -1, -3)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Lab ([..., 3, H, W]) to RGB in [0, 1] (colours out of gamut clipped)."""
    lab = np.moveaxis(np.asarray(lab, np.float64), -3, -1)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f**3 > _EPSILON, f**3, (f - 16 / 116) / _KAPPA) * _WHITE
    linear = xyz @ np.linalg.inv(_RGB_TO_XYZ).T
    rgb = np.where(linear > 0.0031308, 1.055 * np.abs(linear) ** (1 / 2.4) - 0.055, 12.92 * linear)
    return np.moveaxis(np.clip(rgb, 0.0, 1.0), -1, -3)


def ab_bins(spacing: float = 10.0, reach: float = 110.0) -> np.ndarray:
    """[313, 2]: the points of the ab grid (spacing 10 in [-110, 110]) whose cell holds a colour of
    the sRGB gamut, in the order a, then b (the reference's pts_in_hull.npy holds 313 such points)."""
    levels = np.linspace(0.0, 1.0, 48)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij")).reshape(3, -1, 1)
    ab = rgb_to_lab(cube)[1:, :, 0].T
    cells = np.unique(np.round(ab / spacing).astype(np.int64), axis=0) * spacing
    return cells[np.all(np.abs(cells) <= reach, axis=1)].astype(np.float64)


def nearest_bins(ab: np.ndarray, bins: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(squared distances, indices) of the `count` nearest bins of each ab point [P, 2]."""
    d2 = ((ab[:, None, :] - bins[None, :, :]) ** 2).sum(-1)
    nearest = np.argpartition(d2, count - 1, axis=1)[:, :count]
    return np.take_along_axis(d2, nearest, axis=1), nearest


def soft_encode(ab: np.ndarray, bins: np.ndarray, neighbours: int = 5, sigma: float = 5.0) -> np.ndarray:
    """ab maps [N, 2, H, W] as distributions over the bins [N, Q, H, W]: a Gaussian of the distance
    (sigma 5) over the nearest bins (the paper's 5; the reference's code uses 10), normalised."""
    n, _, h, w = ab.shape
    points = ab.transpose(0, 2, 3, 1).reshape(-1, 2)
    d2, nearest = nearest_bins(points, bins, neighbours)
    weights = np.exp(-d2 / (2 * sigma**2))
    weights /= weights.sum(1, keepdims=True)
    encoded = np.zeros((len(points), len(bins)), np.float32)
    np.put_along_axis(encoded, nearest, weights.astype(np.float32), axis=1)
    return encoded.reshape(n, h, w, len(bins)).transpose(0, 3, 1, 2)


def rebalancing_weights(prior: np.ndarray, alpha: float = 1.0, gamma: float = 0.5) -> np.ndarray:
    """Per-bin loss weights from the bins' empirical prior (PriorFactor): (mix of the prior and the uniform
    distribution over the bins seen)^-alpha, normalised so that the expected weight is 1."""
    seen = prior > 0
    uniform = seen / np.sum(seen)
    factor = np.zeros(len(prior))  # a bin never seen never weighs a pixel: 0 rather than infinity
    factor[seen] = ((1 - gamma) * prior[seen] + gamma * uniform[seen]) ** -alpha
    return factor / np.sum(prior * factor)


def annealed_mean(probabilities: np.ndarray, bins: np.ndarray, temperature: float = 0.38) -> np.ndarray:
    """ab [N, 2, H, W] from bin distributions [N, Q, H, W]: the mean of the distribution re-sharpened by
    `temperature` (exp(log p / T), renormalised): between the mean (T = 1) and the mode (T -> 0)."""
    logp = np.log(np.maximum(probabilities, 1e-30)) / temperature
    p = np.exp(logp - logp.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return np.einsum("nqhw,qc->nchw", p, bins)
