"""The simplifying passes and the rewiring they are built from."""

import math

import numpy as np
import pytest

import cnnc
from cnnc.graph import BATCH, Graph, Node
from cnnc.ops import REGISTRY, Attrs
from cnnc.passes.autodiff import differentiate
from cnnc.passes.rewrite import remove_node, replace_node, replace_uses, uses
from cnnc.passes.shapes import infer_shapes
from cnnc.passes.simplify import (
    eliminate_common_subexpressions,
    eliminate_dead_code,
    fold_constants,
    run_simplify_passes,
    simplify,
)
from cnnc.runtime.losses import with_loss

# -- building and checking graphs ---------------------------------------------


def apply(g: Graph, name: str, op: str, inputs: list[str], params: dict | None = None, **attrs) -> str:
    """Add a node by hand (internal ops such as fill cannot be written in the language)."""
    attrs = Attrs(attrs)
    out = REGISTRY[op].infer(attrs, *(g[i].type for i in inputs))
    g.add(Node(name, REGISTRY[op], attrs, list(inputs), out, dict(params or {})))
    return name


def fill(g: Graph, name: str, value: float, shape=(1, 4)) -> str:
    return apply(g, name, "fill", [], value=value, shape=tuple(shape))


def vector_net(extra: str = "") -> Graph:
    """A network with one input x of [4] and an output y = relu(x); `extra` adds statements."""
    return cnnc.load(f"network t {{\n input x: [4]\n {extra}\n output y = x -> y: relu\n}}\n")


def snapshot(g: Graph):
    """Everything a pass must leave alone in its argument."""
    nodes = [(n.name, n.op.name, dict(n.attrs), list(n.inputs), n.type, dict(n.params)) for n in g.nodes()]
    edges = sorted(g.nx.edges(keys=True, data="index"))
    maps = (dict(g.inputs), dict(g.outputs), dict(g.grads), dict(g.input_grads), dict(g.params))
    return nodes, edges, maps


def check_consistent(g: Graph) -> None:
    """Inputs exist, edges match node.inputs, maps name live nodes, stored types are the inferred ones."""
    for node in g.nodes():
        assert all(i in g for i in node.inputs), node.name
        edges = sorted((key, data, src) for src, _, key, data in g.nx.in_edges(node.name, keys=True, data="index"))
        assert edges == [(i, i, src) for i, src in enumerate(node.inputs)], node.name
    for mapping in (g.inputs, g.outputs, g.grads, g.input_grads):
        assert all(name in g for name in mapping.values())
    types = {n.name: n.type for n in g.nodes()}
    assert {n.name: n.type for n in infer_shapes(g.copy()).nodes()} == types


def ops(g: Graph) -> list[str]:
    return [n.op.name for n in g.nodes()]


def training_graph(graph: Graph) -> Graph:
    g2, _, loss = with_loss(graph, "cross_entropy", None)
    return differentiate(g2, loss)


PASSES = [
    eliminate_dead_code,
    fold_constants,
    eliminate_common_subexpressions,
    lambda g: simplify(g, training=False),
    lambda g: run_simplify_passes(g, training=False),
]


# -- rewriting ------------------------------------------------------------------


def test_replace_uses_rewires_inputs_edges_and_maps():
    g = vector_net()
    apply(g, "sq", "mul", ["y", "y"])
    apply(g, "t", "tanh", ["x"])
    g.outputs["again"] = "y"
    g.grads["w"] = "y"
    g.input_grads["x"] = "y"
    replace_uses(g, "y", "t")
    assert g["sq"].inputs == ["t", "t"]
    assert sorted(g.nx.in_edges("sq", keys=True, data="index")) == [("t", "sq", 0, 0), ("t", "sq", 1, 1)]
    assert g.outputs == {"y": "t", "again": "t"} and g.grads == {"w": "t"} and g.input_grads == {"x": "t"}
    assert uses(g, "y") == 0 and uses(g, "t") == 6
    check_consistent(g)


def test_replace_uses_leaves_the_replacement_reading_the_old_value():
    g = vector_net()
    apply(g, "after", "tanh", ["y"])
    replace_uses(g, "y", "after")  # insert a node after y
    assert g["after"].inputs == ["y"] and g.outputs["y"] == "after"
    check_consistent(g)


def test_remove_node_refuses_a_used_node_and_clears_maps():
    g = vector_net("input spare: [4]")
    with pytest.raises(ValueError, match="still use"):
        remove_node(g, "x")
    with pytest.raises(ValueError, match="returns it"):
        remove_node(g, "y")
    remove_node(g, "spare")
    assert "spare" not in g and "spare" not in g.inputs
    check_consistent(g)


