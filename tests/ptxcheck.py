"""Compile every CUDA kernel that programs launch to PTX, with numba-cuda and no GPU.

    python tests/ptxcheck.py [--cc 8.0]

The simulator runs kernels as Python, so it cannot tell whether numba-cuda can
compile them for a GPU. Here nothing runs: device arrays are host arrays, and
each launch compiles its kernel for the argument types it was given, which
needs numba-cuda and NVVM (`pip install 'numba-cuda[cu13]'`) but no GPU. The
programs are the library's models and the CUDA tests' programs, fused and
unfused, in inference, in both modes' forward passes and in a training step
with each optimizer. Prints one line per program and the number of distinct
kernels compiled; exits 1 at the first kernel that fails, naming it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    sys.exit("ptxcheck compiles for a real GPU: run it without NUMBA_ENABLE_CUDASIM=1")

from numba import cuda, typeof  # noqa: E402
from numba.cuda.dispatcher import CUDADispatcher  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


class HostArray(np.ndarray):
    """A host array standing in for a device array (the copies a DeviceNDArray offers)."""

    def copy_to_device(self, array, stream=0):
        self[...] = array

    def copy_to_host(self, out=None, stream=0):
        if out is None:
            return np.array(self)
        out[...] = self
        return out


def _device_array(shape, dtype=np.float64, *args, **kwargs):
    return np.zeros(shape, dtype).view(HostArray)


def _to_device(array, *args, **kwargs):
    return np.array(array).view(HostArray)


def _signature_of(value):
    if isinstance(value, np.ndarray):
        return typeof(value.view(np.ndarray))
    if isinstance(value, tuple):
        return typeof(tuple(v.view(np.ndarray) if isinstance(v, np.ndarray) else v for v in value))
    return typeof(value)


class Compiler:
    """Stands in for kernel launches: compiles each (kernel, argument types) once."""

    def __init__(self, cc: tuple[int, int]):
        self.cc = cc
        self.done: set = set()

    def launch(self, dispatcher, *config):
        def compile_for(*args):
            signature = tuple(_signature_of(a) for a in args)
            key = (dispatcher.py_func, signature)
            if key in self.done:
                return
            try:
                cuda.compile_ptx(dispatcher.py_func, signature, cc=self.cc)
            except Exception as e:
                name = dispatcher.py_func.__name__
                raise SystemExit(f"kernel {name} does not compile for the GPU with {signature}:\n{e}") from None
            self.done.add(key)

        return compile_for


def install(compiler: Compiler) -> None:
    from types import SimpleNamespace

    from numba.cuda import dispatcher

    # Device functions compile for the current device's compute capability: make it the one asked for.
    device = SimpleNamespace(compute_capability=compiler.cc)
    dispatcher.get_current_device = lambda: device
    cuda.device_array = _device_array
    cuda.to_device = _to_device
    cuda.is_available = lambda: True
    CUDADispatcher.__getitem__ = lambda self, config: compiler.launch(self, *config)


def programs() -> dict[str, str]:
    """Every program whose kernels are checked: library models, then the CUDA tests' programs."""
    import test_cuda_activation as activation
    import test_cuda_arith as arith
    import test_cuda_conv as conv
    import test_cuda_dense_dropout2d as dense_dropout2d
    import test_cuda_loss as loss
    import test_cuda_norm as norm
    import test_cuda_pool as pool
    import test_cuda_reduce as reduce
    import test_cuda_target as target
    import test_normalize as normalize

    found = {name: name for name in ("lenet", "resnet18_cifar", "resnet50")}
    found.update({f"conv:{k}": v for k, v in {**conv.UNFUSED, **conv.FUSED, "wide_dense": conv.WIDE_DENSE}.items()})
    found.update({f"pool:{k}": pool.net(v) for k, v in pool.POOLS.items()})
    found.update({
        "norm:image": norm.IMAGE_BATCHNORM, "norm:vector": norm.VECTOR_BATCHNORM, "norm:dense": norm.DENSE_BATCHNORM,
        "norm:after_elementwise": norm.BATCHNORM_AFTER_ELEMENTWISE, "global_grad_epilogue": pool.GLOBAL_GRAD_EPILOGUE,
        "dropout": norm.DROPOUT, "reshapes": pool.RESHAPES, "concat:two": pool.CONCAT_TWO,
        "concat:three": pool.CONCAT_THREE, "broadcast:add": pool.broadcast("+"), "broadcast:mul": pool.broadcast("*"),
        "loss:mse": norm.MSE, "loss:bce": norm.BCE, "softmax:channels": norm.softmaxes(1), "softmax:last": norm.softmaxes(-1),
        "activation:chain": activation.CHAIN, "target:small_lenet": target.SMALL_LENET,
    })
    found.update({f"prelu:{k}": v for k, v in activation.PRELU.items()})
    found.update({f"arith:{k}": v for k, v in arith.ARITH.items()})
    found.update({f"loss:{k}": v for k, v in loss.LOSSES.items()})
    found.update({f"dense_rank:{k}": v for k, v in dense_dropout2d.DENSE_RANK.items()})
    found.update({f"dropout2d:{k}": v for k, v in dense_dropout2d.DROPOUT2D.items()})
    found.update({f"reduce:{k}": v for k, v in reduce.REDUCE.items()})
    found.update({f"normalize:{k}": v for k, v in normalize.CUDA.items()})
    for body in activation.ACTIVATIONS:
        found[f"activation:{body}"] = f"network n {{\n input x: [5]\n y = {body}\n output loss = mse(y, x)\n}}"
    return found


def exercise(source: str, fuse: bool, dtype: str = "float32", batch: int = 2) -> None:
    """Every kind of run of a program on the cuda target: forward in both modes, gradients, optimizer steps."""
    import cnnc
    from cudacheck import random_inputs

    rng = np.random.default_rng(0)
    net = cnnc.compile(source, target="cuda", fuse=fuse, dtype=dtype)
    feeds = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in random_inputs(net, batch, rng).items()}
    outputs = net.graph.output_types()
    scalar = [name for name, t in outputs.items() if t.rank == 0]
    floats = [name for name, t in net.graph.input_types().items() if t.dtype.startswith("float")]
    for mode in ("eval", "train"):
        getattr(net, mode)()
        net(**feeds)
        if scalar:
            net.grad(feeds, loss=None, inputs=floats)
        else:
            logits = "logits" if "logits" in outputs else next(iter(outputs))
            t = outputs[logits]
            labels = rng.integers(0, t.shape[1], (batch, *t.shape[2:]))
            net.grad(feeds, labels, inputs=floats)
            if len(feeds) == 1 and mode == "train":
                for optimizer in (cnnc.optim.SGD(lr=0.1, momentum=0.9), cnnc.optim.Adam()):
                    net.trainer(optimizer=optimizer, output=logits).step(next(iter(feeds.values())), labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cc", default="8.0", help="compute capability to compile for (default 8.0)")
    parser.add_argument("--only", help="programs whose name contains this")
    args = parser.parse_args()
    compiler = Compiler(tuple(int(p) for p in args.cc.split(".")))
    install(compiler)
    for name, source in programs().items():
        if args.only and args.only not in name:
            continue
        start = time.perf_counter()
        for fuse in (True, False):
            exercise(source, fuse)
        if name == "lenet":  # the float64 variants of the kernels
            exercise(source, True, "float64")
        print(f"{name:40s} {time.perf_counter() - start:6.1f} s  ({len(compiler.done)} kernels so far)", flush=True)
    print(f"all {len(compiler.done)} distinct kernels compile for compute capability {args.cc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
