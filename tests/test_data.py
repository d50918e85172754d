"""Data sets, batching and input files, on data made here."""

import gzip
import pickle
import struct
import zlib

import numpy as np
import pytest

from cnnc import CnncError
from cnnc.runtime import data
from cnnc.runtime.images import read_input, read_png


def test_digits_scaled_with_a_fixed_held_out_split():
    ds = data.digits()
    assert ds.train_x.shape == (1438, 1, 28, 28) and ds.test_x.shape == (359, 1, 28, 28)
    assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.int64
    assert 0.0 <= ds.train_x.min() and ds.train_x.max() <= 1.0
    again = data.digits()
    assert np.array_equal(ds.test_y, again.test_y) and np.array_equal(ds.test_x, again.test_x)
    assert data.digits(size=8).train_x.shape[2:] == (8, 8)


def test_resize_keeps_a_constant_image_constant():
    x = np.full((2, 3, 8, 8), 0.25, np.float32)
    assert np.allclose(data.resize(x, 28, 20), 0.25)


def write_idx(path, array, compress):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path, compress):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    images, labels = rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 10, 6)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images[:2], compress)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels[:2], compress)
    ds = data.load_dataset(f"mnist:{tmp_path}")
    assert ds.train_x.shape == (6, 1, 28, 28) and np.allclose(ds.train_x[:, 0] * 255, images)
    assert np.array_equal(ds.test_y, labels[:2])
    assert data.load_dataset(f"fashion-mnist:{tmp_path}").name == "fashion-mnist"


def test_truncated_and_missing_idx_files(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28)), False)
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-10])
    with pytest.raises(CnncError, match="is truncated"):
        data.read_idx(tmp_path / "train-images-idx3-ubyte")
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28)), False)
    with pytest.raises(CnncError, match="has no train-labels-idx1-ubyte"):
        data.mnist(tmp_path)
    with pytest.raises(CnncError, match="no such folder"):
        data.mnist(tmp_path / "nowhere")


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [1, 2, 3]}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    ds = data.load_dataset(f"cifar10:{tmp_path}")
    assert ds.train_x.shape == (15, 3, 32, 32) and ds.test_y.tolist() == [1, 2, 3]
    (tmp_path / "test_batch").write_bytes(b"garbage")
    with pytest.raises(CnncError, match="cannot read"):
        data.cifar10(tmp_path)


def test_unknown_dataset():
    with pytest.raises(CnncError, match="unknown data set 'imagenet'"):
        data.load_dataset("imagenet")


def test_batches_cover_every_example_once():
    x, y = np.arange(10)[:, None].astype(np.float32), np.arange(10)
    shuffled = list(data.batches(x, y, 4, shuffle=True, rng=np.random.default_rng(1)))
    assert [len(b[1]) for b in shuffled] == [4, 4, 2]
    assert sorted(np.concatenate([b[1] for b in shuffled]).tolist()) == list(range(10))
    assert np.concatenate([b[1] for b in data.batches(x, y, 3)]).tolist() == list(range(10))


def png(pixels: np.ndarray, filters) -> bytes:
    """A PNG written here, each row with the given filter type (0 none, 1 sub, 2 up, 3 average, 4 Paeth)."""
    h, w, c = pixels.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = pixels.reshape(h, w * c).astype(np.int32)
    out = bytearray()
    prev = np.zeros(w * c, np.int32)
    for y in range(h):
        f = filters[y % len(filters)]
        row = rows[y]
        left = np.concatenate([np.zeros(c, np.int32), row[:-c]])
        upleft = np.concatenate([np.zeros(c, np.int32), prev[:-c]])
        if f == 0:
            pred = np.zeros_like(row)
        elif f == 1:
            pred = left
        elif f == 2:
            pred = prev
        elif f == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        out += bytes([f]) + ((row - pred) & 255).astype(np.uint8).tobytes()
        prev = row

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b"")


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_reader_with_every_filter(tmp_path, channels):
    pixels = np.random.default_rng(channels).integers(0, 256, (7, 5, channels)).astype(np.uint8)
    (tmp_path / "a.png").write_bytes(png(pixels, [0, 1, 2, 3, 4]))
    assert np.array_equal(read_png(tmp_path / "a.png"), pixels)


def test_read_input_converts_images_and_arrays(tmp_path):
    pixels = np.full((14, 14, 3), 255, np.uint8)
    (tmp_path / "a.png").write_bytes(png(pixels, [0]))
    x = read_input(tmp_path / "a.png", (1, 28, 28))
    assert x.shape == (1, 1, 28, 28) and np.allclose(x, 1.0)
    np.save(tmp_path / "a.npy", np.zeros((1, 28, 28)))
    assert read_input(tmp_path / "a.npy", (1, 28, 28)).shape == (1, 1, 28, 28)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nrubbish")
    with pytest.raises(CnncError, match="truncated PNG"):
        read_input(tmp_path / "bad.png", (1, 28, 28))
    with pytest.raises(CnncError, match="no such input file"):
        read_input(tmp_path / "none.png", (1, 28, 28))
