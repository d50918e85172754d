"""Generated kernel modules: written to the kernel cache folder under a hash of their text, imported once.

Every backend hands its module text here. The file name is a hash of the text,
so identical modules (the same op on layers of any shape) are one file and one
compile, and Numba's `cache=True` keeps the machine code on disk beside it: a
second process compiling the same model pays almost nothing. The folder's
safety and repair are cache.py's.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import types
from pathlib import Path
from typing import Any

from ..errors import CnncError
from . import cache

PACKAGE = "cnnc_kernels"  # generated modules are imported as cnnc_kernels.k_<name>, and import each other so
_modules: dict[tuple[Path, str], Any] = {}
_lock = threading.Lock()


def digest(text: str, prefix: str = "") -> str:
    return prefix + hashlib.sha256(text.encode()).hexdigest()[:20]


def import_text(name: str, text: str):
    """The module of this source text (imported once per process), written to the cache folder as k_<name>.py."""
    with _lock:
        folder = cache.folder()
        module = _modules.get((folder, name))
        if module is None:
            folder = _write(folder, name, text)
            module = _import(folder / f"k_{name}.py", name, text)
            _modules[folder, name] = module
    return module


def _write(folder: Path, name: str, text: str) -> Path:
    """The folder now holding this kernel's file (rewritten if missing, changed or damaged)."""
    try:
        cache.write_kernel(folder / f"k_{name}.py", text.encode())
    except OSError as e:
        folder = cache.fall_back(f"cannot write to it ({e.strerror or e})")
        try:
            cache.write_kernel(folder / f"k_{name}.py", text.encode())
        except OSError as again:
            raise CnncError(f"cannot write a kernel to {folder} ({again.strerror or again})") from None
    return folder


def _import(path: Path, name: str, text: str):
    # The Python run is `text` itself, never the file read back; Numba only needs the file to
    # exist, for its cache index. Its machine code is loaded only if its recorded hash matches.
    module_name = f"{PACKAGE}.k_{name}"
    module = types.ModuleType(module_name)
    module.__file__ = str(path)
    sys.modules[module_name] = module
    exec(compile(text, str(path), "exec"), module.__dict__)
    cache.guard_numba(module, path.parent / cache.PYCACHE)
    return module
