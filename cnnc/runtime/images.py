"""Reading a network's input from a file: a .npy array or a PNG image (decoded here with zlib)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import CnncError
from .data import resize

_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


def read_png(path: Path) -> np.ndarray:
    """An 8-bit, non-interlaced PNG as a [H, W, C] uint8 array."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise CnncError(f"{path} is not a PNG file")
    pos, header, chunks = 8, None, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not chunks:
        raise CnncError(f"{path} is a truncated PNG file")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise CnncError(f"{path}: only 8-bit, non-interlaced grey, grey+alpha, RGB or RGBA PNGs are read")
    channels = _CHANNELS[colour]
    try:
        raw = zlib.decompress(b"".join(chunks))
    except zlib.error:
        raise CnncError(f"{path} is a damaged PNG file") from None
    stride = width * channels
    if len(raw) < height * (stride + 1):
        raise CnncError(f"{path} is a truncated PNG file")
    out = np.zeros((height, stride), np.uint8)
    previous = np.zeros(stride, np.int32)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        if kind == 0:
            row = line
        elif kind == 2:
            row = (line + previous) & 255
        else:  # sub, average and Paeth depend on the pixel to the left: decode serially
            row = np.zeros(stride, np.int32)
            for i in range(stride):
                left = row[i - channels] if i >= channels else 0
                up = previous[i]
                upleft = previous[i - channels] if i >= channels else 0
                if kind == 1:
                    pred = left
                elif kind == 3:
                    pred = (left + up) // 2
                elif kind == 4:
                    p = left + up - upleft
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else upleft)
                else:
                    raise CnncError(f"{path}: unknown PNG filter {kind}")
                row[i] = (line[i] + pred) & 255
        out[y] = row
        previous = row
    return out.reshape(height, width, channels)


def read_input(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """An input batch for a network whose example shape is `shape` ([C, H, W] for images)."""
    path = Path(path)
    if not path.exists():
        raise CnncError(f"no such input file: {path}")
    if path.suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except Exception as e:
            raise CnncError(f"cannot read {path}: {e}") from None
        if x.shape == shape:
            x = x[None]
        return np.ascontiguousarray(x.astype(np.float32) if x.dtype.kind == "f" else x)
    if path.suffix.lower() == ".png":
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
