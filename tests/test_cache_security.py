"""The kernel cache: private whatever the umask, refused when others could write it, repaired when damaged,
and confined to a folder of cnnc's own."""

import errno
import json
import os
import pickle
import pickletools
import shutil
import stat
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import cnnc
from cnnc.backend import cache, modules
from cnnc.backend.cpu import kernel
from cnnc.errors import CnncError
from cnnc.kernels import Kernel

COUNT_NONFINITE = Kernel("finite", "count_nonfinite")  # a small kernel of one module
OTHER_UID = 54321  # a user that owns nothing here


@pytest.fixture
def fresh(monkeypatch):
    """Forget every folder checked and kernel imported, so each test starts as a new process would."""
    monkeypatch.setattr(cache, "_usable", {})
    monkeypatch.setattr(modules, "_modules", {})
    monkeypatch.delenv("CNNC_CACHE_DIR", raising=False)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    return monkeypatch


def give_away(path):
    """Make `path` another user's (only root can)."""
    if os.getuid() != 0:
        pytest.skip("only root can give a file to another user")
    os.chown(path, OTHER_UID, -1)


def use(monkeypatch, folder):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(folder))
    return folder


def own(folder):
    """Where cnnc keeps kernels when CNNC_CACHE_DIR is `folder`."""
    return folder / cache.OWN_FOLDER


def run_kernel():
    """Load the kernel as a new process would, check its result; its Numba dispatcher."""
    modules._modules.clear()
    f = kernel.load(COUNT_NONFINITE)
    assert f(np.array([1.0, np.inf, 2.0, np.nan])) == 2
    return f


def loaded_from_disk(f) -> bool:
    return sum(f.stats.cache_hits.values()) > 0


