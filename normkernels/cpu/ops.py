"""Host side of the CPU backend: the same entry points as ``normkernels.cuda.ops``, on NumPy arrays.

Every function takes the flat or viewed arrays the front ends prepared (``normkernels._row_norms``,
``normkernels._batch_norm``, ``normkernels._switchable_norm``): x viewed as (R, K) rows or (N, C, S) channels,
gamma and beta flat (empty for none), already validated and in x's dtype. It allocates the outputs, picks the
fixed block sizes that make the results independent of the thread count, and calls the ``@njit`` kernels of
``rows``, ``channels`` and ``switchable``.
Statistics and per-row or per-channel coefficients are float64; results come back in x's dtype. Every entry
that returns an x-shaped result (y or dx) takes ``out``: that array, of the viewed shape, written in place
instead of a new one (the front ends checked it).
"""

from __future__ import annotations

import numpy as np

from . import _loops, channels, rows, switchable
from ._jit import launch_guard

# Samples per statistics block of batch norm: a block's slice of one channel holds about _BLOCK_ELEMENTS values,
# or for (N, D) input its rows about _WIDE_BLOCK_ELEMENTS, so the second pass of the two-pass variance reads it
# from cache (L2). Blocks of 128 rows of 1024 measured 10-15% faster than blocks of 32.
_BLOCK_ELEMENTS = 1 << 15
_WIDE_BLOCK_ELEMENTS = 1 << 17

# Each row-backward block adds its rows into one (A,) float64 partial per affine output; at most this many
# partial elements in all, so the memory stays bounded for very wide layer norms.
_MAX_PARTIAL_ELEMENTS = 1 << 22
_MAX_BLOCKS = 64


