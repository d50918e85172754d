"""3x3 stride-1 convolutions on the CPU by Winograd's minimal filtering, F(4x4, 3x3) (Lavin and Gray, 2016).

Each 4x4 block of output pixels (a tile) is computed from the 6x6 block of input
around it as A^T [(G g G^T) * (B^T d B)] A: transforms of the input (V = B^T d B)
and of the weights (U = G g G^T) into 36 "frequencies", one elementwise product per
frequency summed over the input channels (36 GEMMs: [tiles, Cin] . [Cin, Cout]),
and a transform back (A^T M A). That is 36 multiplications per 16 outputs and
input channel where a direct 3x3 conv does 144: the margin over im2col + GEMM.

Every 4-D buffer is NHWC, so each transform is a loop over contiguous channels.
A chunk of tiles is one prange iteration: its thread transforms the chunk's input
into its own slice of the scratch, runs the 36 GEMMs (BLAS held to one thread)
and writes the chunk's outputs, running the epilogue on them while in cache.

One kernel serves the forward conv and its input gradient: the input gradient of
a 3x3 stride-1 conv with padding p is a 3x3 stride-1 conv of dy with padding 2 - p
and the weights flipped and transposed (`flip`), which only changes how U is built.
F(4x4) errs about 1e-5 relative in float32 (the transforms' coefficients up to 8
grow rounding), 5-10x a direct conv's error: within the parity tests' tolerances.
"""

import numpy as np
from numba import get_thread_id, njit, prange

from .blas import _gemm, _one_zero
from .conv import _fit_tile
from .holes import _epilogue

# G (6x3), the weight transform: each row combines one kernel row (or column).
_G = np.array([
    [1 / 4, 0.0, 0.0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0.0, 0.0, 1.0],
])


@njit(cache=True)
def _kernel_matrix(like):
    # [36, 9] in the arrays' dtype: kron(G, G), so that vec(G g G^T) = kron(G, G) . vec(g).
    t = np.empty(36 * 9, like.dtype)
    for a in range(6):
        for b in range(6):
            for kh in range(3):
                for kw in range(3):
                    t[(a * 6 + b) * 9 + kh * 3 + kw] = _G[a, kh] * _G[b, kw]
    return t


@njit(cache=True)
def _weight_transform(weight, u, wt, t, one_zero, flip, i0, i1):
    # u[f, i, j] = (G g G^T)[f] for the kernel g of input channel i and output channel j of
    # the conv computed: weight[j, i] as it is, or with `flip` weight[i, j] rotated by 180
    # degrees (the input gradient's conv). Input channels i0 .. i1: their kernels gathered
    # into wt [9, (i, j)], then one GEMM kron(G, G) . wt writes their columns of u.
    if flip:
        cin, cout = weight.shape[0], weight.shape[1]
    else:
        cout, cin = weight.shape[0], weight.shape[1]
    cols = (i1 - i0) * cout
    for tap in range(9):
        kh = tap // 3
        kw = tap - kh * 3
        for i in range(i0, i1):
            row = np.uint64(tap * cols + (i - i0) * cout)
            if flip:
                for j in range(cout):
                    wt[row + np.uint64(j)] = weight[i, j, 2 - kh, 2 - kw]
            else:
                for j in range(cout):
                    wt[row + np.uint64(j)] = weight[j, i, kh, kw]
    _gemm(False, 36, cols, 9, t, 0, 9, wt, 0, cols, u, i0 * cout, cin * cout, one_zero, False)


