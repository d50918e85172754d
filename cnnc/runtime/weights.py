"""Weights files (.npz) and loading parameters by name, with every name and shape checked."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import CnncError


def _as_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def assign(model, mapping: Mapping[str, Any], strict: bool = True) -> None:
    """Copy `mapping` into the model's parameters and buffers; nothing changes if any check fails."""
    specs = model.graph.params
    items = {k: v for k, v in mapping.items() if not k.endswith("num_batches_tracked")}
    if strict:
        missing = [name for name in specs if name not in items]
        unexpected = [name for name in items if name not in specs]
        problems = []
        if missing:
            problems.append(f"missing: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            problems.append(f"unexpected: {', '.join(unexpected[:10])}{' ...' if len(unexpected) > 10 else ''}")
        if problems:
            raise CnncError("the weights do not match the network's parameters (" + "; ".join(problems) + ")")
    arrays = {}
    for name, value in items.items():
        if name not in specs:
            continue
        array = _as_array(value)
        if tuple(array.shape) != specs[name].shape:
            raise CnncError(f"parameter '{name}' has shape {list(array.shape)} in the weights; the network expects {list(specs[name].shape)}")
        if array.dtype.kind not in "fiu":
            raise CnncError(f"parameter '{name}' holds {array.dtype}, not numbers")
        if not np.isfinite(array).all():
            raise CnncError(f"parameter '{name}' holds NaN or infinity")
        arrays[name] = array
    for name, array in arrays.items():
        target = model.params[name] if specs[name].kind == "param" else model.buffers[name]
        target[...] = array


def save(tensors: dict[str, np.ndarray], path: str | Path) -> None:
    """Write an .npz atomically: a temporary file in the same folder, flushed, then renamed."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CnncError(f"cannot save weights: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **tensors)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise CnncError(f"no such weights file: {path}") from None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise CnncError(f"{path} is not a readable weights file (truncated or not an .npz: {e})") from None
