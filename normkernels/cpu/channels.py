"""Channel kernels: BatchNorm on the CPU.

x is viewed as ``(N, C, S)`` (S = the product of the spatial dims, 1 for (N, D) input), with one mean and
rstd per channel c taken over n and s. M = N * S values per channel.

Forward (training):

    mean = sum(x) / M
    var  = sum((x - mean)**2) / M          biased; the running variance gets var * M / (M - 1)
    rstd = 1 / sqrt(var + eps)
    y    = (x - mean) * (rstd * gamma) + beta

Statistics are taken per block of samples (``block`` samples, fixed by the shape) with two passes over data
still in cache, giving (count, mean, M2) per block and channel; the blocks are then merged in order with
Chan's formulas

    delta = mean_b - mean_a,   n = n_a + n_b
    mean  = mean_a + delta * n_b / n
    M2    = M2_a + M2_b + delta**2 * n_a * n_b / n

so results do not depend on the thread count.

Backward, per channel, with xhat = (x - mean) * rstd:

    dbeta  = sum(dy)
    dgamma = sum(dy * xhat)
    dx     = rstd * gamma * (dy - dbeta / M - xhat * dgamma / M)      (training)
    dx     = rstd * gamma * dy                                        (eval: mean, rstd are constants)

both computed as dx = p * dy + q * (x - mean) + r with per-channel p = rstd * gamma,
q = -rstd**2 * gamma * dgamma / M and r = -rstd * gamma * dbeta / M (q = r = 0 in eval).

Sums, per-channel coefficients and the backward are float64 whatever the storage dtype. The forward's kernel
writing y rounds a channel's coefficients to the storage dtype and computes in it (see ``_loops``).
"""

import numpy as np
from numba import njit, prange

from . import _loops as L
from . import formulas
from ._jit import PARALLEL, SERIAL


@njit(**SERIAL)
def merge_blocks(count, mean_part, m2_part, mean, m2):
    """Merge per-block (count, mean, M2) into per-channel mean and M2, block by block in order: the blocks of
    one batch, or the partial statistics of many (ranks, or the batches of a data set). A block with count 0
    changes nothing, whatever its mean and M2 hold."""
    mean[:] = mean_part[0]
    m2[:] = m2_part[0]
    n_a = count[0]
    for b in range(1, mean_part.shape[0]):
        n_b = count[b]
        for c in range(mean.size):
            mean[c], m2[c] = formulas.chan_merge(n_a, mean[c], m2[c], n_b, mean_part[b, c], m2_part[b, c])
        n_a += n_b


@njit(**PARALLEL)
def channels_stats(x, block, mean, m2):
    """x: (N, C, S). Writes the per-channel mean and M2 = sum((x - mean)**2), (C,) float64."""
    N, C, S = x.shape
    B = (N + block - 1) // block
    count = np.empty(B)
    mean_part = np.zeros((B, C))
    m2_part = np.zeros((B, C))
    for b in range(B):
        count[b] = (min(N, (b + 1) * block) - b * block) * S
    if S == 1:  # (N, D): channels are contiguous, so sweep whole rows, four at a time
        x2 = x.reshape(N, C)
        for b in prange(B):
            n0 = b * block
            n1 = min(N, n0 + block)
            acc = mean_part[b]
            n = n0
            while n + 4 <= n1:
                L.add_rows4_into(acc, x2[n : n + 4])
                n += 4
            for tail in range(n, n1):
                L.add_into(acc, x2[tail])
            acc /= count[b]
            acc = m2_part[b]
            n = n0
            while n + 4 <= n1:
                L.add_sq_dev_rows4_into(acc, x2[n : n + 4], mean_part[b])
                n += 4
            for tail in range(n, n1):
                L.add_sq_dev_into(acc, x2[tail], mean_part[b])
    else:  # one task per (block, channel); each sample's channel is a contiguous run of S values
        for t in prange(B * C):
            b = t // C
            c = t % C
            n0 = b * block
            n1 = min(N, n0 + block)
            s = 0.0
            for n in range(n0, n1):
                s += L.sum_(x[n, c])
            m = s / count[b]
            q = 0.0
            for n in range(n0, n1):
                q += L.sum_sq_dev(x[n, c], m)
            mean_part[b, c] = m
            m2_part[b, c] = q
    merge_blocks(count, mean_part, m2_part, mean, m2)


