"""Drawing graphs: the DOT text (labels, marks, clusters, escaping) and the files written from it."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass, field

import pytest

import cnnc
from cnnc import drawing
from cnnc.drawing import quote, to_dot, write
from cnnc.errors import CnncError
from cnnc.graph import Graph, Node
from cnnc.passes.schedule import Schedule

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class StandInGroup:
    """What the fusion pass records per group: enough for drawing."""

    name: str
    kind: str
    nodes: list[str]
    outputs: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def lenet():
    return cnnc.load("lenet")


@pytest.fixture(scope="module")
def lenet_training():
    from cnnc.passes.autodiff import differentiate
    from cnnc.runtime.losses import with_loss

    graph, _, loss = with_loss(cnnc.load("lenet"), "cross_entropy", None)
    return differentiate(graph, loss)


def node_line(text: str, name: str) -> str:
    """The line declaring node `name` in DOT text."""
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith(f"{quote(name)} [")]
    return line


def cluster_blocks(text: str) -> dict[str, str]:
    """Each `subgraph cluster_<i> { ... }` block's text, by cluster id."""
    return dict(re.findall(r"subgraph (cluster_\d+) \{\n(.*?)\n  \}", text, flags=re.S))


def odd_graph() -> Graph:
    """A chain whose node names use every character DOT treats specially."""
    base = cnnc.load("lenet")
    image, relu = base["image"], base["relu"]
    names = [
        "layer1.0.conv1.grad12:conv_grad_input",
        'say "hi"',
        "back\\slash\\",
        "a [b] {c} <d> | e",
        "x -> y; z=1, // not a comment",
        "line\nbreak",
    ]
    graph = Graph("odd name: [1]")
    graph.add(Node("image", image.op, image.attrs, [], image.type))
    previous = "image"
    for name in names:
        graph.add(Node(name, relu.op, {}, [previous], image.type))
        previous = name
    graph.inputs = {"image": "image"}
    graph.outputs = {"out": previous}
    return graph, names


# -- DOT text ------------------------------------------------------------------


def test_lenet_dot_names_every_node_and_labels_every_edge_with_its_shape(lenet):
    text = to_dot(lenet)
    assert text.startswith('digraph "lenet" {') and text.rstrip().endswith("}")
    assert "rankdir=TB" in text
    for node in lenet.nodes():
        assert node.name in node_line(text, node.name)
    edges = [ln for ln in text.splitlines() if "->" in ln and "label=" in ln]
    assert len(edges) == sum(len(node.inputs) for node in lenet.nodes())
    for node in lenet.nodes():
        for source in node.inputs:
            edge = f"  {quote(source)} -> {quote(node.name)} [label={quote(str(lenet[source].type))}];"
            assert edge in edges
    assert '"flatten" -> "fc1" [label="[400]"];' in text


def test_node_labels_show_name_and_op_or_the_op_alone(lenet):
    text = to_dot(lenet)
    assert 'label="conv1\\nconv"' in node_line(text, "conv1")
    assert 'label="relu_1\\nrelu"' in node_line(text, "relu_1")
    assert 'label="relu"' in node_line(text, "relu")  # name equals the op


def test_inputs_are_ellipses_with_name_and_shape(lenet):
    line = node_line(to_dot(lenet), "image")
    assert 'shape="ellipse"' in line and 'label="image\\n[1, 28, 28]"' in line
    assert 'shape="ellipse"' not in node_line(to_dot(lenet), "conv1")


def test_outputs_have_a_double_border_and_a_note(lenet):
    text = to_dot(lenet)
    for output, node in lenet.outputs.items():
        assert 'peripheries="2"' in node_line(text, node)
        assert f'{quote("output " + output)} [label={quote("output " + output)}' in text
        assert f"{quote(node)} -> {quote('output ' + output)} [style=dashed" in text
    assert "peripheries" not in node_line(text, "relu_3")


