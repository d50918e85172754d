"""Each feature of the .cnn language, from text to typed graph."""

import textwrap

import pytest

import cnnc
from cnnc import BATCH, CnncError


def load(text, **hyper):
    return cnnc.load(textwrap.dedent(text), **hyper)


def shape(graph, node):
    return graph[node].type.sample_shape


def test_network_hyperparameters_defaults_and_overrides():
    text = """
    network net(classes = 10, width = classes * 2) {
        input x: [4]
        fc: dense(width) -> out: dense(classes)
    }
    """
    g = load(text)
    assert g.hyperparameters == {"classes": 10, "width": 20}
    assert shape(g, "out") == (10,)
    g = load(text, classes=3)
    assert g.hyperparameters == {"classes": 3, "width": 6}
    assert g.param_shapes["fc.weight"] == (6, 4)
    assert load(text, width=7).param_shapes["out.weight"] == (10, 7)


def test_required_hyperparameter():
    with pytest.raises(CnncError, match="needs hyperparameter 'classes'"):
        load("network n(classes) {\n input x: [3]\n dense(classes)\n}")
    assert shape(load("network n(classes) {\n input x: [3]\n dense(classes)\n}", classes=2), "dense") == (2,)


def test_inputs_have_an_implicit_batch_and_a_dtype():
    g = load(
        """
        network n {
            input image: [3, 8, 8]
            input labels: int64[]
            input mask: float32[8, 8]
            conv(2, kernel=1)
        }
        """
    )
    types = g.input_types()
    assert types["image"].shape == (BATCH, 3, 8, 8) and types["image"].dtype == "float32"
    assert types["labels"].shape == (BATCH,) and types["labels"].dtype == "int64"
    assert types["mask"].sample_shape == (8, 8)
    assert list(g.inputs) == ["image", "labels", "mask"]


def test_positional_and_keyword_hyperparameters():
    g = load("network n {\n input x: [3, 8, 8]\n a: conv(4, 3, stride=2, pad=1, bias=false)\n}")
    node = g["a"]
    assert node.attrs["channels"] == 4 and node.attrs["kernel"] == (3, 3)
    assert node.attrs["stride"] == (2, 2) and node.attrs["pad"] == (1, 1)
    assert node.attrs["bias"] is False
    assert shape(g, "a") == (4, 4, 4)
    assert list(g.param_shapes) == ["a.weight"]


def test_chains_follow_on_and_continue_across_lines():
    g = load(
        """
        network n {
            input x: [1, 8, 8]
            conv(2, kernel=3, pad=1) -> relu
                -> maxpool(2) ->
                flatten
            dense(5)    # follows on from flatten
        }
        """
    )
    ops = [node.op.name for node in g.nodes()]
    assert ops == ["input", "conv", "relu", "maxpool", "flatten", "dense"]
    assert g.outputs == {"output": "dense"}
    assert shape(g, "flatten") == (32,)


def test_semicolons_and_comments():
    g = load("# a comment\nnetwork n { # here too\n input x: [3]; relu; sigmoid  # and here\n}\n")
    assert [n.op.name for n in g.nodes()] == ["input", "relu", "sigmoid"]


def test_named_values_and_multi_input_ops():
    g = load(
        """
        network n {
            input x: [4, 6, 6]
            a = conv(4, kernel=3, pad=1)
            b = x -> conv(4, kernel=1)
            s = a + b
            p = a * b
            c = concat(s, p, x)
            d = add(a, b, s)
            e = x -> mul(a)          # the piped value is the first input
            output joined = c
            output summed = d
            output product = e
        }
        """
    )
    assert shape(g, g.outputs["joined"]) == (12, 6, 6)
    assert g[g.outputs["summed"]].op.name == "add" and len(g[g.outputs["summed"]].inputs) == 3
    assert g[g.outputs["product"]].inputs == ["x", "conv"]
    assert g["add"].inputs == ["conv", "conv_1"] and g["mul"].inputs == ["conv", "conv_1"]
    assert list(g.outputs) == ["joined", "summed", "product"]


def test_broadcasting_add():
    g = load("network n {\n input x: [4, 6, 6]\n input s: [4, 1, 1]\n x + s\n}")
    assert shape(g, "add") == (4, 6, 6)


def test_several_inputs_and_outputs():
    g = load(
        """
        network detector(classes = 3) {
            input image: [3, 16, 16]
            input boxes: [4, 4]
            features = conv(8, kernel=3, pad=1) -> relu
            output scores = features -> conv(classes, kernel=1)
            output deltas = features -> conv(4, kernel=1)
            output given = boxes -> sigmoid
        }
        """
    )
    assert {k: t.sample_shape for k, t in g.output_types().items()} == {
        "scores": (3, 16, 16),
        "deltas": (4, 16, 16),
        "given": (4, 4),
    }


def test_output_names_a_value_or_the_current_one():
    g = load("network n {\n input x: [3]\n h = dense(4)\n relu\n output h\n output last\n}")
    assert g.outputs == {"h": "dense", "last": "relu"}


