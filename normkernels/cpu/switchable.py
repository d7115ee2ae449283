"""Switchable Normalization on the CPU (Luo et al., 2018, "Differentiable Learning-to-Normalize via Switchable
Normalization"): the kernels; their host side is ``switchable_forward`` and ``switchable_backward`` in ops.py.

x is viewed as ``(N, C, S)`` and as R = N * C contiguous rows of S values, row r = n * C + c. Each statistic
k is taken over M_k values: instance (per (n, c), M_in = S), layer (per n, M_ln = C * S), batch (per c,
M_bn = N * S).

Forward:

    w = softmax(mean_weight),  v = softmax(var_weight)          (3,): instance, layer, batch
    mean_in[n,c], M2_in[n,c]   two passes over the row (float64)                    var_in = M2_in / S
    mean_ln[n],   M2_ln[n]     Chan merges of the rows (n, c), c = 0 .. C-1 in order   var_ln = M2_ln / (C S)
    mean_bn[c],   M2_bn[c]     Chan merges of the rows (n, c), n = 0 .. N-1 in order   var_bn = M2_bn / (N S)
                               (eval: mean_bn, var_bn = running_mean, running_var, as stored)
    mean[n,c] = w0 mean_in[n,c] + w1 mean_ln[n] + w2 mean_bn[c]
    var[n,c]  = v0 var_in[n,c]  + v1 var_ln[n]  + v2 var_bn[c]       (all biased)
    rstd = 1 / sqrt(var + eps),   xhat = (x - mean) * rstd,   y = xhat * gamma[c] + beta[c]
    running_mean = (1 - momentum) running_mean + momentum mean_bn   (training, when given)
    running_var  = (1 - momentum) running_var  + momentum M2_bn / (N S - 1)

The layer and batch statistics come from the rows' exact (count, mean, M2), never from E[x^2] - E[x]^2.

Backward, with g = dy * gamma[c] and sums over the S values s of a row (n, c) unless said otherwise:

    dxhat          = g
    dvar[n,c]      = -0.5 rstd^3 sum_s g (x - mean)
    dmean[n,c]     = -rstd sum_s g                  (var mixes statistics around their own means: no mean term)
    dmean_in[n,c]  = w0 dmean[n,c],   dmean_ln[n] = w1 sum_c dmean[n,c],   dmean_bn[c] = w2 sum_n dmean[n,c]
    dvar_in[n,c]   = v0 dvar[n,c],    dvar_ln[n]  = v1 sum_c dvar[n,c],    dvar_bn[c]  = v2 sum_n dvar[n,c]
    d mean_k / dx  = 1 / M_k,   d var_k / dx = 2 (x - mean_k) / M_k
    dx             = rstd g + sum_k (dmean_k + 2 dvar_k (x - mean_k)) / M_k
                   = p dy + q (x - mean_in) + r,   p = rstd gamma[c],   q = 2 sum_k dvar_k / M_k,
                     r = sum_k dmean_k / M_k + 2 sum_k dvar_k (mean_in - mean_k) / M_k
    dgamma[c]      = sum_{n,s} dy xhat = sum_n rstd[n,c] sum_s dy (x - mean),   dbeta[c] = sum_{n,s} dy
    dw_k           = sum_{n,c} dmean[n,c] mean_k,   dv_k = sum_{n,c} dvar[n,c] var_k   (mean_k, var_k broadcast)
    dmean_weight_j = w_j (dw_j - sum_k w_k dw_k),   dvar_weight_j = v_j (dv_j - sum_k v_k dv_k)
    eval:            mean_bn, var_bn are constants: dmean_bn = dvar_bn = 0 in dx; dw_2, dv_2 still use them

So dx takes the per-row sums (one pass over dy and x), the per-n sums over c and the per-c sums over n (each
in a fixed order), and one elementwise pass. Every reduction runs on one thread in a fixed order: results do
not depend on the thread count. Sums and coefficients are float64 whatever the storage dtype.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _loops as L
from . import formulas
from ._jit import PARALLEL, SERIAL

# --- forward ------------------------------------------------------------------------------------------------


@njit(**SERIAL)
def softmax_weights(mean_weight, var_weight, wv):
    """wv: (2, 3) float64: wv[0] = softmax(mean_weight), wv[1] = softmax(var_weight)."""
    for i, a in enumerate((mean_weight, var_weight)):
        wv[i, 0], wv[i, 1], wv[i, 2] = formulas.softmax3(np.float64(a[0]), np.float64(a[1]), np.float64(a[2]))


@njit(**PARALLEL)
def row_stats(x, mean_in, m2_in):
    """x: (R, S) rows. mean_in, m2_in: (R,) float64, each row's mean and M2 = sum((x - mean)**2)."""
    R, S = x.shape
    for r in prange(R):
        m = L.sum_(x[r]) / S
        mean_in[r] = m
        m2_in[r] = L.sum_sq_dev(x[r], m)


@njit(**PARALLEL)
def layer_stats(mean_in, m2_in, C, S, mean_ln, var_ln):
    """Per n, the rows (n, 0 .. C-1) merged: mean_ln, var_ln (N,) float64."""
    for n in prange(mean_ln.size):
        m, m2 = formulas.merge_rows(mean_in, m2_in, n * C, 1, C, S)
        mean_ln[n] = m
        var_ln[n] = m2 / (C * S)


