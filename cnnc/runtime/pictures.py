"""Pictures a person looks at: images tiled into a grid and written as PNG (encoded here with zlib)."""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import CnncError


def to_pixels(images: np.ndarray, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Float images [N, C, H, W] (C = 1 or 3) with values in [low, high] as uint8 [N, H, W, C]."""
    scaled = (np.asarray(images, np.float64) - low) / (high - low)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8).transpose(0, 2, 3, 1)


def grid(pixels: np.ndarray, columns: int, gap: int = 2, scale: int = 1, background: int = 255) -> np.ndarray:
    """uint8 images [N, H, W, C] tiled row by row, `gap` pixels apart, each enlarged `scale` times."""
    if scale > 1:
        pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, c = pixels.shape
    rows = -(-n // columns)
    out = np.full((rows * (h + gap) + gap, columns * (w + gap) + gap, c), background, np.uint8)
    for k in range(n):
        top, left = gap + (k // columns) * (h + gap), gap + (k % columns) * (w + gap)
        out[top : top + h, left : left + w] = pixels[k]
    return out


def side_by_side(*images: np.ndarray, gap: int = 4, background: int = 255) -> np.ndarray:
    """uint8 images [H, W, C] of one height and channel count, left to right."""
    h, c = images[0].shape[0], images[0].shape[2]
    spacer = np.full((h, gap, c), background, np.uint8)
    parts = [part for image in images for part in (image, spacer)][:-1]
    return np.concatenate(parts, axis=1)


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 [H, W] (grey), [H, W, 1] or [H, W, 3] (RGB) as PNG bytes."""
    pixels = np.ascontiguousarray(pixels, np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    colour = {1: 0, 3: 2}[channels]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, width * channels)], axis=1)  # filter 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + chunk(b"IEND", b"")


def write_png(path: str | Path, pixels: np.ndarray) -> Path:
    """Write a PNG atomically (a temporary file in the same folder, then renamed); returns the path."""
    path = Path(path)
    data = encode_png(pixels)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        umask = os.umask(0o022)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # a picture others may read, as a file written by open() would be
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise CnncError(f"cannot write {path}: {e.strerror or e}") from None
    return path
