"""Convolutions: conv (cross-correlation, as every framework computes it) and conv_transpose."""

from __future__ import annotations

from typing import Any

from ..backend.cpu.kernel import OUT, CpuKernel, In, Param, Scratch
from .base import (
    Attr,
    AttrError,
    Attrs,
    Fusion,
    Op,
    ShapeError,
    TensorType,
    boolean,
    expect_float,
    expect_rank,
    int_list,
    nonnegative_pair,
    param,
    positive_int,
    positive_pair,
    register,
    window_out,
)
from ..graph import BATCH


def padding(value: Any) -> Any:
    """An integer, a pair [h, w], or "same" / "valid"."""
    if value in ("same", "valid"):
        return value
    if isinstance(value, str):
        raise AttrError(f'expected an integer, a pair, "same" or "valid", got "{value}"')
    return nonnegative_pair(value)


def conv_pads(a: Attrs) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding. "same" puts the odd pixel at the end, as PyTorch does."""
    if a.pad == "valid":
        return (0, 0, 0, 0)
    if a.pad == "same":
        th = a.dilation[0] * (a.kernel[0] - 1)
        tw = a.dilation[1] * (a.kernel[1] - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    return (a.pad[0], a.pad[0], a.pad[1], a.pad[1])


def _check_groups(name: str, cin: int, cout: int, groups: int) -> None:
    if cin % groups or cout % groups:
        raise ShapeError(f"{name}: groups={groups} must divide both the input channels ({cin}) and the output channels ({cout})")


# -- kernels ------------------------------------------------------------------
#
# Every 4-D buffer is NHWC; weights keep PyTorch's layout [out, in/groups, kh, kw].
# One source serves conv, conv_transpose and their gradients:
#   conv_forward      im2col + GEMM; also conv_transpose's input gradient
#   conv_grad_input   gather + GEMM; also conv_transpose's forward
#   conv_grad_weight  im2col^T . dy; also conv_transpose's weight gradient (operands swapped)
# Work is split into tiles of rows (pixels across the whole batch) under one prange;
# each thread builds its tile in its own slice of the scratch buffer (found with
# get_thread_id) and calls np.dot, which runs single-threaded BLAS. Flat offsets are
# cast to uint64 so that Numba emits no negative-index wraparound in the copy loops.
CONV_SOURCE = """
@njit(cache=True)
def _im2col(xf, colf, r0, rows, H, W, C, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw, c0, cg):
    # Row r holds output pixel r0 + r (across the batch); columns are (kh, kw, c) so
    # that each tap copies a contiguous run of cg channels starting at channel c0.
    K = KH * KW * cg
    ohw = OH * OW
    for r in range(rows):
        p = r0 + r
        n = p // ohw
        q = p - n * ohw
        oh = q // OW
        ow = q - oh * OW
        for kh in range(KH):
            ih = oh * sh - pt + kh * dh
            for kw in range(KW):
                iw = ow * sw - pl + kw * dw
                dst = np.uint64(r * K + (kh * KW + kw) * cg)
                if ih >= 0 and ih < H and iw >= 0 and iw < W:
                    src = np.uint64(((n * H + ih) * W + iw) * C + c0)
                    for c in range(cg):
                        colf[dst + np.uint64(c)] = xf[src + np.uint64(c)]
                else:
                    for c in range(cg):
                        colf[dst + np.uint64(c)] = 0.0