def test_replace_node_keeps_its_uses_and_its_place():
    g = vector_net()
    apply(g, "z", "sigmoid", ["y"])
    order = [n.name for n in g.nodes()]
    replace_node(g, "y", Node("y", REGISTRY["tanh"], Attrs(), ["x"], g["y"].type))
    assert g["y"].op.name == "tanh" and g["z"].inputs == ["y"]
    assert [n.name for n in g.nodes()] == order
    check_consistent(g)
    with pytest.raises(ValueError, match="named"):
        replace_node(g, "y", Node("other", REGISTRY["tanh"], Attrs(), ["x"], g["y"].type))
    with pytest.raises(ValueError, match="cannot read"):  # a cycle
        replace_node(g, "y", Node("y", REGISTRY["tanh"], Attrs(), ["z"], g["y"].type))


# -- dead code -------------------------------------------------------------------


def test_dead_code_goes_but_inputs_and_params_stay():
    g = cnnc.load("network t {\n input x: [4]\n input unused: [4]\n dead = x -> d: dense(3) -> relu\n output y = x -> y: relu\n}\n")
    before = snapshot(g)
    out = eliminate_dead_code(g)
    assert snapshot(g) == before
    assert sorted(ops(out)) == ["input", "input", "relu"]
    assert out.inputs == {"x": "x", "unused": "unused"}
    assert out.params == g.params and "d.weight" in out.params
    check_consistent(out)


def test_dead_code_keeps_what_gradients_need():
    tg = training_graph(cnnc.load("lenet"))
    tg.outputs = {}  # only the gradients are wanted now
    out = eliminate_dead_code(tg)
    assert set(out.grads.values()) <= set(n.name for n in out.nodes())
    assert "softmax" not in ops(out) and "cross_entropy" not in ops(out)
    assert "conv" in ops(out) and "dense_grad_weight" in ops(out)
    check_consistent(out)


def test_dead_code_keeps_nodes_that_update_buffers():
    g = cnnc.load("network t {\n input x: [3, 4, 4]\n x -> bn: batchnorm\n output y = x -> y: relu\n}\n")
    out = eliminate_dead_code(g)
    assert "batchnorm" in ops(out)


# -- constants -------------------------------------------------------------------


def test_elementwise_ops_of_constants_fold_in_place():
    g = vector_net()
    fill(g, "c", -2.0)
    fill(g, "d", 3.0)
    apply(g, "r", "relu", ["c"])
    apply(g, "s", "sigmoid", ["d"])
    apply(g, "t", "tanh", ["r"])  # a chain folds in one pass
    apply(g, "l", "leaky_relu", ["c"], slope=0.5)
    apply(g, "sum", "add", ["c", "d", "s"])
    apply(g, "prod", "mul", ["c", "d"])
    apply(g, "rg", "relu_grad", ["d", "c"])
    apply(g, "sg", "sigmoid_grad", ["d", "s"])
    apply(g, "use", "mul", ["x", "t"])
    for name in ["r", "s", "t", "l", "sum", "prod", "rg", "sg"]:
        g.outputs[name] = name
    before = snapshot(g)
    out = fold_constants(g)
    assert snapshot(g) == before
    sig = 1.0 / (1.0 + math.exp(-3.0))
    expected = {"r": 0.0, "s": sig, "t": 0.0, "l": -1.0, "sum": 1.0 + sig, "prod": -6.0, "rg": 0.0, "sg": 3.0 * sig * (1.0 - sig)}
    for name, value in expected.items():
        assert out[name].op.name == "fill" and out[name].inputs == []
        assert out[name].attrs["value"] == pytest.approx(value)
        assert out[name].type == g[name].type
    assert out["use"].inputs == ["x", "t"]
    check_consistent(out)
    # The fills read by folded nodes are dead now.
    assert "c" not in eliminate_dead_code(out) and "d" not in eliminate_dead_code(out)


def test_a_constant_broadcast_by_add_folds_to_the_broadcast_shape():
    g = vector_net()
    fill(g, "c", 1.0, shape=(1, 1))
    fill(g, "d", 2.0, shape=(1, 4))
    g.outputs["s"] = apply(g, "s", "add", ["c", "d"])
    out = fold_constants(g)
    assert out["s"].attrs["shape"] == (1, 4) and out["s"].attrs["value"] == 3.0


def test_non_elementwise_ops_of_constants_stay():
    g = vector_net()
    fill(g, "c", 2.0)
    g.outputs["sm"] = apply(g, "sm", "softmax", ["c"], axis=1)
    assert fold_constants(g)["sm"].op.name == "softmax"


