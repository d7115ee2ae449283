"""Host side of the CUDA backend: launch configuration, buffers, and NumPy-in/NumPy-out transfers.

Every function takes the flat or viewed arrays the front ends prepared (``normkernels._row_norms``,
``normkernels._batch_norm``, ``normkernels._switchable_norm``). NumPy arrays are copied to the device and
results copied back; device arrays stay on the device, the results are Numba device arrays, and nothing here
synchronizes with the host.
Launches, allocations and copies go to Numba's default stream, or to the stream of an enclosing
``on_stream(stream)`` block (how a framework's current stream, e.g. PyTorch's, orders our kernels with its own).
Every entry that returns an x-shaped result (y or dx) takes ``out``, the caller's array for it: a device out is
written by the kernels directly, a host out receives the copy back.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache

import numpy as np
from numba import cuda

from . import channels, rows, switchable
from ._config import BLOCK, CHUNK_ROWS, ITEMS, MAX_PARTIAL, MAX_TEAM, MAX_TEAMS, MIN_TEAM

_GRID_STRIDE_BLOCKS = 4096  # cap for the grid-stride elementwise kernels

# A context variable rather than an argument threaded through every front end: each thread and asyncio task
# sees its own stream, and code outside an on_stream block keeps the default stream (0).
_stream: ContextVar = ContextVar("normkernels_cuda_stream", default=None)


@contextmanager
def on_stream(stream) -> Iterator:
    """Within the block, every op with backend="cuda" launches, allocates and copies on ``stream`` (a Numba
    stream, e.g. ``cuda.external_stream(torch.cuda.current_stream().cuda_stream)``) instead of the default
    stream. Results of device inputs are ordered on that stream (not synchronized with the host); NumPy
    results are copied back and the stream synchronized before the op returns. ``0`` and ``None`` name the
    default stream, as outside any block (Numba's own spelling of it in ``stream=`` arguments)."""
    # stored as None: the unset value, which the launches and copies read as the default, synchronous stream
    # (0 has no synchronize(), which an asynchronous copy back calls)
    token = _stream.set(None if _is_default(stream) else stream)
    try:
        yield stream
    finally:
        _stream.reset(token)


def _is_default(stream) -> bool:
    """None or 0: Numba's default stream (a Numba Stream object, even of handle 0, is taken as given)."""
    return stream is None or (isinstance(stream, int) and stream == 0)


def _launch_stream():
    """The stream of the enclosing on_stream block, or 0: Numba's default stream."""
    stream = _stream.get()
    return 0 if stream is None else stream


def _empty(shape, dtype):
    """A device array bound to the launch stream, so that its copies and __cuda_array_interface__ name it."""
    return cuda.device_array(shape, dtype=dtype, stream=_launch_stream())


# Kernel launches are recorded here while a list is set: (kernel, argument types) for every launch, which is how
# the PTX tests derive the kernels and the argument types to compile (tests/test_cuda_ptx.py).
_launches: ContextVar = ContextVar("normkernels_cuda_launches", default=None)


@contextmanager
def recording() -> Iterator[list]:
    """Within the block, every launch appends (kernel, args) to the list this yields."""
    record: list = []
    token = _launches.set(record)
    try:
        yield record
    finally:
        _launches.reset(token)


def launch(kernel, blocks: int, threads: int, *args) -> None:
    """kernel[blocks, threads, stream](*args) on the launch stream (the enclosing on_stream block's, or the
    default stream); every kernel of the backend is launched through here."""
    record = _launches.get()
    if record is not None:
        record.append((kernel, args))
    kernel[blocks, threads, _launch_stream()](*args)


def _blocks(n: int, per_block: int = BLOCK) -> int:
    return max(1, -(-n // per_block))


@lru_cache(maxsize=256)
def row_launch(rows_: int, length: int, max_teams: int = MAX_TEAMS) -> tuple[int, int, int, int]:
    """(blocks, threads per block, team size ts, teams in the grid) for R rows of K values.

    ts is the power of two that gives each thread about ITEMS values of its row, within [MIN_TEAM, MAX_TEAM];
    short rows share a block (a warp per row on hardware). At most max_teams teams (rounded down to whole
    blocks, at least one block); the grid strides over further rows."""
    ts = min(MAX_TEAM, max(MIN_TEAM, 1 << max(0, math.ceil(math.log2(max(1, -(-length // ITEMS)))))))
    threads = max(ts, BLOCK)
    per_block = threads // ts
    blocks = max(1, min(-(-rows_ // per_block), max_teams // per_block))
    return blocks, threads, ts, blocks * per_block


@lru_cache(maxsize=256)
def channel_launch(n: int, c: int, s: int) -> tuple[int, int, int]:
    """(values per chunk, number of chunks B, blocks of the 1-D grid) of the batch-norm statistics and
    backward sums; B = 0 for an empty batch."""
    if n * s == 0 or c == 0:
        return 1, 0, 0
    if s == 1:
        chunk = -(-n // -(-n // CHUNK_ROWS))  # equal chunks of about CHUNK_ROWS samples
        chunks = -(-n // chunk)
        return chunk, chunks, chunks * _blocks(c)
    chunk = BLOCK * ITEMS
    chunks = -(-(n * s) // chunk)
    return chunk, chunks, chunks * c


class _Transfer:
    """Copies NumPy inputs to the device once and results back to the host, or passes device arrays through."""

    def __init__(self, x):
        self.host = isinstance(x, np.ndarray)
        self.stream = _launch_stream()
        self.asynchronous = _stream.get() is not None  # copies on a stream return before they are done

    def __call__(self, a):
        return cuda.to_device(np.ascontiguousarray(a), stream=self.stream) if self.host else a

    def target(self, out, shape, dtype):
        """Where a kernel writes an x-shaped result: the caller's device out (flat, as the kernels index it),
        else a new device array (copied into a host out, if any, by ``out``)."""
        if out is not None and not self.host:
            return out.reshape(shape)
        return _empty(shape, dtype)

    def out(self, a, into=None):
        """a on the host for NumPy input (copied into ``into`` when given: the caller's out), as it is otherwise."""
        if not self.host:
            return a
        if into is not None:
            if a.size:  # nothing to copy for an empty result (and the simulator would compare strides)
                a.copy_to_host(into.reshape(a.shape), stream=self.stream)
            if self.asynchronous:
                self.stream.synchronize()
            return into
        host = a.copy_to_host(stream=self.stream)
        if self.asynchronous:  # the caller reads the host copy at once
            self.stream.synchronize()
        return host


def rows_forward(x2, gamma, beta, eps: float, groups: int, inner: int, centered: bool = True, out=None):
    """x2: (R, K); gamma, beta: flat, possibly empty. Returns y (R, K), mean and rstd (R,) in x's dtype.
    centered False (RMSNorm): nothing subtracted, mean is 0."""
    io = _Transfer(x2)
    R, K = x2.shape
    dx2, dg, db = io(x2), io(gamma), io(beta)
    y = io.target(out, (R, K), x2.dtype)
    mean = _empty(R, x2.dtype)
    rstd = _empty(R, x2.dtype)
    if R and K:
        blocks, threads, ts, _ = row_launch(R, K)
        launch(rows.rows_forward, blocks, threads, dx2, dg, db, eps, groups, inner, centered, ts, y, mean, rstd)
    elif R:  # empty rows: mean and rstd are 0 / 0, as on the CPU
        for a in (mean, rstd):
            launch(rows.fill, _blocks(R), BLOCK, a, math.nan)
    return io.out(y, out), io.out(mean), io.out(rstd)


def rows_backward(dy2, x2, gamma, mean, rstd, groups: int, inner: int, centered: bool = True, out=None):
    """Returns dx (R, K) and, with gamma, dgamma and dbeta (A,) in x's dtype (else None)."""
    io = _Transfer(x2)
    R, K = x2.shape
    d_dy, d_x, d_g, d_mean, d_rstd = (io(a) for a in (dy2, x2, gamma, mean, rstd))
    dx = io.target(out, (R, K), x2.dtype)
    has_gamma = gamma.size > 0
    per_element = inner == 1 and groups == 1  # layer norm
    blocks, threads, ts, teams = row_launch(R, K, max(1, MAX_PARTIAL // max(K, 1)) if per_element else MAX_TEAMS)
    if not has_gamma:
        part_shape = (1, 0)
    elif not (R and K):
        part_shape = (0, gamma.size)  # nothing to add: sum_rows gives zeros
    elif per_element:
        part_shape = (teams, K)  # per team of the grid, per element of the row
    else:
        part_shape = (R, K // inner)  # per row, per channel segment
    pgamma = _empty(part_shape, np.float64)
    pbeta = _empty(part_shape, np.float64)
    if R and K:
        launch(
            rows.rows_backward,
            blocks,
            threads,
            d_dy,
            d_x,
            d_g,
            d_mean,
            d_rstd,
            groups,
            inner,
            centered,
            ts,
            dx,
            pgamma,
            pbeta,
        )
    if not has_gamma:
        return io.out(dx, out), None, None
    width = gamma.size
    sums = []
    for part in (pgamma, pbeta):
        # per row and segment, (N * G, C / G) is (N, C): adding its rows adds over n; layer norm: over teams
        part = part.reshape(-1, width)
        total = _empty(width, x2.dtype)
        launch(rows.sum_rows, _blocks(width), BLOCK, part, total)
        sums.append(io.out(total))
    return io.out(dx, out), *sums


def _channel_partials(kernel_wide, kernel_spatial, arrays, N: int, C: int, S: int, *extra):
    """The per-chunk partials (chunks, C) of the wide or spatial kernel over arrays (each (N, C, S) on the
    device), and the chunk size; no launch for an empty batch (chunks = 0)."""
    chunk, chunks, grid = channel_launch(N, C, S)
    parts = (_empty((chunks, C), np.float64), _empty((chunks, C), np.float64))
    if grid:
        if S == 1:
            launch(kernel_wide, grid, BLOCK, *(a.reshape(N, C) for a in arrays), *extra, chunk, *parts)
        else:
            launch(kernel_spatial, grid, BLOCK, *arrays, *extra, chunk, *parts)
    return chunk, parts


def channels_forward(x3, gamma, beta, eps: float, training: bool, running_mean, running_var, momentum: float, out=None):
    """x3: (N, C, S). Returns y (N, C, S), mean and rstd (C,); updates the running statistics in place."""
    io = _Transfer(x3)
    N, C, S = x3.shape
    d_x, d_g, d_b = io(x3), io(gamma), io(beta)
    has_running = running_mean is not None
    if has_running:
        d_rm, d_rv = io(running_mean), io(running_var)
    else:
        d_rm = d_rv = _empty(0, x3.dtype)  # the variant without running statistics
    mean = _empty(C, x3.dtype)
    rstd = _empty(C, x3.dtype)
    center, scale, shift = (_empty(C, np.float64) for _ in range(3))
    if training and C:
        chunk, parts = _channel_partials(channels.stats_wide, channels.stats_spatial, (d_x,), N, C, S)
        launch(
            channels.channels_merge,
            _blocks(C),
            BLOCK,
            *parts,
            chunk,
            N * S,
            eps,
            d_g,
            d_b,
            momentum,
            d_rm,
            d_rv,
            mean,
            rstd,
            center,
            scale,
            shift,
        )
    elif C:
        launch(channels.channels_eval, _blocks(C), BLOCK, d_rm, d_rv, eps, d_g, d_b, mean, rstd, center, scale, shift)
    y = io.target(out, N * C * S, x3.dtype)
    if y.size:
        blocks = min(_blocks(y.size), _GRID_STRIDE_BLOCKS)
        launch(channels.channels_normalize, blocks, BLOCK, d_x.reshape(N * C * S), center, scale, shift, S, C, y)
    if has_running and io.host and training:
        running_mean[...] = io.out(d_rm)
        running_var[...] = io.out(d_rv)
    return io.out(y, out).reshape(N, C, S), io.out(mean), io.out(rstd)


def channels_backward(dy3, x3, gamma, mean, rstd, training: bool, out=None):
    """Returns dx (N, C, S) and, with gamma, dgamma and dbeta (C,) in x's dtype (else None)."""
    io = _Transfer(x3)
    N, C, S = x3.shape
    d_dy, d_x, d_g, d_mean, d_rstd = (io(a) for a in (dy3, x3, gamma, mean, rstd))
    kernels = (channels.backward_sums_wide, channels.backward_sums_spatial)
    _, (pdy, pdyxmu) = _channel_partials(*kernels, (d_dy, d_x), N, C, S, d_mean)
    has_gamma = gamma.size > 0
    dgamma = _empty(C if has_gamma else 0, x3.dtype)
    dbeta = _empty(C if has_gamma else 0, x3.dtype)
    p, q, r = (_empty(C, np.float64) for _ in range(3))
    if C:
        launch(
            channels.backward_coefficients,
            _blocks(C),
            BLOCK,
            pdy,
            pdyxmu,
            d_rstd,
            d_g,
            training,
            float(N * S),
            dgamma,
            dbeta,
            p,
            q,
            r,
        )
    dx = io.target(out, N * C * S, x3.dtype)
    if dx.size:
        blocks = min(_blocks(dx.size), _GRID_STRIDE_BLOCKS)
        flat = N * C * S
        launch(channels.backward_dx, blocks, BLOCK, d_dy.reshape(flat), d_x.reshape(flat), d_mean, p, q, r, S, C, dx)
    dx = io.out(dx, out).reshape(N, C, S)
    if not has_gamma:
        return dx, None, None
    return dx, io.out(dgamma), io.out(dbeta)


# --- Split batch norm (SyncBatchNorm's split): local statistics, their gather across ranks, the elementwise
# steps. Statistics are float64 in and out; y and dx come back in x's dtype.


def channels_stats(x3):
    """x3: (N, C, S). Returns the per-channel mean and M2 = sum((x - mean)**2) over n and s, float64 (C,);
    0 and 0 for an empty batch."""
    io = _Transfer(x3)
    N, C, S = x3.shape
    mean, m2 = _empty(C, np.float64), _empty(C, np.float64)
    if C:
        chunk, parts = _channel_partials(channels.stats_wide, channels.stats_spatial, (io(x3),), N, C, S)
        launch(channels.channels_stats_merge, _blocks(C), BLOCK, *parts, chunk, N * S, mean, m2)
    return io.out(mean), io.out(m2)


def channels_gather(counts, means, m2s, eps: float, running_mean, running_var, momentum: float):
    """counts: NumPy (R,) float64, the values per channel of each rank; means, m2s: (R, C) float64. Returns the
    global mean and rstd, float64 (C,) (NaN where no rank has values); updates the running statistics in
    place (left alone where no rank has values)."""
    io = _Transfer(means)
    C = means.shape[1]
    d_counts = cuda.to_device(np.ascontiguousarray(counts, dtype=np.float64), stream=_launch_stream())
    d_means, d_m2s = io(means), io(m2s)
    has_running = running_mean is not None
    if has_running:
        d_rm, d_rv = io(running_mean), io(running_var)
    else:
        d_rm = d_rv = _empty(0, np.float64)  # the variant without running statistics
    mean, rstd = _empty(C, np.float64), _empty(C, np.float64)
    if C:
        launch(
            channels.channels_gather,
            _blocks(C),
            BLOCK,
            d_counts,
            d_means,
            d_m2s,
            eps,
            momentum,
            d_rm,
            d_rv,
            mean,
            rstd,
        )
    if has_running and io.host:
        running_mean[...] = io.out(d_rm)
        running_var[...] = io.out(d_rv)
    return io.out(mean), io.out(rstd)


def channels_elemt(x3, mean, rstd, gamma, beta, out=None):
    """y = (x - mean[c]) * (rstd[c] * gamma[c]) + beta[c] (N, C, S) in x's dtype, with the float64 center,
    scale and shift of ``channels_forward``: the same y for the same float64 mean and rstd."""
    io = _Transfer(x3)
    N, C, S = x3.shape
    d_x, d_mean, d_rstd, d_g, d_b = (io(a) for a in (x3, mean, rstd, gamma, beta))
    y = io.target(out, N * C * S, x3.dtype)
    if y.size:
        scale, shift = _empty(C, np.float64), _empty(C, np.float64)
        launch(channels.channels_affine, _blocks(C), BLOCK, d_rstd, d_g, d_b, scale, shift)
        blocks = min(_blocks(y.size), _GRID_STRIDE_BLOCKS)
        launch(channels.channels_normalize, blocks, BLOCK, d_x.reshape(y.size), d_mean, scale, shift, S, C, y)
    return io.out(y, out).reshape(N, C, S)


def channels_backward_reduce(dy3, x3, mean):
    """dy3, x3: (N, C, S); mean: float64 (C,). Returns sum(dy) and sum(dy * (x - mean)) per channel, float64
    (C,), the chunk partials added in order as ``channels_backward`` adds them; zeros for an empty batch."""
    io = _Transfer(dy3)
    N, C, S = x3.shape
    d_dy, d_x, d_mean = (io(a) for a in (dy3, x3, mean))
    sums = (_empty(C, np.float64), _empty(C, np.float64))
    if C:
        kernels = (channels.backward_sums_wide, channels.backward_sums_spatial)
        _, parts = _channel_partials(*kernels, (d_dy, d_x), N, C, S, d_mean)
        for part, out in zip(parts, sums, strict=True):
            launch(rows.sum_rows, _blocks(C), BLOCK, part, out)
    return tuple(io.out(a) for a in sums)


def channels_backward_elemt(dy3, x3, mean, rstd, gamma, sum_dy, sum_dy_xmu, count: float, out=None):
    """dx (N, C, S) in x's dtype from the global sums over count values per channel: dx = p * dy + q * (x -
    mean) + r with ``channels_backward``'s training coefficients (the sums passed as one partial each)."""
    io = _Transfer(dy3)
    N, C, S = x3.shape
    d_dy, d_x, d_mean, d_rstd, d_g, d_sdy, d_sdyxmu = (io(a) for a in (dy3, x3, mean, rstd, gamma, sum_dy, sum_dy_xmu))
    dx = io.target(out, N * C * S, x3.dtype)
    if dx.size:
        width = C if gamma.size else 0
        dgamma, dbeta = _empty(width, x3.dtype), _empty(width, x3.dtype)  # scratch: dgamma comes from the sums
        p, q, r = (_empty(C, np.float64) for _ in range(3))
        launch(
            channels.backward_coefficients,
            _blocks(C),
            BLOCK,
            d_sdy.reshape(1, C),
            d_sdyxmu.reshape(1, C),
            d_rstd,
            d_g,
            True,
            float(count),
            dgamma,
            dbeta,
            p,
            q,
            r,
        )
        blocks = min(_blocks(dx.size), _GRID_STRIDE_BLOCKS)
        flat = dx.size
        launch(channels.backward_dx, blocks, BLOCK, d_dy.reshape(flat), d_x.reshape(flat), d_mean, p, q, r, S, C, dx)
    return io.out(dx, out).reshape(N, C, S)


def _per_row_blocks(n: int) -> int:
    """Blocks of BLOCK threads for a grid-stride kernel over n items."""
    return min(_blocks(n), _GRID_STRIDE_BLOCKS)


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
    io = _Transfer(x3)
    N, C, S = x3.shape
    R = N * C
    dt = x3.dtype
    d_x, d_g, d_b, d_mw, d_vw = (io(a) for a in (x3, gamma, beta, mean_weight, var_weight))
    has_running = running_mean is not None
    if has_running:
        d_rm, d_rv = io(running_mean), io(running_var)
    else:
        d_rm = d_rv = _empty(0, dt)
    wv = _empty((2, 3), np.float64)
    softmaxes = _empty((2, 3), dt)
    launch(switchable.softmax_weights, 1, 1, d_mw, d_vw, wv, softmaxes)
    mean_in64, m2_in64 = _empty(R, np.float64), _empty(R, np.float64)
    if R and S:
        blocks, threads, ts, _ = row_launch(R, S)
        launch(switchable.row_stats, blocks, threads, d_x.reshape(R, S), ts, mean_in64, m2_in64)
    elif R:  # rows of no values: NaN statistics, as instance norm's
        for a in (mean_in64, m2_in64):
            launch(rows.fill, _blocks(R), BLOCK, a, math.nan)
    mean_ln64, var_ln64 = _empty(N, np.float64), _empty(N, np.float64)
    mean_ln, var_ln = _empty(N, dt), _empty(N, dt)
    launch(switchable.layer_stats, _blocks(N), BLOCK, mean_in64, m2_in64, C, S, mean_ln64, var_ln64, mean_ln, var_ln)
    mean_bn64, var_bn64 = _empty(C, np.float64), _empty(C, np.float64)
    mean_bn, var_bn = _empty(C, dt), _empty(C, dt)
    launch(
        switchable.batch_stats,
        _blocks(C),
        BLOCK,
        mean_in64,
        m2_in64,
        N,
        S,
        training,
        momentum,
        d_rm,
        d_rv,
        mean_bn64,
        var_bn64,
        mean_bn,
        var_bn,
    )
    mean, rstd, mean_in, var_in = (_empty(R, dt) for _ in range(4))
    center, scale, shift = (_empty(R, np.float64) for _ in range(3))
    launch(
        switchable.mix,
        _per_row_blocks(R),
        BLOCK,
        mean_in64,
        m2_in64,
        mean_ln64,
        var_ln64,
        mean_bn64,
        var_bn64,
        wv,
        S,
        eps,
        d_g,
        d_b,
        mean,
        rstd,
        mean_in,
        var_in,
        center,
        scale,
        shift,
    )
    y = io.target(out, R * S, dt)
    if y.size:  # batch norm's normalize kernel, with the R rows as its channels: row i // S
        launch(
            channels.channels_normalize,
            _per_row_blocks(y.size),
            BLOCK,
            d_x.reshape(R * S),
            center,
            scale,
            shift,
            S,
            R,
            y,
        )
    if has_running and io.host and training:
        running_mean[...] = io.out(d_rm)
        running_var[...] = io.out(d_rv)
    per_row = tuple(io.out(a.reshape(N, C)) for a in (mean, rstd, mean_in, var_in))
    softmaxes = io.out(softmaxes)
    stats = (*per_row, *(io.out(a) for a in (mean_ln, var_ln, mean_bn, var_bn)), softmaxes[0], softmaxes[1])
    return io.out(y, out).reshape(N, C, S), stats


def switchable_backward(dy3, x3, gamma, mean_weight, var_weight, stats, training: bool, out=None):
    """dy3, x3: (N, C, S), not empty; gamma: (C,) or (0,); stats: flat (mean, rstd, mean_in, var_in, mean_ln,
    var_ln, mean_bn, var_bn) in x's dtype. Returns dx (N, C, S), dgamma and dbeta (C,) (None without gamma),
    dmean_weight and dvar_weight (3,), in x's dtype."""
    io = _Transfer(x3)
    N, C, S = x3.shape
    R = N * C
    dt = x3.dtype
    d_dy, d_x, d_g, d_mw, d_vw = (io(a) for a in (dy3, x3, gamma, mean_weight, var_weight))
    mean, rstd, mean_in, var_in, mean_ln, var_ln, mean_bn, var_bn = (io(a) for a in stats)
    wv = _empty((2, 3), np.float64)
    launch(switchable.softmax_weights, 1, 1, d_mw, d_vw, wv, _empty((2, 3), dt))
    sdy, sdyxmu, dmean, dvar = (_empty(R, np.float64) for _ in range(4))
    blocks, threads, ts, _ = row_launch(R, S)
    launch(
        switchable.backward_row_sums,
        blocks,
        threads,
        d_dy.reshape(R, S),
        d_x.reshape(R, S),
        mean,
        rstd,
        d_g,
        C,
        ts,
        sdy,
        sdyxmu,
        dmean,
        dvar,
    )
    sum_c_dmean, sum_c_dvar, dw_in, dv_in = (_empty(N, np.float64) for _ in range(4))
    launch(
        switchable.layer_backward,
        _blocks(N),
        BLOCK,
        dmean,
        dvar,
        mean_in,
        var_in,
        C,
        sum_c_dmean,
        sum_c_dvar,
        dw_in,
        dv_in,
    )
    sum_n_dmean, sum_n_dvar = _empty(C, np.float64), _empty(C, np.float64)
    width = C if gamma.size else 0
    dgamma, dbeta = _empty(width, dt), _empty(width, dt)
    launch(
        switchable.batch_backward,
        _blocks(C),
        BLOCK,
        dmean,
        dvar,
        sdy,
        sdyxmu,
        rstd,
        N,
        sum_n_dmean,
        sum_n_dvar,
        dgamma,
        dbeta,
    )
    dmw, dvw = _empty(3, dt), _empty(3, dt)
    launch(
        switchable.weights_backward,
        1,
        1,
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
    p, q, r = (_empty(R, np.float64) for _ in range(3))
    launch(
        switchable.dx_coefficients,
        _per_row_blocks(R),
        BLOCK,
        rstd,
        d_g,
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
    )
    dx = io.target(out, R * S, dt)
    flat = R * S
    # batch norm's dx kernel, with the R rows as its channels, centred on each row's mean_in
    launch(
        channels.backward_dx,
        _per_row_blocks(flat),
        BLOCK,
        d_dy.reshape(flat),
        d_x.reshape(flat),
        mean_in,
        p,
        q,
        r,
        S,
        R,
        dx,
    )
    dx = io.out(dx, out).reshape(N, C, S)
    dmw, dvw = io.out(dmw), io.out(dvw)
    if not width:
        return dx, None, None, dmw, dvw
    return dx, io.out(dgamma), io.out(dbeta), dmw, dvw
