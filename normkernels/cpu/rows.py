"""Row kernels: LayerNorm, InstanceNorm and GroupNorm on the CPU.

x is viewed as ``(R, K)`` contiguous rows with one mean and rstd per row. A row holds ``K // inner`` channel
segments of ``inner`` elements each, and row r belongs to group ``r % groups``, so the affine index of
element k of row r is ``(r % groups) * (K // inner) + k // inner``:

    layer_norm     groups=1, inner=1     affine index k (gamma has the normalized shape)
    instance_norm  groups=C, inner=HW    one channel per row
    group_norm     groups=G, inner=HW    C // G channels per row

Forward, per row:

    mean = sum(x) / K
    var  = sum((x - mean)**2) / K        (two passes over a row still in cache; never E[x^2] - E[x]^2)
    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd
    y    = xhat * gamma + beta

Backward, per row, with g = dy * gamma:

    c1 = mean(g)
    c2 = mean(g * xhat)
    dx = rstd * (g - c1 - xhat * c2)

and dgamma = sum(dy * xhat), dbeta = sum(dy) over every row and every element with the same affine index.
Those two sums are first taken per block of rows (fixed size, chosen from the shape alone) and then added
block by block in order, so results do not depend on the thread count.

Arithmetic is float64 whatever the storage dtype; an empty ``gamma`` or ``beta`` means "no affine".
"""

import numpy as np
from numba import njit, prange

from ._jit import PARALLEL, REDUCE, SERIAL
from ._reduce import sum_, sum_dy_dyxmu, sum_sq_dev


@njit(**PARALLEL)
def rows_forward(x, gamma, beta, eps, groups, inner, y, mean, rstd):
    """x, y: (R, K); gamma, beta: (A,) or (0,); mean, rstd: (R,) float64 outputs."""
    R, K = x.shape
    cg = K // inner  # channel segments per row
    has_gamma = gamma.size > 0
    has_beta = beta.size > 0
    for r in prange(R):
        xr = x[r]
        yr = y[r]
        m = sum_(xr) / K
        rs = 1.0 / np.sqrt(sum_sq_dev(xr, m) / K + eps)
        mean[r] = m
        rstd[r] = rs
        a0 = (r % groups) * cg
        if inner == 1:  # affine per element
            for k in range(K):
                v = (xr[k] - m) * rs
                if has_gamma:
                    v = v * gamma[a0 + k]
                if has_beta:
                    v = v + beta[a0 + k]
                yr[k] = v
        else:  # affine per channel segment
            for j in range(cg):
                scale = rs * gamma[a0 + j] if has_gamma else rs
                shift = beta[a0 + j] if has_beta else 0.0
                for k in range(j * inner, (j + 1) * inner):
                    yr[k] = (xr[k] - m) * scale + shift


@njit(**REDUCE)
def _sum_g_gxmu(dy, x, gamma, m):
    """(sum(dy * gamma), sum(dy * gamma * (x - m))) over one row with per-element gamma."""
    sg = 0.0
    sgxmu = 0.0
    for k in range(x.size):
        g = dy[k] * np.float64(gamma[k])
        sg += g
        sgxmu += g * (x[k] - m)
    return sg, sgxmu


@njit(**PARALLEL)
def rows_backward(dy, x, gamma, mean, rstd, groups, inner, block, dx, dgamma_part, dbeta_part):
    """dy, x, dx: (R, K); gamma: (A,) or (0,); mean, rstd: (R,).

    dgamma_part, dbeta_part: (B, A) float64 zeros with B = ceil(R / block), or (B, 0) without gamma; block b
    accumulates rows [b * block, (b + 1) * block).
    """
    R, K = x.shape
    cg = K // inner
    has_gamma = gamma.size > 0
    for b in prange(dgamma_part.shape[0]):
        pg = dgamma_part[b]
        pb = dbeta_part[b]
        for r in range(b * block, min(R, (b + 1) * block)):
            xr = x[r]
            dyr = dy[r]
            dxr = dx[r]
            m = np.float64(mean[r])
            rs = np.float64(rstd[r])
            a0 = (r % groups) * cg
            # sg = sum(g), sgxmu = sum(g * (x - mean)) over the row
            if inner == 1:
                if has_gamma:
                    sg, sgxmu = _sum_g_gxmu(dyr, xr, gamma[a0 : a0 + K], m)
                    for k in range(K):
                        d = np.float64(dyr[k])
                        pb[a0 + k] += d
                        pg[a0 + k] += d * ((xr[k] - m) * rs)
                else:
                    sg, sgxmu = sum_dy_dyxmu(dyr, xr, m)
            else:
                sg = 0.0
                sgxmu = 0.0
                for j in range(cg):
                    lo = j * inner
                    sdy, sdyxmu = sum_dy_dyxmu(dyr[lo : lo + inner], xr[lo : lo + inner], m)
                    if has_gamma:
                        ga = np.float64(gamma[a0 + j])
                        pb[a0 + j] += sdy
                        pg[a0 + j] += sdyxmu * rs
                        sdy *= ga
                        sdyxmu *= ga
                    sg += sdy
                    sgxmu += sdyxmu
            c1 = sg / K  # mean(g)
            c2 = sgxmu * rs / K  # mean(g * xhat)
            if inner == 1:
                for k in range(K):
                    g = dyr[k] * np.float64(gamma[a0 + k]) if has_gamma else np.float64(dyr[k])
                    dxr[k] = rs * (g - c1 - (xr[k] - m) * rs * c2)
            else:
                for j in range(cg):
                    ga = np.float64(gamma[a0 + j]) if has_gamma else 1.0
                    for k in range(j * inner, (j + 1) * inner):
                        dxr[k] = rs * (dyr[k] * ga - c1 - (xr[k] - m) * rs * c2)


@njit(**SERIAL)
def sum_blocks(part, out):
    """out[:] = sum of the rows of part, added in row order (a fixed order, whatever the thread count)."""
    out[:] = 0.0
    for b in range(part.shape[0]):
        for a in range(part.shape[1]):
            out[a] += part[b, a]
