"""The documentation stays true: its programs load, and the op reference lists every op and argument."""

import re

import pytest

import cnnc
from cnnc.frontend import load_module
from cnnc.ops import REGISTRY

from conftest import ROOT

DOCS = [ROOT / "README.md", ROOT / "docs" / "language.md"]


def programs():
    for doc in DOCS:
        for i, block in enumerate(re.findall(r"```\n(.*?)```", doc.read_text(), re.S)):
            if re.search(r"^\s*(network|block) \w+", block, re.M):
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
