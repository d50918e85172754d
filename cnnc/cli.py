"""The `cnnc` command. Every failure prints a located message and exits 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

from .errors import MAX_INT, CnncError, closest
from .runtime.losses import default_output


def parse_setting(text: str) -> tuple[str, Any]:
    """`NAME=VALUE` from --set: VALUE is a number, true/false, a [list] or else a string."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise CnncError(f"--set expects NAME=VALUE, got '{text if len(text) <= 40 else text[:37] + '...'}'")
    raw = raw.strip()
    shown = raw if len(raw) <= 40 else raw[:37] + "..."
    lowered = {"true": True, "false": False, "none": None}
    if raw in lowered:
        return name, lowered[raw]

    def integer(digits: str) -> int:
        if len(digits.lstrip("+-0")) > 19:  # more digits than 2^62 has (int() of thousands is refused)
            raise CnncError(f"--set {name}: {digits if len(digits) <= 24 else digits[:20] + '...'} is too large (integers are limited to 2^62)")
        return int(digits)

    # Numbers in ASCII digits only, as in a program (int() and float() read any script's digits).
    if raw.isascii() and raw.lstrip("+-").isdigit():
        return name, integer(raw)
    if raw.isascii():
        try:
            return name, float(raw)
        except ValueError:
            pass
    if raw.startswith("[") or raw.startswith('"'):
        # Further limits (sizes, depth) are checked when the network is built, as for values from Python.
        try:
            return name, json.loads(raw, parse_int=integer)
        except RecursionError:  # json recurses once per nested list
            raise CnncError(f"--set {name}: the value {shown} is nested too deeply") from None
        except ValueError:
            raise CnncError(f"--set {name}: cannot read the value {shown} (a number, true, false, none, a \"string\" or a [list])") from None
    return name, raw


# (least, largest) of each integer option: 2^62 as for --set (larger counts are mistakes that
# would overflow later arithmetic); a seed is anything NumPy's generators take below 2^63.
_INT_RANGES = {"batch": (1, MAX_INT), "epochs": (1, MAX_INT), "limit_batches": (1, MAX_INT), "top": (1, MAX_INT),
               "seed": (0, 2**63 - 1)}  # fmt: skip


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_arguments(args) -> None:
    """Refuse counts and hyperparameters that make no sense, before anything is loaded or compiled."""
    for name, (least, largest) in _INT_RANGES.items():
        value = getattr(args, name, None)
        if value is not None and value < least:
            raise CnncError(f"{_option(name)} must be at least {least}, got {value}")
        if value is not None and value > largest:
            limit = "it must be below 2^63" if name == "seed" else "at most 2^62"
            raise CnncError(f"{_option(name)} is too large ({limit}), got {value}")
    if args.command == "train":
        _check_hyperparameters(args)


def _check_hyperparameters(args) -> None:
    for name in ("lr", "momentum", "weight_decay"):
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            raise CnncError(f"{_option(name)} must be a finite number, got {value}")
    if args.lr is not None and args.lr <= 0:
        raise CnncError(f"--lr must be positive, got {args.lr}")
    if args.momentum is not None and not 0 <= args.momentum < 1:
        raise CnncError(f"--momentum must be at least 0 and below 1, got {args.momentum}")
    if args.weight_decay < 0:
        raise CnncError(f"--weight-decay must be at least 0, got {args.weight_decay}")
    if args.momentum is not None and args.optimizer != "sgd":  # Adam has no momentum setting to give it to
        raise CnncError(f"--momentum applies to --optimizer sgd only, not {args.optimizer}")


def _load_graph(args):
    from . import load

    settings = dict(parse_setting(s) for s in args.set)
    return load(args.file, network=args.network, **settings)


