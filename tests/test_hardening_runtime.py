"""The runtime under misuse: labels out of range on every path, several threads, divergence, memory."""

import gc
import threading
import tracemalloc
import weakref

import numpy as np
import pytest

import cnnc
from cnnc import CnncError
from cnnc.runtime import model as model_module

OWN_LOSS = """
network own(classes = 10) {
    input x: [6]
    input labels: int64[]
    logits = x -> fc: dense(classes)
    output loss = cross_entropy(logits, labels)
}
"""

PIXEL_LOSS = """
network pixels {
    input x: [3, 2, 2]
    input labels: int64[2, 2]
    output loss = cross_entropy(x, labels, ignore=255)
}
"""

SMALL = """
network small(classes = 4) {
    input image: [1, 6, 6]
    conv1: conv(3, kernel=3) -> relu
    flatten
    drop: dropout(0.5)
    fc: dense(classes)
    output logits
}
"""


@pytest.fixture(scope="module")
def own():
    return cnnc.compile(OWN_LOSS)


def features(n=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 6)).astype(np.float32)


# -- labels that index ------------------------------------------------------------


@pytest.mark.parametrize("bad", [10, -1, 10**6, 2**40, -(2**62)])
def test_labels_of_the_network_own_loss_are_range_checked_on_every_path(own, bad):
    labels = np.array([1, bad, 2, 3])
    with pytest.raises(CnncError, match=rf"label {bad} is out of range: the network has 10 classes \(0 to 9\); input 'labels' holds it at index \[1\]"):
        own(features(), labels)
    with pytest.raises(CnncError, match=rf"label {bad} is out of range"):
        own.grad({"x": features(), "labels": labels}, loss=None)


def test_good_labels_still_give_the_loss_and_the_two_paths_agree(own):
    labels = np.array([0, 9, 4, 3])
    value = float(own(features(), labels))
    loss, grads = own.grad({"x": features(), "labels": labels}, loss=None)
    assert np.isclose(value, loss) and np.isfinite(grads["fc.weight"]).all()


def test_int32_labels_and_an_ignored_label_are_accepted_and_checked():
    net = cnnc.compile(PIXEL_LOSS)
    x = np.zeros((1, 3, 2, 2), np.float32)
    assert np.isclose(float(net(x, np.array([[[0, 255], [2, 1]]], np.int32))), np.log(3))
    with pytest.raises(CnncError, match=r"label 3 is out of range: the network has 3 classes \(0 to 2, or 255\); input 'labels' holds it at index \[0, 1, 0\]"):
        net(x, np.array([[[0, 255], [3, 1]]]))


def test_labels_of_an_attached_loss_are_checked_by_the_trainer_too():
    net = cnnc.compile(SMALL)
    trainer = net.trainer()
    x = np.zeros((2, 1, 6, 6), np.float32)
    with pytest.raises(CnncError, match="label 4 is out of range: the network has 4 classes"):
        trainer.step(x, np.array([0, 4]))


def test_labels_are_checked_on_the_cuda_target_too():
    pytest.importorskip("numba.cuda")
    net = cnnc.compile(PIXEL_LOSS, target="cuda")
    with pytest.raises(CnncError, match=r"label -1 is out of range: the network has 3 classes"):
        net(np.zeros((1, 3, 2, 2), np.float32), np.array([[[0, 1], [-1, 1]]]))
    ex = net._executor(("infer", None), 1)
    ex.index_checks = {}  # past the check, the CUDA kernel answers NaN too
    ex.feed("x", np.zeros((1, 3, 2, 2), np.float32))
    ex.feed("labels", np.array([[[0, 1], [7, 1]]]))
    ex.run()
    assert np.isnan(ex.fetch(ex.graph.outputs["loss"]))


def test_the_kernel_itself_answers_nan_for_a_label_it_was_not_given_checked(own):
    """Kernels never index with an unchecked label: a bad one that got past the checks gives NaN."""
    ex = own._executor(("infer", None), 4)
    checks, ex.index_checks = ex.index_checks, {}
    try:
        ex.feed("x", features())
        ex.feed("labels", np.array([0, 2**40, 1, 2]))
        ex.run()
        assert np.isnan(ex.fetch(ex.graph.outputs["loss"]))
    finally:
        ex.index_checks = checks


# -- threads ----------------------------------------------------------------------


def run_threads(worker, count=4):
    errors = []

    def guarded(i):
        try:
            worker(i)
        except BaseException as e:  # surfaced in the main thread
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_threads_calling_one_model_at_the_same_batch_size_get_their_own_results():
    net = cnnc.compile(SMALL).eval()
    inputs = [np.random.default_rng(i).standard_normal((3, 1, 6, 6)).astype(np.float32) for i in range(4)]
    expected = [net(x).copy() for x in inputs]
    wrong = []

    def worker(i):
        for _ in range(60):
            if not np.array_equal(net(inputs[i]), expected[i]):
                wrong.append(i)

    run_threads(worker)
    assert not wrong