def test_blocks_with_parameters_and_in():
    g = load(
        """
        block unit(channels, kernel = 3) {
            c = conv(channels, kernel=kernel, pad=kernel // 2) -> relu
            in + c   # in is the block's input
        }
        network n {
            input x: [4, 8, 8]
            first: unit(4)
            second: unit(4, kernel=5)
        }
        """
    )
    assert g.param_shapes["first.conv.weight"] == (4, 4, 3, 3)
    assert g.param_shapes["second.conv.weight"] == (4, 4, 5, 5)
    assert g["second.add"].inputs == ["first.add", "second.relu"]


def test_blocks_take_tensor_arguments():
    g = load(
        """
        block merge(other, channels) {
            concat(in, other) -> conv(channels, kernel=1)
        }
        network n {
            input a: [2, 4, 4]
            input b: [3, 4, 4]
            a -> m: merge(b, 5)
        }
        """
    )
    assert g["m.concat"].inputs == ["a", "b"] and shape(g, "m.conv") == (5, 4, 4)


def test_conditionals_on_hyperparameters_and_shapes():
    text = """
    block maybe_project(channels) {
        if in.channels != channels {
            project: conv(channels, kernel=1)
        } elif channels > 8 {
            big: relu
        } else {
            same: sigmoid
        }
    }
    network n(c = 4) {
        input x: [4, 2, 2]
        b: maybe_project(c)
    }
    """
    assert "b.project" in load(text, c=6)
    assert "b.same" in load(text, c=4)
    g = load(text.replace("[4, 2, 2]", "[16, 2, 2]"), c=16)
    assert "b.big" in g


def test_repeat_numbers_its_copies():
    g = load(
        """
        block unit(c) { conv(c, kernel=1) -> relu }
        network n(depth = 3) {
            input x: [2, 4, 4]
            stack: repeat depth unit(2)
            layers: repeat 2 conv(2, kernel=1)
            nothing: repeat 0 relu
        }
        """
    )
    assert [k for k in g.param_shapes if k.endswith("weight")] == [
        "stack.0.conv.weight",
        "stack.1.conv.weight",
        "stack.2.conv.weight",
        "layers.0.weight",
        "layers.1.weight",
    ]
    assert g.outputs["output"] == "layers.1"  # repeat 0 is the identity


def test_sequences_number_every_member_like_nn_sequential():
    g = load(
        """
        network n {
            input x: [3, 8, 8]
            features: {
                repeat 2 { conv(4, kernel=3, pad=1) -> relu } -> maxpool(2)
                conv(8, kernel=3, pad=1) -> relu
            }
            flatten
            classifier: { dense(10) -> relu -> dropout(0.5); dense(2) }
        }
        """
    )
    assert list(g.param_shapes) == [
        "features.0.weight", "features.0.bias",
        "features.2.weight", "features.2.bias",
        "features.5.weight", "features.5.bias",
        "classifier.0.weight", "classifier.0.bias",
        "classifier.3.weight", "classifier.3.bias",
    ]  # fmt: skip
    assert g["features.4"].op.name == "maxpool" and g["classifier.2"].op.name == "dropout"


def test_labels_nest_into_hierarchical_names():
    g = load(
        """
        block basic(channels) {
            y = conv1: conv(channels, kernel=3, pad=1, bias=false) -> bn1: batchnorm
            downsample: { conv(channels, kernel=1, bias=false) -> batchnorm }
            y + in
        }
        network n {
            input x: [2, 4, 4]
            layer1: { basic(2) -> basic(2) }
        }
        """
    )
    assert list(g.param_shapes) == [
        "layer1.0.conv1.weight",
        "layer1.0.bn1.weight", "layer1.0.bn1.bias", "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.weight", "layer1.0.downsample.1.bias",
        "layer1.0.downsample.1.running_mean", "layer1.0.downsample.1.running_var",
        "layer1.1.conv1.weight",
        "layer1.1.bn1.weight", "layer1.1.bn1.bias", "layer1.1.bn1.running_mean", "layer1.1.bn1.running_var",
        "layer1.1.downsample.0.weight",
        "layer1.1.downsample.1.weight", "layer1.1.downsample.1.bias",
        "layer1.1.downsample.1.running_mean", "layer1.1.downsample.1.running_var",
    ]  # fmt: skip
    assert g.params["layer1.0.bn1.running_mean"].kind == "buffer"
    assert g.params["layer1.0.conv1.weight"].kind == "param"


def test_automatic_names_are_stable_and_avoid_labels():
    text = """
    network n {
        input x: [3]
        relu -> relu_1: sigmoid -> relu -> relu
    }
    """
    g1, g2 = load(text), load(text)
    names = [n.name for n in g1.nodes()]
    assert names == ["x", "relu", "relu_1", "relu_2", "relu_3"]
    assert names == [n.name for n in g2.nodes()]
    assert g1["relu_1"].op.name == "sigmoid"


