"""Weights files (.npz) and loading parameters by name, with every name, shape, dtype and value checked.

A weights file is read without trusting it: each member's name, shape and dtype come
from its .npy header and are checked (against the network, when it is known) before
any data is read, and no member is read past the size its header declares, so a
forged header or a zip bomb is refused instead of filling the memory.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from ..errors import CnncError

# Temporary files of a save are named `.NAME.cnnc-PID-RANDOM.tmp` next to the target, so
# that a later save can recognize (and delete) those left by a process that was killed.
_TEMP_MARK = ".cnnc-"
_TEMP_PATTERN = re.compile(r"^\..*\.cnnc-(\d+)-[^.]*\.tmp$")
_IGNORED = "num_batches_tracked"  # PyTorch's batch-norm counter: no cnnc parameter holds it


class SaveError(CnncError, OSError):
    """A weights file that cannot be written. Also an OSError, so that code which caught
    the OSError of a failed save before it became a CnncError still catches it."""


# -- assigning arrays to a model ---------------------------------------------------------


def _as_array(name: str, value: Any) -> np.ndarray:
    try:
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu()
            if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16; float32 holds it exactly
                value = value.float()
            value = value.numpy()
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as e:  # float8, sparse, meta, ragged lists
        raise CnncError(f"parameter '{name}' cannot be read as an array: {str(e).splitlines()[0]}") from None


def _path(path: Any, doing: str) -> Path:
    """A weights path as a Path: a string or path-like without NUL bytes, else a CnncError."""
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
        raise CnncError(f"cannot {doing} weights: expected a path (a string or a pathlib.Path), got {path!r}")
    if "\0" in os.fspath(path):
        raise CnncError(f"cannot {doing} weights: the path {os.fspath(path)!r} holds a NUL byte")
    return Path(path)


def _as_mapping(mapping: Any) -> Mapping:
    if not isinstance(mapping, Mapping):
        raise CnncError(f"parameters are given as a mapping from names to arrays (a dict or a state dict), not a {type(mapping).__name__}")
    for key in mapping:
        if not isinstance(key, str):
            raise CnncError(f"parameter names are strings, not {type(key).__name__} ({key!r})")
    return mapping


def name_problems(specs: Mapping, names) -> str | None:
    """The missing and unexpected names of a strict load, as one message (None when they match)."""
    names = [n for n in names if not n.endswith(_IGNORED)]
    present = set(names)
    missing = [name for name in specs if name not in present]
    unexpected = [name for name in names if name not in specs]
    problems = []
    if missing:
        problems.append(f"missing: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    if unexpected:
        problems.append(f"unexpected: {', '.join(unexpected[:10])}{' ...' if len(unexpected) > 10 else ''}")
    if not problems:
        return None
    return "the weights do not match the network's parameters (" + "; ".join(problems) + ")"


def check_dtype(name: str, dtype: np.dtype) -> None:
    """Only floating-point weights are taken for float parameters.

    Integers are refused rather than converted: an integer array in place of float
    weights is almost always the wrong array (indices, counts, a quantized export), and
    converting it would load it silently. float16 (and bfloat16) are accepted: every
    such value is exact in float32, so nothing is lost or invented.
    """
    if dtype.kind == "f":
        return
    if dtype.kind in "iub":
        raise CnncError(f"parameter '{name}' holds {dtype} values; the network's parameters are floating point "
                        "(convert them, e.g. with .astype(numpy.float32), if that is what you mean)")
    raise CnncError(f"parameter '{name}' holds {dtype}, not floating-point numbers")


def _converted(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`array` in the parameter's dtype, refused if any value is NaN or infinite there."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = array.astype(dtype, copy=True)
    if not np.isfinite(out).all():
        if np.isfinite(array).all():
            largest = float(np.abs(array).max())
            raise CnncError(f"parameter '{name}' holds values too large for {dtype} (up to {largest:.3g})")
        raise CnncError(f"parameter '{name}' holds NaN or infinity")
    return out


def assign(model, mapping: Mapping[str, Any], strict: bool = True) -> None:
    """Copy `mapping` into the model's parameters and buffers; nothing changes if any check fails."""
    specs = model.graph.saved_params
    items = {k: v for k, v in _as_mapping(mapping).items() if not k.endswith(_IGNORED)}
    if strict and (problem := name_problems(specs, items)):
        raise CnncError(problem)
    values = {**model.params, **model.buffers}  # the host arrays (brought up to date from a device)
    targets = {name: values[name] for name in items if name in specs}
    arrays = {}
    for name, target in targets.items():
        array = _as_array(name, items[name])
        if tuple(array.shape) != specs[name].shape:
            raise CnncError(f"parameter '{name}' has shape {list(array.shape)} in the weights; the network expects {list(specs[name].shape)}")
        check_dtype(name, array.dtype)
        arrays[name] = _converted(name, array, target.dtype)
    for name, array in arrays.items():
        targets[name][...] = array