@njit(cache=True)
def _bt_rows(src, s0, step, dst, d0, dstep, C, k):
    # dst[r] = (B^T d)[r] for the six vectors d[m] = src[s0 + m*step : + C], written at
    # dst[d0 + r*dstep : + C]: one 1-D input transform, vectorized over the C channels.
    # Offsets are uint64 (no wraparound checks) and k = [2, 4, 5, 8] in the arrays' dtype
    # (a float64 literal would turn float32 arithmetic into float64).
    two, four, five = k[0], k[1], k[2]
    s1 = s0 + step
    s2 = s1 + step
    s3 = s2 + step
    s4 = s3 + step
    s5 = s4 + step
    e1 = d0 + dstep
    e2 = e1 + dstep
    e3 = e2 + dstep
    e4 = e3 + dstep
    e5 = e4 + dstep
    for c in range(C):
        d0v = src[s0 + c]
        d1v = src[s1 + c]
        d2v = src[s2 + c]
        d3v = src[s3 + c]
        d4v = src[s4 + c]
        d5v = src[s5 + c]
        dst[d0 + c] = four * d0v - five * d2v + d4v
        dst[e1 + c] = d3v + d4v - four * (d1v + d2v)
        dst[e2 + c] = four * (d1v - d2v) - d3v + d4v
        dst[e3 + c] = two * (d3v - d1v) - d2v + d4v
        dst[e4 + c] = two * (d1v - d3v) - d2v + d4v
        dst[e5 + c] = four * d1v - five * d3v + d5v