@njit(**SERIAL)
def channels_finish(mean, m2, count, eps, gamma, beta, momentum, running_mean, running_var, rstd, scale, shift):
    """Training: per channel rstd from the biased variance M2 / count, the normalize coefficients
    scale = rstd * gamma and shift = beta, and the running statistics (empty for none) updated in place."""
    for c in range(mean.size):
        rs = formulas.rstd_of(m2[c] / count, eps)
        if running_mean.size > 0:
            running_mean[c] = formulas.running_update(running_mean[c], mean[c], momentum)
            running_var[c] = formulas.running_update(running_var[c], formulas.unbiased_var(m2[c], count), momentum)
        rstd[c] = rs
        scale[c] = rs * gamma[c] if gamma.size > 0 else rs
        shift[c] = beta[c] if beta.size > 0 else 0.0


@njit(**SERIAL)
def channels_eval(running_mean, running_var, eps, gamma, beta, mean, rstd, scale, shift):
    """Eval mode: the running statistics are the statistics (float64 mean, rstd, scale, shift)."""
    for c in range(mean.size):
        rs = formulas.rstd_of(np.float64(running_var[c]), eps)
        mean[c] = running_mean[c]
        rstd[c] = rs
        scale[c] = rs * gamma[c] if gamma.size > 0 else rs
        shift[c] = beta[c] if beta.size > 0 else 0.0


@njit(**PARALLEL)
def channels_normalize(x, mean, scale, shift, y):
    """y = (x - mean[c]) * scale[c] + shift[c]; x, y: (N, C, S); mean, scale, shift: (C,) float64."""
    N, C, S = x.shape
    if S == 1:  # (N, D): one row per task, the coefficients rounded to x's dtype once, as vectors
        mh = np.empty(C, x.dtype)
        sc = np.empty(C, x.dtype)
        sh = np.empty(C, x.dtype)
        for c in range(C):
            mh[c] = L.like(x, mean[c])
            sc[c] = L.like(x, scale[c])
            # the low part of the centre, m - mh, moves into the shift: (x - m) * scale + shift
            # = (x - mh) * scale + (shift - (m - mh) * scale), taken in float64 and rounded once
            sh[c] = L.like(x, shift[c] - (mean[c] - np.float64(mh[c])) * scale[c])
        for n in prange(N):
            L.scale_shift_each(x[n].reshape(C), mh, sc, sh, y[n].reshape(C))
    else:  # one (n, c) run of S contiguous values per task, in x's dtype
        for t in prange(N * C):
            n = t // C
            c = t % C
            mh = L.like(x, mean[c])
            ml = L.like(x, mean[c] - mh)
            L.scale_shift(x[n, c], mh, ml, L.like(x, scale[c]), L.like(x, shift[c]), y[n, c])


@njit(**PARALLEL)
def channels_backward_sums(dy, x, mean, block, sdy, sdyxmu):
    """Per channel, sum(dy) and sum(dy * (x - mean)) over n and s: (C,) float64 outputs."""
    N, C, S = x.shape
    B = (N + block - 1) // block
    pdy = np.zeros((B, C))
    pdyxmu = np.zeros((B, C))
    if S == 1:
        for b in prange(B):
            for n in range(b * block, min(N, (b + 1) * block)):
                L.add_dy_dyxmu_into(pdy[b], pdyxmu[b], dy[n].reshape(C), x[n].reshape(C), mean)
    else:
        for t in prange(B * C):
            b = t // C
            c = t % C
            for n in range(b * block, min(N, (b + 1) * block)):
                u, v = L.sum_dy_dyxmu(dy[n, c], x[n, c], mean[c])
                pdy[b, c] += u
                pdyxmu[b, c] += v
    L.sum_blocks(pdy, sdy)
    L.sum_blocks(pdyxmu, sdyxmu)


@njit(**SERIAL)
def channels_backward_coefficients(sdy, sdyxmu, rstd, gamma, training, count, dgamma, p, q, r):
    """Per channel, dgamma and the coefficients of dx = p * dy + q * (x - mean) + r from the two sums."""
    for c in range(sdy.size):
        ga = np.float64(gamma[c]) if gamma.size > 0 else 1.0
        dgamma[c], p[c], q[c], r[c] = formulas.channel_backward(
            sdy[c], sdyxmu[c], np.float64(rstd[c]), ga, count, training
        )


@njit(**PARALLEL)
def channels_backward_dx(dy, x, mean, p, q, r, dx):
    """dx = p[c] * dy + q[c] * (x - mean[c]) + r[c]; all per-channel vectors (C,) float64."""
    N, C, S = x.shape
    if S == 1:
        for n in prange(N):
            L.grad_input_each(dy[n].reshape(C), x[n].reshape(C), mean, p, q, r, dx[n].reshape(C))
    else:
        for t in prange(N * C):
            n = t // C
            c = t % C
            L.grad_input(dy[n, c], x[n, c], mean[c], p[c], q[c], r[c], dx[n, c])
