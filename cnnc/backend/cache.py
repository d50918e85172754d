"""The kernel cache folder: private to its user, and repaired when damaged.

Numba unpickles the index and data files of its on-disk cache, so whoever can
write the cache folder can run code as the cnnc user. cnnc therefore keeps
compiled kernels only in a folder that it owns and nobody else can write
(folders 0700, files 0600, whatever the umask), and falls back to a private
temporary folder, with a warning, when the configured one is unsafe or
unusable. The kernels go in a folder that cnnc creates itself (cnnc-kernels
inside $CNNC_CACHE_DIR), so nothing else in a folder the user names is ever
changed. A damaged entry (a kernel file or Numba file that is unreadable,
garbage, a folder, or whose bytes differ from those cnnc saved) is removed and
rebuilt; it never stops a run.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import time
import warnings
from pathlib import Path

from ..errors import CnncError

POSIX = os.name == "posix"  # elsewhere there are no owners and modes to check
PYCACHE = "__pycache__"  # where Numba keeps the compiled code of a module
OWN_FOLDER = "cnnc-kernels"  # cnnc's folder inside $CNNC_CACHE_DIR: the only place it writes there
HASH_SUFFIX = ".sha256"  # beside each Numba file: the SHA-256 of the bytes cnnc wrote to it
STALE_SECONDS = 3600  # temporary files this old were left by a killed process


class KernelCacheWarning(UserWarning):
    """The kernel cache folder cannot be used; kernels are cached in a temporary folder instead."""


class Unusable(Exception):
    """Why a cache folder cannot be used."""


def configured() -> Path:
    """The kernel folder asked for, read at each call: $CNNC_CACHE_DIR/cnnc-kernels, else
    ~/.cache/cnnc/kernels. Either way a folder of cnnc's own inside one the user must own."""
    explicit = os.environ.get("CNNC_CACHE_DIR")
    if explicit:
        return Path(explicit) / OWN_FOLDER
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnc" / "kernels"


_usable: dict[Path, Path] = {}  # configured folder -> the folder actually used (callers hold a lock)
_temporary: Path | None = None


def folder() -> Path:
    """The folder to write kernels to: the configured one once checked, else a temporary one."""
    path = configured()
    if path not in _usable:
        try:
            _usable[path] = prepare(path, owned_parent=True)
        except Unusable as e:
            return fall_back(str(e))
    return _usable[path]


def fall_back(reason: str) -> Path:
    """Use a private temporary folder instead of the configured one from now on, and say why, once."""
    path = configured()
    if _temporary is not None and _usable.get(path) == _temporary:
        raise CnncError(f"cannot cache kernels in the temporary folder {_temporary}: {reason}")
    warnings.warn(
        f"cannot use the kernel cache {path}: {reason}; kernels are cached in a private temporary "
        "folder for this run (point CNNC_CACHE_DIR at a folder only you can write to keep them)",
        KernelCacheWarning,
        stacklevel=3,
    )
    _usable[path] = temporary()
    return _usable[path]


def temporary() -> Path:
    """This process's private temporary kernel folder, removed at exit."""
    global _temporary
    if _temporary is None:
        try:
            made = Path(tempfile.mkdtemp(prefix="cnnc-kernels-"))
            prepare(made, owned_parent=False)
        except (OSError, Unusable) as e:
            raise CnncError(f"no folder to compile kernels in: the temporary folder failed too ({e})") from None
        atexit.register(shutil.rmtree, made, ignore_errors=True)
        _temporary = made
    return _temporary


# -- checking and creating folders --------------------------------------------


def prepare(path: Path, owned_parent: bool) -> Path:
    """Create `path` (each missing folder 0700), check that it is private, and tidy its Numba folder.

    Raises Unusable. With `owned_parent`, the parent must be private too ($CNNC_CACHE_DIR, ~/.cache/cnnc)."""
    path = Path(os.path.abspath(path))
    if owned_parent:
        _make_folders(path.parent)
        _check_private(path.parent)  # before adding anything to it
    _make_folders(path)
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as e:  # RuntimeError: a loop of links
        raise Unusable(f"cannot resolve {path} ({e})") from None
    private = [real.parent, real] if owned_parent else [real]
    for parent in reversed(private[0].parents):
        _check_ancestor(parent)
    for each in private:
        _check_private(each)
    pycache = real / PYCACHE
    try:
        _make_pycache(pycache)
        tidy(pycache)
    except OSError as e:
        raise Unusable(f"cannot tidy {pycache} ({e.strerror or e})") from None
    return real


