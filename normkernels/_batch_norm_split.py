"""BatchNorm in the steps SyncBatchNorm takes: local statistics, their exact merge, then the elementwise passes.

``batch_norm_forward`` and ``batch_norm_backward`` do all of it in one call on one process. Split, the two
reductions come out as small per-channel results that can be combined across processes (``normkernels.
distributed`` sends them over MPI) or across the batches of a data set (``batch_norm_population_stats``)::

    forward                                         backward
    count, mean, m2 = batch_norm_stats(x)           sum_dy, sum_dy_xmu = batch_norm_backward_reduce(dy, x, mean, rstd)
    (every rank's (count, mean, m2) gathered)       (both sums and the count added over ranks)
    mean, rstd = batch_norm_gather_stats(...)       dx = batch_norm_backward_elemt(dy, x, mean, rstd, gamma,
    y = batch_norm_elemt(x, mean, rstd, gamma, beta)                                sum_dy, sum_dy_xmu, count)

The statistics (mean, m2, rstd and the two sums) are float64 whatever x's dtype: they are partial results meant
to be merged, and a float32 mean of values near 1e4 would already be off by half an ulp (5e-4). x-shaped
results (y, dx) have x's dtype. On one process the split gives the fused ops' results: batch_norm_elemt's y is
batch_norm_forward's y bit for bit, and dx agrees within rounding (the fused backward starts from the mean
rounded to x's dtype).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from . import _backends, _checks, _device
from ._batch_norm import _view
from .cpu import ops as cpu_ops


def batch_norm_stats(x: np.ndarray, *, backend: str = "cpu"):
    """This batch's partial statistics per channel: (count, mean, m2).

    x: (N, C, *spatial) or (N, D). count = N * prod(spatial), the values per channel (a Python int); mean and
    m2 = sum((x - mean)**2), (C,) float64, each channel's values taken in two passes over data in cache (never
    E[x^2] - E[x]^2). An empty batch gives count 0 and zeros, which a merge ignores.
    """
    op = "batch_norm_stats"
    ops = _backends.select(backend, op=op)
    x = _checks.input_array(x, min_ndim=2, op=op, backend=backend)
    x3 = _view(x)
    mean, m2 = ops.channels_stats(x3)
    return x3.shape[0] * x3.shape[2], mean, m2


def batch_norm_gather_stats(
    counts,
    means,
    m2s,
    *,
    eps: float = 1e-5,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    momentum: float = 0.1,
    backend: str = "cpu",
):
    """The statistics of the whole batch from every part's ``batch_norm_stats``: (mean, rstd), (C,) float64.

    counts: (R,) non-negative integers; means, m2s: (R, C), one row per part (rank), float64 (other float dtypes
    are widened on the host). The rows are merged in order with Chan's formulas

        delta = mean_b - mean_a,   n = n_a + n_b,   mean = mean_a + delta * n_b / n,
        M2 = M2_a + M2_b + delta**2 * n_a * n_b / n

    so every process that merges the same rows gets the same bits. rstd = 1 / sqrt(M2 / n + eps) (the biased
    variance, as the forward normalizes with). running_mean/running_var, when given, are updated in place as
    batch_norm_forward updates them: ``(1 - momentum) * running + momentum * stat`` with the unbiased variance
    M2 / (n - 1) over the total count n. No values at all (every count 0): NaN mean and rstd, and the running
    statistics are left alone, as batch_norm_forward does for an empty batch. One value in all is refused.
    """
    op = "batch_norm_gather_stats"
    ops = _backends.select(backend, op=op)
    eps = _checks.eps(eps, op=op)
    momentum = _checks.real("momentum", momentum, op=op)
    counts = _counts(counts, op=op)
    means = _partials("means", means, op=op, backend=backend)
    m2s = _partials("m2s", m2s, op=op, backend=backend, like=means)
    if means.shape[0] != counts.size:
        raise ValueError(
            f"{op}: expected one row of means and m2s per count ({counts.size}), got means of shape {means.shape}"
        )
    c = means.shape[1]
    running_mean, running_var = _checks.running_pair(running_mean, running_var, c, means, True, op=op)
    total = int(counts.sum())
    if total == 1:
        raise ValueError(
            f"{op}: Expected more than 1 value per channel when training, got 1 value in all (counts "
            f"{counts.astype(np.int64).tolist()})"
        )
    return ops.channels_gather(counts, means, m2s, eps, running_mean, running_var, momentum)


def batch_norm_elemt(
    x: np.ndarray,
    mean: np.ndarray,
    rstd: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    *,
    backend: str = "cpu",
    out: np.ndarray | None = None,
):
    """y = (x - mean) * rstd * gamma + beta per channel, in x's dtype (x's shape).

    mean, rstd: (C,), e.g. from ``batch_norm_gather_stats``, float64 (on the host any float dtype is widened;
    device arrays must be float64). gamma, beta: (C,) or None. out: an array for y, as batch_norm_forward's.
    """
    op = "batch_norm_elemt"
    ops = _backends.select(backend, op=op)
    given = dict(x=x, mean=mean, rstd=rstd, gamma=gamma, beta=beta)
    x = _checks.input_array(x, min_ndim=2, op=op, backend=backend)
    c = x.shape[1]
    mean = _statistic("mean", mean, c, x, op=op)
    rstd = _statistic("rstd", rstd, c, x, op=op)
    g, b = _checks.affine(gamma, beta, (c,), x, op=op)
    x3 = _view(x)
    target = _checks.out_array(out, x, inputs=given, view_shape=x3.shape, op=op)
    y = ops.channels_elemt(x3, mean, rstd, g, b, out=target)
    return y.reshape(x.shape) if out is None else out


def batch_norm_backward_reduce(dy: np.ndarray, x: np.ndarray, mean: np.ndarray, rstd: np.ndarray, *, backend="cpu"):
    """This batch's two sums per channel: (sum_dy, sum_dy_xmu), (C,) float64.

    sum_dy = sum(dy) and sum_dy_xmu = sum(dy * (x - mean)) over n and the spatial dims, with mean and rstd as
    the forward used them (rstd is checked, as in PyTorch's batch_norm_backward_reduce, and not needed for the
    sums). This batch's gradients follow: dbeta = sum_dy and dgamma = sum_dy_xmu * rstd. An empty batch gives
    zeros.
    """
    op = "batch_norm_backward_reduce"
    ops = _backends.select(backend, op=op)
    x = _checks.input_array(x, min_ndim=2, op=op, backend=backend)
    c = x.shape[1]
    dy = _checks.like_input("dy", dy, x.shape, x, op=op)
    mean = _statistic("mean", mean, c, x, op=op)
    _statistic("rstd", rstd, c, x, op=op)
    x3 = _view(x)
    return ops.channels_backward_reduce(dy.reshape(x3.shape), x3, mean)


def batch_norm_backward_elemt(
    dy: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    rstd: np.ndarray,
    gamma: np.ndarray | None,
    sum_dy: np.ndarray,
    sum_dy_xmu: np.ndarray,
    count,
    *,
    backend: str = "cpu",
    out: np.ndarray | None = None,
):
    """dx of training mode from the sums over the whole batch, in x's dtype (x's shape).

    sum_dy, sum_dy_xmu: ``batch_norm_backward_reduce``'s sums added over every part of the batch; count: the
    values per channel in the whole batch (the sum of the parts' counts). With M = count and xhat = (x - mean) *
    rstd:

        dx = rstd * gamma * (dy - sum_dy / M - xhat * rstd * sum_dy_xmu / M)

    out: an array for dx, as batch_norm_backward's.
    """
    op = "batch_norm_backward_elemt"
    ops = _backends.select(backend, op=op)
    given = dict(x=x, dy=dy, mean=mean, rstd=rstd, gamma=gamma, sum_dy=sum_dy, sum_dy_xmu=sum_dy_xmu)
    x = _checks.input_array(x, min_ndim=2, op=op, backend=backend)
    c = x.shape[1]
    dy = _checks.like_input("dy", dy, x.shape, x, op=op)
    mean = _statistic("mean", mean, c, x, op=op)
    rstd = _statistic("rstd", rstd, c, x, op=op)
    g, _ = _checks.affine(gamma, None, (c,), x, op=op)
    sum_dy = _statistic("sum_dy", sum_dy, c, x, op=op)
    sum_dy_xmu = _statistic("sum_dy_xmu", sum_dy_xmu, c, x, op=op)
    x3 = _view(x)
    local = x3.shape[0] * x3.shape[2]
    count = _count(count, at_least=local, op=op)
    if local and count < 2:
        raise ValueError(f"{op}: Expected more than 1 value per channel when training, got count={count}")
    target = _checks.out_array(out, x, inputs=given, view_shape=x3.shape, op=op)
    dy3 = dy.reshape(x3.shape)
    dx = ops.channels_backward_elemt(dy3, x3, mean, rstd, g, sum_dy, sum_dy_xmu, float(count), out=target)
    return dx.reshape(x.shape) if out is None else out


def batch_norm_population_stats(batches: Iterable, *, backend: str = "cpu"):
    """The mean and unbiased variance of each channel over every value of every batch: (mean, var), (C,) float64,
    what eval mode normalizes with (assign them to running_mean and running_var).

    The BN paper's inference statistics (Ioffe and Szegedy, 2015, Algorithm 2) taken exactly: each batch's
    ``batch_norm_stats``, merged in order with Chan's formulas, so the result is that of the concatenated data
    (up to rounding) however the batches are sized, and a running average's dependence on the batch order and
    on momentum is gone. The paper's own formula, m/(m-1) times the average of the batch variances, leaves out
    the spread of the batch means; this is the variance of the whole set. batches: an iterable of arrays
    (N_i, C, *spatial) or (N_i, D), consumed once (a generator is fine); they may differ in N and spatial size
    but not in C. Needs at least 2 values per channel in all.
    """
    op = "batch_norm_population_stats"
    _backends.check(backend, op=op)
    if isinstance(batches, np.ndarray) or _device.is_device_array(batches):
        raise TypeError(f"{op}: expected batches to be an iterable of arrays (e.g. a list), got a single array")
    try:
        it = iter(batches)
    except TypeError:
        raise TypeError(f"{op}: expected batches to be an iterable of arrays, got {type(batches).__name__}") from None
    total, mean, m2, channels = 0, None, None, None
    for i, x in enumerate(it):
        try:
            count, mean_b, m2_b = batch_norm_stats(x, backend=backend)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{op}: batch {i}: {exc}") from exc
        if channels is None:
            channels = mean_b.shape[0]
            mean, m2 = np.zeros(channels), np.zeros(channels)
        elif mean_b.shape[0] != channels:
            raise ValueError(
                f"{op}: expected every batch to have {channels} channels (as batch 0), batch {i} has {mean_b.shape[0]}"
            )
        rows = np.array([total, count], dtype=np.float64)
        pair = [np.stack([acc, _device.host(b)]) for acc, b in ((mean, mean_b), (m2, m2_b))]
        mean, m2 = cpu_ops.channels_merge(rows, *pair)
        total += count
    if channels is None:
        raise ValueError(f"{op}: expected at least one batch, got none")
    if total < 2:
        raise ValueError(f"{op}: expected at least 2 values per channel in all, got {total}")
    return mean, m2 / (total - 1)


# --- validation of the split's own arguments ---------------------------------------------------------------------


def _counts(counts, *, op: str) -> np.ndarray:
    """counts as a (R,) float64 NumPy array of non-negative integers (exact below 2**53)."""
    if _device.is_device_array(counts):
        raise TypeError(f"{op}: expected counts on the host (a sequence or numpy.ndarray of ints), got a GPU array")
    a = np.asarray(counts)
    if a.dtype == object and all(_checks.is_int(v) for v in a.ravel()):  # Python ints beyond int64
        a = a.astype(np.float64)
    if a.dtype == object or a.dtype.kind not in "iuf":
        raise TypeError(f"{op}: expected counts to be integers, got {a.dtype}")
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{op}: expected counts of shape (R,) with R >= 1 parts, got shape {a.shape}")
    f = a.astype(np.float64)
    if not (np.all(np.isfinite(f)) and np.all(f >= 0) and np.all(f == np.floor(f))):
        raise ValueError(f"{op}: expected counts to be non-negative integers, got {a.tolist()}")
    if f.sum() >= 2.0**53:  # float64 holds every integer below 2**53 exactly, and the merge counts in float64
        raise ValueError(f"{op}: expected counts adding up to less than 2**53, got {a.tolist()}")
    return f


def _count(count, *, at_least: int, op: str) -> int:
    """The whole batch's count of values per channel: an integer, at least this batch's own."""
    if isinstance(count, np.ndarray) and count.ndim == 0:
        count = count.item()
    if isinstance(count, (float, np.floating)) and float(count).is_integer():
        count = int(count)
    if not _checks.is_int(count):
        raise TypeError(f"{op}: expected count to be an int (values per channel in the whole batch), got {count!r}")
    if count < at_least:
        raise ValueError(
            f"{op}: expected count (values per channel in the whole batch) to be at least this batch's {at_least}, "
            f"got {count}"
        )
    return int(count)


def _partials(name: str, a, *, op: str, backend: str, like=None):
    """means / m2s: (R, C) float64, C-contiguous; NumPy (any float dtype, or a list of (C,) rows, widened) or, for
    backend "cuda", a float64 device array. m2s must match means in shape and kind."""
    if _device.is_device_array(a):
        if backend != "cuda":
            raise TypeError(f'{op}: {name} is a GPU array ({type(a).__name__}): pass backend="cuda"')
        if like is not None and not _device.is_device_array(like):
            raise TypeError(f"{op}: means is a NumPy array, so {name} must be one too, got {type(a).__name__}")
        a = _device.as_device(a)
        if a.dtype != np.float64:
            raise TypeError(f"{op}: expected {name} as a float64 device array, got {a.dtype}")
        if not a.is_c_contiguous():
            raise ValueError(f"{op}: expected a C-contiguous device array for {name}, got strides {a.strides}")
    else:
        if like is not None and _device.is_device_array(like):
            raise TypeError(f"{op}: means is a GPU array, so {name} must be one too, got {type(a).__name__}")
        try:
            host = np.asarray(a)
        except ValueError:  # rows of different lengths
            raise ValueError(f"{op}: expected {name} of shape (R, C), got rows of different lengths") from None
        if host.dtype.kind != "f" and host.dtype.kind not in "iu":
            raise TypeError(f"{op}: expected {name} to be floating-point numbers, got {host.dtype}")
        a = np.ascontiguousarray(host, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{op}: expected {name} of shape (R, C) (one row per part), got shape {a.shape}")
    if like is not None and a.shape != like.shape:
        raise ValueError(f"{op}: expected {name} of the shape of means {like.shape}, got {a.shape}")
    return a


def _statistic(name: str, a, channels: int, like, *, op: str):
    """A per-channel float64 statistic of x (mean, rstd, sum_dy, sum_dy_xmu): (C,), widened on the host; a
    C-contiguous float64 device array with a GPU x."""
    a = _checks.companion(name, a, like, op=op)
    if a.shape != (channels,):
        raise ValueError(f"{op}: expected {name} of shape ({channels},), got {a.shape}")
    if isinstance(a, np.ndarray):
        return np.ascontiguousarray(a, dtype=np.float64)
    if a.dtype != np.float64:
        raise TypeError(f"{op}: expected {name} as a float64 device array (the split's statistics), got {a.dtype}")
    if not a.is_c_contiguous():
        raise ValueError(f"{op}: expected a C-contiguous device array for {name}, got strides {a.strides}")
    return a


__all__ = [
    "batch_norm_backward_elemt",
    "batch_norm_backward_reduce",
    "batch_norm_elemt",
    "batch_norm_gather_stats",
    "batch_norm_population_stats",
    "batch_norm_stats",
]
