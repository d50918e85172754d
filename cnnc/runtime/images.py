"""Reading a network's input from a file: a .npy array or a PNG image (decoded here with zlib)."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from ..errors import CnncError
from .data import regular_file_size, resize

_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Refused before decoding: 4096 x 4096 (a 12-megapixel photo fits) already takes about
# half a gigabyte while it is converted and resized; a network's input is far smaller.
MAX_PIXELS = 1 << 24
MAX_FILE_BYTES = 256 << 20


def _chunks(data: bytes, path: Path) -> tuple[tuple, bytes]:
    """The IHDR fields and the joined IDAT data; IHDR must come first, as the format requires."""
    pos, header, chunks = 8, None, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) < length:
            break
        if header is None and kind != b"IHDR":
            raise CnncError(f"{path} is a damaged PNG file (it does not start with its header chunk)")
        if kind == b"IHDR":
            if length != 13:
                raise CnncError(f"{path} is a damaged PNG file (a header chunk of {length} bytes, not 13)")
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not chunks:
        raise CnncError(f"{path} is a truncated PNG file")
    return header, b"".join(chunks)


def _check_header(header: tuple, path: Path) -> tuple[int, int, int]:
    """(width, height, channels), refusing what is not read and images over the pixel limit."""
    width, height, depth, colour, _, _, interlace = header
    if width == 0 or height == 0:
        raise CnncError(f"{path} is an empty image ({width}x{height} pixels)")
    if width * height > MAX_PIXELS:
        raise CnncError(f"{path} is {width}x{height} pixels, more than the {MAX_PIXELS:,} read; scale it down first")
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise CnncError(f"{path}: only 8-bit, non-interlaced grey, grey+alpha, RGB or RGBA PNGs are read")
    return width, height, _CHANNELS[colour]


def _inflate(compressed: bytes, size: int, path: Path) -> np.ndarray:
    """The filtered rows: exactly `size` bytes, decompressing no further (a small file may inflate to gigabytes)."""
    try:
        raw = zlib.decompressobj().decompress(compressed, size)
    except zlib.error:
        raise CnncError(f"{path} is a damaged PNG file") from None
    if len(raw) < size:
        raise CnncError(f"{path} is a truncated PNG file")
    return np.frombuffer(raw, np.uint8)


def _unfilter(raw: np.ndarray, height: int, stride: int, channels: int, path: Path) -> np.ndarray:
    """Undo PNG's per-row filters. Sub, average and Paeth depend on the pixel to the left, so
    the rows are decoded serially, in a small compiled loop (cnnc/kernels/cpu/png.py, kept in the kernel cache)."""
    from ..backend.cpu.kernel import load
    from ..kernels import Kernel

    out = np.zeros((height, stride), np.uint8)
    bad_row = load(Kernel("png", "unfilter_rows"))(raw, height, stride, channels, out)
    if bad_row >= 0:
        raise CnncError(f"{path}: unknown PNG filter {raw[bad_row * (stride + 1)]} in row {bad_row}")
    return out


def _read_file(path: Path) -> bytes:
    size = regular_file_size(path)
    if size > MAX_FILE_BYTES:
        raise CnncError(f"{path} is {size:,} bytes, larger than any image read ({MAX_FILE_BYTES:,})")
    try:
        return path.read_bytes()
    except OSError as e:
        raise CnncError(f"cannot read {path}: {e.strerror or e}") from None


def read_png(path: Path) -> np.ndarray:
    """An 8-bit, non-interlaced PNG as a [H, W, C] uint8 array; its size is checked before decoding."""
    data = _read_file(Path(path))
    if data[:8] != _SIGNATURE:
        raise CnncError(f"{path} is not a PNG file")
    header, compressed = _chunks(data, path)
    width, height, channels = _check_header(header, path)
    stride = width * channels
    raw = _inflate(compressed, height * (stride + 1), path)
    return _unfilter(raw, height, stride, channels, path).reshape(height, width, channels)


def read_npy(path: Path) -> np.ndarray:
    """A .npy array, its header checked against the file's size before the data is read."""
    size = regular_file_size(path)
    try:
        with open(path, "rb") as f:
            version = npy_format.read_magic(f)
            read_header = npy_format.read_array_header_2_0 if version >= (2, 0) else npy_format.read_array_header_1_0
            shape, _, dtype = read_header(f)
            expected = f.tell() + math.prod(shape) * dtype.itemsize
        if dtype.hasobject:
            raise CnncError(f"{path} holds Python objects, not numbers (such arrays are never read)")
        if expected != size:
            raise CnncError(f"{path} is damaged: its header declares {list(shape)} {dtype} ({expected:,} bytes), the file has {size:,}")
        return np.load(path, allow_pickle=False)
    except CnncError:
        raise
    except Exception as e:
        raise CnncError(f"cannot read {path}: {e}") from None


def read_input(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """An input batch for a network whose example shape is `shape` ([C, H, W] for images)."""
    path = Path(path)
    if not path.exists():
        raise CnncError(f"no such input file: {path}")
    suffix = path.suffix.lower()  # X.NPY and X.PNG are read like x.npy and x.png
    if suffix == ".npy":
        x = read_npy(path)
        if x.shape == shape:
            x = x[None]
        return np.ascontiguousarray(x.astype(np.float32) if x.dtype.kind == "f" else x)
    if suffix == ".png":
        if len(shape) != 3:
            raise CnncError(f"an image input needs a network input of shape [C, H, W], not {list(shape)}")
        pixels = read_png(path).astype(np.float32) / 255.0
        if pixels.shape[2] in (2, 4):  # drop alpha
            pixels = pixels[:, :, :-1]
        c = shape[0]
        if c == 1 and pixels.shape[2] == 3:
            pixels = pixels.mean(axis=2, keepdims=True)
        elif c == 3 and pixels.shape[2] == 1:
            pixels = np.repeat(pixels, 3, axis=2)
        x = pixels.transpose(2, 0, 1)[None]
        return np.ascontiguousarray(resize(x, shape[1], shape[2]))
    raise CnncError(f"{path}: inputs are .npy arrays or .png images")
