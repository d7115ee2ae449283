"""Inner loops over contiguous 1-D slices, shared by the row and channel kernels.

The kernels call these on one row, one channel segment or one (n, c) run at a time. Kept as small
functions of their own, each loop vectorizes (LLVM adds runtime alias checks it cannot add inside the
large parallel loop bodies), which measured 2-3x faster than the same loops written inline.

Reductions accumulate in float64. Each runs on a single thread over a single slice, so its summation order
is fixed by the compiled code alone: the same input gives the same bits on every run and at every thread
count. ``reassoc`` lets LLVM split a sum into vector lanes; it assumes nothing about finiteness, so NaN and
inf propagate as usual.
"""

import numpy as np
from numba import njit

from ._jit import REDUCE, SERIAL

# --- reductions -------------------------------------------------------------------------------------------


@njit(**REDUCE)
def sum_(a):
    """sum(a), in float64."""
    acc = 0.0
    for i in range(a.size):
        acc += a[i]
    return acc


@njit(**REDUCE)
def sum_sq_dev(a, m):
    """sum((a - m)**2) around a float64 centre m: the second pass of a two-pass variance."""
    acc = 0.0
    for i in range(a.size):
        d = a[i] - m
        acc += d * d
    return acc


@njit(**REDUCE)
def sum_dy_dyxmu(dy, x, m):
    """(sum(dy), sum(dy * (x - m))): the two sums every backward needs."""
    sdy = 0.0
    sdyxmu = 0.0
    for i in range(x.size):
        d = dy[i]
        sdy += d
        sdyxmu += d * (x[i] - m)
    return sdy, sdyxmu


@njit(**REDUCE)
def sum_g_gxmu(dy, x, gamma, m):
    """(sum(g), sum(g * (x - m))) with g = dy * gamma, gamma per element."""
    sg = 0.0
    sgxmu = 0.0
    for i in range(x.size):
        g = dy[i] * np.float64(gamma[i])
        sg += g
        sgxmu += g * (x[i] - m)
    return sg, sgxmu


# --- per-element accumulation into float64 partials (vectorized across the slice, no reduction) -----------


@njit(**SERIAL)
def add_into(acc, a):
    """acc += a."""
    for i in range(a.size):
        acc[i] += a[i]


@njit(**SERIAL)
def add_sq_dev_into(acc, a, m):
    """acc += (a - m)**2, m per element."""
    for i in range(a.size):
        d = a[i] - m[i]
        acc[i] += d * d


@njit(**SERIAL)
def add_dy_dyxhat_into(pdy, pdyxhat, dy, x, m, rs):
    """pdy += dy; pdyxhat += dy * (x - m) * rs; m and rs scalars."""
    for i in range(x.size):
        d = np.float64(dy[i])
        pdy[i] += d
        pdyxhat[i] += d * ((x[i] - m) * rs)


@njit(**SERIAL)
def add_dy_dyxmu_into(pdy, pdyxmu, dy, x, m):
    """pdy += dy; pdyxmu += dy * (x - m); m per element."""
    for i in range(x.size):
        d = np.float64(dy[i])
        pdy[i] += d
        pdyxmu[i] += d * (x[i] - m[i])


# --- the same over four rows a (4, n) at a time: the float64 accumulators are read and written once per four
# rows. The rows come as one 2-D array, not four 1-D ones: with fewer distinct pointers LLVM's runtime alias
# checks stay within its limit and the loops still vectorize.


@njit(**SERIAL)
def add_rows4_into(acc, a):
    """acc += a[0] + a[1] + a[2] + a[3]."""
    for i in range(acc.size):
        acc[i] += (np.float64(a[0, i]) + a[1, i]) + (np.float64(a[2, i]) + a[3, i])


@njit(**SERIAL)
def add_sq_dev_rows4_into(acc, a, m):
    """acc += sum over the four rows of (a - m)**2, m per element."""
    for i in range(acc.size):
        d0 = a[0, i] - m[i]
        d1 = a[1, i] - m[i]
        d2 = a[2, i] - m[i]
        d3 = a[3, i] - m[i]
        acc[i] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)