@njit(parallel=True, cache=True)
def conv_forward(x, weight, bias, out, scratch, has_bias, sh, sw, pt, pl, dh, dw, groups, tile, nslots):
    # out[n, oh, ow, co] = sum x[n, oh*sh - pt + kh*dh, ow*sw - pl + kw*dw, g*cg + ci] * weight[co, ci, kh, kw]
    N, H, W, C = x.shape
    OH, OW, Cout = out.shape[1], out.shape[2], out.shape[3]
    cg, KH, KW = weight.shape[1], weight.shape[2], weight.shape[3]
    og = Cout // groups
    K = KH * KW * cg
    # The weight as one GEMM matrix per group: [groups, (kh, kw, ci), og].
    wsize = groups * K * og
    wm = scratch[:wsize]
    for co in range(Cout):
        g = co // og
        j = co - g * og
        for ci in range(cg):
            for kh in range(KH):
                for kw in range(KW):
                    wm[(g * K + (kh * KW + kw) * cg + ci) * og + j] = weight[co, ci, kh, kw]
    total = N * OH * OW
    out2 = out.reshape((total, Cout))
    xf = x.reshape(x.size)
    x2 = x.reshape((N * H * W, C))
    # A 1x1, stride-1, unpadded, ungrouped conv is a GEMM over the pixels as they are.
    plain = KH == 1 and KW == 1 and sh == 1 and sw == 1 and pt == 0 and pl == 0 and groups == 1 and OH == H and OW == W
    per = tile * (K + og) if groups > 1 else tile * K
    ntiles = (total + tile - 1) // tile
    for t in prange(ntiles):
        base = wsize + get_thread_id() * per
        r0 = t * tile
        rows = min(tile, total - r0)
        if plain:
            np.dot(x2[r0 : r0 + rows], wm.reshape((K, og)), out2[r0 : r0 + rows])
        elif groups == 1:
            col = scratch[base : base + rows * K]
            _im2col(xf, col, r0, rows, H, W, C, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw, 0, cg)
            np.dot(col.reshape((rows, K)), wm.reshape((K, og)), out2[r0 : r0 + rows])
        else:
            col = scratch[base : base + rows * K]
            ot = scratch[base + tile * K : base + tile * K + rows * og].reshape((rows, og))
            for g in range(groups):
                _im2col(xf, col, r0, rows, H, W, C, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw, g * cg, cg)
                np.dot(col.reshape((rows, K)), wm[g * K * og : (g + 1) * K * og].reshape((K, og)), ot)
                for r in range(rows):
                    for j in range(og):
                        out2[r0 + r, g * og + j] = ot[r, j]
        if has_bias:  # epilogue, while the tile's rows are in cache
            for r in range(r0, r0 + rows):
                for c in range(Cout):
                    out2[r, c] += bias[c]