def test_training_graph_marks_parameter_gradients(lenet_training):
    text = to_dot(lenet_training)
    assert lenet_training.grads
    for param, node in lenet_training.grads.items():
        line = node_line(text, node)
        assert drawing.GRADIENT_FILL in line and f"gradient of {param}" in line
    assert drawing.GRADIENT_FILL not in node_line(text, "relu_3.grad6:relu_grad")
    # Autodiff names end in the op already, so the op is not repeated on a second line.
    assert 'label="relu_3.grad6:relu_grad"' in node_line(text, "relu_3.grad6:relu_grad")
    assert 'shape="ellipse"' in node_line(text, "target")


def test_output_is_deterministic(lenet_training):
    assert to_dot(lenet_training) == to_dot(lenet_training.copy())
    assert to_dot(cnnc.load("lenet")) == to_dot(cnnc.load("lenet"))


def test_title_defaults_to_graph_name(lenet):
    assert 'label="lenet"];' in to_dot(lenet).splitlines()[1]
    assert 'label="LeNet \\"training\\""];' in to_dot(lenet, title='LeNet "training"').splitlines()[1]


# -- clusters ------------------------------------------------------------------


def test_groups_of_two_or_more_nodes_become_labelled_clusters():
    graph = cnnc.load("lenet")
    schedule = Schedule(graph, [
        StandInGroup("conv1_fused", "epilogue", ["conv1", "relu"], ["relu"]),
        StandInGroup("maxpool", "single", ["maxpool"], ["maxpool"]),
        StandInGroup("fc1_fused", "epilogue", ["fc1", "relu_2"], ["relu_2"]),
        StandInGroup("tail", "elementwise", ["fc2", "relu_3"], ["relu_3"]),
    ])
    text = to_dot(graph, schedule=schedule)
    blocks = cluster_blocks(text)
    assert len(blocks) == 3 and text.count("subgraph cluster_") == 3
    labels = [re.search(r'label="([^"]*)"', block).group(1) for block in blocks.values()]
    assert labels == ["epilogue: conv1_fused", "epilogue: fc1_fused", "elementwise: tail"]
    assert drawing.GROUP_FILLS["epilogue"] in blocks["cluster_0"]
    assert drawing.GROUP_FILLS["elementwise"] in blocks["cluster_2"]
    for block, members in zip(blocks.values(), (["conv1", "relu"], ["fc1", "relu_2"], ["fc2", "relu_3"])):
        declared = re.findall(r'^\s+("[^"]*") \[label', block, flags=re.M)
        assert declared == [quote(m) for m in members]
    # Members are declared once, inside their cluster only.
    assert sum(1 for ln in text.splitlines() if ln.strip().startswith('"conv1" [')) == 1
    assert to_dot(graph, schedule=schedule) == text
    assert "cluster" not in to_dot(graph)  # the graph itself carries no groups


def test_ungrouped_graph_has_no_clusters():
    graph = cnnc.load("lenet")
    assert "cluster" not in to_dot(graph)
    assert "cluster" not in to_dot(graph, schedule=Schedule(graph, []))


# -- escaping ------------------------------------------------------------------


def test_quote_escapes_quotes_backslashes_and_newlines():
    assert quote("layer1.0.conv1.grad12:conv_grad_input") == '"layer1.0.conv1.grad12:conv_grad_input"'
    assert quote('say "hi"') == '"say \\"hi\\""'
    assert quote("back\\slash\\") == '"back\\\\slash\\\\"'
    assert quote("line\nbreak") == '"line\\nbreak"'


def test_special_names_are_quoted_in_the_dot_text():
    graph, names = odd_graph()
    text = to_dot(graph)
    for name in names:
        assert f"{quote(name)} [label=" in text
    assert 'digraph "odd name: [1]" {' in text


@needs_dot
def test_dot_accepts_special_names_as_single_nodes():
    graph, names = odd_graph()
    done = subprocess.run(["dot", "-Tsvg"], input=to_dot(graph).encode(), capture_output=True, check=True)
    svg = done.stdout.decode()
    # One drawn node per graph node plus the output note: no name was split or merged.
    assert svg.count('class="node"') == len(graph) + 1
    assert svg.count('class="edge"') == len(graph)  # a chain: n-1 edges, plus the note's
    assert "layer1.0.conv1.grad12:conv_grad_input" in svg
    assert "say &quot;hi&quot;" in svg and "a [b] {c} &lt;d&gt; | e" in svg