def test_threads_taking_gradients_get_their_own_gradients():
    net = cnnc.compile(SMALL).eval()
    inputs = [np.random.default_rng(i).standard_normal((3, 1, 6, 6)).astype(np.float32) for i in range(3)]
    labels = [np.array([i, 1, 2]) for i in range(3)]
    expected = [net.grad(x, y, inputs=True) for x, y in zip(inputs, labels)]
    wrong = []

    def worker(i):
        for _ in range(30):
            loss, grads = net.grad(inputs[i], labels[i], inputs=True)
            same = loss == expected[i][0] and all(np.array_equal(g, expected[i][1][k]) for k, g in grads.items())
            if not same:
                wrong.append(i)

    run_threads(worker, 3)
    assert not wrong


def test_a_training_step_in_one_thread_never_changes_the_mode_another_thread_sees():
    """The trainer switches to training mode (dropout on) and back inside one locked step."""
    net = cnnc.compile(SMALL).eval()
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6)).astype(np.float32)
    expected = net(x).copy()
    trainer = net.trainer(optimizer=cnnc.optim.SGD(lr=0.0))  # steps that leave the parameters as they are
    wrong = []

    def worker(i):
        for _ in range(40):
            if i == 0:
                trainer.step(x, np.array([0, 1, 2]))
            elif not np.array_equal(net(x), expected):
                wrong.append(i)

    run_threads(worker, 3)
    assert not wrong and not net.training


# -- divergence ------------------------------------------------------------------


def test_a_diverging_step_raises_and_leaves_the_parameters_finite():
    net = cnnc.compile(SMALL)
    x = np.random.default_rng(0).standard_normal((8, 1, 6, 6)).astype(np.float32) * 10
    y = np.arange(8) % 4
    trainer = net.trainer(optimizer=cnnc.optim.SGD(lr=1e30))
    with pytest.raises(CnncError, match=r"training diverged at step \d+: .*This step did not change the parameters") as err:
        for _ in range(20):
            trainer.step(x, y)
    before = net.state_dict()
    assert all(np.isfinite(v).all() for v in before.values()), str(err.value)
    with pytest.raises(CnncError):  # and it goes on refusing rather than producing garbage
        trainer.step(x, y)
    assert all(np.array_equal(before[k], v) for k, v in net.state_dict().items())


def test_a_non_finite_loss_names_the_first_layer_that_went_non_finite():
    net = cnnc.compile(SMALL).eval()
    net.params["fc.weight"][...] = 3e38  # finite, but its products overflow
    x = np.ones((2, 1, 6, 6), np.float32)
    with pytest.raises(CnncError, match=r"training diverged at step 1: the loss is (nan|inf).*computed by layer fc \(.*\)"):
        net.trainer().step(x, np.array([0, 1]))


def test_a_parameter_that_is_already_non_finite_is_named():
    net = cnnc.compile(SMALL)
    net.params["conv1.bias"][1] = np.nan
    with pytest.raises(CnncError, match="parameter conv1.bias already held NaN or infinity"):
        net.trainer().step(np.ones((2, 1, 6, 6), np.float32), np.array([0, 1]))


def test_an_update_that_overflows_is_reported_at_once():
    net = cnnc.compile(SMALL)
    trainer = net.trainer(optimizer=cnnc.optim.SGD(lr=3e38))
    with pytest.raises(CnncError, match=r"training diverged at step 1: the update made parameter \S+ NaN or infinite"):
        trainer.step(np.full((2, 1, 6, 6), 100.0, np.float32), np.array([0, 1]))


@pytest.mark.parametrize("make, message", [
    (lambda: cnnc.optim.SGD(lr=float("nan")), "SGD: lr must be a finite number, got nan"),
    (lambda: cnnc.optim.SGD(lr="0.1"), "SGD: lr must be a finite number, got '0.1'"),
    (lambda: cnnc.optim.SGD(lr=-1), "SGD: lr must be at least 0, got -1"),
    (lambda: cnnc.optim.SGD(momentum=float("inf")), "SGD: momentum must be a finite number"),
    (lambda: cnnc.optim.SGD(nesterov=True), "SGD: nesterov needs a momentum and no dampening"),
    (lambda: cnnc.optim.Adam(betas=(1.0, 1.0)), r"Adam: betas\[0\] must be in \[0, 1\), got 1.0"),
    (lambda: cnnc.optim.Adam(eps=0.0), "Adam: eps must be more than 0, got 0.0"),
    (lambda: cnnc.optim.Adam(weight_decay=float("nan")), "Adam: weight_decay must be a finite number"),
])
def test_optimizer_hyperparameters_that_would_make_nan_are_refused(make, message):
    with pytest.raises(CnncError, match=message):
        make()


def test_a_hyperparameter_set_later_is_checked_at_the_step():
    net = cnnc.compile(SMALL)
    optimizer = cnnc.optim.SGD(lr=0.1)
    trainer = net.trainer(optimizer=optimizer)
    optimizer.lr = float("nan")
    before = net.state_dict()
    with pytest.raises(CnncError, match="SGD: lr must be a finite number"):
        trainer.step(np.ones((2, 1, 6, 6), np.float32), np.array([0, 1]))
    assert all(np.array_equal(before[k], v) for k, v in net.state_dict().items())