def _channel_block(n: int, c: int, s: int) -> int:
    """Samples per statistics block of an (N, C, S) batch norm, fixed by the shape alone."""
    return max(1, _BLOCK_ELEMENTS // s if s > 1 else _WIDE_BLOCK_ELEMENTS // max(1, c))


def rows_forward(x2, gamma, beta, eps: float, groups: int, inner: int, centered: bool = True, out=None):
    """x2: (R, K); gamma, beta: flat, possibly empty. Returns y (R, K), mean and rstd (R,) in x's dtype.
    centered False (RMSNorm): nothing subtracted, mean is 0. out: y's array (R, K), or None for a new one."""
    y = np.empty_like(x2) if out is None else out
    mean = np.empty(x2.shape[0])
    rstd = np.empty(x2.shape[0])
    with launch_guard():
        rows.rows_forward(x2, gamma, beta, eps, groups, inner, centered, y, mean, rstd)
    return y, mean.astype(x2.dtype), rstd.astype(x2.dtype)


def rows_backward(dy2, x2, gamma, mean, rstd, groups: int, inner: int, centered: bool = True, out=None):
    """Returns dx (R, K) and, with gamma, dgamma and dbeta (A,) in x's dtype (else None)."""
    n_rows = x2.shape[0]
    width = gamma.size  # partial sums per block: one per affine element, none without gamma
    # rows per block: at most _MAX_BLOCKS blocks, and at most _MAX_PARTIAL_ELEMENTS partial sums in all
    blocks = min(_MAX_BLOCKS, max(1, _MAX_PARTIAL_ELEMENTS // max(width, 1)))
    block = max(1, -(-n_rows // blocks))
    blocks = -(-n_rows // block)
    dgamma_part = np.zeros((blocks, width))
    dbeta_part = np.zeros((blocks, width))
    dx = np.empty_like(x2) if out is None else out
    with launch_guard():
        rows.rows_backward(dy2, x2, gamma, mean, rstd, groups, inner, centered, block, dx, dgamma_part, dbeta_part)
    if not width:
        return dx, None, None
    sums = []
    for part in (dgamma_part, dbeta_part):
        total = np.empty(width)
        _loops.sum_blocks(part, total)
        sums.append(total.astype(x2.dtype))
    return dx, *sums


def channels_forward(x3, gamma, beta, eps: float, training: bool, running_mean, running_var, momentum: float, out=None):
    """x3: (N, C, S). Returns y (N, C, S), mean and rstd (C,); updates the running statistics in place."""
    n, c, s = x3.shape
    has_running = running_mean is not None
    if not has_running:  # the kernel variant without running statistics takes empty ones
        running_mean = running_var = np.empty(0)
    mean, rstd, scale, shift = (np.empty(c) for _ in range(4))
    with launch_guard():
        if training:
            m2 = np.empty(c)
            channels.channels_stats(x3, _channel_block(n, c, s), mean, m2)
            channels.channels_finish(
                mean, m2, n * s, eps, gamma, beta, momentum, running_mean, running_var, rstd, scale, shift
            )
        else:
            channels.channels_eval(running_mean, running_var, eps, gamma, beta, mean, rstd, scale, shift)
        y = np.empty_like(x3) if out is None else out
        channels.channels_normalize(x3, mean, scale, shift, y)
    return y, mean.astype(x3.dtype), rstd.astype(x3.dtype)


def channels_backward(dy3, x3, gamma, mean, rstd, training: bool, out=None):
    """Returns dx (N, C, S) and, with gamma, dgamma and dbeta (C,) in x's dtype (else None)."""
    n, c, s = x3.shape
    mean = mean.astype(np.float64)
    sdy = np.zeros(c)
    sdyxmu = np.zeros(c)  # not needed in eval without gamma: dx = rstd * dy
    with launch_guard():
        if training or gamma.size:
            channels.channels_backward_sums(dy3, x3, mean, _channel_block(n, c, s), sdy, sdyxmu)
        dgamma, p, q, r = (np.empty(c) for _ in range(4))
        channels.channels_backward_coefficients(sdy, sdyxmu, rstd, gamma, training, float(n * s), dgamma, p, q, r)
        dx = np.empty_like(x3) if out is None else out
        channels.channels_backward_dx(dy3, x3, mean, p, q, r, dx)
    if not gamma.size:
        return dx, None, None
    return dx, dgamma.astype(x3.dtype), sdy.astype(x3.dtype)


# --- BatchNorm split in the steps SyncBatchNorm takes (normkernels._batch_norm_split): statistics are float64 ---


def channels_stats(x3):
    """x3: (N, C, S). Per-channel mean and M2 = sum((x - mean)**2) over n and s, float64 (C,); zeros for an empty
    batch (it contributes nothing to a merge)."""
    n, c, s = x3.shape
    mean, m2 = np.zeros(c), np.zeros(c)
    if n * s and c:
        with launch_guard():
            channels.channels_stats(x3, _channel_block(n, c, s), mean, m2)
    return mean, m2


def channels_merge(counts, means, m2s):
    """counts: (R,) float64; means, m2s: (R, C) float64. The rows merged in row order (Chan): mean and M2 (C,)."""
    c = means.shape[1]
    mean, m2 = np.zeros(c), np.zeros(c)
    if counts.size and c:
        channels.merge_blocks(counts, means, m2s, mean, m2)
    return mean, m2


def channels_gather(counts, means, m2s, eps: float, running_mean, running_var, momentum: float):
    """Every rank's (count, mean, M2) merged in rank order: mean and rstd (C,) float64 of the whole batch, and the
    running statistics (C,) or None updated in place with the unbiased variance over the total count. No values
    at all: NaN mean and rstd, running statistics untouched."""
    c = means.shape[1]
    total = float(np.sum(counts))  # integers below 2**53: exact in any order
    if total == 0:
        return np.full(c, np.nan), np.full(c, np.nan)
    mean, m2 = channels_merge(counts, means, m2s)
    if running_mean is None:
        running_mean = running_var = np.empty(0)
    rstd, scale, shift = (np.empty(c) for _ in range(3))
    none = np.empty(0)
    channels.channels_finish(mean, m2, total, eps, none, none, momentum, running_mean, running_var, rstd, scale, shift)
    return mean, rstd


def channels_elemt(x3, mean, rstd, gamma, beta, out=None):
    """y = (x - mean[c]) * rstd[c] * gamma[c] + beta[c] with float64 mean and rstd: channels_forward's y, bit for
    bit, given its statistics."""
    scale = rstd * gamma if gamma.size else rstd.copy()  # gamma in x's dtype, widened exactly
    shift = beta.astype(np.float64) if beta.size else np.zeros(mean.size)
    y = np.empty_like(x3) if out is None else out
    if y.size:
        with launch_guard():
            channels.channels_normalize(x3, mean, scale, shift, y)
    return y


def channels_backward_reduce(dy3, x3, mean):
    """Per channel sum(dy) and sum(dy * (x - mean)) over n and s, float64 (C,); zeros for an empty batch."""
    n, c, s = x3.shape
    sdy, sdyxmu = np.zeros(c), np.zeros(c)
    if n * s and c:
        with launch_guard():
            channels.channels_backward_sums(dy3, x3, mean, _channel_block(n, c, s), sdy, sdyxmu)
    return sdy, sdyxmu


def channels_backward_elemt(dy3, x3, mean, rstd, gamma, sum_dy, sum_dy_xmu, count: float, out=None):
    """dx of training mode from the sums over the whole batch (count values per channel): channels_backward's
    dx given the same sums."""
    c = x3.shape[1]
    dx = np.empty_like(x3) if out is None else out
    if dx.size:
        dgamma, p, q, r = (np.empty(c) for _ in range(4))
        with launch_guard():
            channels.channels_backward_coefficients(sum_dy, sum_dy_xmu, rstd, gamma, True, count, dgamma, p, q, r)
            channels.channels_backward_dx(dy3, x3, mean, p, q, r, dx)
    return dx


def switchable_forward(
    x3,
    gamma,
    beta,
    mean_weight,
    var_weight,
    eps: float,
    training: bool,
    running_mean,
    running_var,
    momentum: float,
    out=None,
):
    """x3: (N, C, S); gamma, beta: (C,) or (0,); mean_weight, var_weight: (3,); running_mean, running_var: (C,)
    or None (updated in place in training). Returns y (N, C, S) and the statistics in x's dtype, in the order of
    ``SwitchableStats``: mean, rstd, mean_in, var_in (N, C); mean_ln, var_ln (N,); mean_bn, var_bn (C,);
    mean_softmax, var_softmax (3,)."""
    N, C, S = x3.shape
    R = N * C
    x2 = x3.reshape(R, S)
    if running_mean is None:  # the kernel variant without running statistics takes empty ones
        running_mean = running_var = np.empty(0)
    wv = np.empty((2, 3))
    mean_in, m2_in, mean, rstd, var_in = (np.empty(R) for _ in range(5))
    mean_ln, var_ln = np.empty(N), np.empty(N)
    mean_bn, var_bn = np.empty(C), np.empty(C)
    y = np.empty_like(x2) if out is None else out.reshape(R, S)
    with launch_guard():
        switchable.softmax_weights(mean_weight, var_weight, wv)
        switchable.row_stats(x2, mean_in, m2_in)
        switchable.layer_stats(mean_in, m2_in, C, S, mean_ln, var_ln)
        switchable.batch_stats(mean_in, m2_in, N, S, training, momentum, running_mean, running_var, mean_bn, var_bn)
        switchable.mix_normalize(
            x2, mean_in, m2_in, mean_ln, var_ln, mean_bn, var_bn, wv, eps, gamma, beta, mean, rstd, var_in, y
        )
    per_row = tuple(a.reshape(N, C) for a in (mean, rstd, mean_in, var_in))
    stats = (*per_row, mean_ln, var_ln, mean_bn, var_bn, wv[0], wv[1])
    return y.reshape(N, C, S), tuple(a.astype(x3.dtype) for a in stats)


def switchable_backward(dy3, x3, gamma, mean_weight, var_weight, stats, training: bool, out=None):
    """dy3, x3: (N, C, S), not empty; gamma: (C,) or (0,); stats: flat (mean, rstd, mean_in, var_in, mean_ln,
    var_ln, mean_bn, var_bn) in x's dtype. Returns dx (N, C, S), dgamma and dbeta (C,) (None without gamma),
    dmean_weight and dvar_weight (3,), in x's dtype."""
    mean, rstd, mean_in, var_in, mean_ln, var_ln, mean_bn, var_bn = stats
    N, C, S = x3.shape
    R = N * C
    x2 = x3.reshape(R, S)
    dy2 = dy3.reshape(R, S)
    wv = np.empty((2, 3))
    sdy, sdyxmu, dmean, dvar = (np.empty(R) for _ in range(4))
    sum_c_dmean, sum_c_dvar, dw_in, dv_in = (np.empty(N) for _ in range(4))
    sum_n_dmean, sum_n_dvar = np.empty(C), np.empty(C)
    width = C if gamma.size else 0
    dgamma, dbeta = np.empty(width), np.empty(width)
    dmw, dvw = np.empty(3), np.empty(3)
    dx = np.empty_like(x2) if out is None else out.reshape(R, S)
    with launch_guard():
        switchable.softmax_weights(mean_weight, var_weight, wv)
        switchable.backward_row_sums(dy2, x2, mean, rstd, gamma, C, sdy, sdyxmu, dmean, dvar)
        switchable.layer_backward(dmean, dvar, mean_in, var_in, C, sum_c_dmean, sum_c_dvar, dw_in, dv_in)
        switchable.batch_backward(dmean, dvar, sdy, sdyxmu, rstd, N, sum_n_dmean, sum_n_dvar, dgamma, dbeta)
        switchable.weights_backward(
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
        switchable.backward_dx(
            dy2,
            x2,
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
        )
    dt = x3.dtype
    dx = dx.reshape(N, C, S)
    if not width:
        return dx, None, None, dmw.astype(dt), dvw.astype(dt)
    return dx, dgamma.astype(dt), dbeta.astype(dt), dmw.astype(dt), dvw.astype(dt)
