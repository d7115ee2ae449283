"""Switchable Normalization on the GPU: the kernels (their host side is in ops.py).

The math, the (N, C, S) view with rows r = n * C + c, and the backward's derivation are those of
``normkernels.cpu.switchable``. Every reduction has a fixed order and no atomics: a row's sums are a team sum
(``reduce.team_sum``, its order fixed by the team size, which the shape alone fixes), the layer and batch
statistics and their backward sums are taken by one thread per n or per c looping in order, and the weight
gradients by a single thread. Statistics and coefficients are float64.

Forward:
    softmax_weights     one thread: w, v (float64) and their copies in x's dtype
    row_stats           a team of threads per row (n, c), as ``rows.rows_forward``: mean_in and M2_in, two
                        passes over values kept in registers
    layer_stats         a thread per n: Chan merges over c in order: mean_ln, var_ln
    batch_stats         a thread per c: Chan merges over n in order (or the running statistics, in eval):
                        mean_bn, var_bn; updates the running statistics
    mix                 a thread per row: the mixed mean and rstd, and the row's center, scale and shift
    channels_normalize  (of ``channels``, with the R rows as its channels) grid-stride: y
Backward:
    softmax_weights, backward_row_sums (a team per row: sum dy, sum dy (x - mean), dmean, dvar),
    layer_backward (a thread per n), batch_backward (a thread per c: dgamma, dbeta), weights_backward (one
    thread), dx_coefficients (a thread per row: p, q, r), channels.backward_dx (grid-stride: dx).
"""

from __future__ import annotations

import math

from numba import cuda, float64

from . import formulas
from ._config import ITEMS, MAX_BLOCK
from .reduce import team_sum
from .rows import _row_of

# --- forward ------------------------------------------------------------------------------------------------


@cuda.jit(cache=True)
def softmax_weights(mean_weight, var_weight, wv, out):
    """One thread: wv (2, 3) float64 = (softmax(mean_weight), softmax(var_weight)); out: the same in x's dtype."""
    if cuda.grid(1) == 0:
        wv[0, 0], wv[0, 1], wv[0, 2] = formulas.softmax3(
            float64(mean_weight[0]), float64(mean_weight[1]), float64(mean_weight[2])
        )
        wv[1, 0], wv[1, 1], wv[1, 2] = formulas.softmax3(
            float64(var_weight[0]), float64(var_weight[1]), float64(var_weight[2])
        )
        for i in range(2):
            for k in range(3):
                out[i, k] = wv[i, k]


