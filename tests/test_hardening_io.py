"""Files from outside: weights, data sets, images and output paths, damaged or hostile, give clean errors."""

import gzip
import io
import os
import pickle
import stat
import struct
import subprocess
import sys
import time
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from numpy.lib import format as npy_format

import cnnc
from cnnc import CnncError
from cnnc.cli import main
from cnnc.runtime import data, weights
from cnnc.runtime.images import MAX_PIXELS, read_input, read_png

MLP = """
network mlp(classes = 4) {
    input x: [4]
    fc1: dense(3) -> relu -> fc2: dense(classes)
    output logits
}
"""

# Trains on the built-in digits at 8x8 in well under a second.
TINY = """
network tiny {
    input x: [1, 8, 8]
    flatten -> fc: dense(10)
    output logits
}
"""


@pytest.fixture
def net():
    return cnnc.compile(MLP, seed=1)


def state(net):
    return net.state_dict()


def npz_member(name: str, header: dict, payload: bytes) -> tuple[str, bytes]:
    """One archive member: an .npy header written as given (possibly lying) and then `payload`."""
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, header)
    return name + ".npy", buf.getvalue() + payload


def write_zip(path, members, compress=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names, which one test writes on purpose
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
            for name, body in members:
                z.writestr(name, body)


def assert_unchanged(net, before):
    assert all(np.array_equal(before[k], v) for k, v in net.state_dict().items())


# -- values and dtypes of weights (load_params and load) ---------------------------------------------


def test_weights_too_large_for_float32_are_refused(net):
    before = state(net)
    big = {k: v.astype(np.float64) for k, v in before.items()}
    big["fc1.bias"][1] = 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no NumPy overflow warning on the way
        with pytest.raises(CnncError, match=r"parameter 'fc1.bias' holds values too large for float32 \(up to 1e\+300\)"):
            net.load_params(big)
    assert_unchanged(net, before)
    net.load_params({k: v.astype(np.float64) for k, v in before.items()})  # float64 within range is fine


def test_integer_weights_are_refused_float16_accepted(net, tmp_path):
    before = state(net)
    with pytest.raises(CnncError, match=r"parameter 'fc1.weight' holds int64 values; the network's parameters are floating point"):
        net.load_params({**before, "fc1.weight": np.ones((3, 4), np.int64)})
    with pytest.raises(CnncError, match="parameter 'fc2.bias' holds bool"):
        net.load_params({**before, "fc2.bias": np.ones(4, bool)})
    with pytest.raises(CnncError, match="parameter 'fc2.bias' holds complex128, not floating-point"):
        net.load_params({**before, "fc2.bias": np.ones(4, complex)})
    assert_unchanged(net, before)
    half = {k: v.astype(np.float16) for k, v in before.items()}
    net.load_params(half)  # float16 is exact in float32
    assert np.array_equal(net.params["fc1.weight"], half["fc1.weight"].astype(np.float32))
    np.savez(tmp_path / "int.npz", **{**before, "fc1.weight": np.ones((3, 4), np.int32)})
    with pytest.raises(CnncError, match="parameter 'fc1.weight' holds int32"):
        net.load_params(weights.load(tmp_path / "int.npz", net.graph.params))


def test_torch_bfloat16_and_float16_state_dicts_load(net):
    torch = pytest.importorskip("torch")
    before = state(net)
    for dtype in (torch.bfloat16, torch.float16):
        tensors = {k: torch.tensor(v).to(dtype) for k, v in before.items()}
        net.load_params(tensors)
        assert np.array_equal(net.params["fc1.weight"], tensors["fc1.weight"].float().numpy())
    with pytest.raises(CnncError, match="holds int64"):
        net.load_params({k: torch.ones(v.shape, dtype=torch.int64) for k, v in before.items()})


def test_load_params_wants_a_mapping_of_names(net):
    with pytest.raises(CnncError, match="a mapping from names to arrays .* not a list"):
        net.load_params(list(state(net).values()))
    with pytest.raises(CnncError, match="parameter names are strings, not int"):
        net.load_params({0: np.zeros(3)})


def test_tensors_and_values_numpy_cannot_hold_name_the_parameter(net):
    torch = pytest.importorskip("torch")
    before = state(net)
    odd = {
        "float8": {k: torch.tensor(v).to(torch.float8_e4m3fn) for k, v in before.items()},
        "sparse": {k: torch.tensor(v).to_sparse() for k, v in before.items()},
        "meta": {k: torch.empty(v.shape, device="meta") for k, v in before.items()},
        "ragged": {**before, "fc1.weight": [[1.0], [1.0, 2.0]]},
    }
    for mapping in odd.values():
        with pytest.raises(CnncError, match=r"parameter '\S+' cannot be read as an array"):
            net.load_params(mapping)
        assert_unchanged(net, before)


@pytest.mark.parametrize("path", ["a\0b.npz", 3, None, b"w.npz"])
def test_save_and_load_want_a_path(net, path):
    for method, doing in ((net.save, "save"), (net.load, "load")):
        with pytest.raises(CnncError, match=f"cannot {doing} weights: (expected a path|the path .* holds a NUL byte)"):
            method(path)


# -- weights files --------------------------------------------------------------------------------


def test_files_that_are_not_weights_archives(net, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_text("hello\n" * 100)
    (tmp_path / "folder.npz").mkdir()
    cases = {
        "x.npy": "holds a single array (.npy); weights files are .npz archives",
        "empty.npz": "is not a readable weights file: it is empty",
        "text.npz": "is not a readable weights file: it is not an .npz archive",
        "folder.npz": "is a folder, not a weights file",
    }
    for name, message in cases.items():
        with pytest.raises(CnncError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            net.load(tmp_path / name)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.npz")
        with pytest.raises(CnncError, match="is not a regular file"):
            net.load(tmp_path / "fifo.npz")


def test_members_are_checked_from_their_headers_before_reading(net, tmp_path):
    before = state(net)
    specs = net.graph.params
    good = [(k + ".npy", _npy_bytes(v)) for k, v in before.items()]
    huge = npz_member("fc1.weight", {"descr": "<f4", "fortran_order": False, "shape": (10**15,)}, b"\0" * 64)
    write_zip(tmp_path / "huge.npz", [huge] + good[1:])
    with pytest.raises(CnncError, match=r"parameter 'fc1.weight' has shape \[1000000000000000\] in the weights; the network expects \[3, 4\]"):
        net.load_params(weights.load(tmp_path / "huge.npz", specs))
    with pytest.raises(CnncError, match="the array 'fc1.weight' is damaged .*header declares 4,000,000,000,000,000 bytes"):
        weights.load(tmp_path / "huge.npz")  # without the network, the archive's own sizes must agree
    # A member whose header matches the network but whose data is far larger (a zip bomb: 32 MB of zeros).
    bomb = npz_member("fc1.weight", {"descr": "<f4", "fortran_order": False, "shape": (3, 4)}, bytes(32 << 20))
    write_zip(tmp_path / "bomb.npz", [bomb] + good[1:], compress=True)
    assert (tmp_path / "bomb.npz").stat().st_size < 200_000
    start = time.perf_counter()
    with pytest.raises(CnncError, match="the array 'fc1.weight' is damaged"):
        net.load(tmp_path / "bomb.npz")
    assert time.perf_counter() - start < 1.0
    # The same bomb as a whole array of the wrong shape is refused from its header alone.
    np.savez_compressed(tmp_path / "zeros.npz", **{**before, "fc1.weight": np.zeros((4096, 2048), np.float32)})
    with pytest.raises(CnncError, match=r"has shape \[4096, 2048\] in the weights; the network expects \[3, 4\]"):
        net.load_params(weights.load(tmp_path / "zeros.npz", specs))
    assert_unchanged(net, before)


def _npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_object_arrays_are_never_unpickled(net, tmp_path):
    before = state(net)
    objects = np.empty((3, 4), object)
    np.savez(tmp_path / "objects.npz", **{**before, "fc1.weight": objects})
    for specs in (net.graph.params, None):
        with pytest.raises(CnncError, match="the array 'fc1.weight' holds object, not numbers"):
            weights.load(tmp_path / "objects.npz", specs)


def test_duplicate_foreign_and_mismatched_members(net, tmp_path):
    before = state(net)
    good = [(k + ".npy", _npy_bytes(v)) for k, v in before.items()]
    write_zip(tmp_path / "twice.npz", good + [good[0]])
    with pytest.raises(CnncError, match="holds the array 'fc1.weight' twice"):
        net.load(tmp_path / "twice.npz")
    write_zip(tmp_path / "foreign.npz", good + [("notes.txt", b"hello")])
    with pytest.raises(CnncError, match="'notes.txt' is not an array"):
        net.load(tmp_path / "foreign.npz")
    np.savez(tmp_path / "nan.npz", **{**before, "fc2.bias": np.full(4, np.nan, np.float32)})
    with pytest.raises(CnncError, match="parameter 'fc2.bias' holds NaN or infinity"):
        net.load(tmp_path / "nan.npz")
    np.savez(tmp_path / "shape.npz", **{**before, "fc2.weight": np.zeros((4, 4), np.float32)})
    with pytest.raises(CnncError, match=r"parameter 'fc2.weight' has shape \[4, 4\]"):
        net.load_params(weights.load(tmp_path / "shape.npz", net.graph.params))
    other = cnnc.compile(TINY)
    other.save(tmp_path / "other.npz")
    with pytest.raises(CnncError, match="missing: fc1.weight, fc1.bias, fc2.weight, fc2.bias; unexpected: fc.weight, fc.bias"):
        net.load_params(weights.load(tmp_path / "other.npz", net.graph.params))
    assert_unchanged(net, before)
    np.savez(tmp_path / "torch.npz", **before, **{"bn.num_batches_tracked": np.array(3)})
    net.load_params(weights.load(tmp_path / "torch.npz", net.graph.params))  # PyTorch's counter is ignored


def test_fortran_order_and_big_endian_members_load(net, tmp_path):
    before = state(net)
    np.savez(tmp_path / "w.npz", **{**before, "fc1.weight": np.asfortranarray(before["fc1.weight"]).astype(">f8")})
    net.load(tmp_path / "w.npz")
    assert_unchanged(net, before)


# -- saving ---------------------------------------------------------------------------------------


def test_save_refuses_non_finite_weights_and_keeps_the_old_file(net, tmp_path):
    path = tmp_path / "w.npz"
    net.save(path)
    good = path.read_bytes()
    net.params["fc2.weight"][0, 0] = np.inf
    with pytest.raises(CnncError, match=f"cannot save weights to {path}: parameter 'fc2.weight' holds NaN or infinity"):
        net.save(path)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["w.npz"]


def test_save_errors_are_cnnc_errors_naming_the_path(net, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    cases = {
        tmp_path: "it is a folder",
        tmp_path / "missing" / "w.npz": "missing does not exist",
        tmp_path / "file" / "w.npz": "file is not a folder",
    }
    for path, message in cases.items():
        with pytest.raises(weights.SaveError, match=f"cannot save weights to {path}: .*{message}") as info:
            net.save(path)
        assert isinstance(info.value, CnncError) and isinstance(info.value, OSError)

    def refuse(*args, **kwargs):  # tests run as root, which ignores permissions: simulate them
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(weights.os, "open", refuse)
    with pytest.raises(CnncError, match=f"cannot save weights to {tmp_path / 'w.npz'}: Permission denied"):
        net.save(tmp_path / "w.npz")
    assert not (tmp_path / "w.npz").exists()


def test_a_saved_file_gets_the_usual_permissions(net, tmp_path):
    old = os.umask(0o022)
    try:
        net.save(tmp_path / "w.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "w.npz").stat().st_mode & 0o777 == 0o644


def test_a_save_removes_temporaries_of_killed_saves(net, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".w.npz.cnnc-{dead}-abc123.tmp"
    alive = tmp_path / f".w.npz.cnnc-{os.getppid()}-def456.tmp"  # a save still running in another process
    unrelated = tmp_path / ".w.npz.other.tmp"
    for p in (stale, alive, unrelated):
        p.write_bytes(b"partial")
    net.save(tmp_path / "w.npz")
    assert not stale.exists() and alive.exists() and unrelated.exists()


def test_a_save_killed_midway_leaves_a_temporary_the_next_save_removes(net, tmp_path):
    script = (
        "import os, numpy as np, cnnc\n"
        f"net = cnnc.compile({MLP!r})\n"
        "def die(f, **k):\n    f.write(b'partial'); f.flush(); os._exit(9)\n"
        "np.savez = die\n"
        f"net.save({str(tmp_path / 'w.npz')!r})\n"
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert len(list(tmp_path.glob(".w.npz.cnnc-*.tmp"))) == 1
    net.save(tmp_path / "w.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]


# -- the command line -----------------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.cnn"
    path.write_text(TINY)
    return str(path)


def train_args(tiny, *extra):
    return ["train", tiny, "--dataset", "digits", "--epochs", "1", "--batch", "16", "--limit-batches", "3", *extra]


def test_run_with_bad_weights_and_top(tiny, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.float32))
    x = str(tmp_path / "x.npy")
    assert main(["run", tiny, "--weights", x, "--input", x]) == 2
    assert "holds a single array (.npy)" in capsys.readouterr().err
    w = str(tmp_path / "w.npz")
    cnnc.compile(tiny).save(w)
    for top in ("0", "-1"):
        assert main(["run", tiny, "--weights", w, "--input", x, "--top", top]) == 2
        assert "--top must be at least 1" in capsys.readouterr().err
    assert main(["run", tiny, "--weights", w, "--input", x, "--top", "50"]) == 0
    assert capsys.readouterr().out.count("class ") == 10


def test_train_checks_the_output_path_before_training(tiny, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for out, message in [(tmp_path / "nowhere" / "w.npz", "does not exist"), (tmp_path, "it is a folder"),
                         (tmp_path / "file" / "w.npz", "is not a folder")]:  # fmt: skip
        start = time.perf_counter()
        assert main(train_args(tiny, "--out", str(out))) == 2
        captured = capsys.readouterr()
        assert f"cannot save weights to {out}" in captured.err and message in captured.err
        assert "epoch" not in captured.out and time.perf_counter() - start < 5


def test_train_saves_beside_the_working_folder_when_the_save_fails(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "w.npz"
    out.parent.mkdir()
    real_save = weights.save

    def failing_save(tensors, path):
        if str(path) == str(out):
            raise weights.SaveError(f"cannot save weights to {path}: No space left on device")
        real_save(tensors, path)

    monkeypatch.setattr(weights, "save", failing_save)
    assert main(train_args(tiny, "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert f"cannot save weights to {out}: No space left on device; the weights were saved to {tmp_path / 'tiny.npz'} instead" in err
    cnnc.compile(TINY).load(tmp_path / "tiny.npz")
    # A second failure never overwrites the first rescued file: a new name is chosen.
    assert main(train_args(tiny, "--out", str(out))) == 2
    assert "the weights were saved to " + str(tmp_path / "tiny-") in capsys.readouterr().err
    assert len(list(tmp_path.glob("tiny*.npz"))) == 2


def test_diverging_training_stops_and_keeps_the_previous_weights(tiny, tmp_path, capsys):
    out = tmp_path / "w.npz"
    assert main(train_args(tiny, "--out", str(out))) == 0
    good = out.read_bytes()
    capsys.readouterr()
    assert main(train_args(tiny, "--out", str(out), "--lr", "1e38", "--schedule", "constant")) == 2
    err = capsys.readouterr().err
    assert "epoch 1: training diverged at step" in err and f"\n{out} was left as it was" in err
    assert out.read_bytes() == good
    assert main(["run", tiny, "--weights", str(out), "--input", _zeros_npy(tmp_path)]) == 0


def _zeros_npy(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.float32))
    return str(tmp_path / "x.npy")


def test_fit_stops_on_a_non_finite_loss():
    from cnnc.runtime.train import fit

    class Diverging:
        optimizer = cnnc.optim.SGD(lr=0.1)

        def __init__(self):
            self.steps = 0

        def step(self, x, y):
            self.steps += 1
            return 1.0 if self.steps < 3 else float("nan")

    net = cnnc.compile(TINY)
    ds = data.digits(8)
    with pytest.raises(CnncError, match=r"epoch 1: training diverged at step 3: the loss is nan"):
        fit(net, ds, Diverging(), epochs=2, batch=16, report=lambda line: None, progress=False)


# -- data sets ------------------------------------------------------------------------------------


def idx_bytes(shape, payload=None):
    header = struct.pack(">BBBB", 0, 0, 8, len(shape)) + b"".join(struct.pack(">I", d) for d in shape)
    if payload is None:
        payload = bytes(int(np.prod(shape)))
    return header + payload


def write_mnist(folder, train=6, test=2, labels=None, compress=False):
    suffix = ".gz" if compress else ""
    pack = gzip.compress if compress else (lambda b: b)
    (folder / f"train-images-idx3-ubyte{suffix}").write_bytes(pack(idx_bytes((train, 4, 4))))
    (folder / f"train-labels-idx1-ubyte{suffix}").write_bytes(pack(idx_bytes((train if labels is None else labels,))))
    (folder / f"t10k-images-idx3-ubyte{suffix}").write_bytes(pack(idx_bytes((test, 4, 4))))
    (folder / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(pack(idx_bytes((test,))))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not an IDX file"),
        (b"\0\0\x08", "not an IDX file"),
        (struct.pack(">BBBB", 0, 0, 8, 255), "an IDX file of 255 dimensions"),
        (struct.pack(">BBBB", 0, 0, 8, 0), "an IDX file of 0 dimensions"),
        (struct.pack(">BBBB", 0, 0, 8, 3) + b"\0\0", "ends inside the header"),
        (idx_bytes((0xFFFFFFFF,) * 3, b"\0" * 100), "declares [4294967295, 4294967295, 4294967295]"),
        (idx_bytes((4, 4, 4), b"\0" * 65), "declares [4, 4, 4] (64 values), the file holds 65"),
        (idx_bytes((4, 4), None), "has 2 dimensions [4, 4]; expected 3"),
    ],
)
def test_damaged_idx_headers(tmp_path, content, message):
    (tmp_path / "f").write_bytes(content)
    with pytest.raises(CnncError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        data.read_idx(tmp_path / "f", dims=3)


def test_damaged_gz_idx_files(tmp_path):
    raw = gzip.compress(idx_bytes((50, 28, 28), bytes(range(256)) * 153 + bytes(32)))
    (tmp_path / "cut.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CnncError, match="cut.gz is damaged or truncated"):
        data.read_idx(tmp_path / "cut.gz")
    (tmp_path / "junk.gz").write_bytes(b"\x1f\x8b" + bytes(40))
    with pytest.raises(CnncError, match="junk.gz is damaged or truncated"):
        data.read_idx(tmp_path / "junk.gz")
    # A header claiming far more than a .gz of this size can hold: refused before decompressing.
    (tmp_path / "claims.gz").write_bytes(gzip.compress(idx_bytes((60000, 2800, 2800), b"\0" * 1000)))
    with pytest.raises(CnncError, match="more than a .gz file of .* bytes can hold"):
        data.read_idx(tmp_path / "claims.gz")
    # A bomb: a small header, then 64 MB of zeros; decompression stops just past the declared size.
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(idx_bytes((4, 28, 28), bytes(64 << 20)), compresslevel=1))
    start = time.perf_counter()
    with pytest.raises(CnncError, match="holds more data than its header declares"):
        data.read_idx(tmp_path / "bomb.gz")
    assert time.perf_counter() - start < 1.0


def test_mnist_images_and_labels_are_checked_together(tmp_path):
    write_mnist(tmp_path, labels=5)
    with pytest.raises(CnncError, match="train-images-idx3-ubyte holds 6 images but .*train-labels-idx1-ubyte 5 labels"):
        data.mnist(tmp_path)
    write_mnist(tmp_path, train=0, labels=0)
    with pytest.raises(CnncError, match="holds no images"):
        data.mnist(tmp_path)
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes((2,), bytes([3, 12])))
    with pytest.raises(CnncError, match="holds the label 12; the data set has 10 classes"):
        data.mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte").mkdir()
    with pytest.raises(CnncError, match="t10k-labels-idx1-ubyte is not a regular file"):
        data.mnist(tmp_path)
    write_mnist(tmp_path / "t10k-labels-idx1-ubyte", compress=True)  # neighbours: gz files read the same way
    assert data.mnist(tmp_path / "t10k-labels-idx1-ubyte").train_x.shape == (6, 1, 4, 4)


def write_cifar(folder, make):
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(make(name))


def cifar_batch(n=3, labels=None, data_shape=None):
    images = np.zeros(data_shape or (n, 3072), np.uint8)
    return pickle.dumps({b"data": images, b"labels": labels if labels is not None else [1] * n})


def test_cifar_batches_are_never_run_and_are_checked(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    write_cifar(tmp_path, lambda name: pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(CnncError, match="refers to (posix|os|nt).system, which a CIFAR-10 batch never does"):
        data.cifar10(tmp_path)
    assert not marker.exists()
    for batch, message in [
        (cifar_batch(labels=[1, 2]), "holds 3 images but 2 labels"),
        (cifar_batch(labels=[1, 2, 10]), "holds the label 10"),
        (cifar_batch(data_shape=(3, 100)), r"holds images of \[3, 100\]"),
        (pickle.dumps([1, 2]), "is not a CIFAR-10 batch"),
        (cifar_batch(labels=["a", "b", "c"]), "labels that are not integers"),
    ]:
        write_cifar(tmp_path, lambda name: batch)
        with pytest.raises(CnncError, match=message):
            data.cifar10(tmp_path)
    write_cifar(tmp_path, lambda name: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 9]}, protocol=5))
    assert data.cifar10(tmp_path).train_x.shape == (10, 3, 32, 32)


def test_resize_by_matrix_products_matches_the_definition():
    x = np.random.default_rng(0).random((2, 3, 9, 7)).astype(np.float32)
    rows, cols = data.resize_matrix(9, 5), data.resize_matrix(7, 4)
    expected = np.einsum("ih,nchw,jw->ncij", rows, x.astype(np.float64), cols)
    assert np.allclose(data.resize(x, 5, 4), expected, atol=1e-6)


# -- images ---------------------------------------------------------------------------------------


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(width, height, idat, header=None, colour=2):
    header = header if header is not None else struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x89PNG\r", "is not a PNG file"),
        (png_bytes(1, 1, zlib.compress(b"\0\0\0\0"), header=b"\0" * 5), "a header chunk of 5 bytes, not 13"),
        (png_bytes(0, 0, zlib.compress(b"")), r"is an empty image \(0x0 pixels\)"),
        (png_bytes(20000, 20000, zlib.compress(bytes(1 << 20))), "is 20000x20000 pixels, more than the 16,777,216 read"),
        (b"\x89PNG\r\n\x1a\n" + chunk(b"IDAT", b"") + chunk(b"IHDR", bytes(13)), "does not start with its header chunk"),
        (png_bytes(2, 2, zlib.compress(bytes([7, 0, 0, 0, 0, 0, 0] * 2))), "unknown PNG filter 7 in row 0"),
        (png_bytes(4, 4, b"not zlib"), "is a damaged PNG file"),
        (png_bytes(4, 4, zlib.compress(bytes(13))), "is a truncated PNG file"),
    ],
)
def test_damaged_and_oversized_pngs(tmp_path, content, message):
    (tmp_path / "a.png").write_bytes(content)
    start = time.perf_counter()
    with pytest.raises(CnncError, match=message):
        read_input(tmp_path / "a.png", (3, 8, 8))
    assert time.perf_counter() - start < 5


def test_png_limits_and_speed(tmp_path):
    assert MAX_PIXELS == 4096 * 4096
    # 600x600 with Paeth on every row decodes in about a second (compiling the decoder included).
    rows = b"".join(b"\x04" + bytes(range(256)) * 7 + bytes(600 * 3 - 256 * 7) for _ in range(600))
    (tmp_path / "big.png").write_bytes(png_bytes(600, 600, zlib.compress(rows)))
    start = time.perf_counter()
    assert read_png(tmp_path / "big.png").shape == (600, 600, 3)
    assert read_input(tmp_path / "big.png", (1, 28, 28)).shape == (1, 1, 28, 28)
    assert time.perf_counter() - start < 10
    # More compressed data than the image needs (a bomb) is never decompressed past the image.
    (tmp_path / "bomb.png").write_bytes(png_bytes(2, 2, zlib.compress(bytes(64 << 20), 1)))
    start = time.perf_counter()
    assert read_png(tmp_path / "bomb.png").shape == (2, 2, 3)
    assert time.perf_counter() - start < 1


def test_npy_inputs_are_checked_from_their_header(tmp_path):
    name, body = npz_member("x", {"descr": "<f4", "fortran_order": False, "shape": (10**15,)}, b"\0" * 64)
    (tmp_path / "huge.npy").write_bytes(body)
    with pytest.raises(CnncError, match=r"huge.npy is damaged: its header declares \[1000000000000000\] float32"):
        read_input(tmp_path / "huge.npy", (4,))
    np.save(tmp_path / "objects.npy", np.empty(3, object), allow_pickle=True)
    with pytest.raises(CnncError, match="holds Python objects"):
        read_input(tmp_path / "objects.npy", (3,))
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(CnncError, match="is not a regular file"):
        read_input(tmp_path / "dir.npy", (3,))


# -- output paths that are not plain files ---------------------------------------------------------


def test_save_refuses_fifos_and_devices_and_writes_through_links(net, tmp_path):
    os.mkfifo(tmp_path / "fifo.npz")
    with pytest.raises(weights.SaveError, match="fifo.npz: it is not a regular file"):
        net.save(tmp_path / "fifo.npz")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo.npz").st_mode)
    # A link to a weights file: the file it points to is replaced, the link stays.
    net.save(tmp_path / "real.npz")
    os.symlink("real.npz", tmp_path / "link.npz")
    net.params["fc2.bias"][:] = 1.0
    net.save(tmp_path / "link.npz")
    assert os.path.islink(tmp_path / "link.npz")
    assert np.array_equal(np.load(tmp_path / "real.npz")["fc2.bias"], np.ones(4, np.float32))
    os.symlink("fifo.npz", tmp_path / "to_fifo.npz")
    with pytest.raises(weights.SaveError, match=r"to_fifo.npz \(a link to .*fifo.npz\): it is not a regular file"):
        net.save(tmp_path / "to_fifo.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.npz", "link.npz", "real.npz", "to_fifo.npz"]


def test_train_never_replaces_a_device(tiny, tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("making a device file needs root")
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("this container may not make device files")
    assert main(train_args(tiny, "--out", str(tmp_path / "null"))) == 2
    captured = capsys.readouterr()
    assert "null: it is not a regular file" in captured.err and "epoch" not in captured.out
    assert stat.S_ISCHR(os.lstat(tmp_path / "null").st_mode)


def test_a_long_file_name_saves_and_its_temporary_is_recognized(net, tmp_path):
    path = tmp_path / ("x" * 250 + ".npz")
    net.save(path)
    net.load(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert weights._TEMP_PATTERN.match(f".{weights._temporary_stem(path)}.cnnc-1-ab.tmp")


# -- trainings that would take no step --------------------------------------------------------------

TINY4 = "network tiny4 {\n    input x: [1, 4, 4]\n    flatten -> fc: dense(10)\n    output logits\n}\n"


def test_a_training_of_no_step_is_refused_before_compiling(tiny, tmp_path, capsys):
    out = tmp_path / "w.npz"
    assert main(train_args(tiny, "--out", str(out), "--batch", "100000")) == 2
    assert "data set digits has 1,438 training examples, fewer than one batch of 100,000" in capsys.readouterr().err
    for limit in ("0", "-1"):
        assert main(train_args(tiny, "--out", str(out), "--limit-batches", limit)) == 2
        assert f"--limit-batches must be at least 1, got {limit}" in capsys.readouterr().err
    (tmp_path / "mnist").mkdir()
    write_mnist(tmp_path / "mnist", train=5, labels=5)
    (tmp_path / "tiny4.cnn").write_text(TINY4)
    args = ["train", str(tmp_path / "tiny4.cnn"), "--dataset", f"mnist:{tmp_path / 'mnist'}", "--batch", "8"]
    assert main([*args, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "data set mnist has 5 training examples, fewer than one batch of 8" in captured.err
    assert "compiled" not in captured.out and not out.exists()
    from cnnc.runtime.train import fit

    with pytest.raises(CnncError, match="the limit of batches per epoch must be at least 1, not 0"):
        fit(cnnc.compile(TINY), data.digits(8), None, epochs=1, batch=16, limit_batches=0, report=None)


def test_cifar_batches_without_images_or_with_huge_labels(tmp_path):
    write_cifar(tmp_path, lambda name: cifar_batch(n=0))
    with pytest.raises(CnncError, match="data_batch_1 holds no images"):
        data.cifar10(tmp_path)
    write_cifar(tmp_path, lambda name: cifar_batch(labels=[2**70, 1, 1]))
    with pytest.raises(CnncError, match="holds the label 1180591620717411303424; the data set has 10 classes"):
        data.cifar10(tmp_path)
    write_cifar(tmp_path, lambda name: cifar_batch(labels=np.array([1, 2**63 + 1, 1], np.uint64)))
    with pytest.raises(CnncError, match="holds the label 9223372036854775809"):
        data.cifar10(tmp_path)


def test_digits_takes_no_folder():
    with pytest.raises(CnncError, match="unknown data set 'digits:foo': digits is built in and takes no folder"):
        data.load_dataset("digits:foo")


# -- command-line arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seed", "-1"], "--seed must be at least 0, got -1"),
        (["--seed", str(2**63)], "--seed is too large (it must be below 2^63)"),
        (["--lr", "nan"], "--lr must be a finite number, got nan"),
        (["--lr", "-0.1"], "--lr must be positive"),
        (["--momentum", "inf"], "--momentum must be a finite number"),
        (["--momentum", "1"], "--momentum must be at least 0 and below 1"),
        (["--weight-decay", "-1"], "--weight-decay must be at least 0"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--batch", "0"], "--batch must be at least 1"),
        (["--batch", "1" + "0" * 22], "--batch is too large (at most 2^62)"),
        (["--limit-batches", str(2**62 + 1)], "--limit-batches is too large"),
        (["--optimizer", "adam", "--momentum", "0.5"], "--momentum applies to --optimizer sgd only, not adam"),
        (["--dataset", "digits:x"], "digits is built in and takes no folder"),
    ],
)
def test_train_arguments_are_checked_first(tiny, tmp_path, capsys, extra, message):
    start = time.perf_counter()
    assert main([*train_args(tiny, "--out", str(tmp_path / "w.npz")), *extra]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "compiled" not in captured.out
    assert not (tmp_path / "w.npz").exists() and time.perf_counter() - start < 5


def test_check_and_explain_batch_limits(tiny, capsys):
    for command in ("check", "explain"):
        assert main([command, tiny, "--batch", "1" + "0" * 22]) == 2
        assert "--batch is too large (at most 2^62)" in capsys.readouterr().err


def test_run_needs_weights_and_reads_upper_case_suffixes(tiny, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.float32))
    os.rename(tmp_path / "x.npy", tmp_path / "X.NPY")
    with pytest.raises(SystemExit) as exited:  # random weights would print meaningless classes
        main(["run", tiny, "--input", str(tmp_path / "X.NPY")])
    assert exited.value.code == 2 and "the following arguments are required: --weights" in capsys.readouterr().err
    cnnc.compile(tiny).save(tmp_path / "W.NPZ")
    assert main(["run", tiny, "--weights", str(tmp_path / "W.NPZ"), "--input", str(tmp_path / "X.NPY")]) == 0
    assert capsys.readouterr().out.count("class ") == 3


# -- weights archives zipfile cannot read ------------------------------------------------------------


def _patch_central_headers(raw: bytes, offset: int, value: int) -> bytes:
    """Set a 2-byte field of every central-directory entry (8: flags, 10: compression method)."""
    out, i = bytearray(raw), 0
    while (i := out.find(b"PK\x01\x02", i)) >= 0:
        struct.pack_into("<H", out, i + offset, value)
        i += 4
    return bytes(out)


@pytest.mark.parametrize(
    "offset, value, message",
    [(8, 1, "the array 'fc1.weight' is encrypted"), (10, 99, "the array 'fc1.weight' is compressed with a method that cannot be read")],
)
def test_encrypted_and_unknown_compression_members(net, tmp_path, offset, value, message):
    net.save(tmp_path / "good.npz")
    (tmp_path / "odd.npz").write_bytes(_patch_central_headers((tmp_path / "good.npz").read_bytes(), offset, value))
    with pytest.raises(CnncError, match=f"odd.npz: {message}"):
        net.load(tmp_path / "odd.npz")


# -- resizing images ------------------------------------------------------------------------------


def test_resizing_checks_memory_and_needs_no_matrix(tmp_path, monkeypatch):
    row = np.full((1, 1, 1, 1 << 22), 0.5, np.float32)  # a dense [width, new width] matrix would be 256 MB
    start = time.perf_counter()
    assert np.allclose(data.resize(row, 8, 8), 0.5)
    assert time.perf_counter() - start < 1
    (tmp_path / "g.png").write_bytes(png_bytes(8, 8, zlib.compress(bytes(8 * 9)), colour=0))
    monkeypatch.setenv("CNNC_MEMORY_LIMIT", str(64 << 20))
    with pytest.raises(CnncError, match=r"not enough memory for resizing 3 8x8 image planes to 3000x3000: .* needed"):
        read_input(tmp_path / "g.png", (3, 3000, 3000))
