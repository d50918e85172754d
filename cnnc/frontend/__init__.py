"""The front end: .cnn text -> syntax tree -> typed Graph."""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

from ..errors import CnncError
from ..graph import Graph
from ..resources import lib_dir
from . import ast
from .builder import MAX_LIST, build
from .loader import Loader, Module
from .parser import MAX_NESTING, parse

__all__ = ["load", "load_module", "parse", "build"]


def _is_program_text(source: str) -> bool:
    """A string is a program when it has a line break, or a brace and names no .cnn file (existing or not)."""
    if "\n" not in source and ("{" not in source or source.endswith(".cnn")):
        return False
    return not os.path.lexists(source)  # an existing `a{b}.cnn` is a file (lexists: even a broken link)


def resolve_path(source: str | Path) -> Path:
    """A path as given, or else a library model's name: `resnet18` is lib/resnet18.cnn."""
    if source == "":
        raise CnncError("the file name is empty")
    path = Path(source)
    try:
        exists = path.exists()
    except (ValueError, OSError) as e:  # a NUL byte in the name, a name too long
        name = str(source) if len(str(source)) <= 80 else str(source)[:77] + "..."
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CnncError(f"invalid file name {name!r}: {reason}") from None
    if not exists and isinstance(source, str) and source.isidentifier():
        in_library = lib_dir() / f"{source}.cnn"
        if in_library.is_file():
            return in_library
    return path


def load_module(source: str | Path) -> Module:
    """Parse a file (a path or a library model's name) or a program (text), and everything it imports."""
    if not isinstance(source, (str, os.PathLike)):
        raise CnncError(f"expected a path or the text of a program, got {type(source).__name__}")
    loader = Loader()
    if isinstance(source, os.PathLike) or not _is_program_text(source):
        return loader.load_file(resolve_path(source))
    return loader.load_text(source)


def _value_problem(value: Any) -> str | None:
    """What makes a hyperparameter value unusable (too large, not finite, too deep), or None."""
    pending, elements = [(value, 0)], 0
    while pending:
        item, depth = pending.pop()
        if isinstance(item, numbers.Integral) and not isinstance(item, bool) and abs(int(item)) > ast.MAX_INT:
            digits = str(int(item))
            shown = digits if len(digits) <= 24 else digits[:20] + "..."
            return f"{shown} is too large (integers are limited to 2^62)"
        if isinstance(item, numbers.Real) and not isinstance(item, numbers.Integral) and not math.isfinite(item):
            return f"{float(item)} is not a finite number"
        if isinstance(item, (list, tuple)):
            elements += len(item)
            if depth >= MAX_NESTING:
                return f"lists are nested more than {MAX_NESTING} deep"
            if elements > MAX_LIST:
                return f"a list may hold at most {MAX_LIST:,} elements, nested lists included"
            pending.extend((x, depth + 1) for x in item)
    return None


def _plain(value: Any) -> Any:
    """NumPy scalars as Python numbers, tuples as lists: the values a program itself makes."""
    if isinstance(value, (list, tuple)):
        return [_plain(x) for x in value]
    if getattr(value, "shape", None) == () and hasattr(value, "item"):  # a NumPy scalar
        return value.item()
    return value


def check_hyperparameters(definition: ast.Definition, values: dict[str, Any]) -> dict[str, Any]:
    """Values from Python or --set, held to the limits that values in a program obey."""
    declared = {p.name: p.loc for p in definition.params}
    for name, value in values.items():
        problem = _value_problem(value)
        if problem is not None:
            raise CnncError(f"hyperparameter '{name}' of {definition.name}: {problem}", declared.get(name, definition.loc))
    return {name: _plain(value) for name, value in values.items()}  # nested at most MAX_NESTING deep


def load(source: str | Path, network: str | None = None, **hyperparameters: Any) -> Graph:
    """Build the typed graph of a network.

    `source` is a path to a .cnn file or the program text itself. `network`
    picks a network by name; by default the last one the file defines.
    Hyperparameters override the network's defaults.
    """
    module = load_module(source)
    if network is None:
        networks = [d for d in module.own if d.kind == "network"]
        if not networks:
            raise CnncError(f"{module.path} defines no network")
        definition = networks[-1]
    else:
        if not isinstance(network, str):
            raise CnncError(f"network must be the name of a network, got {type(network).__name__}")
        definition = module.visible.get(network)
        if definition is None or definition.kind != "network":
            names = [d.name for d in module.visible.values() if d.kind == "network"]
            from ..errors import closest

            raise CnncError(f"{module.path} has no network '{network}'{closest(network, names)}")
    return build(definition, check_hyperparameters(definition, hyperparameters))
