"""The documentation stays true: its programs load, and the op reference lists every op and argument."""

import re

import pytest

import cnnc
from cnnc.frontend import load_module
from cnnc.ops import REGISTRY
from conftest import ROOT

DOCS = [ROOT / "README.md", ROOT / "docs" / "language.md"]


def fenced_blocks(text):
    """(info string, body) of every fenced code block."""
    blocks, info, body = [], None, []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            if info is None:
                info, body = stripped[3:], []
            else:
                blocks.append((info, "\n".join(body) + "\n"))
                info = None
        elif info is not None:
            body.append(line)
    return blocks


def programs():
    for doc in DOCS:
        for i, (info, block) in enumerate(fenced_blocks(doc.read_text())):
            if info == "" and re.search(r"^\s*(network|block) \w+", block, re.M):
                yield pytest.param(block, id=f"{doc.name}-{i}")


@pytest.mark.parametrize("text", programs())
def test_documented_programs_load(text):
    if re.search(r"^\s*network ", text, re.M):
        graph = cnnc.load(text)
        assert graph.outputs
    else:
        assert load_module(text).own  # blocks alone


def test_reference_lists_every_op_and_argument():
    reference = (ROOT / "docs" / "language.md").read_text()
    table = reference.split("## Ops", 1)[1]
    for name, op in REGISTRY.items():
        if op.internal:
            continue
        rows = [line for line in table.splitlines() if f"`{name}" in line or f", `{name}`" in line]
        assert rows, f"op {name} is missing from docs/language.md"
        for attr in op.attrs:
            assert any(attr.name in row for row in rows), f"{name}: argument {attr.name} is not documented"