# -- files ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".dot", ".gv", ".DOT"])
def test_write_dot_text(lenet, tmp_path, suffix):
    path = write(lenet, tmp_path / f"lenet{suffix}", title="LeNet")
    assert path == tmp_path / f"lenet{suffix}"
    assert path.read_text() == to_dot(lenet, title="LeNet")
    assert os.listdir(tmp_path) == [path.name]


def test_written_file_follows_the_umask(lenet, tmp_path):
    path = write(lenet, tmp_path / "lenet.dot")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


@needs_dot
def test_write_svg_png_pdf(lenet, tmp_path):
    svg = write(lenet, tmp_path / "lenet.svg").read_bytes()
    assert svg.lstrip().startswith((b"<?xml", b"<svg")) and b"maxpool_1" in svg
    assert write(lenet, str(tmp_path / "lenet.png")).read_bytes().startswith(PNG_SIGNATURE)
    assert write(lenet, tmp_path / "lenet.pdf").read_bytes().startswith(b"%PDF")
    assert sorted(os.listdir(tmp_path)) == ["lenet.pdf", "lenet.png", "lenet.svg"]


def test_unknown_suffix_names_the_supported_ones(lenet, tmp_path):
    for name in ("lenet.jpg", "lenet"):
        with pytest.raises(CnncError) as err:
            write(lenet, tmp_path / name)
        message = str(err.value)
        assert "unknown suffix" in message
        assert all(suffix in message for suffix in (".dot", ".gv", ".svg", ".png", ".pdf"))
    assert os.listdir(tmp_path) == []


def test_missing_dot_says_how_to_install_it(lenet, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(CnncError) as err:
        write(lenet, tmp_path / "lenet.svg")
    message = str(err.value)
    assert "Graphviz" in message and "apt-get install graphviz" in message and ".dot" in message
    assert os.listdir(tmp_path) == []
    # DOT text needs no Graphviz.
    assert write(lenet, tmp_path / "lenet.dot").exists()


def fake_dot(tmp_path, script: str) -> str:
    folder = tmp_path / "bin"
    folder.mkdir()
    program = folder / "dot"
    program.write_text("#!/bin/sh\n" + script)
    program.chmod(0o755)
    return str(program)


def test_failing_dot_reports_its_stderr_and_keeps_the_old_file(lenet, tmp_path, monkeypatch):
    program = fake_dot(tmp_path, "cat >/dev/null\necho 'Error: syntax error in line 3' >&2\necho more >&2\nexit 1\n")
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: program)
    out = tmp_path / "out"
    out.mkdir()
    (out / "lenet.svg").write_text("old drawing")
    with pytest.raises(CnncError) as err:
        write(lenet, out / "lenet.svg")
    message = str(err.value)
    assert "dot -Tsvg" in message and "exit status 1" in message
    assert "Error: syntax error in line 3" in message and "more" in message
    assert os.listdir(out) == ["lenet.svg"] and (out / "lenet.svg").read_text() == "old drawing"


def test_failed_write_leaves_no_temporary_file(lenet, tmp_path):
    # The target is a folder: the rename fails after the temporary file was written.
    (tmp_path / "lenet.dot").mkdir()
    with pytest.raises(CnncError) as err:
        write(lenet, tmp_path / "lenet.dot")
    assert "cannot write" in str(err.value)
    assert os.listdir(tmp_path) == ["lenet.dot"] and os.listdir(tmp_path / "lenet.dot") == []


def test_missing_folder_is_a_clear_error(lenet, tmp_path):
    with pytest.raises(CnncError, match="cannot write"):
        write(lenet, tmp_path / "absent" / "lenet.dot")
    assert os.listdir(tmp_path) == []
