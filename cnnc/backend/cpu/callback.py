"""Fused chains as C callbacks: what the generated chain modules import (see cnnc.backend.cpu.kernel).

A kernel calls its fused chain (the holes `_epilogue` and `_post`) through a function
pointer, so that the kernel's own module is the same whatever the chain, and a parallel
kernel compiles once per dtype instead of once per chain. The chain is a Numba `cfunc`
of one fixed signature of integers: the output's address, the range and row length,
and the address of the kernel's table, an int64 array that holds the callback's own
address and then each operand's address and size, in the order of the chain's operands
(`_post` also takes the normalized input and the per-channel mean, scale and shift).
The chain rebuilds its arrays from those addresses. Kernels receive a plain array, so
their arguments type as fast as before, whatever the chain.
"""

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import sigutils
from numba.core.ccallback import CFunc
from numba.extending import intrinsic

ARGUMENTS = {"_epilogue": 5, "_post": 9}  # the integers each hole's callback takes


@intrinsic
def _pointer(typingctx, address, dtype):
    # An integer address as a pointer to elements of dtype (a NumPy scalar type).
    sig = types.CPointer(dtype.instance_type)(address, dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@njit  # compiled into each chain's callback, and cached with it
def at(address, size, dtype):
    """The `size` elements of type `dtype` at `address`, as an array."""
    return carray(_pointer(address, dtype), size)


@intrinsic
def call(typingctx, address, arguments):
    # Call the C function at `address` with a tuple of integers; it returns nothing.
    sig = types.void(address, arguments)

    def codegen(context, builder, signature, args):
        integers = [builder.extract_value(args[1], k) for k in range(len(signature.args[1]))]
        function = ir.FunctionType(ir.VoidType(), [v.type for v in integers])
        builder.call(builder.inttoptr(args[0], function.as_pointer()), integers)
        return context.get_dummy_value()

    return sig, codegen


def table(compiled, operands) -> np.ndarray:
    """What a kernel gets for its chain: the callback's address, then each operand's address and size."""
    return np.array([compiled.address, *(v for a in operands for v in (a.ctypes.data, a.size))], dtype=np.int64)


def callback(function, hole: str) -> CFunc:
    """`function` as the callback of `hole`, cached on disk beside its module; compiled by the caller
    (cnnc.backend.cpu.kernel), once it has checked the cache files. Float errors give inf and NaN, as in
    NumPy: a callback cannot raise."""
    signature = sigutils.normalize_signature(types.void(*[types.intp] * ARGUMENTS[hole]))
    compiled = CFunc(function, signature, locals={}, options={"error_model": "numpy"})
    compiled.enable_caching()
    return compiled
