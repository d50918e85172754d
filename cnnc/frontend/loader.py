"""Source files -> modules: reading, imports (with `lib/` on the search path), definitions."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CnncError, Loc
from ..ops import REGISTRY
from ..resources import lib_dir
from . import ast
from .parser import parse


@dataclass
class Module:
    """A loaded file: its own definitions and every definition it can see."""

    path: str
    own: list[ast.Definition] = field(default_factory=list)
    visible: dict[str, ast.Definition] = field(default_factory=dict)


def search_path(base: Path) -> list[Path]:
    """Where `import name` looks: the importing file's folder, $CNNC_PATH, then lib/."""
    extra = [Path(p) for p in os.environ.get("CNNC_PATH", "").split(os.pathsep) if p]
    return [base, *extra, lib_dir()]


def read_source(path: Path, loc: Loc | None = None) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CnncError(f"no such file: {path}", loc) from None
    except IsADirectoryError:
        raise CnncError(f"{path} is a folder, not a .cnn file", loc) from None
    except UnicodeDecodeError as e:
        raise CnncError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})", loc) from None
    except OSError as e:
        raise CnncError(f"cannot read {path}: {e.strerror}", loc) from None


class Loader:
    """Loads modules once each, following imports and refusing cycles."""

    def __init__(self):
        self._modules: dict[str, Module] = {}
        self._loading: list[str] = []

    def load_file(self, path: Path, loc: Loc | None = None) -> Module:
        try:
            key = str(path.resolve())
        except (ValueError, OSError) as e:  # e.g. a NUL byte in the name
            raise CnncError(f"invalid file name {str(path)!r}: {e}", loc) from None
        if key in self._loading:
            cycle = self._loading[self._loading.index(key) :] + [key]
            names = " -> ".join(Path(p).name for p in cycle)
            raise CnncError(f"import cycle: {names}", loc)
        if key not in self._modules:
            text = read_source(path, loc)
            self._modules[key] = self._load(parse(text, str(path)), path.parent, key)
        return self._modules[key]

    def load_text(self, text: str, filename: str = "<string>", base: Path | None = None) -> Module:
        return self._load(parse(text, filename), base or Path.cwd(), filename)

    def _load(self, tree: ast.Module, base: Path, key: str) -> Module:
        module = Module(tree.path)
        self._loading.append(key)
        try:
            for item in tree.items:
                if isinstance(item, ast.Import):
                    imported = self.load_file(self._resolve(item, base), item.loc)
                    for definition in imported.own:
                        self._define(module, definition, item.loc)
                else:
                    item.module = module
                    self._check_definition(item)
                    module.own.append(item)
                    self._define(module, item, item.loc)
        finally:
            self._loading.pop()
        return module

    def _resolve(self, item: ast.Import, base: Path) -> Path:
        if item.quoted:
            path = Path(item.target)
            return path if path.is_absolute() else base / path
        relative = Path(*item.target.split(".")).with_suffix(".cnn")
        places = search_path(base)
        for folder in places:
            if (folder / relative).is_file():
                return folder / relative
        where = ", ".join(str(p) for p in places)
        raise CnncError(f"cannot find '{item.target}' to import ({relative} in {where})", item.loc)

    @staticmethod
    def _define(module: Module, definition: ast.Definition, loc: Loc) -> None:
        earlier = module.visible.get(definition.name)
        if earlier is not None and earlier is not definition:
            raise CnncError(
                f"'{definition.name}' is defined twice: here and at {earlier.loc}", loc
            )
        module.visible[definition.name] = definition

    @staticmethod
    def _check_definition(definition: ast.Definition) -> None:
        if definition.name in REGISTRY:
            raise CnncError(f"'{definition.name}' is the name of a built-in op; choose another name", definition.loc)
        seen = set()
        for p in definition.params:
            if p.name in seen:
                raise CnncError(f"hyperparameter '{p.name}' is declared twice", p.loc)
            if p.name in REGISTRY:
                raise CnncError(f"hyperparameter '{p.name}' has the name of a built-in op", p.loc)
            seen.add(p.name)