def _make_folders(path: Path) -> None:
    missing = []
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    for each in reversed(missing):
        _check_ancestor(each.parent)  # create nothing where others could swap it
        try:
            os.mkdir(each, 0o700)
            os.chmod(each, 0o700)  # mkdir's mode is cut by the umask, never widened; this is exact
        except FileExistsError:
            pass  # another process made it: the checks below judge it
        except OSError as e:
            raise Unusable(f"cannot create {each} ({e.strerror})") from None


def _mode(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as e:
        raise Unusable(f"cannot read {path} ({e.strerror})") from None


def _check_private(path: Path) -> None:
    """`path` must be a folder of the current user that only they can write."""
    st = _mode(path)
    if not stat.S_ISDIR(st.st_mode):
        raise Unusable(f"{path} is not a folder")
    if not POSIX:
        return  # no owners and modes to check
    if st.st_uid != os.getuid():
        raise Unusable(f"{path} belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o022:
        raise Unusable(f"others can write to {path} (mode {stat.S_IMODE(st.st_mode):o})")
    if st.st_mode & 0o700 != 0o700:
        raise Unusable(f"{path} is read-only (mode {stat.S_IMODE(st.st_mode):o})")


def _check_ancestor(path: Path) -> None:
    """Nobody but the user and root may rename things inside a folder above the cache (/tmp's sticky bit allows it)."""
    st = _mode(path)
    if not POSIX:
        return
    if st.st_uid not in (os.getuid(), 0):
        raise Unusable(f"{path} above it belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise Unusable(f"others can write to {path} above it (mode {stat.S_IMODE(st.st_mode):o})")


def _mine(st: os.stat_result) -> bool:
    return not POSIX or st.st_uid == os.getuid()


def _make_pycache(pycache: Path) -> None:
    """Numba's folder beside the kernels, made by cnnc so that it is private; a file in its place goes."""
    if pycache.is_symlink() or (os.path.lexists(pycache) and not pycache.is_dir()):
        remove(pycache)
    _make_folders(pycache)
    _check_private(pycache)


def tidy(pycache: Path) -> None:
    """Before anything is loaded from it: remove what is not a file of this user, tighten loose
    modes (a marker file Numba creates itself), and drop temporary files of killed processes."""
    now = time.time()
    with os.scandir(pycache) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or not _mine(st):
                remove(Path(entry.path))
            elif ".tmp" in entry.name and now - st.st_mtime > STALE_SECONDS:
                remove(Path(entry.path))
            elif POSIX and st.st_mode & 0o077:
                os.chmod(entry.path, 0o600)


# -- files ---------------------------------------------------------------------


def remove(path: Path) -> None:
    """Remove a file, link or folder tree (never following a link)."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


@contextlib.contextmanager
def open_private(path: str | os.PathLike):
    """Write `path` as a new 0600 file, renamed into place once complete: a reader never sees half of it."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_kernel(path: Path, data: bytes) -> None:
    """Make `path` a private file holding exactly `data`, replacing whatever is there if it differs."""
    if _holds(path, data):
        return
    if os.path.lexists(path) and not os.path.islink(path) and not os.path.isfile(path):
        remove(path)  # a folder (or a FIFO) where the kernel file belongs
    with open_private(path) as f:
        f.write(data)


def _holds(path: Path, data: bytes) -> bool:
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or not _mine(st) or (POSIX and st.st_mode & 0o077):
            return False
        with open(path, "rb") as f:
            return f.read(len(data) + 1) == data
    except OSError:
        return False


# -- Numba's files ---------------------------------------------------------------
# These hooks use attributes of Numba's cache objects (numba.core.caching.Cache and its
# IndexDataCacheFile, shared by numba-cuda); if a Numba release renames them, the kernels
# of that release compile without the disk cache rather than use an unchecked one.


class Damaged(Exception):
    """A Numba file whose bytes are not those cnnc saved (or whose hash was never recorded)."""


def guard_numba(module, pycache: Path) -> None:
    """Make each cached Numba function of `module` write private files with a recorded hash,
    load only files that match it, rebuild a damaged cache entry instead of failing, and never
    use a cache outside `pycache` (NUMBA_CACHE_DIR, Numba's user-wide folder), which cnnc has
    not checked."""
    for value in list(vars(module).values()):
        cache = getattr(value, "_cache", None)
        if getattr(cache, "_cache_file", None) is None:
            continue  # not a cached Numba function
        if not _hookable(cache):
            _disable(value)
        elif Path(cache._cache_path).resolve() != pycache.resolve():
            cache.disable()
        else:
            _hook(cache)


def _hookable(cache) -> bool:
    methods = ("_cache_path", "load_overload", "save_overload", "disable")
    file_methods = ("_open_for_write", "_index_path", "_index_name", "_load_index", "_save_index", "_load_data", "_save_data",
                    "_data_path")
    return all(hasattr(cache, m) for m in methods) and all(hasattr(cache._cache_file, m) for m in file_methods)


def _disable(dispatcher) -> None:
    from numba.core.caching import NullCache

    dispatcher._cache = NullCache()


def _hook(cache) -> None:
    _hook_files(cache._cache_file)
    load, save = cache.load_overload, cache.save_overload

    def load_overload(sig, target_context):
        try:
            return load(sig, target_context)
        except Exception:  # an empty, garbage, unreadable or altered index or data file: compile afresh
            _discard(cache)
            return None

    def save_overload(sig, data):
        try:
            save(sig, data)
        except Exception:
            _discard(cache)  # a folder or garbage where a file goes: clear the entry, try once more
            with contextlib.suppress(Exception):
                save(sig, data)  # failing again only loses the disk copy; the kernel itself works

    cache.load_overload, cache.save_overload = load_overload, save_overload


def _hook_files(files) -> None:
    """Every index and data file Numba writes gets its hash recorded; none is read unless it matches.

    Machine code in a data file that is still a valid pickle but altered (a bad disk, a bad copy)
    would otherwise be run as it is and crash the process, on every run until removed."""
    load_index, load_data = files._load_index, files._load_data

    def checked_load_index():
        check_recorded(files._index_path)
        return load_index()

    def checked_load_data(name):
        check_recorded(files._data_path(name))
        return load_data(name)

    def save(key, data):
        # Numba numbers a function's data files in the order of its index, so two processes saving two
        # signatures at once (compile workers, parallel tests) could both write `.1.nbc`, and one index
        # would then point at the other signature's machine code. A name from the signature itself
        # cannot collide; an index entry lost to a concurrent write only means compiling again. The
        # data is written before the index that names it.
        name = f"{files._index_name[: -len('.nbi')]}.{hashlib.sha256(repr(key).encode()).hexdigest()[:20]}.nbc"
        files._save_data(name, data)
        overloads = files._load_index()
        if overloads.get(key) != name:
            overloads[key] = name
            files._save_index(overloads)

    files._open_for_write = open_recorded
    files._load_index, files._load_data = checked_load_index, checked_load_data
    files.save = save


class _Hashing:
    """A file being written that also hashes what goes into it."""

    def __init__(self, f, digest):
        self._f, self._digest = f, digest

    def write(self, data) -> int:
        self._digest.update(data)
        return self._f.write(data)


@contextlib.contextmanager
def open_recorded(path: str | os.PathLike):
    """Write `path` like open_private, then record the SHA-256 of its bytes in `path`.sha256."""
    digest = hashlib.sha256()
    with open_private(path) as f:
        yield _Hashing(f, digest)
    with open_private(os.fspath(path) + HASH_SUFFIX) as f:
        f.write(digest.hexdigest().encode())


def check_recorded(path: str | os.PathLike) -> None:
    """Raise Damaged unless `path` holds the bytes whose hash open_recorded wrote beside it.

    A missing file passes: Numba reads that as no entry. Files in the private folder are only
    ever replaced whole by a rename, so what Numba then reads is what was checked or a complete
    newer save."""
    try:
        with open(path, "rb") as f:
            actual = hashlib.file_digest(f, "sha256").hexdigest().encode()
    except FileNotFoundError:
        return
    try:
        with open(os.fspath(path) + HASH_SUFFIX, "rb") as f:
            recorded = f.read(len(actual) + 1)
    except OSError:
        raise Damaged(f"no hash recorded for {path}") from None
    if recorded != actual:
        raise Damaged(f"{path} differs from what was saved")


def _discard(cache) -> None:
    """Remove one function's index, data, hash and marker files."""
    index = Path(cache._cache_file._index_path)
    prefix = index.name[: -len(".nbi")] + "."
    with contextlib.suppress(OSError):
        for entry in os.scandir(index.parent):
            if entry.name.startswith(prefix):
                remove(Path(entry.path))
