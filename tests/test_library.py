"""The model library: parameter counts, names, shapes and costs against published figures and PyTorch."""

import pytest

import cnnc
from cnnc.report import summary_data
from cnnc.resources import lib_dir

LIB_FILES = sorted(p.name for p in lib_dir().glob("*.cnn"))
NETWORK_FILES = [name for name in LIB_FILES if "network" in (lib_dir() / name).read_text()]

# torchvision's published parameter counts.
PUBLISHED_PARAMS = {
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
}


def test_every_library_file_loads():
    assert {"lenet.cnn", "vgg16.cnn", "resnet18.cnn", "resnet34.cnn", "resnet50.cnn", "resnet18_cifar.cnn"} <= set(LIB_FILES)
    for name in NETWORK_FILES:
        graph = cnnc.load(lib_dir() / name)
        assert graph.outputs, name


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_counts_match_the_published_figures(name):
    assert cnnc.load(lib_dir() / f"{name}.cnn").parameter_count() == PUBLISHED_PARAMS[name]


def test_resnet18_multiply_accumulates():
    macs = summary_data(cnnc.load(lib_dir() / "resnet18.cnn"))["totals"]["macs_per_example"]
    assert abs(macs - 1.82e9) / 1.82e9 < 0.01


def test_lenet_is_the_simple_cnn():
    g = cnnc.load(lib_dir() / "lenet.cnn")
    ops = [n.op.name for n in g.nodes()]
    for op in ("conv", "relu", "maxpool", "dense", "softmax"):
        assert op in ops
    assert g.input_types()["image"].sample_shape == (1, 28, 28)
    assert g.output_types()["logits"].sample_shape == (10,)


def test_resnets_share_their_blocks_through_an_import():
    for name in ("resnet18", "resnet34", "resnet50", "resnet18_cifar"):
        text = (lib_dir() / f"{name}.cnn").read_text()
        assert "import resnet_blocks" in text and "block " not in text


@pytest.mark.parametrize("name", ["vgg16", "resnet18", "resnet34", "resnet50", "resnet18_cifar", "lenet"])
def test_names_and_shapes_equal_pytorch_state_dict(name):
    pytest.importorskip("torch")
    import torch_reference

    expected = torch_reference.state_shapes(torch_reference.MODELS[name]())
    assert list(cnnc.load(lib_dir() / f"{name}.cnn").param_shapes.items()) == expected


@pytest.mark.parametrize(
    "name, size",
    [("resnet18", 64), ("resnet50", 64), ("vgg16", 32), ("resnet18_cifar", 32), ("lenet", 28)],
)
def test_output_shapes_follow_pytorch_at_other_input_sizes(name, size):
    torch = pytest.importorskip("torch")
    import torch_reference
    from cnnc.passes.shapes import with_input_types

    graph = cnnc.load(lib_dir() / f"{name}.cnn", classes=7)
    channels = graph.input_types()["image"].sample_shape[0]
    graph = with_input_types(graph, {"image": cnnc.TensorType((cnnc.BATCH, channels, size, size))})
    model = torch_reference.MODELS[name](num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, channels, size, size))
    assert graph.output_types()["logits"].sample_shape == tuple(out.shape[1:])
