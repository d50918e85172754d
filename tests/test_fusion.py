"""The fusion pass and the optimized schedule: groups, refusals, kernel counts, planned memory.

Graph-level tests compile nothing; the numeric comparison of every library model
against its unfused graph is in test_fusion_numerics.py.
"""

import pytest

import cnnc
from cnnc.explain import explain, step_graph
from cnnc.passes.pipeline import optimize
from cnnc.passes.schedule import materialized


def groups_of(schedule):
    return {g.name: g for g in schedule.groups}


def test_resnet18_cifar_kernels_fall_as_required():
    graph = cnnc.load("resnet18_cifar")
    forward = explain(graph, training=False, batch=32)["kernels"]
    step = explain(graph, training=True, batch=32)["kernels"]
    assert forward["unfused"] / forward["fused"] >= 2.5
    assert step["unfused"] / step["fused"] >= 2.0


def test_resnet18_cifar_planned_training_peak_is_under_60_percent_of_all_activations():
    peak = explain(cnnc.load("resnet18_cifar"), training=True, batch=32)["peak_bytes"]
    assert peak["planned"] <= 0.6 * peak["unplanned"]
    assert peak["planned"] > 0


def test_eval_mode_puts_batchnorm_add_and_relu_in_the_conv_epilogue():
    schedule = optimize(cnnc.load("resnet18_cifar"), training=False)
    graph = schedule.graph
    block = groups_of(schedule)["layer1.0.conv2"]
    assert block.kind == "epilogue" and block.anchor == "layer1.0.conv2"
    assert block.nodes == ["layer1.0.conv2", "layer1.0.bn2", "layer1.0.add", "layer1.0.relu_1"]
    assert graph["layer1.0.bn2"].op.name == "batchnorm_inference"
    assert block.outputs == ["layer1.0.relu_1"]  # the conv and batchnorm values never reach memory


def test_training_mode_accumulates_batch_statistics_in_the_conv_epilogue():
    schedule = optimize(step_graph(cnnc.load("resnet18_cifar"), True), training=True)
    block = groups_of(schedule)["layer1.0.conv2"]
    assert block.kind == "batchnorm" and block.tail == "layer1.0.bn2"
    assert block.post == ["layer1.0.add", "layer1.0.relu_1"]
    # The backward reads the conv output (batchnorm's input) and the block's output.
    assert set(block.outputs) == {"layer1.0.conv2", "layer1.0.relu_1"}


def test_backward_fuses_activation_gradients_and_sibling_reductions():
    schedule = optimize(step_graph(cnnc.load("resnet18_cifar"), True), training=True)
    graph = schedule.graph
    kinds = {}
    for g in schedule.groups:
        for name in g.nodes:
            kinds[graph[name].op.name] = kinds.get(graph[name].op.name, set()) | {g.kind}
    assert kinds["relu_grad"] == {"epilogue"}  # inside the kernel producing the incoming gradient
    assert kinds["batchnorm_grad_weight"] == {"horizontal"}
    assert kinds["cross_entropy_grad"] == {"horizontal"}
    patterns = {g.pattern for g in schedule.groups if g.kind == "horizontal"}
    assert patterns == {"batchnorm_grad", "dense_grad", "cross_entropy"}
    # A sum of gradients from two branches runs inside the conv input gradient's epilogue.
    adds = [g for g in schedule.groups if any(graph[n].op.name == "add" and ".grad" in n for n in g.nodes)]
    assert adds and all(g.kind == "epilogue" and graph[g.anchor].op.name == "conv_grad_input" for g in adds)


def test_fused_groups_keep_every_value_read_outside():
    schedule = optimize(step_graph(cnnc.load("resnet18_cifar"), True), training=True)
    graph = schedule.graph
    member = {name: g for g in schedule.groups for name in g.nodes}
    for g in schedule.groups:
        assert materialized(graph, g) == g.outputs
        for name in g.nodes:
            for consumer in graph.consumers(name):
                if member.get(consumer.name) is not g:
                    assert name in g.outputs, (g.name, name, consumer.name)


def refusals(schedule, node_op):
    return [d for d in schedule.decisions if not d.fused and schedule.graph[d.node].op.name == node_op]


def test_a_fusion_that_would_make_a_cycle_is_refused_with_its_reason():
    # The add reads the conv group's relu and a maxpool of it: inside that group it would have
    # to run before the maxpool that runs after the group.
    text = """
network cycle {
    input x: [4, 8, 8]
    a = conv(4, kernel=3, pad=1, bias=false) -> relu
    p = a -> maxpool(3, stride=1, pad=1)
    output y = a + p
}
"""
    schedule = optimize(cnnc.load(text), training=False)
    (refused,) = refusals(schedule, "add")
    assert refused.group == "conv" and "cycle" in refused.reason
    assert groups_of(schedule)["add"].kind == "single"  # a loop of its own, after the maxpool
    assert explain(cnnc.load(text))["refused"][0]["reason"] == refused.reason


def test_the_later_producer_hosts_a_sum_of_two_convs():
    text = """
network two_convs {
    input x: [4, 8, 8]
    a = conv(4, kernel=3, pad=1, bias=false) -> relu
    b = a -> conv(4, kernel=1)
    output y = relu(a + b)
}
"""
    schedule = optimize(cnnc.load(text), training=False)
    assert [g.nodes for g in schedule.groups] == [["conv", "relu"], ["conv_1", "add", "relu_1"]]
    assert not [d for d in schedule.decisions if not d.fused]


def test_a_value_from_before_the_batch_statistics_is_not_read_after_them():
    text = """
network skip {
    input x: [4, 8, 8]
    c = conv(4, kernel=3, pad=1)
    n = c -> batchnorm
    output y = n + c
}
"""
    schedule = optimize(step_graph(cnnc.load(text), False), training=True)
    (refused,) = refusals(schedule, "add")
    assert "before the batch statistics" in refused.reason


def test_fuse_false_keeps_one_kernel_per_node():
    schedule = optimize(cnnc.load("resnet18_cifar"), training=False, fuse=False)
    graph = schedule.graph
    assert all(g.kind == "single" and len(g.nodes) == 1 for g in schedule.groups)
    assert len(schedule.groups) == len([n for n in graph.nodes() if n.op.name != "input"])


@pytest.mark.parametrize("name", ["lenet", "vgg16", "resnet18", "resnet50", "resnet18_cifar"])
def test_every_library_model_fuses_and_plans_below_its_unplanned_memory(name):
    graph = cnnc.load(name)
    for training in (False, True):
        report = explain(graph, training=training, batch=2)
        assert report["kernels"]["fused"] < report["kernels"]["unfused"]
        assert 0 < report["peak_bytes"]["planned"] < report["peak_bytes"]["unplanned"]


@pytest.mark.parametrize("name", ["lenet", "vgg16", "resnet50", "resnet18_cifar"])
def test_fusion_never_raises_the_planned_peak(name):
    graph = cnnc.load(name)
    for training in (False, True):
        fused = explain(graph, training=training, batch=4)["peak_bytes"]["planned"]
        unfused = explain(graph, training=training, batch=4, fuse=False)["peak_bytes"]["planned"]
        assert fused <= unfused