# -- saving ------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's process
        return True
    except (ProcessLookupError, OverflowError):  # none, or a number no process can have
        return False
    return True


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files left in `folder` by saves whose process no longer runs (killed mid-save)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _TEMP_PATTERN.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            try:
                os.unlink(entry.path)
            except OSError:
                pass


def _temporary_stem(path: Path) -> str:
    """The target's name, or a hash of it when the name is too long to take the temporary's marks
    (a file name has at most 255 bytes)."""
    raw = os.fsencode(path.name)
    return path.name if len(raw) <= 128 else hashlib.sha256(raw).hexdigest()[:16]


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new temporary file next to `path`, named so that it can be recognized if this process dies.

    Opened with mode 0666 so that the umask gives the weights file the usual permissions
    (mkstemp's 0600 would survive the rename)."""
    for _ in range(100):
        tmp = path.parent / f".{_temporary_stem(path)}{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


def _target(path: Path) -> Path:
    """The file a save to `path` replaces: `path`, or the file a symbolic link there points to
    (the link is kept). Anything but a regular file or a free name is refused: the save renames
    its temporary file over the target, which would replace a device or a FIFO with a file."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = os.lstat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):  # a new file (or a folder that is not one: said later)
        return target
    except OSError as e:
        raise SaveError(f"cannot save weights to {path}: {e.strerror or e}") from None
    shown = path if target == path else f"{path} (a link to {target})"
    if stat.S_ISDIR(mode):
        raise SaveError(f"cannot save weights to {shown}: it is a folder")
    if stat.S_ISLNK(mode):  # a loop of links
        raise SaveError(f"cannot save weights to {path}: the symbolic link cannot be followed")
    if not stat.S_ISREG(mode):
        raise SaveError(f"cannot save weights to {shown}: it is not a regular file (a device, FIFO or socket); "
                        "remove it or choose another path")
    return target


def check_writable(path: str | Path) -> Path:
    """Check that a weights file can be written at `path` (before hours of training, not after)."""
    path = _path(path, "save")
    target = _target(path)
    folder = target.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise SaveError(f"cannot save weights to {path}: {folder} {what}")
    try:  # the permissions say too little (root, read-only mounts, ACLs): try it
        fd, probe = _create_temporary(target)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SaveError(f"cannot save weights to {path}: {e.strerror or e}") from None
    return path


def save(tensors: dict[str, np.ndarray], path: str | Path) -> None:
    """Write an .npz atomically: a temporary file in the same folder, flushed, then renamed.

    Non-finite arrays are refused (no API path writes a file that `load` would refuse),
    and a failed save leaves any previous file whole.
    """
    for name, array in tensors.items():
        if np.asarray(array).dtype.kind in "fc" and not np.isfinite(array).all():
            raise CnncError(f"cannot save weights to {path}: parameter '{name}' holds NaN or infinity")
    path = check_writable(path)
    target = _target(path)
    remove_stale_temporaries(target.parent)
    try:
        fd, tmp = _create_temporary(target)
    except OSError as e:
        raise SaveError(f"cannot save weights to {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **tensors)
            f.flush()
            os.fsync(f.fileno())
        _target(path)  # once more: the path may have become a device or FIFO while the file was written
        os.replace(tmp, target)
    except SaveError:
        Path(tmp).unlink(missing_ok=True)
        raise
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise SaveError(f"cannot save weights to {path}: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- loading -----------------------------------------------------------------------------


def _open_archive(path: Path) -> zipfile.ZipFile:
    """The zip archive at `path`, or a CnncError saying what the file is instead."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CnncError(f"no such weights file: {path}") from None
    except OSError as e:
        raise CnncError(f"cannot read the weights file {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise CnncError(f"{path} is a folder, not a weights file")
    if not stat.S_ISREG(mode):
        raise CnncError(f"{path} is not a regular file (weights files are .npz archives)")
    try:
        with open(path, "rb") as f:
            start = f.read(6)
        if start == b"\x93NUMPY":
            raise CnncError(f"{path} holds a single array (.npy); weights files are .npz archives of named "
                            "arrays, as written by `cnnc train` or Model.save")
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, RuntimeError):
        what = "is empty" if start == b"" else "is not an .npz archive (or is truncated)"
        raise CnncError(f"{path} is not a readable weights file: it {what}") from None
    except OSError as e:
        raise CnncError(f"cannot read the weights file {path}: {e.strerror or e}") from None


def _read_header(path: Path, stream, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from a member's .npy header; object dtypes are never unpickled."""
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            header = npy_format.read_array_header_1_0(stream)
        elif version == (2, 0):
            header = npy_format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, EOFError, OSError, SyntaxError, zipfile.BadZipFile) as e:
        raise CnncError(f"{path}: the array '{name}' has a damaged header ({e})") from None
    shape, fortran, dtype = header
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise CnncError(f"{path}: the array '{name}' holds {dtype}, not numbers (such arrays are never read)")
    return shape, fortran, dtype


def _member_names(path: Path, archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise CnncError(f"{path}: '{info.filename}' is not an array (.npy) member")
        name = info.filename[: -len(".npy")]
        if name in members:
            raise CnncError(f"{path} holds the array '{name}' twice")
        members[name] = info
    return members


def _open_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str):
    """A member's stream; encrypted members and compression methods zipfile lacks are refused."""
    if info.flag_bits & 0x1:
        raise CnncError(f"{path}: the array '{name}' is encrypted (weights files are plain .npz archives)")
    try:
        return archive.open(info)
    except NotImplementedError:  # zipfile's answer to a compression method it does not know
        raise CnncError(f"{path}: the array '{name}' is compressed with a method that cannot be read "
                        f"(zip method {info.compress_type}; .npz archives are stored or deflated)") from None
    except RuntimeError as e:  # zipfile's answer to encryption flags it did not expect
        raise CnncError(f"{path}: the array '{name}' cannot be read ({e})") from None


def _read_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, specs: Mapping | None) -> np.ndarray | None:
    """One member; what zipfile or a decompressor raises on a damaged one becomes a CnncError naming it."""
    try:
        return _read_checked(path, archive, info, name, specs)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, RuntimeError, NotImplementedError) as e:
        raise CnncError(f"{path} is not a readable weights file (the array '{name}' is damaged: {e})") from None


