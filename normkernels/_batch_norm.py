"""BatchNorm: validate, view x as (N, C, S), dispatch to the channel kernels, keep the running statistics."""

from __future__ import annotations

import math

import numpy as np

from . import _backends, _checks, _device


def _view(x) -> np.ndarray:
    """x as (N, C, S): S is the product of the spatial dims, 1 for (N, D) input."""
    n, c = x.shape[:2]
    return x.reshape(n, c, math.prod(x.shape[2:]))


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
    out: np.ndarray | None = None,
):
    """BatchNorm over n and the spatial dims, per channel.

    x: (N, C, *spatial) or (N, D); gamma, beta, running_mean, running_var: (C,) or None.
    Returns y (x.shape), mean and rstd (C,). In training the statistics are the batch's (biased variance)
    and running_mean/running_var, when given, are updated in place as PyTorch does:
    ``running = (1 - momentum) * running + momentum * batch_stat`` with the unbiased batch variance.
    With ``training=False`` x is normalized with the running statistics, which are returned as mean and
    rstd = 1 / sqrt(running_var + eps). out: an array for y (x's shape and dtype, C-contiguous, sharing no
    memory with an input), written in place and returned as y, so a loop can reuse it.
    """
    op = "batch_norm_forward"
    ops = _backends.select(backend, op=op)
    x_in = x
    x = _checks.input_array(x, min_ndim=2, op=op, backend=backend)
    eps = _checks.eps(eps, op=op)
    momentum = _checks.real("momentum", momentum, op=op)
    training = _checks.flag("training", training, op=op)
    c = x.shape[1]
    g, b = _checks.affine(gamma, beta, (c,), x, op=op)
    running_mean, running_var = _checks.running_pair(running_mean, running_var, c, x, training, op=op)
    given = dict(x=x_in, gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var)
    x3 = _view(x)
    target = _checks.out_array(out, x, inputs=given, view_shape=x3.shape, op=op)
    count = x3.shape[0] * x3.shape[2]
    _checks.values_per_channel(count, x.shape, training, op=op)
    if training and count == 0:  # as PyTorch: an empty y, and the running statistics are left alone
        device = _device.is_device_array(x)
        mean, rstd = (_device.full(c, math.nan, x.dtype, device=device) for _ in range(2))
        return (_device.empty(x.shape, x.dtype, device=device) if out is None else out), mean, rstd
    y, mean, rstd = ops.channels_forward(x3, g, b, eps, training, running_mean, running_var, momentum, out=target)
    return (y.reshape(x.shape) if out is None else out), mean, rstd


def batch_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    gamma: np.ndarray | None,
    mean: np.ndarray,
    rstd: np.ndarray,
    *,
    training: bool = True,
    backend: str = "cpu",
    out: np.ndarray | None = None,
):
    """Gradients of batch_norm_forward.

    dy, x: (N, C, *spatial) or (N, D); gamma, mean, rstd: (C,) as given to or returned by the forward.
    Returns dx (x.shape), dgamma and dbeta (C,), or None for both when gamma is None. With
    ``training=False`` mean and rstd are constants (the running statistics) and dx = dy * gamma * rstd.
    out: an array for dx, as batch_norm_forward's out for y.
    """
    op = "batch_norm_backward"
    ops = _backends.select(backend, op=op)
    x_in, dy_in, mean_in, rstd_in = x, dy, mean, rstd
    x = _checks.input_array(x, min_ndim=2, op=op, backend=backend)
    c = x.shape[1]
    dy = _checks.like_input("dy", dy, x.shape, x, op=op)
    mean = _checks.like_input("mean", mean, (c,), x, op=op)
    rstd = _checks.like_input("rstd", rstd, (c,), x, op=op)
    g, _ = _checks.affine(gamma, None, (c,), x, op=op)
    training = _checks.flag("training", training, op=op)
    given = dict(x=x_in, dy=dy_in, gamma=gamma, mean=mean_in, rstd=rstd_in)
    x3 = _view(x)
    target = _checks.out_array(out, x, inputs=given, view_shape=x3.shape, op=op)
    dy3 = dy.reshape(x3.shape)
    if x3.shape[0] * x3.shape[2] * c == 0:  # no values: dx is empty and every sum is 0, whatever mean and rstd hold
        device = _device.is_device_array(x)
        dx = _device.empty(x.shape, x.dtype, device=device) if out is None else out
        if gamma is None:
            return dx, None, None
        return dx, _device.full(c, 0.0, x.dtype, device=device), _device.full(c, 0.0, x.dtype, device=device)
    dx, dgamma, dbeta = ops.channels_backward(dy3, x3, g, mean, rstd, training, out=target)
    dx = dx.reshape(x.shape) if out is None else out
    if gamma is None:
        return dx, None, None
    return dx, dgamma, dbeta