def test_identity_constants_are_dropped():
    g = vector_net("input z: [1]")
    fill(g, "one", 1.0)
    fill(g, "zero", 0.0)
    g.outputs["m"] = apply(g, "m", "mul", ["y", "one"])
    apply(g, "a", "add", ["zero", "x"])
    g.outputs["after_a"] = apply(g, "after_a", "tanh", ["a"])
    g.outputs["times_zero"] = apply(g, "times_zero", "mul", ["x", "zero"])
    g.outputs["widened"] = apply(g, "widened", "mul", ["z", "one"])  # [1] * [1, 4]: the shape changes
    g.outputs["three"] = apply(g, "three", "add", ["x", "zero", "y"])
    before = snapshot(g)
    out = fold_constants(g)
    assert snapshot(g) == before
    assert "m" not in out and out.outputs["m"] == "y"
    assert "a" not in out and out["after_a"].inputs == ["x"]
    assert out["times_zero"].inputs == ["x", "zero"]
    assert out["widened"].inputs == ["z", "one"]
    assert out["three"].op.name == "add" and out["three"].inputs == ["x", "y"]
    check_consistent(out)


# -- common subexpressions ---------------------------------------------------------


def test_two_identical_relus_merge_and_outputs_follow():
    g = cnnc.load("network t {\n input x: [4]\n output a = x -> relu -> tanh\n output b = x -> relu -> tanh\n}\n")
    assert ops(g).count("relu") == 2
    before = snapshot(g)
    out = eliminate_common_subexpressions(g)
    assert snapshot(g) == before
    assert ops(out) == ["input", "relu", "tanh"]  # the tanhs merge once their inputs have
    assert out.outputs["a"] == out.outputs["b"] == g.outputs["a"]
    check_consistent(out)


def test_what_must_not_merge():
    g = cnnc.load(
        "network t {\n input x: [4]\n input y: [4]\n"
        " output a = x -> dropout(0.5)\n output b = x -> dropout(0.5)\n"
        " output c = x -> leaky_relu(0.1)\n output d = x -> leaky_relu(0.2)\n"
        " output e = x -> f: dense(3)\n output f = x -> g: dense(3)\n}\n"
    )
    out = eliminate_common_subexpressions(g)
    assert sorted(ops(out)) == sorted(ops(g))  # inputs, random ops, other attrs, other params


def test_fills_merge_only_with_equal_attributes():
    g = vector_net()
    for name, value in [("c1", 2.0), ("c2", 2.0), ("c3", 3.0)]:
        g.outputs[name] = fill(g, name, value)
    out = eliminate_common_subexpressions(g)
    assert out.outputs["c2"] == "c1" and "c2" not in out and out.outputs["c3"] == "c3"


def test_equal_gradients_of_two_parameters_stay_two_nodes():
    # Both batchnorms at the end of a downsampling block receive the same gradient, but each
    # parameter's gradient is written to its own slot of the gradient arena.
    tg = training_graph(cnnc.load("resnet18_cifar"))
    out = eliminate_common_subexpressions(tg)
    assert out.grads == tg.grads
    assert len(set(out.grads.values())) == len(out.grads)
    check_consistent(out)


# -- algebraic simplification --------------------------------------------------------


def test_dropout_disappears_only_in_eval():
    g = cnnc.load("vgg16")
    assert ops(simplify(g, training=True)).count("dropout") == 2
    out = simplify(g, training=False)
    assert "dropout" not in ops(out)
    assert out["classifier.3"].inputs == ["classifier.1"]
    assert len(out) == len(g) - 2
    check_consistent(out)
    tg = training_graph(g)
    assert "dropout_grad" in ops(simplify(tg, training=True))
    eval_graph = simplify(tg, training=False)
    assert "dropout" not in ops(eval_graph) and "dropout_grad" not in ops(eval_graph)
    check_consistent(eval_graph)


def test_dropout_of_probability_zero_disappears_in_training_too():
    g = cnnc.load("network t {\n input x: [4]\n output y = x -> dropout(0.0) -> relu\n}\n")
    assert ops(simplify(g, training=True)) == ["input", "relu"]


def test_flatten_after_global_avgpool_stays_where_it_drops_axes():
    g = cnnc.load("resnet18_cifar")
    # [512, 1, 1] -> [512]: not an identity, and dense needs the rank-1 sample.
    assert str(g["global_avgpool"].type) == "[512, 1, 1]" and str(g["flatten"].type) == "[512]"
    out = simplify(g, training=False)
    assert out["fc"].inputs == ["flatten"] and out["flatten"].op.name == "flatten"


def test_identity_flatten_after_global_avgpool_disappears():
    g = cnnc.load("network t {\n input x: [8, 4, 4]\n v = global_avgpool -> flatten\n output y = v -> flatten -> fc: dense(3)\n}\n")
    flattens = [n.name for n in g.nodes() if n.op.name == "flatten"]
    assert len(flattens) == 2 and g[flattens[1]].type == g[flattens[0]].type
    before = snapshot(g)
    out = simplify(g, training=False)
    assert snapshot(g) == before
    assert ops(out) == ["input", "global_avgpool", "flatten", "dense"]
    assert out["fc"].inputs == [flattens[0]]
    check_consistent(out)