def cmd_check(args) -> int:
    from .explain import explain, peak_line
    from .report import summary_data

    graph = _load_graph(args)
    if args.json:
        data = summary_data(graph)
        data["planned_peak_bytes"] = {"batch": args.batch, "inference": explain(graph, False, args.batch)["peak_bytes"]["planned"]}
        try:
            data["planned_peak_bytes"]["training_step"] = explain(graph, True, args.batch)["peak_bytes"]["planned"]
        except CnncError:
            data["planned_peak_bytes"]["training_step"] = None
        print(json.dumps(data, indent=2))
    else:
        print(graph.summary())
        print(peak_line(graph, args.batch))
    return 0


def cmd_explain(args) -> int:
    from .explain import explain, explain_text

    report = explain(_load_graph(args), training=args.training, batch=args.batch, fuse=not args.no_fuse)
    print(json.dumps(report, indent=2) if args.json else explain_text(report))
    return 0


def cmd_graph(args) -> int:
    from . import drawing
    from .explain import step_graph
    from .passes.pipeline import optimize

    graph = _load_graph(args)
    schedule = None  # the fused groups, drawn as clusters
    if args.stage == "optimized":
        schedule = optimize(graph, training=False, fuse=not args.no_fuse)
    elif args.stage == "training":
        schedule = optimize(step_graph(graph, True), training=True, fuse=not args.no_fuse)
    if schedule is not None:
        graph = schedule.graph
    path = drawing.write(graph, args.output, title=f"{graph.name} ({args.stage})", schedule=schedule)
    print(f"wrote {path}")
    return 0


def cmd_train(args) -> int:
    from . import compile
    from .runtime import optim, weights
    from .runtime.data import load_dataset
    from .runtime.train import check_batches, fit

    graph = _load_graph(args)
    out = weights.check_writable(args.out or f"{graph.name}.npz")  # now, not after the training
    image = graph.input_types()[next(iter(graph.inputs))].sample_shape
    data = load_dataset(args.dataset, image)
    if data.image_shape != image:
        raise CnncError(f"data set {data.name} gives images {list(data.image_shape)}; the network expects {list(image)}")
    check_batches(data, args.batch)  # before compiling: a training of no step would save untrained weights
    net = compile(graph, target=args.target, seed=args.seed, fuse=not args.no_fuse)
    lr = {} if args.lr is None else {"lr": args.lr}  # else the optimizer's own default
    if args.optimizer == "sgd":
        opt = optim.SGD(**lr, momentum=0.9 if args.momentum is None else args.momentum, weight_decay=args.weight_decay)
    else:
        opt = optim.Adam(**lr, weight_decay=args.weight_decay)
    print(
        f"training {net.graph.name} ({net.graph.parameter_count():,} parameters) on {data.name}: "
        f"{len(data.train_x):,} training and {len(data.test_x):,} held-out examples{_on_target(args.target)}"
    )
    trainer = net.trainer(loss="cross_entropy", optimizer=opt)
    start = time.perf_counter()
    trainer.compile(args.batch)
    seconds = time.perf_counter() - start
    if args.target == "cuda":  # numba-cuda compiles a kernel at its first launch (from the disk cache later)
        print(f"built the training step in {seconds:.2f} s; its CUDA kernels compile as the first step runs")
    else:
        print(f"compiled the training step in {seconds:.2f} s")
    try:
        fit(net, data, trainer, epochs=args.epochs, batch=args.batch, seed=args.seed, limit_batches=args.limit_batches,
            schedule=args.schedule)
    except CnncError as e:
        kept = f"{out} was left as it was" if out.exists() else "no weights were saved"
        raise CnncError(f"{e.message}\n{kept}") from None
    return _save_trained(net, out)


def _save_trained(net, out) -> int:
    """Save the weights to `out`; if that fails after all, beside the working folder, and say where."""
    from .runtime import weights

    try:
        net.save(out)
    except weights.SaveError as e:
        for fallback in _fallback_paths(net.graph.name):
            try:
                net.save(fallback)
            except weights.SaveError:
                if fallback.exists() and fallback.stat().st_size == 0:  # the empty file reserved for it
                    fallback.unlink()
                continue
            print(f"{e.message}; the weights were saved to {fallback} instead", file=sys.stderr)
            return 2
        raise CnncError(f"{e.message}, nor in {os.getcwd()} or the temporary folder: the weights are lost") from None
    print(f"weights saved to {out}")
    return 0


