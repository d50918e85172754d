"""Where the grammar and the model library live: beside the package in a
checkout, inside it (cnnc/grammar, cnnc/lib) once installed."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cnnc: cannot find its {name}/ folder near {_PACKAGE}")


def grammar_file() -> Path:
    return _find("grammar") / "cnn.lark"


def lib_dir() -> Path:
    return _find("lib")
