"""Physical layouts. The API speaks NCHW; inside a backend a batched image (a 4-D tensor whose
op did not declare it otherwise, see TensorType.image) is NHWC.

Channels-last lets im2col and the Winograd transforms vectorize over channels
and folds the batch into the GEMM rows. Every other tensor (features, labels,
parameters and their gradients) keeps its logical layout.
"""

from __future__ import annotations

import numpy as np

from .graph import TensorType


def is_channels_last(t: TensorType) -> bool:
    return t.batched and t.rank == 4 and t.image


def physical_shape(t: TensorType, batch: int) -> tuple[int, ...]:
    if t.rank == 0:  # a scalar (a loss) lives in a one-element buffer
        return (1,)
    shape = t.concrete(batch)
    if is_channels_last(t):
        n, c, h, w = shape
        return (n, h, w, c)
    return shape


def physical_axis(t: TensorType, axis: int) -> int:
    """Where a logical (NCHW) axis lives physically."""
    axis %= t.rank
    if is_channels_last(t):
        return (0, 3, 1, 2)[axis]
    return axis


def to_physical(t: TensorType, array: np.ndarray, out: np.ndarray) -> None:
    """Copy a logical (NCHW) array into a physical buffer."""
    if is_channels_last(t):
        np.copyto(out, array.transpose(0, 2, 3, 1))
    else:
        np.copyto(out, array.reshape(out.shape), casting="same_kind")


def to_logical(t: TensorType, buffer: np.ndarray) -> np.ndarray:
    """A new logical (NCHW) array from a physical buffer."""
    if is_channels_last(t):
        return np.ascontiguousarray(buffer.transpose(0, 3, 1, 2))
    if t.rank == 0:
        return buffer.reshape(()).copy()
    return buffer.copy()