@njit(**PARALLEL)
def batch_stats(mean_in, m2_in, N, S, training, momentum, running_mean, running_var, mean_bn, var_bn):
    """Per c, the rows (0 .. N-1, c) merged (training; running statistics, (0,) for none, updated in place), or
    the running statistics as stored (eval): mean_bn, var_bn (C,) float64."""
    C = mean_bn.size
    count = N * S
    for c in prange(C):
        if training:
            m, m2 = formulas.merge_rows(mean_in, m2_in, c, C, N, S)
            mean_bn[c] = m
            var_bn[c] = m2 / count
            if running_mean.size > 0:
                running_mean[c] = formulas.running_update(running_mean[c], m, momentum)
                running_var[c] = formulas.running_update(running_var[c], formulas.unbiased_var(m2, count), momentum)
        else:
            mean_bn[c] = running_mean[c]
            var_bn[c] = running_var[c]


@njit(**PARALLEL)
def mix_normalize(x, mean_in, m2_in, mean_ln, var_ln, mean_bn, var_bn, wv, eps, gamma, beta, mean, rstd, var_in, y):
    """Per row (n, c): the mixed mean and rstd (and var_in), then y = (x - mean) * rstd * gamma + beta.

    x, y: (R, S); mean_in, m2_in, mean, rstd, var_in: (R,); *_ln: (N,); *_bn: (C,); all statistics float64.
    y is computed in x's dtype from coefficients rounded once, the mean as a (high, low) pair (see ``_loops``)."""
    R, S = x.shape
    C = mean_bn.size
    for r in prange(R):
        n = r // C
        c = r % C
        vin = m2_in[r] / S
        m = wv[0, 0] * mean_in[r] + wv[0, 1] * mean_ln[n] + wv[0, 2] * mean_bn[c]
        var = wv[1, 0] * vin + wv[1, 1] * var_ln[n] + wv[1, 2] * var_bn[c]
        rs = formulas.rstd_of(var, eps)
        mean[r] = m
        rstd[r] = rs
        var_in[r] = vin
        scale = rs * gamma[c] if gamma.size > 0 else rs
        shift = beta[c] if beta.size > 0 else 0.0
        mh = L.like(x, m)
        ml = L.like(x, m - mh)
        L.scale_shift(x[r], mh, ml, L.like(x, scale), L.like(x, shift), y[r])


# --- backward -----------------------------------------------------------------------------------------------


@njit(**PARALLEL)
def backward_row_sums(dy, x, mean, rstd, gamma, C, sdy, sdyxmu, dmean, dvar):
    """Per row (n, c): sdy = sum(dy), sdyxmu = sum(dy * (x - mean)), and the gradients of the row's mixed
    statistics dmean = -rstd * gamma * sdy, dvar = -0.5 * rstd**3 * gamma * sdyxmu; all (R,) float64."""
    R = x.shape[0]
    for r in prange(R):
        rs = np.float64(rstd[r])
        ga = np.float64(gamma[r % C]) if gamma.size > 0 else 1.0
        a, b = L.sum_dy_dyxmu(dy[r], x[r], np.float64(mean[r]))
        sdy[r] = a
        sdyxmu[r] = b
        dmean[r] = -rs * ga * a
        dvar[r] = -0.5 * rs * rs * rs * ga * b


@njit(**PARALLEL)
def layer_backward(dmean, dvar, mean_in, var_in, C, sum_c_dmean, sum_c_dvar, dw_in, dv_in):
    """Per n: sum_c dmean, sum_c dvar and the instance terms of the weight gradients, (N,) float64."""
    for n in prange(sum_c_dmean.size):
        formulas.switchable_layer_backward_at(n, C, dmean, dvar, mean_in, var_in, sum_c_dmean, sum_c_dvar, dw_in, dv_in)


@njit(**PARALLEL)
def batch_backward(dmean, dvar, sdy, sdyxmu, rstd, N, sum_n_dmean, sum_n_dvar, dgamma, dbeta):
    """Per c: sum_n dmean, sum_n dvar ((C,) float64) and, with gamma, dgamma and dbeta."""
    for c in prange(sum_n_dmean.size):
        formulas.switchable_batch_backward_at(
            c, N, dmean, dvar, sdy, sdyxmu, rstd, sum_n_dmean, sum_n_dvar, dgamma, dbeta
        )


@njit(**SERIAL)
def weights_backward(
    wv, dw_in, dv_in, sum_c_dmean, sum_c_dvar, mean_ln, var_ln, sum_n_dmean, sum_n_dvar, mean_bn, var_bn, dmw, dvw
):
    """The mixing-weight gradients through the softmax: dmw, dvw (3,) float64."""
    formulas.switchable_weights_backward(
        wv, dw_in, dv_in, sum_c_dmean, sum_c_dvar, mean_ln, var_ln, sum_n_dmean, sum_n_dvar, mean_bn, var_bn, dmw, dvw
    )


@njit(**PARALLEL)
def backward_dx(
    dy,
    x,
    rstd,
    gamma,
    mean_in,
    mean_ln,
    mean_bn,
    dmean,
    dvar,
    sum_c_dmean,
    sum_c_dvar,
    sum_n_dmean,
    sum_n_dvar,
    wv,
    training,
    dx,
):
    """Per row (n, c): dx = p * dy + q * (x - mean_in) + r (see the module docstring); dy, x, dx: (R, S)."""
    R, S = x.shape
    for r in prange(R):
        p, q, r_ = formulas.switchable_dx_at(
            r,
            S,
            rstd,
            gamma,
            mean_in,
            mean_ln,
            mean_bn,
            dmean,
            dvar,
            sum_c_dmean,
            sum_c_dvar,
            sum_n_dmean,
            sum_n_dvar,
            wv,
            training,
        )
        L.grad_input(dy[r], x[r], np.float64(mean_in[r]), p, q, r_, dx[r])