# --- elementwise outputs ----------------------------------------------------------------------------------
#
# The statistics and coefficients are float64. The forward loops take them rounded to x's dtype (scalars, or per-
# channel vectors for BatchNorm's (N, D) rows) and compute in it: float32 runs twice as many lanes, and layer norm
# forward measured 6-25% faster in six A/B runs. The centre is passed as a pair (mh, ml) = (round(m), round(m -
# round(m))) and subtracted as (x - mh) - ml: x - mh is exact when x is near the mean (Sterbenz), so an input with a
# large offset (mean 1e4, std 1) loses nothing to the rounding of its mean. For float64 data ml is 0. (With
# per-channel vectors, ml is folded into the shift instead.) The backward loops measured no faster in float32 and
# stay in float64.


@njit(**SERIAL)
def like(a, v):
    """v rounded to a's dtype."""
    return a.dtype.type(v)


@njit(**SERIAL)
def scale_shift(x, mh, ml, scale, shift, y):
    """y = (x - m) * scale + shift; scalars."""
    for i in range(x.size):
        y[i] = ((x[i] - mh) - ml) * scale + shift


@njit(**SERIAL)
def scale_shift_each(x, mh, scale, shift, y):
    """y = (x - mh[i]) * scale[i] + shift[i], every vector in x's dtype: BatchNorm's (N, D) rows. The centre's
    low part is folded into the shift (channels.channels_normalize), so the loop reads three vectors. On (4096,
    1024) float32 the normalize measured 1.48x faster than on three float64 vectors (one A/B of 15 rounds), and
    the whole forward 1.06x faster (two A/B runs of 60 rounds); y's error stays within 2 ulp."""
    for i in range(x.size):
        y[i] = (x[i] - mh[i]) * scale[i] + shift[i]


@njit(**SERIAL)
def normalize_affine(x, mh, ml, rs, gamma, beta, y):
    """y = (x - m) * rs * gamma + beta with gamma, beta per element; either may be empty (absent)."""
    if gamma.size and beta.size:
        for i in range(x.size):
            y[i] = ((x[i] - mh) - ml) * rs * gamma[i] + beta[i]
    elif gamma.size:
        for i in range(x.size):
            y[i] = ((x[i] - mh) - ml) * rs * gamma[i]
    elif beta.size:
        for i in range(x.size):
            y[i] = ((x[i] - mh) - ml) * rs + beta[i]
    else:
        for i in range(x.size):
            y[i] = ((x[i] - mh) - ml) * rs


@njit(**SERIAL)
def grad_input(dy, x, m, p, q, r, dx):
    """dx = p * dy + q * (x - m) + r; scalars."""
    for i in range(x.size):
        dx[i] = p * dy[i] + q * (x[i] - m) + r


@njit(**SERIAL)
def grad_input_each(dy, x, m, p, q, r, dx):
    """dx = p[i] * dy + q[i] * (x - m[i]) + r[i]."""
    for i in range(x.size):
        dx[i] = p[i] * dy[i] + q[i] * (x[i] - m[i]) + r[i]


@njit(**SERIAL)
def grad_input_affine(dy, x, m, rs, gamma, q, r, dx):
    """dx = rs * gamma * dy + q * (x - m) + r with gamma per element (empty: gamma = 1)."""
    if gamma.size:
        for i in range(x.size):
            dx[i] = rs * np.float64(gamma[i]) * dy[i] + q * (x[i] - m) + r
    else:
        for i in range(x.size):
            dx[i] = rs * dy[i] + q * (x[i] - m) + r


@njit(**SERIAL)
def sum_blocks(part, out):
    """out[:] = sum of the rows of part, added in row order (a fixed order, whatever the thread count)."""
    out[:] = 0.0
    for b in range(part.shape[0]):
        add_into(out, part[b])
