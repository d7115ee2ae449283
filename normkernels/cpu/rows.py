"""Row kernels: LayerNorm, InstanceNorm, GroupNorm and RMSNorm on the CPU.

x is viewed as ``(R, K)`` contiguous rows with one mean and rstd per row. A row holds ``K // inner`` channel
segments of ``inner`` elements each, and row r belongs to group ``r % groups``, so the affine index of
element k of row r is ``(r % groups) * (K // inner) + k // inner``:

    layer_norm     groups=1, inner=1     affine index k (gamma has the normalized shape)
    instance_norm  groups=C, inner=HW    one channel per row
    group_norm     groups=G, inner=HW    C // G channels per row
    rms_norm       groups=1, inner=1     as layer_norm, centered=False: mean = 0 below, so no c1 term

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

Sums and per-row coefficients are float64 whatever the storage dtype. The forward's loop writing y computes
in the storage dtype from those coefficients (see ``_loops``); the backward computes in float64. An empty
``gamma`` or ``beta`` means "no affine".
"""

import numpy as np
from numba import njit, prange

from . import _loops as L
from . import formulas
from ._jit import PARALLEL


@njit(**PARALLEL)
def rows_forward(x, gamma, beta, eps, groups, inner, centered, y, mean, rstd):
    """x, y: (R, K); gamma, beta: (A,) or (0,); mean, rstd: (R,) float64 outputs. centered False (RMSNorm):
    mean = 0, so rstd = 1 / sqrt(mean(x**2) + eps) and xhat = x * rstd."""
    R, K = x.shape
    cg = K // inner  # channel segments per row
    has_gamma = gamma.size > 0
    has_beta = beta.size > 0
    for r in prange(R):
        xr = x[r]
        yr = y[r]
        m = L.sum_(xr) / K if centered else 0.0
        rs = formulas.rstd_of(L.sum_sq_dev(xr, m) / K, eps)
        mean[r] = m
        rstd[r] = rs
        mh = L.like(x, m)
        ml = L.like(x, m - mh)
        a0 = (r % groups) * cg
        if inner == 1:  # affine per element
            L.normalize_affine(
                xr,
                mh,
                ml,
                L.like(x, rs),
                gamma[a0 : a0 + K] if has_gamma else gamma,
                beta[a0 : a0 + K] if has_beta else beta,
                yr,
            )
        else:  # affine per channel segment
            for j in range(cg):
                lo = j * inner
                scale = L.like(x, rs * gamma[a0 + j] if has_gamma else rs)
                shift = L.like(x, beta[a0 + j] if has_beta else 0.0)
                L.scale_shift(xr[lo : lo + inner], mh, ml, scale, shift, yr[lo : lo + inner])


@njit(**PARALLEL)
def rows_backward(dy, x, gamma, mean, rstd, groups, inner, centered, block, dx, dgamma_part, dbeta_part):
    """dy, x, dx: (R, K); gamma: (A,) or (0,); mean, rstd: (R,) (mean unread when not centered: it is 0).

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
            m = np.float64(mean[r]) if centered else 0.0
            rs = np.float64(rstd[r])
            a0 = (r % groups) * cg
            g_row = gamma[a0 : a0 + K] if has_gamma and inner == 1 else gamma  # per-element gamma (layer norm)
            # sg = sum(g), sgxmu = sum(g * (x - mean)) over the row, g = dy * gamma
            if inner == 1:
                if has_gamma:
                    sg, sgxmu = L.sum_g_gxmu(dyr, xr, g_row, m)
                    L.add_dy_dyxhat_into(pb[a0 : a0 + K], pg[a0 : a0 + K], dyr, xr, m, rs)
                else:
                    sg, sgxmu = L.sum_dy_dyxmu(dyr, xr, m)
            else:
                sg = 0.0
                sgxmu = 0.0
                for j in range(cg):
                    lo = j * inner
                    sdy, sdyxmu = L.sum_dy_dyxmu(dyr[lo : lo + inner], xr[lo : lo + inner], m)
                    if has_gamma:
                        ga = np.float64(gamma[a0 + j])
                        pb[a0 + j] += sdy
                        pg[a0 + j] += sdyxmu * rs
                        sdy *= ga
                        sdyxmu *= ga
                    sg += sdy
                    sgxmu += sdyxmu
            q, r_ = formulas.row_backward(sg, sgxmu, rs, K, centered)  # dx = (rs * gamma) * dy + q * (x - mean) + r_
            if inner == 1:
                L.grad_input_affine(dyr, xr, m, rs, g_row, q, r_, dxr)
            else:
                for j in range(cg):
                    lo = j * inner
                    p = rs * np.float64(gamma[a0 + j]) if has_gamma else rs
                    L.grad_input(dyr[lo : lo + inner], xr[lo : lo + inner], m, p, q, r_, dxr[lo : lo + inner])