def _read_checked(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, specs: Mapping | None) -> np.ndarray | None:
    """One member, checked from its header first."""
    with _open_member(path, archive, info, name) as stream:
        shape, fortran, dtype = _read_header(path, stream, name)
        if specs is not None and name in specs:
            if tuple(shape) != tuple(specs[name].shape):
                raise CnncError(f"parameter '{name}' has shape {list(shape)} in the weights; the network expects {list(specs[name].shape)}")
            check_dtype(name, dtype)
        size = math.prod(shape) * dtype.itemsize
        if info.file_size != stream.tell() + size:  # the zip's size and the header's disagree: forged or damaged
            raise CnncError(f"{path}: the array '{name}' is damaged (its header declares {size:,} bytes of data, "
                            f"the archive {info.file_size - stream.tell():,})")
        data = stream.read(size)  # never more than the header declares, whatever the stream holds
        if len(data) != size or stream.read(1):
            raise CnncError(f"{path}: the array '{name}' is damaged (its data is not {size:,} bytes long)")
    array = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
    return array.copy()


def load(path: str | Path, specs: Mapping | None = None) -> dict[str, np.ndarray]:
    """Read a weights file. Given the network's parameter specs, every name, shape and dtype
    is checked against them from the headers alone, before any array is read."""
    path = _path(path, "load")
    with _open_archive(path) as archive:
        members = _member_names(path, archive)
        if specs is not None and (problem := name_problems(specs, members)):
            raise CnncError(problem)
        out = {}
        for name, info in members.items():
            if specs is not None and name not in specs:
                continue  # PyTorch's num_batches_tracked: allowed, never used
            out[name] = _read_member(path, archive, info, name, specs)
        return out
