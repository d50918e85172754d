"""Data sets and batching.

The built-in data set is scikit-learn's digits (1,797 8x8 images, shipped with
scikit-learn), scaled to the size a network asks for. MNIST, Fashion-MNIST
(IDX files) and CIFAR-10 (python batches) are read from a folder the user has
downloaded them to. Images are float32 NCHW in [0, 1]; labels are int64.
"""

from __future__ import annotations

import gzip
import math
import pickle
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..budget import require, show_bytes
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
    """Bilinear interpolation as a [size_out, size_in] matrix (PyTorch's half-pixel rule): the
    definition `resize` computes by index arithmetic instead."""
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


def _interpolate(x: np.ndarray, size_out: int, axis: int) -> np.ndarray:
    """Bilinear interpolation along one axis: each output mixes its two nearest inputs.

    A matrix [size_out, size_in] would take as much memory as the product of the sizes
    (a gigabyte for a 16-megapixel row); two gathers take as much as the output."""
    size_in = x.shape[axis]
    src = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    lo = np.minimum(src.astype(np.int64), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    weight = src - lo
    shape = [1] * x.ndim
    shape[axis] = size_out
    weight = weight.reshape(shape)
    out = np.take(x, lo, axis=axis)
    out *= 1 - weight
    upper = np.take(x, hi, axis=axis)
    upper *= weight
    out += upper
    return out


def resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of [N, C, H, W] images (computed in float64, returned as float32)."""
    n, c, h, w = images.shape
    if (h, w) == (height, width):
        return images
    # One axis, then the other: the order that keeps the intermediate image smaller (a 16-megapixel
    # row scaled to 8x8 would otherwise pass through 8 such rows).
    rows_first = height * w <= h * width
    middle = height * w if rows_first else h * width
    # The float64 copy, two arrays of each step at once, and the float32 result.
    needed = 8 * n * c * (h * w + 2 * middle + 2 * height * width) + 4 * n * c * height * width
    require(needed, f"resizing {n * c:,} {h}x{w} image planes to {height}x{width}",
            f"the resized images ({show_bytes(8 * n * c * height * width)} in float64)",
            "Give an input of the network's size, or a network with a smaller input.")
    x = images.astype(np.float64)
    if rows_first:
        return _interpolate(_interpolate(x, height, axis=2), width, axis=3).astype(np.float32)
    return _interpolate(_interpolate(x, width, axis=3), height, axis=2).astype(np.float32)


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


# Deflate expands at most about 1032:1, so a .gz file cannot hold more than this many times its size.
_DEFLATE_RATIO = 1100


def regular_file_size(path: Path) -> int:
    """The size of `path`, refusing anything but a regular file (a FIFO would hang, a device never end)."""
    try:
        info = path.stat()
    except OSError as e:
        raise CnncError(f"cannot read {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CnncError(f"{path} is not a regular file")
    return info.st_size


def _read_exactly(f, size: int, path: Path) -> bytes:
    """`size` bytes, never more (a .gz may decompress to far more than its header says)."""
    try:
        data = f.read(size)
        extra = f.read(1)
    except (EOFError, OSError, zlib.error) as e:  # a truncated or damaged .gz
        raise CnncError(f"{path} is damaged or truncated ({e})") from None
    if len(data) < size:
        raise CnncError(f"{path} is truncated: expected {size:,} bytes of values, found {len(data):,}")
    if extra:
        raise CnncError(f"{path} holds more data than its header declares")
    return data


def _read_prefix(f, size: int, path: Path) -> bytes:
    try:
        raw = f.read(size)
    except (EOFError, OSError, zlib.error) as e:
        raise CnncError(f"{path} is damaged or truncated ({e})") from None
    if len(raw) < size:
        raise CnncError(f"{path} is not an IDX file (it ends inside the header)")
    return raw


def _idx_header(f, path: Path) -> tuple[int, ...]:
    start = _read_prefix(f, 4, path)
    if start[:3] != b"\0\0\x08":
        raise CnncError(f"{path} is not an IDX file of unsigned bytes")
    dims = start[3]
    if not 1 <= dims <= 4:
        raise CnncError(f"{path}: an IDX file of {dims} dimensions (MNIST's have 1 or 3)")
    raw = _read_prefix(f, 4 * dims, path)
    return tuple(int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in range(dims))


def read_idx(path: Path, dims: int | None = None) -> np.ndarray:
    """An IDX file (MNIST's format): magic 0x00000803 for images, 0x00000801 for labels.

    The header is checked against the file's size before anything else is read, and a .gz
    file is decompressed no further than the size its header declares.
    """
    size = regular_file_size(path)
    compressed = path.suffix.lower() == ".gz"
    try:
        f = gzip.open(path, "rb") if compressed else open(path, "rb")
    except OSError as e:
        raise CnncError(f"cannot read {path}: {e.strerror or e}") from None
    with f:
        shape = _idx_header(f, path)
        if dims is not None and len(shape) != dims:
            raise CnncError(f"{path} has {len(shape)} dimensions {list(shape)}; expected {dims}")
        count = math.prod(shape)
        header = 4 + 4 * len(shape)
        if not compressed and count != size - header:
            raise CnncError(f"{path} is truncated or damaged: its header declares {list(shape)} ({count:,} values), "
                            f"the file holds {max(size - header, 0):,}")
        if compressed and count > _DEFLATE_RATIO * size:
            raise CnncError(f"{path} is damaged: its header declares {list(shape)} ({count:,} values), "
                            f"more than a .gz file of {size:,} bytes can hold")
        data = _read_exactly(f, count, path)
    return np.frombuffer(data, np.uint8).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
        if candidate.exists():
            return candidate
    raise CnncError(f"{folder} has no {stem} (or {stem}.gz)")


def _idx_pair(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one part (train or t10k), checked against each other."""
    images_path, labels_path = _find(folder, f"{part}-images-idx3-ubyte"), _find(folder, f"{part}-labels-idx1-ubyte")
    images, labels = read_idx(images_path, dims=3), read_idx(labels_path, dims=1)
    if len(images) != len(labels):
        raise CnncError(f"{images_path} holds {len(images):,} images but {labels_path} {len(labels):,} labels")
    if len(images) == 0:
        raise CnncError(f"{images_path} holds no images")
    _check_labels(labels, 10, labels_path)
    return images, labels


def _check_labels(labels: np.ndarray, classes: int, path: Path) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        bad = labels[(labels < 0) | (labels >= classes)][0]
        raise CnncError(f"{path} holds the label {bad}; the data set has {classes} classes (0 to {classes - 1})")


def mnist(folder: str | Path, name: str = "mnist") -> Dataset:
    """MNIST or Fashion-MNIST from the four IDX files (gzipped or not) in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CnncError(f"{name}: no such folder {folder}")
    train_x, train_y = _idx_pair(folder, "train")
    test_x, test_y = _idx_pair(folder, "t10k")
    as_images = lambda a: (a.astype(np.float32) / 255.0)[:, None]  # noqa: E731
    return Dataset(name, as_images(train_x), train_y.astype(np.int64), as_images(test_x), test_y.astype(np.int64), classes=10)


class _ArraysOnly(pickle.Unpickler):
    """CIFAR-10's batches are pickles; a pickle can run any code, so only the few names a
    batch of NumPy arrays needs are resolved and everything else is refused."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }  # fmt: skip

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 batch never does")
        return super().find_class(module, name)


def _cifar_arrays(d, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images [N, 3, 32, 32] and labels [N] of a batch, checked against each other."""
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise CnncError(f"cifar10: {path} is not a CIFAR-10 batch (no data and labels)")
    data, labels = d[b"data"], d[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        shape = list(data.shape) if isinstance(data, np.ndarray) else type(data).__name__
        raise CnncError(f"cifar10: {path} holds images of {shape}; a CIFAR-10 batch holds uint8 [N, 3072]")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data):
        count = len(labels) if isinstance(labels, (list, np.ndarray)) else type(labels).__name__
        raise CnncError(f"cifar10: {path} holds {len(data):,} images but {count} labels")
    if any(not isinstance(v, (int, np.integer)) for v in labels):
        raise CnncError(f"cifar10: {path} holds labels that are not integers")
    # Checked as Python integers: a label beyond 64 bits cannot become an int64 (nor a uint64 above 2^63 safely).
    bad = next((int(v) for v in labels if not 0 <= int(v) < 10), None)
    if bad is not None:
        raise CnncError(f"{path} holds the label {bad}; the data set has 10 classes (0 to 9)")
    y = np.asarray(labels, np.int64)
    return data.reshape(-1, 3, 32, 32), y


def cifar10(folder: str | Path) -> Dataset:
    """CIFAR-10's python batches (data_batch_1..5, test_batch) from `folder`."""
    folder = Path(folder)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"

    def batch(name: str):
        path = folder / name
        if not path.exists():
            raise CnncError(f"cifar10: {path} not found (expected CIFAR-10's python batches)")
        regular_file_size(path)
        try:
            with open(path, "rb") as f:
                d = _ArraysOnly(f, encoding="bytes").load()
        except Exception as e:  # a truncated or foreign file
            raise CnncError(f"cifar10: cannot read {path}: {e}") from None
        x, y = _cifar_arrays(d, path)
        if len(x) == 0:
            raise CnncError(f"cifar10: {path} holds no images")
        return x.astype(np.float32) / 255.0, y

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = batch("test_batch")
    return Dataset("cifar10", np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train]), test_x, test_y, 10)


def load_dataset(spec: str, image_shape: tuple[int, ...] | None = None) -> Dataset:
    """`digits`, `mnist:DIR`, `fashion-mnist:DIR` or `cifar10:DIR`."""
    name, colon, folder = spec.partition(":")
    if name == "digits" and colon:
        raise CnncError(f"unknown data set '{spec}': digits is built in and takes no folder (use --dataset digits)")
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