def test_arithmetic_and_shape_access():
    g = load(
        """
        network n(base = 3) {
            input x: [6, 10, 12]
            c = x.channels * 2 + base ** 2 - 10 // 3 % 2
            h = x.height
            dims = x.shape
            if c == 20 and h == 10 and dims[2] == 12 and dims[-1] == x.width and not (c < 0) {
                conv(min(c, 64), kernel=[3, max(1, 2)], pad=int(2.5) - 1)
            }
            reshape([-1, h // 2 * 0 + 1, 1])
        }
        """
    )
    node = g["conv"]
    assert node.attrs["channels"] == 20 and node.attrs["kernel"] == (3, 2)
    assert shape(g, "reshape") == (20 * 10 * 13, 1, 1)


def test_floats_strings_and_lists_as_arguments():
    g = load(
        """
        network n {
            input x: [2, 4, 4]
            upsample(2, mode="bilinear") -> leaky_relu(slope=0.2) -> conv(2, kernel=3, pad="same", dilation=2)
            upsample(size=[3, 5])
        }
        """
    )
    assert shape(g, "upsample") == (2, 8, 8) and shape(g, "conv") == (2, 8, 8)
    assert shape(g, "upsample_1") == (2, 3, 5)
    assert g["leaky_relu"].attrs["slope"] == 0.2


def test_losses_as_layers():
    g = load(
        """
        network n {
            input x: [4]
            input y: int64[]
            logits = dense(3)
            output loss = cross_entropy(logits, y)
            output l2 = mse(logits, logits)
        }
        """
    )
    assert g.output_types()["loss"].shape == ()


def test_import_by_name_from_the_library():
    g = load("import resnet_blocks\nnetwork n {\n input x: [64, 8, 8]\n b: basic(64)\n}")
    assert "b.conv1.weight" in g.param_shapes and "b.downsample.0.weight" not in g.param_shapes


def test_import_by_path_and_from_cnnc_path(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "parts.cnn").write_text("block twice(c) { conv(c, kernel=1) -> conv(c, kernel=1) }\n")
    (tmp_path / "model.cnn").write_text('import "sub/parts.cnn"\nnetwork m {\n input x: [1, 2, 2]\n t: twice(3)\n}\n')
    g = cnnc.load(tmp_path / "model.cnn")
    assert list(g.param_shapes)[:2] == ["t.conv.weight", "t.conv.bias"]
    assert cnnc.load(str(tmp_path / "model.cnn")).name == "m"
    monkeypatch.setenv("CNNC_PATH", str(tmp_path / "sub"))
    g = load("import parts\nnetwork n {\n input x: [1, 2, 2]\n twice(2)\n}")
    assert "twice.conv_1.weight" in g.param_shapes


def test_choose_a_network_by_name():
    text = "network a {\n input x: [2]\n relu\n}\nnetwork b {\n input x: [2]\n sigmoid\n}\n"
    assert cnnc.load(text).name == "b"
    assert cnnc.load(text, network="a").name == "a"
    with pytest.raises(CnncError, match="no network 'c'"):
        cnnc.load(text, network="c")


def test_graph_is_networkx_and_param_specs():
    g = cnnc.load("network n {\n input x: [3, 4, 4]\n c: conv(2, kernel=3) -> flatten -> d: dense(5)\n}")
    assert list(g.nx.successors("c")) == ["flatten"]
    spec = g.params["c.weight"]
    assert spec.init == "fan_in_uniform" and spec.fan_in == 27 and spec.node == "c"
    assert g.params["d.bias"].init == "fan_in_uniform"
    assert g.parameter_count() == 2 * 27 + 2 + 5 * 8 + 5


def test_shape_inference_pass_rederives_types():
    from cnnc.passes.shapes import infer_shapes, with_input_types

    g = cnnc.load("network n {\n input x: [3, 16, 16]\n conv(4, kernel=3, stride=2) -> global_avgpool\n}")
    before = {n.name: n.type for n in g.nodes()}
    assert {n.name: n.type for n in infer_shapes(g).nodes()} == before
    g2 = with_input_types(g, {"x": cnnc.TensorType((BATCH, 3, 32, 32))})
    assert g2["conv"].type.sample_shape == (4, 15, 15)
    assert g["conv"].type.sample_shape == (4, 7, 7)  # the original is untouched


def test_a_statement_cannot_start_with_a_sign():
    # `y = a * 2` then `+ b` on the next line would compute `+ b` alone: refused, with the way out.
    with pytest.raises(CnncError) as info:
        cnnc.load("network n {\n input a: [3]\n input b: [3]\n y = a * 2\n  + b\n output y\n}")
    assert (info.value.line, info.value.column) == (5, 3) and "put it in parentheses" in info.value.message
    with pytest.raises(CnncError, match="cannot start with '-'"):
        cnnc.load("network n {\n input a: [3]\n -a * 2\n}")
    graph = cnnc.load("network n {\n input a: [3]\n input b: [3]\n y = (a * 2\n  + b)\n output y\n}")
    assert [node.op.name for node in graph.nodes()] == ["input", "input", "scale", "add"]