def quietly(run=run_kernel):
    """Run with no warning allowed: the cache folder was used as it is."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache.KernelCacheWarning)
        return run()


def refused(folder):
    """The run warns, gives the right result, and leaves `folder` as it was."""
    before = sorted(os.listdir(folder)) if folder.is_dir() else None
    with pytest.warns(cache.KernelCacheWarning, match="cannot use the kernel cache"):
        run_kernel()
    after = sorted(os.listdir(folder)) if folder.is_dir() else None
    assert after == before


def pycache_files(folder):
    return sorted((folder / "__pycache__").iterdir())


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """A CNNC_CACHE_DIR that holds the compiled kernel (compiled once for the whole module)."""
    folder = tmp_path_factory.mktemp("populated") / "kernels"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cache, "_usable", {})
        mp.setattr(modules, "_modules", {})
        use(mp, folder)
        run_kernel()
    return folder


@pytest.fixture
def copy_of(populated, tmp_path, fresh):
    """A private copy of the populated cache, in use: its kernel folder."""
    folder = tmp_path / "kernels"
    shutil.copytree(populated, folder, symlinks=True)
    return own(use(fresh, folder))


# -- permissions -------------------------------------------------------------


def modes(root):
    found = {}
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(parent, name)
            found[os.path.relpath(path, root)] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


@pytest.mark.parametrize("where", ["CNNC_CACHE_DIR", "default"])
def test_under_umask_000_the_cache_is_created_private(tmp_path, fresh, where):
    if where == "default":
        fresh.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    else:
        use(fresh, tmp_path / "xdg" / "deep" / "kernels")  # missing folders above it are made too
    old = os.umask(0)
    try:
        quietly()
    finally:
        os.umask(old)
    found = modes(tmp_path / "xdg")
    assert any(name.endswith(".nbi") for name in found) and any(name.endswith(".py") for name in found)
    for name, mode in found.items():
        assert mode == (0o700 if (tmp_path / "xdg" / name).is_dir() else 0o600), name


@pytest.mark.parametrize("damage", ["foreign owner", "world-writable", "group-writable", "read-only"])
def test_a_cache_folder_others_control_or_that_is_read_only_is_refused(tmp_path, fresh, damage):
    folder = use(fresh, tmp_path / "kernels")
    folder.mkdir()
    change = {
        "foreign owner": lambda: give_away(folder),
        "world-writable": lambda: os.chmod(folder, 0o777),
        "group-writable": lambda: os.chmod(folder, 0o770),
        "read-only": lambda: os.chmod(folder, 0o500),
    }
    change[damage]()
    refused(folder)


def test_the_cnnc_folder_above_the_default_cache_is_checked(tmp_path, fresh):
    fresh.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "cnnc" / "kernels").mkdir(parents=True, mode=0o700)
    os.chmod(tmp_path / "cnnc", 0o777)
    refused(tmp_path / "cnnc" / "kernels")


def test_a_folder_above_that_others_can_write_is_refused_unless_sticky(tmp_path, fresh):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    use(fresh, shared / "kernels")
    refused(shared)
    os.chmod(shared, 0o1777)  # like /tmp: others cannot rename what is ours
    cache._usable.clear()
    quietly()


def planted_index(path, marker):
    """An index file whose unpickling creates `marker`."""

    class Plant:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import numba

    path.write_bytes(pickle.dumps(numba.__version__) + pickle.dumps(Plant()))


def test_a_planted_index_in_a_folder_others_can_write_is_never_unpickled(copy_of, tmp_path):
    marker = tmp_path / "ran"
    for index in copy_of.glob("__pycache__/*.nbi"):
        planted_index(index, marker)
    os.chmod(copy_of, 0o777)
    refused(copy_of)
    assert not marker.exists()


def test_numba_files_of_another_user_are_removed_before_loading(copy_of, tmp_path):
    marker = tmp_path / "ran"
    (index,) = copy_of.glob("__pycache__/*.nbi")
    planted_index(index, marker)
    give_away(index)
    quietly()
    assert not marker.exists()
    assert all(p.stat().st_uid == os.getuid() for p in pycache_files(copy_of))  # rebuilt by us
    assert loaded_from_disk(quietly())


# -- damage ------------------------------------------------------------------


def _files(folder, pattern):
    found = list(folder.glob(pattern))
    assert found, pattern
    return found


def _empty(folder, pattern):
    for path in _files(folder, pattern):
        path.write_bytes(b"")


def _garbage(folder, pattern):
    for path in _files(folder, pattern):
        path.write_bytes(b"garbage\x00\xff" * 10)


def _folder_instead(folder, pattern):
    for path in _files(folder, pattern):
        path.unlink()
        (path / "inside").mkdir(parents=True)


DAMAGE = {
    "empty index": lambda f: _empty(f, "__pycache__/*.nbi"),
    "garbage index": lambda f: _garbage(f, "__pycache__/*.nbi"),
    "empty data": lambda f: _empty(f, "__pycache__/*.nbc"),
    "garbage data": lambda f: _garbage(f, "__pycache__/*.nbc"),
    "folder for index": lambda f: _folder_instead(f, "__pycache__/*.nbi"),
    "folder for data": lambda f: _folder_instead(f, "__pycache__/*.nbc"),
    "index without its hash": lambda f: [p.unlink() for p in _files(f, "__pycache__/*.nbi.sha256")],
    "data with a wrong hash": lambda f: [p.write_text("0" * 64) for p in _files(f, "__pycache__/*.nbc.sha256")],
    "non-UTF-8 kernel file": lambda f: [p.write_bytes(p.read_bytes() + b"\xff\xfe") for p in _files(f, "k_*.py")],
    "folder for kernel file": lambda f: _folder_instead(f, "k_*.py"),
    "file for numba folder": lambda f: (shutil.rmtree(f / "__pycache__"), (f / "__pycache__").write_text("x")),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_entry_is_rebuilt_and_the_next_run_loads_it(copy_of, damage):
    DAMAGE[damage](copy_of)
    quietly()  # rebuilt, with the right result
    assert any(p.suffix == ".nbi" for p in pycache_files(copy_of))  # in the folder checked, not Numba's own
    assert loaded_from_disk(quietly())  # and whole again


def test_an_empty_read_only_filesystem_falls_back(tmp_path, fresh):
    folder = own(use(fresh, tmp_path / "kernels"))
    real_write = cache.write_kernel

    def read_only(path, data):
        if path.parent == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        real_write(path, data)

    fresh.setattr(cache, "write_kernel", read_only)
    with pytest.warns(cache.KernelCacheWarning, match="Read-only file system"):
        run_kernel()


def test_cnnc_cache_dir_naming_a_file_falls_back(tmp_path, fresh):
    plain = use(fresh, tmp_path / "notes.txt")
    plain.write_text("mine")
    with pytest.warns(cache.KernelCacheWarning, match="not a folder"):
        run_kernel()
    assert plain.read_text() == "mine"


def test_no_usable_folder_at_all_is_a_cnnc_error(tmp_path, fresh):
    use(fresh, tmp_path / "notes.txt").write_text("mine")
    fresh.setattr(cache, "_temporary", None)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    fresh.setattr(cache.tempfile, "mkdtemp", no_space)
    with pytest.warns(cache.KernelCacheWarning), pytest.raises(CnncError, match="No space left"):
        run_kernel()


def test_a_model_runs_correctly_on_a_damaged_cache(tmp_path, fresh):
    use(fresh, tmp_path / "kernels")
    program = "network tiny {\n input x: [6]\n dense(4) -> relu -> dense(3)\n}\n"
    x = np.random.default_rng(0).random((2, 6), dtype=np.float32)
    expected = cnnc.compile(program, seed=1)(x)
    for path in (own(tmp_path / "kernels") / "__pycache__").iterdir():
        path.write_bytes(b"garbage")
    modules._modules.clear()
    got = quietly(lambda: cnnc.compile(program, seed=1)(x))
    np.testing.assert_array_equal(got, expected)


def test_saved_numba_files_have_their_hash_recorded(copy_of):
    for path in _files(copy_of, "__pycache__/*.nb[ic]"):
        cache.check_recorded(path)  # raises Damaged otherwise
        assert stat.S_IMODE(os.lstat(f"{path}.sha256").st_mode) == 0o600


def test_each_signature_has_a_data_file_named_after_it(tmp_path, fresh):
    # Numbered data files let two processes that save two signatures at once write the same file, and
    # one index then points at the other's machine code; files named from the signature cannot collide.
    use(fresh, tmp_path / "kernels")
    program = "network tiny {\n input x: [6]\n dense(4) -> relu -> dense(3)\n}\n"
    x = np.random.default_rng(0).random((2, 6))
    for dtype in ("float32", "float64"):
        cnnc.compile(program, seed=1, dtype=dtype)(x.astype(dtype))
    data = [p.name for p in (own(tmp_path / "kernels") / "__pycache__").glob("*.nbc")]
    assert data and not [name for name in data if name.split(".")[-2].isdigit()]
    dense = [name for name in data if "dense" in name]
    assert len({name.split(".")[0] for name in dense}) < len(dense)  # one function, both float types


# -- altered machine code, in a process of its own: undetected, it crashes ----------

TINY_RUN = r"""
import json, numpy as np, cnnc
net = cnnc.compile("network tiny {\n input x: [6]\n dense(4) -> relu -> dense(3)\n}\n", seed=1)
y = net(np.arange(12, dtype=np.float32).reshape(2, 6) / 12)
stats = [fn.stats for _, fn, _ in next(iter(net._executors.values())).steps]
print(json.dumps({"y": y.tolist(), "hits": sum(sum(s.cache_hits.values()) for s in stats)}))
"""


def run_tiny(folder):
    """Compile and run a tiny model in a new process: its output and how many kernels it loaded from disk."""
    env = {**os.environ, "CNNC_CACHE_DIR": str(folder)}
    env.pop("NUMBA_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", TINY_RUN], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def zero_machine_code(path):
    """Zero most of the ELF object inside a data file, leaving the pickle around it valid."""
    data = bytearray(path.read_bytes())
    start = data.find(b"\x7fELF")
    assert start >= 0, path
    data[start + 64 : start + 4096] = bytes(len(data[start + 64 : start + 4096]))
    list(pickletools.genops(bytes(data)))  # still a well-formed pickle: only the hash tells
    path.write_bytes(bytes(data))
    return bytes(data)


def test_altered_machine_code_in_a_valid_data_file_is_rebuilt_not_run(tmp_path):
    first = run_tiny(tmp_path)
    damaged = {path: zero_machine_code(path) for path in _files(own(tmp_path), "__pycache__/*.nbc")}
    assert run_tiny(tmp_path)["y"] == first["y"]  # no crash, the right result
    for path, bad in damaged.items():
        assert path.read_bytes() != bad  # rebuilt
        cache.check_recorded(path)  # with a fresh hash
    again = run_tiny(tmp_path)
    assert again["y"] == first["y"] and again["hits"] > 0  # and loaded from disk next time


# -- the folder CNNC_CACHE_DIR names: cnnc adds one folder and changes nothing else -----


def snapshot(root):
    """Every path under `root` with its kind, owner, mode, time and contents (or link target)."""
    found = {}
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(parent, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    body = f.read()
            else:
                body = None
            found[os.path.relpath(path, root)] = (st.st_uid, st.st_mode, st.st_mtime, body)
    return found


def outside_own(found):
    return {name: v for name, v in found.items() if name.split(os.sep)[0] != cache.OWN_FOLDER}


def users_folder(folder):
    """A project folder with its own __pycache__: a subfolder, an old temporary file, a link, a loose
    mode, and files named like cnnc's."""
    pycache = folder / "__pycache__"
    (pycache / "sub").mkdir(parents=True)
    (pycache / "sub" / "keep.txt").write_text("keep")
    notes = pycache / "notes.tmp"
    notes.write_text("k")
    two_hours_ago = time.time() - 2 * 3600
    os.utime(notes, (two_hours_ago, two_hours_ago))
    (pycache / "link").symlink_to(notes)
    (pycache / "shared.txt").write_text("s")
    os.chmod(pycache / "shared.txt", 0o644)
    (folder / "k_0123456789abcdef0123.py").write_text("print('mine')\n")
    (pycache / "k_0123456789abcdef0123.f-1.py311.nbi").write_bytes(b"not numba's")
    return pycache


def test_a_folder_named_keeps_everything_in_it_and_gains_only_cnnc_own(tmp_path, fresh):
    folder = use(fresh, tmp_path / "proj")
    users_folder(folder)
    before = snapshot(folder)
    quietly()
    after = snapshot(folder)
    assert outside_own(after) == before
    assert sorted(os.listdir(folder)) == sorted(["__pycache__", "k_0123456789abcdef0123.py", cache.OWN_FOLDER])
    assert loaded_from_disk(quietly())


def test_a_file_of_another_user_in_the_folder_named_is_left_alone(tmp_path, fresh):
    folder = use(fresh, tmp_path / "proj")
    theirs = users_folder(folder) / "theirs.nbi"
    theirs.write_text("theirs")
    give_away(theirs)
    before = snapshot(folder)
    quietly()
    assert outside_own(snapshot(folder)) == before