@cuda.jit(cache=True)
def row_stats(x, ts, mean_in, m2_in):
    """x: (R, S) rows, S > 0. One team of ts threads per row: mean_in, m2_in (R,) float64, the row's mean and
    M2 = sum((x - mean)**2), the second pass reading the first ITEMS values of each thread from registers."""
    shared = cuda.shared.array(MAX_BLOCK, float64)
    cache = cuda.local.array(ITEMS, float64)
    R, S = x.shape
    lane = cuda.threadIdx.x % ts
    per_thread = (S + ts - 1) // ts
    teams = cuda.gridDim.x * (cuda.blockDim.x // ts)
    for round_ in range((R + teams - 1) // teams):  # the same count for every thread: syncs stay uniform
        r = _row_of(round_, ts)
        valid = r < R
        s = 0.0
        if valid:
            for j in range(per_thread):
                k = lane + j * ts
                if k < S:
                    v = float64(x[r, k])
                    if j < ITEMS:
                        cache[j] = v
                    s += v
        m = team_sum(s, shared, ts) / S
        q = 0.0
        if valid:
            for j in range(per_thread):
                k = lane + j * ts
                if k < S:
                    d = (cache[j] if j < ITEMS else float64(x[r, k])) - m
                    q += d * d
        q = team_sum(q, shared, ts)
        if valid and lane == 0:
            mean_in[r] = m
            m2_in[r] = q


@cuda.jit(device=True, inline=True)
def _divide(m2, count):
    """m2 / count, NaN for no values (the simulator's Python division would raise)."""
    return m2 / count if count > 0 else math.nan


@cuda.jit(cache=True)
def layer_stats(mean_in, m2_in, C, S, mean_ln64, var_ln64, mean_ln, var_ln):
    """A thread per n: the rows (n, 0 .. C-1) merged in order; float64 and x's dtype copies, (N,) each."""
    n = cuda.grid(1)
    if n < mean_ln.size:
        m, m2 = formulas.merge_rows(mean_in, m2_in, n * C, 1, C, S)
        var = _divide(m2, C * S)
        mean_ln64[n] = m
        var_ln64[n] = var
        mean_ln[n] = m
        var_ln[n] = var


@cuda.jit(cache=True)
def batch_stats(
    mean_in, m2_in, N, S, training, momentum, running_mean, running_var, mean_bn64, var_bn64, mean_bn, var_bn
):
    """A thread per c: the rows (0 .. N-1, c) merged in order (training; running_mean/running_var, (0,) for
    none, updated in place), or the running statistics as stored (eval); float64 and x's dtype copies, (C,)."""
    c = cuda.grid(1)
    if c < mean_bn.size:
        C = mean_bn.size
        count = N * S
        if training:
            m, m2 = formulas.merge_rows(mean_in, m2_in, c, C, N, S)
            var = _divide(m2, count)
            if running_mean.size > 0:
                running_mean[c] = formulas.running_update(running_mean[c], m, momentum)
                running_var[c] = formulas.running_update(running_var[c], formulas.unbiased_var(m2, count), momentum)
        else:
            m = float64(running_mean[c])
            var = float64(running_var[c])
        mean_bn64[c] = m
        var_bn64[c] = var
        mean_bn[c] = m
        var_bn[c] = var


@cuda.jit(cache=True)
def mix(
    mean_in,
    m2_in,
    mean_ln,
    var_ln,
    mean_bn,
    var_bn,
    wv,
    S,
    eps,
    gamma,
    beta,
    mean,
    rstd,
    mean_in_out,
    var_in_out,
    center,
    scale,
    shift,
):
    """A thread per row (n, c), grid-stride: the mixed mean and rstd, the instance statistics in x's dtype, and
    center = mean, scale = rstd * gamma, shift = beta (float64) for the normalize kernel."""
    R = mean_in.size
    C = mean_bn.size
    for r in range(cuda.grid(1), R, cuda.gridsize(1)):
        n = r // C
        c = r % C
        vin = _divide(m2_in[r], S)
        m = wv[0, 0] * mean_in[r] + wv[0, 1] * mean_ln[n] + wv[0, 2] * mean_bn[c]
        var = wv[1, 0] * vin + wv[1, 1] * var_ln[n] + wv[1, 2] * var_bn[c]
        rs = formulas.rstd_of(var, eps)
        mean[r] = m
        rstd[r] = rs
        mean_in_out[r] = mean_in[r]
        var_in_out[r] = vin
        center[r] = m
        scale[r] = rs * gamma[c] if gamma.size > 0 else rs
        shift[r] = beta[c] if beta.size > 0 else 0.0


# --- backward -----------------------------------------------------------------------------------------------


@cuda.jit(cache=True)
def backward_row_sums(dy, x, mean, rstd, gamma, C, ts, sdy, sdyxmu, dmean, dvar):
    """dy, x: (R, S). A team per row (n, c): sdy = sum(dy), sdyxmu = sum(dy * (x - mean)), and the gradients of
    the row's mixed statistics dmean = -rstd * gamma * sdy, dvar = -0.5 * rstd**3 * gamma * sdyxmu: (R,)
    float64 each."""
    shared = cuda.shared.array(MAX_BLOCK, float64)
    R, S = x.shape
    lane = cuda.threadIdx.x % ts
    teams = cuda.gridDim.x * (cuda.blockDim.x // ts)
    for round_ in range((R + teams - 1) // teams):
        r = _row_of(round_, ts)
        valid = r < R
        m = float64(mean[r]) if valid else 0.0
        a = 0.0
        b = 0.0
        if valid:
            for k in range(lane, S, ts):
                d = float64(dy[r, k])
                a += d
                b += d * (float64(x[r, k]) - m)
        a = team_sum(a, shared, ts)
        b = team_sum(b, shared, ts)
        if valid and lane == 0:
            rs = float64(rstd[r])
            ga = float64(gamma[r % C]) if gamma.size > 0 else 1.0
            sdy[r] = a
            sdyxmu[r] = b
            dmean[r] = -rs * ga * a
            dvar[r] = -0.5 * rs * rs * rs * ga * b


@cuda.jit(cache=True)
def layer_backward(dmean, dvar, mean_in, var_in, C, sum_c_dmean, sum_c_dvar, dw_in, dv_in):
    """A thread per n: sum_c dmean, sum_c dvar and the instance terms of the weight gradients."""
    n = cuda.grid(1)
    if n < sum_c_dmean.size:
        formulas.switchable_layer_backward_at(n, C, dmean, dvar, mean_in, var_in, sum_c_dmean, sum_c_dvar, dw_in, dv_in)


@cuda.jit(cache=True)
def batch_backward(dmean, dvar, sdy, sdyxmu, rstd, N, sum_n_dmean, sum_n_dvar, dgamma, dbeta):
    """A thread per c: sum_n dmean, sum_n dvar (float64) and, with gamma, dgamma and dbeta in x's dtype."""
    c = cuda.grid(1)
    if c < sum_n_dmean.size:
        formulas.switchable_batch_backward_at(
            c, N, dmean, dvar, sdy, sdyxmu, rstd, sum_n_dmean, sum_n_dvar, dgamma, dbeta
        )


@cuda.jit(cache=True)
def weights_backward(
    wv, dw_in, dv_in, sum_c_dmean, sum_c_dvar, mean_ln, var_ln, sum_n_dmean, sum_n_dvar, mean_bn, var_bn, dmw, dvw
):
    """One thread: the mixing-weight gradients through the softmax, dmw, dvw (3,)."""
    if cuda.grid(1) == 0:
        formulas.switchable_weights_backward(
            wv,
            dw_in,
            dv_in,
            sum_c_dmean,
            sum_c_dvar,
            mean_ln,
            var_ln,
            sum_n_dmean,
            sum_n_dvar,
            mean_bn,
            var_bn,
            dmw,
            dvw,
        )


@cuda.jit(cache=True)
def dx_coefficients(
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
    S,
    training,
    p,
    q,
    r,
):
    """A thread per row (n, c), grid-stride: p, q, r (R,) float64 of dx = p * dy + q * (x - mean_in) + r."""
    for i in range(cuda.grid(1), rstd.size, cuda.gridsize(1)):
        p[i], q[i], r[i] = formulas.switchable_dx_at(
            i,
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
