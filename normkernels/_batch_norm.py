"""BatchNorm: validate, view x as (N, C, S), dispatch to the channel kernels, keep the running statistics."""

from __future__ import annotations

import math

import numpy as np

from . import _checks, _device
from .cpu import channels
from .cpu._jit import launch_guard

# Samples per statistics block: a block's slice of one channel holds about _BLOCK_ELEMENTS values, or for
# (N, D) input its rows about _WIDE_BLOCK_ELEMENTS, so the second pass of the two-pass variance reads it from
# cache (L2). Blocks of 128 rows of 1024 measured 10-15% faster than blocks of 32.
_BLOCK_ELEMENTS = 1 << 15
_WIDE_BLOCK_ELEMENTS = 1 << 17


def _view(x: np.ndarray) -> tuple[np.ndarray, int]:
    """x as (N, C, S) and the statistics block size in samples (fixed by the shape alone)."""
    n, c = x.shape[:2]
    s = math.prod(x.shape[2:])
    return x.reshape(n, c, s), max(1, _BLOCK_ELEMENTS // s if s > 1 else _WIDE_BLOCK_ELEMENTS // max(1, c))


def batch_norm_forward(
    x: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    *,
    eps: float = 1e-5,
    training: bool = True,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    momentum: float = 0.1,
    backend: str = "cpu",
):
    """BatchNorm over n and the spatial dims, per channel.

    x: (N, C, *spatial) or (N, D); gamma, beta, running_mean, running_var: (C,) or None.
    Returns y (x.shape), mean and rstd (C,). In training the statistics are the batch's (biased variance)
    and running_mean/running_var, when given, are updated in place as PyTorch does:
    ``running = (1 - momentum) * running + momentum * batch_stat`` with the unbiased batch variance.
    With ``training=False`` x is normalized with the running statistics, which are returned as mean and
    rstd = 1 / sqrt(running_var + eps).
    """
    op = "batch_norm_forward"
    backend = _checks.backend(backend, op=op)
    x = _checks.input_array(x, min_ndim=2, op=op, backend=backend)
    eps = _checks.eps(eps, op=op)
    momentum = _checks.real("momentum", momentum, op=op)
    training = _checks.flag("training", training, op=op)
    c = x.shape[1]
    g, b = _checks.affine(gamma, beta, (c,), x, op=op)
    running_mean, running_var = _checks.running_pair(running_mean, running_var, c, x, training, op=op)
    x3, block = _view(x)
    count = x3.shape[0] * x3.shape[2]
    _checks.values_per_channel(count, x.shape, training, op=op)
    if training and count == 0:  # as PyTorch: an empty y, and the running statistics are left alone
        device = _device.is_device_array(x)
        mean, rstd = (_device.full(c, math.nan, x.dtype, device=device) for _ in range(2))
        return _device.empty(x.shape, x.dtype, device=device), mean, rstd
    if backend == "cuda":
        from .cuda import ops

        y, mean, rstd = ops.channels_forward(x3, g, b, eps, training, running_mean, running_var, momentum)
        return y.reshape(x.shape), mean, rstd
    if training:
        mean = np.empty(c)
        var = np.empty(c)
        with launch_guard():
            channels.channels_stats(x3, block, mean, var)
        if running_mean is not None:
            running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
            running_var[...] = (1.0 - momentum) * running_var + momentum * (var * (count / (count - 1)))
    else:
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
    rstd = 1.0 / np.sqrt(var + eps)
    scale = rstd * g if g.size else rstd
    shift = b.astype(np.float64) if b.size else np.zeros(c)
    y = np.empty_like(x3)
    with launch_guard():
        channels.channels_normalize(x3, mean, scale, shift, y)
    return y.reshape(x.shape), mean.astype(x.dtype), rstd.astype(x.dtype)


def batch_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    gamma: np.ndarray | None,
    mean: np.ndarray,
    rstd: np.ndarray,
    *,
    training: bool = True,
    backend: str = "cpu",
):
    """Gradients of batch_norm_forward.

    dy, x: (N, C, *spatial) or (N, D); gamma, mean, rstd: (C,) as given to or returned by the forward.
    Returns dx (x.shape), dgamma and dbeta (C,), or None for both when gamma is None. With
    ``training=False`` mean and rstd are constants (the running statistics) and dx = dy * gamma * rstd.
    """
    op = "batch_norm_backward"
    backend = _checks.backend(backend, op=op)
    x = _checks.input_array(x, min_ndim=2, op=op, backend=backend)
    c = x.shape[1]
    dy = _checks.like_input("dy", dy, x.shape, x, op=op)
    mean = _checks.like_input("mean", mean, (c,), x, op=op)
    rstd = _checks.like_input("rstd", rstd, (c,), x, op=op)
    g, _ = _checks.affine(gamma, None, (c,), x, op=op)
    training = _checks.flag("training", training, op=op)
    x3, block = _view(x)
    dy3 = dy.reshape(x3.shape)
    if x3.shape[0] * x3.shape[2] * c == 0:  # no values: dx is empty and every sum is 0, whatever mean and rstd hold
        device = _device.is_device_array(x)
        dx = _device.empty(x.shape, x.dtype, device=device)
        if gamma is None:
            return dx, None, None
        return dx, _device.full(c, 0.0, x.dtype, device=device), _device.full(c, 0.0, x.dtype, device=device)
    if backend == "cuda":
        from .cuda import ops

        dx, dgamma, dbeta = ops.channels_backward(dy3, x3, g, mean, rstd, training)
    else:
        dx, dgamma, dbeta = _cpu_backward(dy3, x3, g, mean, rstd, training, block)
    if gamma is None:
        return dx.reshape(x.shape), None, None
    return dx.reshape(x.shape), dgamma, dbeta


def _cpu_backward(dy3, x3, g, mean, rstd, training, block):
    c = x3.shape[1]
    mean = mean.astype(np.float64)
    rstd = rstd.astype(np.float64)
    p = rstd * g if g.size else rstd  # d(y)/d(x) through xhat alone: rstd * gamma
    dbeta = np.zeros(c)
    dyxmu = np.zeros(c)  # sum(dy * (x - mean)); dgamma = dyxmu * rstd; not needed in eval without gamma
    if training or g.size:
        with launch_guard():
            channels.channels_backward_sums(dy3, x3, mean, block, dbeta, dyxmu)
    dgamma = dyxmu * rstd
    if training:  # the variance path and the mean path
        count = x3.shape[0] * x3.shape[2]
        q = -p * rstd * dgamma / count
        r = -p * dbeta / count
    else:
        q = r = np.zeros(c)
    dx = np.empty_like(x3)
    with launch_guard():
        channels.channels_backward_dx(dy3, x3, mean, p, q, r, dx)
    return dx, dgamma.astype(x3.dtype), dbeta.astype(x3.dtype)
