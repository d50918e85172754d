"""Data sets and batching.

The built-in data set is scikit-learn's digits (1,797 8x8 images, shipped with
scikit-learn), scaled to the size a network asks for. MNIST, Fashion-MNIST
(IDX files) and CIFAR-10 (python batches) are read from a folder the user has
downloaded them to. Images are float32 NCHW in [0, 1]; labels are int64.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CnncError


@dataclass
class Dataset:
    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: int

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """Bilinear interpolation as a [size_out, size_in] matrix (PyTorch's half-pixel rule)."""
    m = np.zeros((size_out, size_in), np.float64)
    scale = size_in / size_out
    for i in range(size_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        lo = min(int(src), size_in - 1)
        hi = min(lo + 1, size_in - 1)
        frac = src - lo
        m[i, lo] += 1 - frac
        m[i, hi] += frac
    return m


def resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of [N, C, H, W] images."""
    _, _, h, w = images.shape
    if (h, w) == (height, width):
        return images
    rows, cols = resize_matrix(h, height), resize_matrix(w, width)
    return np.einsum("ih,nchw,jw->ncij", rows, images.astype(np.float64), cols).astype(np.float32)


def split(x: np.ndarray, y: np.ndarray, held_out: float = 0.2, seed: int = 0):
    """A fixed shuffled split: the same held-out examples on every run."""
    order = np.random.default_rng(seed).permutation(len(x))
    cut = len(x) - int(round(len(x) * held_out))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def digits(size: int = 28) -> Dataset:
    """scikit-learn's handwritten digits (8x8, 0-16), scaled to size x size in [0, 1]; 20% held out."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[:, None]
    x = np.clip(resize(x, size, size), 0.0, 1.0)
    return Dataset("digits", *split(x, data.target.astype(np.int64)), classes=10)


def _open(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format): magic 0x00000803 for images, 0x00000801 for labels."""
    try:
        with _open(path) as f:
            raw = f.read()
    except OSError as e:
        raise CnncError(f"cannot read {path}: {e}") from None
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise CnncError(f"{path} is not an IDX file of unsigned bytes")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise CnncError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {data.size}")
    return data.reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
        if candidate.exists():
            return candidate
    raise CnncError(f"{folder} has no {stem} (or {stem}.gz)")


def mnist(folder: str | Path, name: str = "mnist") -> Dataset:
    """MNIST or Fashion-MNIST from the four IDX files (gzipped or not) in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CnncError(f"{name}: no such folder {folder}")
    parts = [read_idx(_find(folder, stem)) for stem in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]  # fmt: skip
    train_x, train_y, test_x, test_y = parts
    as_images = lambda a: (a.astype(np.float32) / 255.0)[:, None]  # noqa: E731
    return Dataset(name, as_images(train_x), train_y.astype(np.int64), as_images(test_x), test_y.astype(np.int64), classes=10)


def cifar10(folder: str | Path) -> Dataset:
    """CIFAR-10's python batches (data_batch_1..5, test_batch) from `folder`."""
    folder = Path(folder)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"

    def batch(name: str):
        path = folder / name
        try:
            with open(path, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[b"labels"], np.int64)
        except FileNotFoundError:
            raise CnncError(f"cifar10: {path} not found (expected CIFAR-10's python batches)") from None
        except Exception as e:  # a truncated or foreign file
            raise CnncError(f"cifar10: cannot read {path}: {e}") from None
        return x.astype(np.float32) / 255.0, y

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = batch("test_batch")
    return Dataset("cifar10", np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train]), test_x, test_y, 10)


def load_dataset(spec: str, image_shape: tuple[int, ...] | None = None) -> Dataset:
    """`digits`, `mnist:DIR`, `fashion-mnist:DIR` or `cifar10:DIR`."""
    name, _, folder = spec.partition(":")
    if name == "digits":
        size = image_shape[-1] if image_shape else 28
        return digits(size)
    if name in ("mnist", "fashion-mnist", "fashion_mnist") and folder:
        return mnist(folder, name)
    if name == "cifar10" and folder:
        return cifar10(folder)
    raise CnncError(f"unknown data set '{spec}'; use digits, mnist:DIR, fashion-mnist:DIR or cifar10:DIR")


def batches(x: np.ndarray, y: np.ndarray, size: int, shuffle: bool = False, rng: np.random.Generator | None = None):
    """(x, y) batches in order, or shuffled by `rng`; the last batch may be smaller."""
    order = (rng or np.random.default_rng(0)).permutation(len(x)) if shuffle else np.arange(len(x))
    for start in range(0, len(x), size):
        pick = order[start : start + size]
        yield np.ascontiguousarray(x[pick]), y[pick]