def _fallback_paths(name: str):
    """Where weights that could not be saved as asked go: ./NAME.npz if there is none yet, else a new file
    here or in the temporary folder (never over an existing file)."""
    import tempfile
    from pathlib import Path

    plain = Path(f"{name}.npz").absolute()
    if not plain.exists():
        yield plain
    for folder in (os.getcwd(), tempfile.gettempdir()):
        try:
            fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".npz", dir=folder)
        except OSError:
            continue
        os.close(fd)
        yield Path(path)


def _on_target(target: str) -> str:
    if target == "cpu":
        return ""
    from .backend.cuda import simulated

    return f", on the {target} target" + (" (Numba's CUDA simulator)" if simulated() else "")


def cmd_run(args) -> int:
    import numpy as np

    from . import compile
    from .runtime.images import read_input

    net = compile(_load_graph(args), target=args.target, fuse=not args.no_fuse)
    net.load(args.weights)  # checked against this network from the file's headers, before any array is read
    net.eval()
    name, t = next(iter(net.graph.input_types().items()))
    x = read_input(args.input, t.sample_shape)
    out = net(x)
    if isinstance(out, dict):
        out = out[default_output(out)]
    if out.ndim != 2:
        np.set_printoptions(precision=4, suppress=True)
        print(out)
        return 0
    shifted = np.exp(out - out.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    for i, row in enumerate(probs):
        top = np.argsort(-row)[: args.top]
        label = f"example {i}: " if len(probs) > 1 else ""
        print(label + "  ".join(f"class {c}: {row[c] * 100:.1f}%" for c in top))
    return 0


def cmd_demo(args) -> int:
    from . import demos

    if args.list or args.name is None:
        for name, title, paper, shows in demos.describe():
            print(f"{name:12} {title}: {shows}\n{'':12} {paper}")
        return 0 if args.list else 2
    if args.name not in demos.DEMOS:
        raise CnncError(f"unknown demo '{args.name}'{closest(args.name, demos.DEMOS)}; the demos are {', '.join(demos.DEMOS)}")
    result = demos.run(args.name, args.out, quick=args.quick, seed=args.seed, say=lambda text: print(text, flush=True))
    for metric in result.metrics:
        print(("(quick run) " if args.quick else "") + str(metric))
    for picture in result.pictures:
        print(f"wrote {picture}")
    return 0


def cmd_emit(args) -> int:
    from .backend.lowering import CPU, CUDA, lower_group
    from .explain import step_graph

    if args.target == "cuda":  # the source only: nothing is compiled, so no GPU is needed
        from .backend.cuda.kernel import module_text
    else:
        from .backend.cpu.kernel import module_text
    from .passes.pipeline import optimize

    schedule = optimize(step_graph(_load_graph(args), args.training), training=args.training, fuse=not args.no_fuse)
    graph = schedule.graph
    users: dict[str, list[str]] = {}
    for group in schedule.groups:
        if group.kind == "view":
            continue
        kernel = lower_group(graph, group, CUDA if args.target == "cuda" else CPU).kernel
        users.setdefault(module_text(kernel), []).append(f"{' + '.join(group.nodes)} -> {kernel.entry}")
    print(f"# {graph.name}: {sum(len(u) for u in users.values())} kernel calls, {len(users)} distinct kernel modules\n")
    for source, names in users.items():
        print("# " + "=" * 76)
        for name in names:
            print(f"# {name}")
        print(source)
    return 0


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a .cnn file")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="set a hyperparameter (repeatable)")
    p.add_argument("--network", help="which network of the file (default: the last one)")


def _add_no_fuse(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-fuse", action="store_true", help="run every node as its own kernel (to compare)")


def make_parser() -> argparse.ArgumentParser:
    from .runtime import optim

    parser = argparse.ArgumentParser(prog="cnnc", description="Compile, check, train and benchmark convolutional networks written in .cnn files.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="infer every shape and print the layer table")
    _add_model_arguments(check)
    check.add_argument("--json", action="store_true", help="print the table as JSON")
    check.add_argument("--batch", type=int, default=1, help="the batch size of the planned peak memory (default 1)")
    check.set_defaults(run=cmd_check)

    explain = commands.add_parser("explain", help="list the fused groups, refused fusions, kernel counts and planned memory")
    _add_model_arguments(explain)
    explain.add_argument("--training", action="store_true", help="a training step (forward, loss and backward) instead of inference")
    explain.add_argument("--batch", type=int, default=1)
    explain.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_no_fuse(explain)
    explain.set_defaults(run=cmd_explain)

    graph = commands.add_parser("graph", help="draw the graph with Graphviz (.svg, .png, .pdf or .dot)")
    _add_model_arguments(graph)
    graph.add_argument("--stage", choices=("parsed", "optimized", "training"), default="optimized",
                       help="as parsed, optimized for inference (fused groups as clusters), or the optimized training step")
    graph.add_argument("-o", "--output", required=True, metavar="OUT", help="OUT.svg, OUT.png, OUT.pdf or OUT.dot")
    _add_no_fuse(graph)
    graph.set_defaults(run=cmd_graph)

    train = commands.add_parser("train", help="train a network on a data set and save its weights")
    _add_model_arguments(train)
    train.add_argument("--dataset", default="digits", help="digits (built in), mnist:DIR, fashion-mnist:DIR or cifar10:DIR")
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--batch", type=int, default=32)
    train.add_argument("--lr", type=float, default=None, help=f"learning rate (default {optim.SGD.DEFAULT_LR} for sgd, {optim.Adam.DEFAULT_LR} for adam)")
    train.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    train.add_argument("--schedule", choices=("cosine", "constant"), default="cosine", help="learning-rate schedule over the epochs")
    train.add_argument("--momentum", type=float, default=None, help="SGD's momentum (default 0.9)")
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--limit-batches", type=int, default=None, metavar="N", help="at most N batches per epoch")
    train.add_argument("--out", metavar="WEIGHTS", help="where to save the weights (default NETWORK.npz)")
    train.add_argument("--target", choices=("cpu", "cuda"), default="cpu", help="cpu, or cuda (an NVIDIA GPU, or Numba's CUDA simulator)")
    _add_no_fuse(train)
    train.set_defaults(run=cmd_train)

    run = commands.add_parser("run", help="run a network on an input (.npy or .png) and print the top classes")
    _add_model_arguments(run)
    run.add_argument("--weights", required=True, help="an .npz written by cnnc train or Model.save")
    run.add_argument("--input", required=True, help="a .npy array ([C,H,W] or [N,C,H,W]) or a .png image")
    run.add_argument("--top", type=int, default=3)
    run.add_argument("--target", choices=("cpu", "cuda"), default="cpu")
    _add_no_fuse(run)
    run.set_defaults(run=cmd_run)

    emit = commands.add_parser("emit", help="print the generated kernel source")
    _add_model_arguments(emit)
    emit.add_argument("--training", action="store_true", help="the training step's kernels (forward, loss and backward)")
    emit.add_argument("--target", choices=("cpu", "cuda"), default="cpu", help="whose kernels: Numba's CPU or numba-cuda")
    _add_no_fuse(emit)
    emit.set_defaults(run=cmd_emit)

    demo = commands.add_parser("demo", help="train a library model from scratch on offline data, print its metrics, write pictures")
    demo.add_argument("name", nargs="?", help="the demo (see --list)")
    demo.add_argument("--list", action="store_true", help="list the demos")
    demo.add_argument("--quick", action="store_true", help="a few steps only: runs end to end and writes the pictures; the metrics mean nothing")
    demo.add_argument("--out", default="demo_out", help="the folder for the pictures (default demo_out)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=cmd_demo)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, like errors, not as Python's file:line and source."""
    print(f"cnnc: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            check_arguments(args)
            return args.run(args)
    except CnncError as e:
        print(str(e), file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`cnnc emit ... | head`)
        sys.stderr.close()
        return 0
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
