"""Channel kernels on the GPU: BatchNorm.

The math is that of ``normkernels.cpu.channels``; x is viewed as (N, C, S). Each channel is split across
many blocks, each producing a partial (mean, M2) over its chunk with two passes over values kept in
registers; ``channels_merge`` then merges a channel's chunks in order with Chan's formulas (one thread per
channel, no atomics), updates the running statistics on the device and writes per-channel scale and shift,
and ``channels_normalize`` applies them. Two layouts of the chunks:

    wide     (S == 1, x is (N, D)): a thread per channel and chunk of CHUNK_ROWS samples, so a warp reads
             32 neighbouring channels of the same sample (coalesced).
    spatial  (S > 1): a block per (chunk, channel), the chunk being BLOCK * ITEMS consecutive values of
             the channel's N * S values, read as runs of S contiguous values.

Backward is the same split for the two sums sum(dy) and sum(dy * (x - mean)), a per-channel merge that
turns them into dgamma, dbeta and the coefficients of dx = p * dy + q * (x - mean) + r, and an elementwise
kernel for dx.

Split batch norm (SyncBatchNorm's split across ranks) reuses the same kernels around three small per-channel
ones: ``channels_stats_merge`` (the chunk merge alone: a rank's float64 mean and M2), ``channels_gather`` (the
ranks' rows merged in rank order, then rstd and the running statistics) and ``channels_affine`` (scale and
shift for ``channels_normalize``).
"""

import math

from numba import cuda, float64

from . import formulas
from ._config import ITEMS, MAX_BLOCK
from .reduce import team_sum


@cuda.jit(device=True, inline=True)
def _chunk_count(b, chunk, total):
    return min(chunk, total - b * chunk)


@cuda.jit(device=True, inline=True)
def _wide_task(C):
    """(channel, chunk) of a thread of a wide kernel: a 1-D grid of B * ceil(C / blockDim) blocks, chunk-major
    (1-D, since a grid's y dimension stops at 65535)."""
    col_blocks = (C + cuda.blockDim.x - 1) // cuda.blockDim.x
    return (cuda.blockIdx.x % col_blocks) * cuda.blockDim.x + cuda.threadIdx.x, cuda.blockIdx.x // col_blocks


@cuda.jit(device=True, inline=True)
def _spatial_task(B):
    """(chunk, channel) of a block of a spatial kernel: a 1-D grid of B * C blocks, channel-major."""
    return cuda.blockIdx.x % B, cuda.blockIdx.x // B


@cuda.jit(cache=True)
def stats_wide(x, chunk, mean_part, m2_part):
    """x: (N, C). Thread (c, b): mean and M2 of x[b*chunk:(b+1)*chunk, c]."""
    N, C = x.shape
    c, b = _wide_task(C)
    if c < C:
        n0 = b * chunk
        n1 = min(N, n0 + chunk)
        s = 0.0
        for n in range(n0, n1):
            s += float64(x[n, c])
        m = s / (n1 - n0)
        q = 0.0
        for n in range(n0, n1):
            d = float64(x[n, c]) - m
            q += d * d
        mean_part[b, c] = m
        m2_part[b, c] = q