@njit(parallel=True, cache=True)
def conv_grad_input(dy, weight, bias, dx, scratch, has_bias, sh, sw, pt, pl, dh, dw, groups, tile, nslots):
    # dx[n, ih, iw, g*cg + ci] = sum dy[n, oh, ow, co] * weight[co, ci, kh, kw] over the
    # (oh, ow, kh, kw) with oh*sh - pt + kh*dh = ih and ow*sw - pl + kw*dw = iw.
    # Gather formulation: each input pixel collects the dy rows of the output pixels whose
    # windows cover it, then one GEMM per group; tiles own their dx rows, so no races.
    # Pixels are grouped by phase (ih % sh, iw % sw): all pixels of one phase are reached
    # by the same taps, so the columns hold no structural zeros at stride > 1.
    N, OH, OW, Cout = dy.shape
    H, W, C = dx.shape[1], dx.shape[2], dx.shape[3]
    cg, KH, KW = weight.shape[1], weight.shape[2], weight.shape[3]
    og = Cout // groups
    nkh = np.zeros(sh, np.int64)
    khs = np.zeros((sh, KH), np.int64)
    for kh in range(KH):
        ph = (kh * dh - pt) % sh
        khs[ph, nkh[ph]] = kh
        nkh[ph] += 1
    nkw = np.zeros(sw, np.int64)
    kws = np.zeros((sw, KW), np.int64)
    for kw in range(KW):
        pw = (kw * dw - pl) % sw
        kws[pw, nkw[pw]] = kw
        nkw[pw] += 1
    nph = sh * sw
    # Per phase f = ph*sw + pw and group g, the weight matrix [(a, b, j), ci] of its taps.
    woff = np.zeros(nph + 1, np.int64)
    tstart = np.zeros(nph + 1, np.int64)
    for f in range(nph):
        ph = f // sw
        pw = f - ph * sw
        woff[f + 1] = woff[f] + groups * nkh[ph] * nkw[pw] * og * cg
        qh = (H - ph + sh - 1) // sh if ph < H else 0
        qw = (W - pw + sw - 1) // sw if pw < W else 0
        tstart[f + 1] = tstart[f] + (N * qh * qw + tile - 1) // tile
    wsize = woff[nph]
    wm = scratch[:wsize]
    for f in range(nph):
        ph = f // sw
        pw = f - ph * sw
        kp = nkh[ph] * nkw[pw] * og
        for g in range(groups):
            for a in range(nkh[ph]):
                for b in range(nkw[pw]):
                    for j in range(og):
                        row = woff[f] + (g * kp + (a * nkw[pw] + b) * og + j) * cg
                        for ci in range(cg):
                            wm[row + ci] = weight[g * og + j, ci, khs[ph, a], kws[pw, b]]
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    dx2 = dx.reshape((N * H * W, C))
    # At stride 1 without groups the one phase's rows are dx's rows, in order.
    direct = nph == 1 and groups == 1
    kmax = KH * KW * og
    per = tile * (kmax + cg)
    for t in prange(tstart[nph]):
        base = wsize + get_thread_id() * per
        f = 0
        while tstart[f + 1] <= t:
            f += 1
        ph = f // sw
        pw = f - ph * sw
        qh = (H - ph + sh - 1) // sh
        qw = (W - pw + sw - 1) // sw
        r0 = (t - tstart[f]) * tile
        rows = min(tile, N * qh * qw - r0)
        na = nkh[ph]
        nb = nkw[pw]
        kp = na * nb * og
        col = scratch[base : base + rows * kp]
        ot = scratch[base + tile * kmax : base + tile * kmax + rows * cg].reshape((rows, cg))
        for g in range(groups):
            for r in range(rows):
                p = r0 + r
                n = p // (qh * qw)
                q = p - n * qh * qw
                ih = ph + sh * (q // qw)
                iw = pw + sw * (q - (q // qw) * qw)
                for a in range(na):
                    th = ih + pt - khs[ph, a] * dh
                    oh = th // sh
                    inside = th >= 0 and oh < OH
                    for b in range(nb):
                        tw = iw + pl - kws[pw, b] * dw
                        ow = tw // sw
                        dst = np.uint64(r * kp + (a * nb + b) * og)
                        if inside and tw >= 0 and ow < OW:
                            src = np.uint64(((n * OH + oh) * OW + ow) * Cout + g * og)
                            for j in range(og):
                                col[dst + np.uint64(j)] = dyf[src + np.uint64(j)]
                        else:
                            for j in range(og):
                                col[dst + np.uint64(j)] = 0.0
            wg = wm[woff[f] + g * kp * cg : woff[f] + (g + 1) * kp * cg].reshape((kp, cg))
            if direct:
                if kp > 0:
                    np.dot(col.reshape((rows, kp)), wg, dx2[r0 : r0 + rows])
                else:
                    dx2[r0 : r0 + rows] = 0.0
                if has_bias:
                    for r in range(r0, r0 + rows):
                        for c in range(C):
                            dx2[r, c] += bias[c]
            else:
                if kp > 0:
                    np.dot(col.reshape((rows, kp)), wg, ot)
                else:
                    ot[:] = 0.0
                for r in range(rows):
                    p = r0 + r
                    n = p // (qh * qw)
                    q = p - n * qh * qw
                    ih = ph + sh * (q // qw)
                    iw = pw + sw * (q - (q // qw) * qw)
                    dst = np.uint64(((n * H + ih) * W + iw) * C + g * cg)
                    for ci in range(cg):
                        v = ot[r, ci]
                        if has_bias:
                            v += bias[g * cg + ci]
                        dxf[dst + np.uint64(ci)] = v


@njit(parallel=True, cache=True)
def conv_grad_weight(x, dy, dwt, scratch, sh, sw, pt, pl, dh, dw, groups, tile, nslots):
    # dwt[co, ci, kh, kw] = sum over output pixels of dy[n, oh, ow, co] * x[n, oh*sh - pt + kh*dh, ow*sw - pl + kw*dw, g*cg + ci]:
    # col^T . dy per row tile, accumulated per slot (a fixed share of the tiles, so the
    # sum does not depend on scheduling), then reduced into PyTorch's layout.
    N, H, W, C = x.shape
    OH, OW, Cout = dy.shape[1], dy.shape[2], dy.shape[3]
    cg, KH, KW = dwt.shape[1], dwt.shape[2], dwt.shape[3]
    og = Cout // groups
    K = KH * KW * cg
    wsize = groups * K * og
    total = N * OH * OW
    ntiles = (total + tile - 1) // tile
    xf = x.reshape(x.size)
    dyf = dy.reshape(dy.size)
    dy2 = dy.reshape((total, Cout))
    per = wsize + K * og + tile * K + (tile * og if groups > 1 else 0)
    for s in prange(nslots):
        base = s * per
        acc = scratch[base : base + wsize]
        tmp = scratch[base + wsize : base + wsize + K * og].reshape((K, og))
        cbase = base + wsize + K * og
        acc[:] = 0.0
        for t in range(s * ntiles // nslots, (s + 1) * ntiles // nslots):
            r0 = t * tile
            rows = min(tile, total - r0)
            col = scratch[cbase : cbase + rows * K]
            for g in range(groups):
                _im2col(xf, col, r0, rows, H, W, C, OH, OW, KH, KW, sh, sw, pt, pl, dh, dw, g * cg, cg)
                if groups == 1:
                    np.dot(col.reshape((rows, K)).T, dy2[r0 : r0 + rows], tmp)
                else:
                    dt = scratch[cbase + tile * K : cbase + tile * K + rows * og]
                    for r in range(rows):
                        src = np.uint64((r0 + r) * Cout + g * og)
                        for j in range(og):
                            dt[np.uint64(r * og + j)] = dyf[src + np.uint64(j)]
                    np.dot(col.reshape((rows, K)).T, dt.reshape((rows, og)), tmp)
                tf = tmp.reshape(K * og)
                ab = g * K * og
                for i in range(K * og):
                    acc[ab + i] += tf[i]
    for co in prange(Cout):
        g = co // og
        j = co - g * og
        for ci in range(cg):
            for kh in range(KH):
                for kw in range(KW):
                    i = (g * K + (kh * KW + kw) * cg + ci) * og + j
                    v = 0.0
                    for s in range(nslots):
                        v += scratch[s * per + i]
                    dwt[co, ci, kh, kw] = v
"""


def _slots() -> int:
    """Thread slots in scratch: get_thread_id() is below Numba's pool size."""
    from numba import config

    return max(1, int(config.NUMBA_NUM_THREADS))


def _tile(k: int) -> int:
    """Rows per tile, so that a tile of columns (rows x k) stays near 512 KB in float32."""
    return int(max(32, min(512, (1 << 17) // max(k, 1))))


def _geometry(stride, pads, dilation, groups) -> tuple[int, ...]:
    return (stride[0], stride[1], pads[0], pads[1], dilation[0], dilation[1], groups)


def forward_kernel(cin: int, cout: int, kernel, stride, pads, dilation, groups: int, bias) -> CpuKernel:
    """conv_forward from input 0 with `weight`: conv, and conv_transpose's input gradient.

    `bias` is Param("bias"), or None (a 1-D placeholder keeps one compiled signature).
    """
    cg, og = cin // groups, cout // groups
    k = kernel[0] * kernel[1] * cg
    tile = _tile(k)
    slots = _slots()
    size = cout * k + slots * tile * (k + (og if groups > 1 else 0))
    return CpuKernel(
        CONV_SOURCE,
        "conv_forward",
        (In(0), Param("weight"), bias or In(0, flat=True), OUT, Scratch((size,)), bias is not None,
         *_geometry(stride, pads, dilation, groups), tile, slots),
    )


def grad_input_kernel(cin: int, cout: int, kernel, stride, pads, dilation, groups: int, bias) -> CpuKernel:
    """conv_grad_input from input 0 (dy, `cout` channels) with `weight` into `cin` channels:
    conv's input gradient, and conv_transpose's forward."""
    cg, og = cin // groups, cout // groups
    kmax = kernel[0] * kernel[1] * og
    tile = _tile(max(1, kmax // (stride[0] * stride[1])))
    slots = _slots()
    size = cout * kernel[0] * kernel[1] * cg + slots * tile * (kmax + cg)
    return CpuKernel(
        CONV_SOURCE,
        "conv_grad_input",
        (In(0), Param("weight"), bias or In(0, flat=True), OUT, Scratch((size,)), bias is not None,
         *_geometry(stride, pads, dilation, groups), tile, slots),
    )


def grad_weight_kernel(cin: int, cout: int, kernel, stride, pads, dilation, groups: int) -> CpuKernel:
    """conv_grad_weight from inputs (x with `cin` channels, dy with `cout`) into [cout, cin/groups, kh, kw]."""
    cg, og = cin // groups, cout // groups
    k = kernel[0] * kernel[1] * cg
    tile = _tile(k)
    slots = _slots()
    per = groups * k * og + k * og + tile * k + (tile * og if groups > 1 else 0)
    return CpuKernel(
        CONV_SOURCE,
        "conv_grad_weight",
        (In(0), In(1), OUT, Scratch((slots * per,)), *_geometry(stride, pads, dilation, groups), tile, slots),
    )


@register
class Conv(Op):
    """2-D convolution over [channels, height, width]; weight [out, in/groups, kh, kw]."""

    name = "conv"
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (
        Attr("channels", positive_int, doc="output channels"),
        Attr("kernel", positive_pair, doc="kernel size, n or [kh, kw]"),
        Attr("stride", positive_pair, 1),
        Attr("pad", padding, 0, doc='n, [ph, pw], "same" or "valid"'),
        Attr("dilation", positive_pair, 1),
        Attr("groups", positive_int, 1),
        Attr("bias", boolean, True),
    )

    def infer(self, a, x):
        expect_rank(self.name, x, 4)
        expect_float(self.name, x)
        _, cin, h, w = x.shape
        _check_groups(self.name, cin, a.channels, a.groups)
        if a.pad == "same" and a.stride != (1, 1):
            raise ShapeError('conv: pad="same" needs stride 1')
        pt, pb, pl, pr = conv_pads(a)
        oh = window_out(h, a.kernel[0], a.stride[0], pt, pb, a.dilation[0])
        ow = window_out(w, a.kernel[1], a.stride[1], pl, pr, a.dilation[1])
        if oh < 1 or ow < 1:
            raise ShapeError(
                f"conv: kernel {list(a.kernel)} (dilation {list(a.dilation)}) does not fit "
                f"the padded input {x}"
            )
        return TensorType((BATCH, a.channels, oh, ow), x.dtype)

    def params(self, a, x):
        cin = x.shape[1]
        fan_in = cin // a.groups * a.kernel[0] * a.kernel[1]
        specs = [param("weight", (a.channels, cin // a.groups, *a.kernel), "kaiming_uniform", fan_in)]
        if a.bias:
            specs.append(param("bias", (a.channels,), "fan_in_uniform", fan_in))
        return specs

    def macs(self, a, out, x):
        return out.sample_elements() * (x.shape[1] // a.groups) * a.kernel[0] * a.kernel[1]

    pads = staticmethod(conv_pads)

    def cpu(self, a, out, x):
        pt, _, pl, _ = conv_pads(a)
        bias = Param("bias") if a.bias else None
        return forward_kernel(x.shape[1], a.channels, a.kernel, a.stride, (pt, pl), a.dilation, a.groups, bias)

    def grad(self, g, dy):
        a = g.node.attrs
        x = g.node.inputs[0]
        pt, _, pl, _ = conv_pads(a)
        geometry = dict(stride=a.stride, pads=(pt, pl), dilation=a.dilation, groups=a.groups)
        if g.needs_input_grad(0):  # usually not: the first conv's input is the image
            weight = {"weight": g.node.params["weight"]}
            shape = g.type_of(x).sample_shape
            g.input_grad(0, g.apply("conv_grad_input", [dy], weight, shape=shape, kernel=a.kernel, **geometry))
        if g.needs_param_grad("weight"):
            g.param_grad("weight", g.apply("conv_grad_weight", [x, dy], kernel=a.kernel, **geometry))
        if a.bias and g.needs_param_grad("bias"):
            g.param_grad("bias", g.apply("bias_grad", [dy]))


@register
class ConvTranspose(Op):
    """Transposed convolution (the gradient of conv w.r.t. its input); weight [in, out/groups, kh, kw]."""

    name = "conv_transpose"
    fusion = Fusion.OUT_ELEMWISE_FUSABLE
    attrs = (
        Attr("channels", positive_int, doc="output channels"),
        Attr("kernel", positive_pair),
        Attr("stride", positive_pair, 1),
        Attr("pad", nonnegative_pair, 0),
        Attr("output_pad", nonnegative_pair, 0, doc="extra rows/columns at the end of the output"),
        Attr("dilation", positive_pair, 1),
        Attr("groups", positive_int, 1),
        Attr("bias", boolean, True),
    )

    def infer(self, a, x):
        expect_rank(self.name, x, 4)
        expect_float(self.name, x)
        _, cin, h, w = x.shape
        _check_groups(self.name, cin, a.channels, a.groups)
        for i, axis in enumerate(("height", "width")):
            if a.output_pad[i] >= max(a.stride[i], a.dilation[i]):
                raise ShapeError(
                    f"conv_transpose: output_pad {a.output_pad[i]} along the {axis} must be smaller "
                    f"than the stride or the dilation"
                )
        oh, ow = (
            (size - 1) * a.stride[i] - 2 * a.pad[i] + a.dilation[i] * (a.kernel[i] - 1) + a.output_pad[i] + 1
            for i, size in enumerate((h, w))
        )
        if oh < 1 or ow < 1:
            raise ShapeError(f"conv_transpose: padding {list(a.pad)} leaves no output for input {x}")
        return TensorType((BATCH, a.channels, oh, ow), x.dtype)

    def params(self, a, x):
        cin = x.shape[1]
        # PyTorch computes the fan-in of a transposed weight from its dim 1.
        fan_in = a.channels // a.groups * a.kernel[0] * a.kernel[1]
        specs = [param("weight", (cin, a.channels // a.groups, *a.kernel), "kaiming_uniform", fan_in)]
        if a.bias:
            specs.append(param("bias", (a.channels,), "fan_in_uniform", fan_in))
        return specs

    def macs(self, a, out, x):
        return x.sample_elements() * (a.channels // a.groups) * a.kernel[0] * a.kernel[1]

    def cpu(self, a, out, x):
        # The forward of conv_transpose is the input gradient of the conv it transposes.
        bias = Param("bias") if a.bias else None
        return grad_input_kernel(a.channels, x.shape[1], a.kernel, a.stride, a.pad, a.dilation, a.groups, bias)

    def grad(self, g, dy):
        a = g.node.attrs
        x = g.node.inputs[0]
        geometry = dict(stride=a.stride, pads=tuple(a.pad), dilation=a.dilation, groups=a.groups)
        if g.needs_input_grad(0):
            weight = {"weight": g.node.params["weight"]}
            shape = g.type_of(x).sample_shape
            g.input_grad(0, g.apply("conv_transpose_grad_input", [dy], weight, shape=shape, kernel=a.kernel, **geometry))
        if g.needs_param_grad("weight"):
            # The weight gradient of the transposed conv: conv's, with x and dy swapped.
            g.param_grad("weight", g.apply("conv_grad_weight", [dy, x], kernel=a.kernel, **geometry))
        if a.bias and g.needs_param_grad("bias"):
            g.param_grad("bias", g.apply("bias_grad", [dy]))


# -- gradient ops -------------------------------------------------------------

_GEOMETRY = (
    Attr("kernel", positive_pair),
    Attr("stride", positive_pair),
    Attr("pads", nonnegative_pair, doc="(top, left) padding; the bottom and right follow from the shapes"),
    Attr("dilation", positive_pair),
    Attr("groups", positive_int),
)


@register
class ConvGradInput(Op):
    """dx of conv from dy: gather the covering output pixels, GEMM with the weight."""

    name = "conv_grad_input"
    internal = True
    attrs = (Attr("shape", int_list, doc="dx's [channels, height, width]"), *_GEOMETRY)

    def infer(self, a, dy):
        return TensorType((BATCH, *a.shape), dy.dtype)

    def macs(self, a, out, dy):
        return dy.sample_elements() * (out.shape[1] // a.groups) * a.kernel[0] * a.kernel[1]

    def cpu(self, a, out, dy):
        return grad_input_kernel(out.shape[1], dy.shape[1], a.kernel, a.stride, a.pads, a.dilation, a.groups, None)


@register
class ConvTransposeGradInput(Op):
    """dx of conv_transpose from dy: a conv of dy with the same weight."""

    name = "conv_transpose_grad_input"
    internal = True
    attrs = (Attr("shape", int_list, doc="dx's [channels, height, width]"), *_GEOMETRY)

    def infer(self, a, dy):
        return TensorType((BATCH, *a.shape), dy.dtype)

    def macs(self, a, out, dy):
        return out.sample_elements() * (dy.shape[1] // a.groups) * a.kernel[0] * a.kernel[1]

    def cpu(self, a, out, dy):
        return forward_kernel(dy.shape[1], out.shape[1], a.kernel, a.stride, a.pads, a.dilation, a.groups, None)


@register
class ConvGradWeight(Op):
    """dW of conv from (x, dy), in PyTorch's layout [out, in/groups, kh, kw].

    With (dy, x) it is the weight gradient of conv_transpose: [in, out/groups, kh, kw].
    """

    name = "conv_grad_weight"
    inputs = 2
    internal = True
    attrs = _GEOMETRY

    def infer(self, a, x, dy):
        return TensorType((dy.shape[1], x.shape[1] // a.groups, *a.kernel), dy.dtype)

    def macs(self, a, out, x, dy):
        return dy.sample_elements() * (x.shape[1] // a.groups) * a.kernel[0] * a.kernel[1]

    def cpu(self, a, out, x, dy):
        return grad_weight_kernel(x.shape[1], dy.shape[1], a.kernel, a.stride, a.pads, a.dilation, a.groups)