def test_one_optimizer_cannot_update_two_models():
    optimizer = cnnc.optim.SGD(lr=0.5)
    cnnc.compile(SMALL).trainer(optimizer=optimizer)
    with pytest.raises(CnncError, match="this optimizer already updates another model's parameters"):
        cnnc.compile(SMALL).trainer(optimizer=optimizer)


# -- API misuse ------------------------------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda net: net.grad(np.ones((2, 1, 6, 6), np.float32), np.array([0, 1]), inputs=["zzz"]),
     "the network has no input 'zzz'; its inputs are image"),
    (lambda net: net.trainer(optimizer="adam"), "optimizer must be a cnnc.optim optimizer"),
    (lambda net: net(np.array([[1.0], [1.0, 2.0]], dtype=object)), "input 'image' has shape"),
    (lambda net: net([[1.0], [1.0, 2.0]]), "input 'image' is not an array"),
])
def test_api_misuse_is_a_clear_error(call, message):
    with pytest.raises(CnncError, match=message):
        call(cnnc.compile(SMALL))


def test_one_input_name_as_a_string_asks_for_its_gradient():
    _, grads = cnnc.compile(SMALL).grad(np.ones((2, 1, 6, 6), np.float32), np.array([0, 1]), inputs="image")
    assert grads["image"].shape == (2, 1, 6, 6)


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": -1}, "seed must be an integer from 0 to 2\\^63 - 1, got -1"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"seed": "a"}, "seed must be an integer"),
    ({"network": 1}, "network must be the name of a network"),
])
def test_compile_arguments_are_checked(kwargs, message):
    with pytest.raises(CnncError, match=message):
        cnnc.compile(SMALL, **kwargs)


def test_a_torch_tensor_numpy_cannot_hold_is_a_clear_error():
    torch = pytest.importorskip("torch")
    x = torch.ones((2, 1, 6, 6), dtype=torch.bfloat16)
    with pytest.raises(CnncError, match=r"input 'image' is a torch tensor that NumPy cannot hold \(torch.bfloat16"):
        cnnc.compile(SMALL)(x)


# -- memory ------------------------------------------------------------------------


def test_parameters_larger_than_the_machine_are_refused_before_allocation():
    source = "network huge {\n input x: [100000]\n big: dense(1000000)\n output y\n}"
    with pytest.raises(CnncError, match=r"not enough memory for the parameters .*the largest is layer big with 100,001,000,000 parameters"):
        cnnc.compile(source)


def test_activations_larger_than_the_budget_are_refused_with_the_largest_value(monkeypatch):
    net = cnnc.compile(SMALL)
    monkeypatch.setenv("CNNC_MEMORY_LIMIT", str(64 * 1024))
    with pytest.raises(CnncError, match=r"not enough memory for the activations of a batch of 1000 .*the largest is .*\[1000, "):
        net(np.zeros((1000, 1, 6, 6), np.float32))
    monkeypatch.delenv("CNNC_MEMORY_LIMIT")
    assert net(np.zeros((1000, 1, 6, 6), np.float32)).shape == (1000, 4)  # nothing was left half-built


def test_optimizer_state_is_checked_too(monkeypatch):
    net = cnnc.compile(SMALL)
    monkeypatch.setenv("CNNC_MEMORY_LIMIT", "100")
    with pytest.raises(CnncError, match="not enough memory for Adam's state"):
        net.trainer(optimizer=cnnc.optim.Adam())


def test_a_bad_memory_limit_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CNNC_MEMORY_LIMIT", "lots")
    with pytest.raises(CnncError, match="CNNC_MEMORY_LIMIT must be a number of bytes"):
        cnnc.compile(SMALL)


# -- executors per batch size ------------------------------------------------------


def test_executors_per_batch_size_are_bounded_and_freed():
    net = cnnc.compile(SMALL).eval()
    first = weakref.ref(net._executor(("infer", None), 1))
    for batch in range(1, 41):
        net(np.zeros((batch, 1, 6, 6), np.float32))
        assert len(net._executors) <= model_module.MAX_EXECUTORS
    gc.collect()
    assert first() is None


def test_memory_stays_flat_over_many_batch_sizes():
    net = cnnc.compile(SMALL).eval()
    sizes = list(range(50, 58))
    for batch in sizes:  # warm: as many executors as are kept, at the largest sizes used below
        net(np.zeros((batch, 1, 6, 6), np.float32))
    tracemalloc.start()
    try:
        for _ in range(3):
            for batch in range(1, 50):
                net(np.zeros((batch, 1, 6, 6), np.float32))
            for batch in sizes:
                net(np.zeros((batch, 1, 6, 6), np.float32))
        gc.collect()
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one = max(ex.plan.arena_bytes for ex in net._executors.values())
    assert current < 4 * model_module.MAX_EXECUTORS * one + 2**20