@cuda.jit(cache=True)
def stats_spatial(x, chunk, mean_part, m2_part):
    """x: (N, C, S); a 1-D grid of B * C blocks. Block (b, c): mean and M2 of values [b*chunk, (b+1)*chunk) of
    channel c, counting them n-major over (n, s). chunk = blockDim * ITEMS, so every value stays in registers."""
    shared = cuda.shared.array(MAX_BLOCK, float64)
    cache = cuda.local.array(ITEMS, float64)
    N, C, S = x.shape
    b, c = _spatial_task(mean_part.shape[0])
    nt = cuda.blockDim.x
    tid = cuda.threadIdx.x
    total = N * S
    lo = b * chunk
    count = _chunk_count(b, chunk, total)
    s = 0.0
    for j in range(ITEMS):
        i = lo + tid + j * nt
        if i < lo + count:
            v = float64(x[i // S, c, i % S])
            cache[j] = v
            s += v
    m = team_sum(s, shared, nt) / count
    q = 0.0
    for j in range(ITEMS):
        i = lo + tid + j * nt
        if i < lo + count:
            d = cache[j] - m
            q += d * d
    q = team_sum(q, shared, nt)
    if tid == 0:
        mean_part[b, c] = m
        m2_part[b, c] = q


@cuda.jit(device=True, inline=True)
def _merge_chunks(mean_part, m2_part, chunk, total, c):
    """(mean, M2) of channel c from its B chunk partials of a batch of total values per channel, merged in
    chunk order (Chan); (0, 0) for no chunks (an empty batch)."""
    m = 0.0
    m2 = 0.0
    n_a = 0.0
    for b in range(mean_part.shape[0]):  # the first merge, into n_a = 0, takes chunk 0 as it is
        n_b = float64(_chunk_count(b, chunk, total))
        m, m2 = formulas.chan_merge(n_a, m, m2, n_b, mean_part[b, c], m2_part[b, c])
        n_a += n_b
    return m, m2


@cuda.jit(device=True, inline=True)
def _finish(c, m, m2, total, eps, momentum, running_mean, running_var):
    """Channel c's rstd from its (mean, M2) over total values; running_mean/running_var: (C,) updated in place
    (PyTorch's unbiased running variance), or (0,) for none."""
    if running_mean.size > 0:
        running_mean[c] = formulas.running_update(running_mean[c], m, momentum)
        running_var[c] = formulas.running_update(running_var[c], formulas.unbiased_var(m2, total), momentum)
    return formulas.rstd_of(m2 / total, eps)


@cuda.jit(device=True, inline=True)
def _affine(c, rs, gamma, beta, scale, shift):
    """scale = rstd * gamma and shift = beta of channel c, float64 (1 and 0 for empty gamma and beta). gamma is
    widened first: the simulator's NumPy scalars would round a Python float times a float32 to float32."""
    scale[c] = rs * float64(gamma[c]) if gamma.size > 0 else rs
    shift[c] = beta[c] if beta.size > 0 else 0.0


@cuda.jit(cache=True)
def channels_merge(
    mean_part,
    m2_part,
    chunk,
    total,
    eps,
    gamma,
    beta,
    momentum,
    running_mean,
    running_var,
    mean,
    rstd,
    center,
    scale,
    shift,
):
    """One thread per channel: merge the B chunk partials in order (Chan), then per channel
    mean, rstd (x's dtype) and, for the normalize kernel, center = mean, scale = rstd * gamma and
    shift = beta (float64: a float32 mean would move y by up to half an ulp of the mean, 5e-4 at 1e4).
    running_mean/running_var: (C,) updated in place, or (0,) for none."""
    c = cuda.grid(1)
    if c < mean_part.shape[1]:
        m, m2 = _merge_chunks(mean_part, m2_part, chunk, total, c)
        rs = _finish(c, m, m2, total, eps, momentum, running_mean, running_var)
        mean[c] = m
        rstd[c] = rs
        center[c] = m
        _affine(c, rs, gamma, beta, scale, shift)


@cuda.jit(cache=True)
def channels_eval(running_mean, running_var, eps, gamma, beta, mean, rstd, center, scale, shift):
    """Eval mode: the running statistics are the statistics. One thread per channel."""
    c = cuda.grid(1)
    if c < running_mean.size:
        rs = formulas.rstd_of(float64(running_var[c]), eps)
        mean[c] = running_mean[c]
        rstd[c] = rs
        center[c] = running_mean[c]
        _affine(c, rs, gamma, beta, scale, shift)


@cuda.jit(cache=True)
def channels_stats_merge(mean_part, m2_part, chunk, total, mean, m2):
    """Split batch norm's local statistics: one thread per channel merges the B chunk partials in order into
    float64 mean and M2 (0 and 0 for an empty batch)."""
    c = cuda.grid(1)
    if c < mean.size:
        mean[c], m2[c] = _merge_chunks(mean_part, m2_part, chunk, total, c)


@cuda.jit(cache=True)
def channels_gather(counts, means, m2s, eps, momentum, running_mean, running_var, mean, rstd):
    """Split batch norm's global statistics: one thread per channel merges the R ranks' (mean, M2) rows of
    counts[r] values each in rank order (Chan; empty ranks change nothing), then mean and rstd (float64) and
    the running statistics as ``channels_merge`` updates them. No values at all: NaN mean and rstd, the
    running statistics left alone. running_mean/running_var: (C,) updated in place, or (0,) for none."""
    c = cuda.grid(1)
    if c < mean.size:
        m = 0.0
        m2 = 0.0
        total = 0.0
        for r in range(counts.size):
            m, m2 = formulas.chan_merge(total, m, m2, counts[r], means[r, c], m2s[r, c])
            total += counts[r]
        if total == 0:
            mean[c] = math.nan
            rstd[c] = math.nan
        else:
            mean[c] = m
            rstd[c] = _finish(c, m, m2, total, eps, momentum, running_mean, running_var)


@cuda.jit(cache=True)
def channels_affine(rstd, gamma, beta, scale, shift):
    """Split batch norm's elementwise step: one thread per channel, scale = rstd * gamma and shift = beta
    (float64) for ``channels_normalize``, as ``channels_merge`` writes them."""
    c = cuda.grid(1)
    if c < rstd.size:
        _affine(c, rstd[c], gamma, beta, scale, shift)


@cuda.jit(cache=True)
def channels_normalize(x, center, scale, shift, S, C, y):
    """y = (x - center[c]) * scale[c] + shift[c] over flat x, y; c = (i // S) % C; center, scale, shift
    float64. Grid-stride, coalesced."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        c = (i // S) % C
        y[i] = (float64(x[i]) - center[c]) * scale[c] + shift[c]


@cuda.jit(cache=True)
def backward_sums_wide(dy, x, mean, chunk, pdy, pdyxmu):
    """(N, C) layout: thread (c, b) sums dy and dy * (x - mean[c]) over samples of chunk b."""
    N, C = x.shape
    c, b = _wide_task(C)
    if c < C:
        m = float64(mean[c])
        s1 = 0.0
        s2 = 0.0
        for n in range(b * chunk, min(N, (b + 1) * chunk)):
            d = float64(dy[n, c])
            s1 += d
            s2 += d * (float64(x[n, c]) - m)
        pdy[b, c] = s1
        pdyxmu[b, c] = s2


@cuda.jit(cache=True)
def backward_sums_spatial(dy, x, mean, chunk, pdy, pdyxmu):
    """(N, C, S) layout: block (b, c) sums dy and dy * (x - mean[c]) over values of chunk b of channel c."""
    shared = cuda.shared.array(MAX_BLOCK, float64)
    N, C, S = x.shape
    b, c = _spatial_task(pdy.shape[0])
    nt = cuda.blockDim.x
    lo = b * chunk
    hi = lo + _chunk_count(b, chunk, N * S)
    m = float64(mean[c])
    s1 = 0.0
    s2 = 0.0
    for i in range(lo + cuda.threadIdx.x, hi, nt):
        n = i // S
        s = i % S
        d = float64(dy[n, c, s])
        s1 += d
        s2 += d * (float64(x[n, c, s]) - m)
    s1 = team_sum(s1, shared, nt)
    s2 = team_sum(s2, shared, nt)
    if cuda.threadIdx.x == 0:
        pdy[b, c] = s1
        pdyxmu[b, c] = s2


@cuda.jit(cache=True)
def backward_coefficients(pdy, pdyxmu, rstd, gamma, training, count, dgamma, dbeta, p, q, r):
    """One thread per channel: add the partials in order, then dgamma, dbeta and the dx coefficients."""
    B, C = pdy.shape
    c = cuda.grid(1)
    if c < C:
        sdy = 0.0
        sdyxmu = 0.0
        for b in range(B):
            sdy += pdy[b, c]
            sdyxmu += pdyxmu[b, c]
        ga = float64(gamma[c]) if gamma.size > 0 else 1.0
        dg, p[c], q[c], r[c] = formulas.channel_backward(sdy, sdyxmu, float64(rstd[c]), ga, count, training)
        if gamma.size > 0:
            dgamma[c] = dg
            dbeta[c] = sdy


@cuda.jit(cache=True)
def backward_dx(dy, x, mean, p, q, r, S, C, dx):
    """dx = p[c] * dy + q[c] * (x - mean[c]) + r[c] over flat arrays; c = (i // S) % C."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        c = (i // S) % C
        dx[i] = p[c] * float64(dy[i]) + q[c] * (float64(x[i]) - float64(mean[c])) + r[c]
