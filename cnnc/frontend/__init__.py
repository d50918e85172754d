"""The front end: .cnn text -> syntax tree -> typed Graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CnncError
from ..graph import Graph
from ..resources import lib_dir
from .builder import build
from .loader import Loader, Module
from .parser import parse

__all__ = ["load", "load_module", "parse", "build"]


def _looks_like_text(source: str) -> bool:
    return "\n" in source or "{" in source


def resolve_path(source: str | Path) -> Path:
    """A path as given, or else a library model's name: `resnet18` is lib/resnet18.cnn."""
    path = Path(source)
    try:
        exists = path.exists()
    except (ValueError, OSError) as e:  # e.g. a NUL byte in the name
        raise CnncError(f"invalid file name {str(source)!r}: {e}") from None
    if not exists and isinstance(source, str) and source.isidentifier():
        in_library = lib_dir() / f"{source}.cnn"
        if in_library.is_file():
            return in_library
    return path


def load_module(source: str | Path) -> Module:
    """Parse a file (a path or a library model's name) or a program (text), and everything it imports."""
    loader = Loader()
    if isinstance(source, Path) or not _looks_like_text(source):
        return loader.load_file(resolve_path(source))
    return loader.load_text(source)


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
        definition = module.visible.get(network)
        if definition is None or definition.kind != "network":
            names = [d.name for d in module.visible.values() if d.kind == "network"]
            from ..errors import closest

            raise CnncError(f"{module.path} has no network '{network}'{closest(network, names)}")
    return build(definition, hyperparameters)