def test_chained_reshapes_become_one():
    g = cnnc.load(
        "network t {\n input x: [8, 4, 4]\n"
        " output y = global_avgpool -> flatten -> reshape([2, 4]) -> flatten -> fc: dense(3)\n}\n"
    )
    last = g["fc"].inputs[0]
    out = simplify(g, training=False)
    assert ops(out) == ["input", "global_avgpool", "reshape", "dense"]
    assert out[last].attrs["shape"] == (8,) and out[last].inputs == ["global_avgpool"]
    check_consistent(out)


def test_chained_reshapes_stay_when_the_inner_one_has_another_use():
    g = cnnc.load("network t {\n input x: [8, 4, 4]\n v = flatten\n output v\n output y = v -> reshape([2, 64])\n}\n")
    out = simplify(g, training=False)
    assert ops(out) == ["input", "flatten", "reshape"]
    assert out["reshape"].inputs == ["flatten"]


def test_a_reshape_chain_back_to_the_input_type_vanishes():
    g = cnnc.load("network t {\n input x: [8, 4, 4]\n output y = x -> flatten -> reshape([8, 4, 4]) -> relu\n}\n")
    out = simplify(g, training=False)
    assert ops(out) == ["input", "relu"] and out["relu"].inputs == ["x"]


def test_single_input_add_mul_and_identity_sum_to_disappear():
    g = vector_net()
    apply(g, "a1", "add", ["y"])
    apply(g, "m1", "mul", ["a1"])
    apply(g, "s1", "sum_to", ["m1"], shape=(BATCH, 4))
    apply(g, "s2", "sum_to", ["s1"], shape=(1, 4))  # a real reduction over the batch
    g.outputs["s1"] = "s1"
    g.outputs["s2"] = "s2"
    out = simplify(g, training=True)
    assert ops(out) == ["input", "relu", "sum_to"]
    assert out.outputs["s1"] == "y" and out["s2"].inputs == ["y"]
    check_consistent(out)


# -- all passes ------------------------------------------------------------------------


@pytest.mark.parametrize("pass_", PASSES)
def test_no_pass_changes_its_argument(pass_):
    g = training_graph(cnnc.load("vgg16"))
    before = snapshot(g)
    out = pass_(g)
    assert out is not g
    assert snapshot(g) == before


def test_run_simplify_passes_combines_them():
    g = cnnc.load(
        "network t {\n input x: [8, 4, 4]\n input spare: [3]\n v = flatten -> dropout(0.3)\n"
        " dead = x -> tanh\n output a = v -> relu\n output b = v -> relu\n}\n"
    )
    out = run_simplify_passes(g, training=False)
    assert sorted(ops(out)) == ["flatten", "input", "input", "relu"]
    assert out.outputs["a"] == out.outputs["b"]
    check_consistent(out)
    assert sorted(ops(run_simplify_passes(g, training=True))) == ["dropout", "flatten", "input", "input", "relu"]


@pytest.mark.parametrize("name", ["lenet", "vgg16", "resnet18_cifar"])
@pytest.mark.parametrize("training", [True, False])
def test_library_models_stay_well_typed(name, training):
    g = cnnc.load(name)
    for graph in (g, training_graph(g)):
        out = run_simplify_passes(graph, training)
        check_consistent(out)
        assert out.params == graph.params
        assert out.inputs == graph.inputs
        assert list(out.outputs) == list(graph.outputs) and list(out.grads) == list(graph.grads)
        assert out.output_types() == graph.output_types()
        for param, node in out.grads.items():
            assert out[node].type.shape == graph.params[param].shape


def test_lenet_computes_the_same_after_the_passes():
    before = cnnc.load("lenet")
    # Redundancy for the passes to remove: an identity flatten and an eval-mode
    # dropout before fc1, and a second softmax output.
    apply(before, "flatten_again", "flatten", ["flatten"])
    apply(before, "drop", "dropout", ["flatten_again"], p=0.5)
    replace_uses(before, "flatten", "flatten_again")
    replace_uses(before, "flatten_again", "drop")
    before.outputs["probabilities_again"] = apply(before, "softmax_again", "softmax", ["fc3"], axis=1)
    after = run_simplify_passes(before, training=False)
    assert len(after) == len(before) - 3 and after["fc1"].inputs == ["flatten"]
    reference = cnnc.compile(before).eval()
    simplified = cnnc.compile(after).eval()
    simplified.load_params(reference.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    want, got = reference(x), simplified(x)
    assert set(got) == set(want) == {"logits", "probabilities", "probabilities_again"}
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)
