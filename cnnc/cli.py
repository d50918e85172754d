"""The `cnnc` command. Every failure prints a located message and exits 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from .errors import CnncError


def parse_setting(text: str) -> tuple[str, Any]:
    """`NAME=VALUE` from --set: VALUE is a number, true/false, a [list] or else a string."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise CnncError(f"--set expects NAME=VALUE, got '{text}'")
    raw = raw.strip()
    lowered = {"true": True, "false": False, "none": None}
    if raw in lowered:
        return name, lowered[raw]
    for convert in (int, float):
        try:
            return name, convert(raw)
        except ValueError:
            pass
    if raw.startswith("[") or raw.startswith('"'):
        try:
            return name, json.loads(raw)
        except json.JSONDecodeError:
            raise CnncError(f"--set {name}: cannot read the value {raw}") from None
    return name, raw


def _load_graph(args):
    from . import load

    settings = dict(parse_setting(s) for s in args.set)
    return load(args.file, network=args.network, **settings)


def cmd_check(args) -> int:
    from .report import summary_data

    graph = _load_graph(args)
    if args.json:
        print(json.dumps(summary_data(graph), indent=2))
    else:
        print(graph.summary())
    return 0


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a .cnn file")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="set a hyperparameter (repeatable)")
    p.add_argument("--network", help="which network of the file (default: the last one)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnc", description="Compile, check, train and benchmark convolutional networks written in .cnn files.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="infer every shape and print the layer table")
    _add_model_arguments(check)
    check.add_argument("--json", action="store_true", help="print the table as JSON")
    check.set_defaults(run=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.run(args)
    except CnncError as e:
        print(str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnc: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in cnnc itself: say so in one line
        if os.environ.get("CNNC_DEBUG"):
            raise
        print(f"cnnc: internal error: {type(e).__name__}: {e} (set CNNC_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