@njit(cache=True)
def _input_tiles(xf, v, patch, rows, k, t0, count, H, W, C, TH, TW, pt, pl):
    # v[f, t, c] for the tiles t0 .. t0+count: each 6x6xC input block (zero outside the image)
    # copied to `patch`, transformed along its rows into `rows`, then along its columns into v.
    cc = np.uint64(C)
    for t in range(count):
        p = t0 + t
        n = p // (TH * TW)
        q = p - n * TH * TW
        ih0 = (q // TW) * 4 - pt
        iw0 = (q - (q // TW) * TW) * 4 - pl
        inside = ih0 >= 0 and iw0 >= 0 and ih0 + 6 <= H and iw0 + 6 <= W
        if not inside:
            for a in range(6):
                ih = ih0 + a
                for b in range(6):
                    iw = iw0 + b
                    dst = np.uint64((a * 6 + b) * C)
                    if ih >= 0 and ih < H and iw >= 0 and iw < W:
                        src = np.uint64(((n * H + ih) * W + iw) * C)
                        for c in range(cc):
                            patch[dst + c] = xf[src + c]
                    else:
                        for c in range(cc):
                            patch[dst + c] = 0.0
        for a in range(6):  # along each row: rows[a, j] = sum_b B^T[j, b] d[a, b]
            if inside:
                _bt_rows(xf, np.uint64(((n * H + ih0 + a) * W + iw0) * C), cc, rows, np.uint64(a * 6 * C), cc, cc, k)
            else:
                _bt_rows(patch, np.uint64(a * 6 * C), cc, rows, np.uint64(a * 6 * C), cc, cc, k)
        for j in range(6):  # along each column: v[(i, j), t] = sum_a B^T[i, a] rows[a, j]
            _bt_rows(rows, np.uint64(j * C), np.uint64(6 * C), v, np.uint64((j * count + t) * C),
                     np.uint64(6 * count * C), cc, k)


@njit(cache=True)
def _at_rows(src, s0, step, dst, d0, dstep, C, k):
    # dst[r] = (A^T m)[r], r < 4, for the six vectors m[f] = src[s0 + f*step : + C] (as _bt_rows).
    two, four, eight = k[0], k[1], k[3]
    s1 = s0 + step
    s2 = s1 + step
    s3 = s2 + step
    s4 = s3 + step
    s5 = s4 + step
    e1 = d0 + dstep
    e2 = e1 + dstep
    e3 = e2 + dstep
    for c in range(C):
        m1 = src[s1 + c]
        m2 = src[s2 + c]
        m3 = src[s3 + c]
        m4 = src[s4 + c]
        a = m1 + m2
        b = m1 - m2
        p = m3 + m4
        q = m3 - m4
        dst[d0 + c] = src[s0 + c] + a + p
        dst[e1 + c] = b + two * q
        dst[e2 + c] = a + four * p
        dst[e3 + c] = b + eight * q + src[s5 + c]


@njit(cache=True)
def _output_tiles(m, of, e, cols, block, k, t0, count, OH, OW, Cout, TH, TW):
    # The outputs of tiles t0 .. t0+count from m[f, t, co]: along the columns into `cols`,
    # along the rows into a 4x4 block, then its pixels inside the output into `of`.
    cc = np.uint64(Cout)
    for t in range(count):
        p = t0 + t
        n = p // (TH * TW)
        q = p - n * TH * TW
        oh0 = (q // TW) * 4
        ow0 = (q - (q // TW) * TW) * 4
        for b in range(6):  # cols[i, b] = sum_a A^T[i, a] m[(a, b), t]
            _at_rows(m, np.uint64((b * count + t) * Cout), np.uint64(6 * count * Cout), cols, np.uint64(b * Cout),
                     np.uint64(6 * Cout), cc, k)
        nw = min(4, OW - ow0)
        for i in range(min(4, OH - oh0)):  # row i of the block: A^T along the columns
            dst = np.uint64(((n * OH + oh0 + i) * OW + ow0) * Cout)
            if nw == 4:
                _at_rows(cols, np.uint64(i * 6 * Cout), cc, of, dst, cc, cc, k)
            else:
                _at_rows(cols, np.uint64(i * 6 * Cout), cc, block, np.uint64(0), cc, cc, k)
                for c in range(np.uint64(nw * Cout)):
                    of[dst + c] = block[c]
            _epilogue(of, int(dst), int(dst) + nw * Cout, Cout, e)


@njit(cache=True)
def _chunk(x, u, e, out, work, one_zero, k, t0, count, chunk, pt, pl):
    # One chunk of tiles: input transform, the 36 GEMMs, output transform (see the module doc).
    N, H, W, C = x.shape
    OH, OW, Cout = out.shape[1], out.shape[2], out.shape[3]
    TH = (OH + 3) // 4
    TW = (OW + 3) // 4
    big = max(C, Cout)
    v = work[: 36 * chunk * C]
    m = work[36 * chunk * C : 36 * chunk * (C + Cout)]
    rest = work[36 * chunk * (C + Cout) :]
    patch = rest[: 36 * big]
    rows = rest[36 * big : 72 * big]
    block = rest[72 * big : 76 * big]
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    _input_tiles(xf, v, patch, rows, k, t0, count, H, W, C, TH, TW, pt, pl)
    for f in range(36):
        _gemm(False, count, Cout, C, v, f * count * C, C, u, f * C * Cout, Cout, m, f * count * Cout, Cout,
              one_zero, False)
    _output_tiles(m, of, e, rows, block, k, t0, count, OH, OW, Cout, TH, TW)


@njit(cache=True)
def _coefficients(like):
    # [2, 4, 5, 8] in the arrays' dtype (allocated outside the parallel loops, as _one_zero).
    k = np.empty(4, like.dtype)
    k[0], k[1], k[2], k[3] = 2.0, 4.0, 5.0, 8.0
    return k


@njit(parallel=True, cache=True)
def winograd_forward(x, weight, out, scratch, e, pt, pl, flip, chunk, ib, per, nslots):
    # out[n, oh, ow, j] = sum x[n, oh - pt + kh, ow - pl + kw, i] * g[j, i, kh, kw] (+ the epilogue),
    # g = weight, or with `flip` weight transposed and rotated (see the module doc).
    # The scratch holds U [36, C, Cout], then `per` elements per thread slot: a chunk of `chunk`
    # tiles' transforms, or the gathered weights of `ib` input channels.
    N, H, W, C = x.shape
    OH, OW, Cout = out.shape[1], out.shape[2], out.shape[3]
    usize = 36 * C * Cout
    u = scratch[:usize]
    total = N * ((OH + 3) // 4) * ((OW + 3) // 4)
    ct = _fit_tile(chunk, total, nslots)
    one_zero = _one_zero(scratch)
    k = _coefficients(scratch)
    kg = _kernel_matrix(scratch)
    # The weight transform in blocks of input channels, each gathered into a thread's scratch.
    for b in prange((C + ib - 1) // ib):
        base = usize + get_thread_id() * per
        _weight_transform(weight, u, scratch[base : base + 9 * ib * Cout], kg, one_zero, flip, b * ib, min(C, b * ib + ib))
    for t in prange((total + ct - 1) // ct):
        base = usize + get_thread_id() * per
        t0 = t * ct
        _chunk(x, u, e, out, scratch[base : base + per], one_zero, k, t0, min(ct, total - t0), ct, pt, pl)


# -- the weight gradient ---------------------------------------------------------------------------
#
# Y = A^T [U * V] A is linear in U, so the gradient of U is the sum over tiles of V * (A dY A^T)
# (elementwise per frequency): 36 GEMMs dU_f += V_f^T . Z_f per chunk of tiles, with Z the 6x6
# transform of each 4x4 block of dy. U = G g G^T, so dg = G^T dU G: kron(G, G)^T . dU.


@njit(cache=True)
def _a_rows(src, s0, step, dst, d0, dstep, C, k, count):
    # dst[f] = (A y)[f], f < 6, for the `count` <= 4 vectors y[i] = src[s0 + i*step : + C] (missing
    # ones, past the edge of dy, are zero): the 1-D transform of an output gradient.
    two, four, eight = k[0], k[1], k[3]
    s1 = s0 + step
    s2 = s1 + step
    s3 = s2 + step
    e1 = d0 + dstep
    e2 = e1 + dstep
    e3 = e2 + dstep
    e4 = e3 + dstep
    e5 = e4 + dstep
    for c in range(C):
        y0 = src[s0 + c]
        y1 = src[s1 + c] if count > 1 else y0 - y0
        y2 = src[s2 + c] if count > 2 else y0 - y0
        y3 = src[s3 + c] if count > 3 else y0 - y0
        a = y0 + y2
        b = y1 + y3
        p = y0 + four * y2
        q = two * y1 + eight * y3
        dst[d0 + c] = y0
        dst[e1 + c] = a + b
        dst[e2 + c] = a - b
        dst[e3 + c] = p + q
        dst[e4 + c] = p - q
        dst[e5 + c] = y3


@njit(cache=True)
def _gradient_tiles(dyf, z, cols, k, t0, count, OH, OW, Cout, TH, TW):
    # z[f, t, co] = (A dY A^T)[f] for the 4x4 blocks of dy of tiles t0 .. t0+count: along each row
    # of the block into `cols` [4 rows, 6, Cout], then along the columns into z.
    cc = np.uint64(Cout)
    for t in range(count):
        p = t0 + t
        n = p // (TH * TW)
        q = p - n * TH * TW
        oh0 = (q // TW) * 4
        ow0 = (q - (q // TW) * TW) * 4
        nh = min(4, OH - oh0)
        for i in range(nh):  # cols[i, f] = sum_j A[f, j] dy[i, j]
            _a_rows(dyf, np.uint64(((n * OH + oh0 + i) * OW + ow0) * Cout), cc, cols, np.uint64(i * 6 * Cout), cc,
                    cc, k, min(4, OW - ow0))
        for j in range(6):  # z[(f, j), t] = sum_i A[f, i] cols[i, j]
            _a_rows(cols, np.uint64(j * Cout), np.uint64(6 * Cout), z, np.uint64((j * count + t) * Cout),
                    np.uint64(6 * count * Cout), cc, k, nh)


@njit(cache=True)
def _grad_chunks(x, dy, acc, work, one_zero, k, t0, t1, chunk, pt, pl):
    # acc[f, ci, co] = the sum over tiles t0 .. t1 (in chunks) of V_f^T . Z_f.
    N, H, W, C = x.shape
    OH, OW, Cout = dy.shape[1], dy.shape[2], dy.shape[3]
    TH = (OH + 3) // 4
    TW = (OW + 3) // 4
    big = max(C, Cout)
    xf = x.reshape(x.size)
    dyf = dy.reshape(dy.size)
    if t1 == t0:
        acc[:] = 0.0
    for c0 in range(t0, t1, chunk):
        count = min(chunk, t1 - c0)
        v = work[: 36 * count * C]
        z = work[36 * count * C : 36 * count * (C + Cout)]
        rest = work[36 * chunk * (C + Cout) :]
        _input_tiles(xf, v, rest[: 36 * big], rest[36 * big : 72 * big], k, c0, count, H, W, C, TH, TW, pt, pl)
        _gradient_tiles(dyf, z, rest[: 36 * big], k, c0, count, OH, OW, Cout, TH, TW)
        for f in range(36):  # the first chunk overwrites (beta = 0): acc needs no clearing pass
            _gemm(True, C, Cout, count, v, f * count * C, C, z, f * count * Cout, Cout, acc, f * C * Cout, Cout,
                  one_zero, c0 > t0)


@njit(cache=True)
def _weight_gradient(scratch, usize, per, nslots, dw, dg, kg, one_zero, i0, i1):
    # dw[co, ci] for input channels i0 .. i1: the slots' dU summed into the first slot's, then
    # kron(G, G)^T . dU into dg [9, (ci, co)], then rearranged into PyTorch's layout.
    Cout, C = dw.shape[0], dw.shape[1]
    cols = (i1 - i0) * Cout
    for f in range(36):
        lo = np.uint64(f * C * Cout + i0 * Cout)
        for s in range(1, nslots):
            other = np.uint64(s * per)
            for i in range(np.uint64(cols)):
                scratch[lo + i] += scratch[other + lo + i]
    _gemm(True, 9, cols, 36, kg, 0, 9, scratch, i0 * Cout, C * Cout, dg, 0, cols, one_zero, False)
    for ci in range(i0, i1):
        for tap in range(9):
            row = tap * cols + (ci - i0) * Cout
            for co in range(Cout):
                dw[co, ci, tap // 3, tap % 3] = dg[row + co]


@njit(parallel=True, cache=True)
def winograd_grad_weight(x, dy, dw, scratch, pt, pl, chunk, ib, per, nslots):
    # dw[co, ci, kh, kw] = sum over output pixels of dy[n, oh, ow, co] * x[n, oh - pt + kh, ow - pl + kw, ci]
    # (the weight gradient of the 3x3 stride-1 conv winograd_forward computes). Each slot sums
    # dU over a fixed share of the tiles (so the sum does not depend on scheduling) into its own
    # part of the scratch: `per` elements, [36, C, Cout] first, then a chunk's transforms.
    N, H, W, C = x.shape
    OH, OW, Cout = dy.shape[1], dy.shape[2], dy.shape[3]
    one_zero = _one_zero(scratch)
    k = _coefficients(scratch)
    kg = _kernel_matrix(scratch)
    usize = 36 * C * Cout
    total = N * ((OH + 3) // 4) * ((OW + 3) // 4)
    for s in prange(nslots):
        base = s * per
        _grad_chunks(x, dy, scratch[base : base + usize], scratch[base + usize : base + per], one_zero, k,
                     s * total // nslots, (s + 1) * total // nslots, chunk, pt, pl)
    tail = nslots * per  # then 9 * ib * Cout per block of `ib` input channels
    for b in prange((C + ib - 1) // ib):
        i0 = b * ib
        i1 = min(C, i0 + ib)
        dg = scratch[tail + b * 9 * ib * Cout : tail + (b + 1) * 9 * ib * Cout]
        _weight_gradient(scratch, usize, per, nslots, dw, dg, kg, one_zero, i0, i1)
