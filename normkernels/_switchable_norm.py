"""Switchable Normalization (Luo et al., 2018): validate, view x as (N, C, S), dispatch to the switchable kernels.

x: (N, C, *spatial), S = prod(spatial) > 1. Three kinds of statistics, mixed by softmaxed weights:

    w = softmax(mean_weight),  v = softmax(var_weight)          order: instance, layer, batch
    mean[n,c] = w0 mean_in[n,c] + w1 mean_ln[n] + w2 mean_bn[c]
    var[n,c]  = v0 var_in[n,c]  + v1 var_ln[n]  + v2 var_bn[c]       (biased variances)
    rstd = 1 / sqrt(var + eps),   y = (x - mean[n,c]) * rstd[n,c] * gamma[c] + beta[c]

instance statistics are per (n, c) over the spatial dims, layer statistics per n over c and the spatial dims,
batch statistics per c over n and the spatial dims. The running statistics are batch norm's (PyTorch's
convention); in eval mode they replace the batch statistics. The kernels, and the backward's derivation, are
in ``normkernels.cpu.switchable`` (and ``normkernels.cuda.switchable``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _backends, _checks, _device
from ._batch_norm import _view  # x as (N, C, S): batch norm's channel view


class SwitchableStats(NamedTuple):
    """What switchable_norm_forward computed and switchable_norm_backward needs, in x's dtype.

    mean, rstd:       (N, C)  the mixed mean and rstd = 1 / sqrt(var + eps) that normalized x
    mean_in, var_in:  (N, C)  instance statistics (biased variance)
    mean_ln, var_ln:  (N,)    layer statistics
    mean_bn, var_bn:  (C,)    batch statistics (biased variance); with training=False, the running statistics
    mean_softmax:     (3,)    softmax(mean_weight), the mixing weights of the means (instance, layer, batch)
    var_softmax:      (3,)    softmax(var_weight), those of the variances

    The backward recomputes the softmaxes from mean_weight and var_weight in float64; the two fields say what
    the forward mixed with. For a GPU x every field is a device array.
    """

    mean: np.ndarray
    rstd: np.ndarray
    mean_in: np.ndarray
    var_in: np.ndarray
    mean_ln: np.ndarray
    var_ln: np.ndarray
    mean_bn: np.ndarray
    var_bn: np.ndarray
    mean_softmax: np.ndarray
    var_softmax: np.ndarray


def _stats_shapes(n: int, c: int) -> dict:
    per_row = (n, c)
    return dict(
        mean=per_row,
        rstd=per_row,
        mean_in=per_row,
        var_in=per_row,
        mean_ln=(n,),
        var_ln=(n,),
        mean_bn=(c,),
        var_bn=(c,),
        mean_softmax=(3,),
        var_softmax=(3,),
    )


def _prepare(op, x, backend, gamma, beta, mean_weight, var_weight, training):
    """The checks the forward and the backward share: x (C-contiguous, (N, C, *spatial), S > 1), training,
    gamma and beta (flat, or empty for None), mean_weight and var_weight ((3,), in x's dtype)."""
    x = _checks.input_array(x, min_ndim=3, op=op, backend=backend)
    _checks.spatial_elements(x.shape, op=op)
    training = _checks.flag("training", training, op=op)
    g, b = _checks.affine(gamma, beta, (x.shape[1],), x, op=op)
    mw = _checks.like_input("mean_weight", mean_weight, (3,), x, op=op)
    vw = _checks.like_input("var_weight", var_weight, (3,), x, op=op)
    return x, training, g, b, mw, vw


def switchable_norm_forward(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    mean_weight: np.ndarray,
    var_weight: np.ndarray,
    *,
    eps: float = 1e-5,
    training: bool = True,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    momentum: float = 0.1,
    backend: str = "cpu",
    out: np.ndarray | None = None,
):
    """Switchable Normalization of x: (N, C, *spatial) with more than one spatial element.

    gamma, beta: (C,) or None; mean_weight, var_weight: (3,) logits of the instance, layer and batch
    statistics' weights; running_mean, running_var: (C,) or None (both or neither; needed when training=False).
    Returns y (x.shape) and a ``SwitchableStats``. In training the batch statistics are the batch's and
    running_mean/running_var, when given, are updated in place as batch_norm_forward updates them
    (``running = (1 - momentum) * running + momentum * batch_stat``, the unbiased batch variance); with
    ``training=False`` the running statistics, as stored, replace the batch statistics. out: an array for y, as
    batch_norm_forward's.
    """
    op = "switchable_norm_forward"
    ops = _backends.select(backend, op=op)
    x_in = x
    x, training, g, b, mw, vw = _prepare(op, x, backend, gamma, beta, mean_weight, var_weight, training)
    eps = _checks.eps(eps, op=op)
    momentum = _checks.real("momentum", momentum, op=op)
    n, c = x.shape[:2]
    running_mean, running_var = _checks.running_pair(running_mean, running_var, c, x, training, op=op)
    given = dict(x=x_in, gamma=gamma, beta=beta, mean_weight=mean_weight, var_weight=var_weight)
    given.update(running_mean=running_mean, running_var=running_var)
    x3 = _view(x)
    target = _checks.out_array(out, x, inputs=given, view_shape=x3.shape, op=op)
    count = n * x3.shape[2]  # 0 or at least 2: _prepare required more than one spatial element
    if training and count == 0:  # an empty batch leaves the running statistics alone, as batch norm does
        running_mean = running_var = None
    y, stats = ops.switchable_forward(x3, g, b, mw, vw, eps, training, running_mean, running_var, momentum, out=target)
    return (y.reshape(x.shape) if out is None else out), SwitchableStats(*stats)


def _checked_stats(stats, x, *, op: str) -> SwitchableStats:
    """stats as the forward returned it: each field of its shape, flat and in x's dtype (like_input)."""
    if not (isinstance(stats, tuple) and len(stats) == len(SwitchableStats._fields)):
        raise TypeError(
            f"{op}: expected stats to be the SwitchableStats that switchable_norm_forward returned "
            f"({len(SwitchableStats._fields)} arrays), got {type(stats).__name__}"
        )
    shapes = _stats_shapes(*x.shape[:2])
    return SwitchableStats(
        *(
            _checks.like_input(f"stats.{name}", a, shapes[name], x, op=op)
            for name, a in zip(SwitchableStats._fields, stats, strict=True)
        )
    )


def switchable_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    gamma: np.ndarray | None,
    mean_weight: np.ndarray,
    var_weight: np.ndarray,
    stats: SwitchableStats,
    *,
    training: bool = True,
    backend: str = "cpu",
    out: np.ndarray | None = None,
):
    """Gradients of switchable_norm_forward, given the stats it returned and the same training flag.

    Returns dx (x.shape), dgamma and dbeta (C,) (None for both when gamma is None), dmean_weight and
    dvar_weight (3,). With ``training=False`` the batch statistics (the running ones) are constants: no
    gradient reaches x through them, though the weight gradients still see their values. out: an array for dx,
    as batch_norm_backward's.
    """
    op = "switchable_norm_backward"
    ops = _backends.select(backend, op=op)
    given = dict(x=x, dy=dy, gamma=gamma, mean_weight=mean_weight, var_weight=var_weight)
    if isinstance(stats, tuple):  # the statistics as given (checked below)
        given.update({f"stats.{k}": v for k, v in zip(SwitchableStats._fields, stats, strict=False)})
    x, training, g, _, mw, vw = _prepare(op, x, backend, gamma, None, mean_weight, var_weight, training)
    dy = _checks.like_input("dy", dy, x.shape, x, op=op)
    stats = _checked_stats(stats, x, op=op)
    x3 = _view(x)
    target = _checks.out_array(out, x, inputs=given, view_shape=x3.shape, op=op)
    if x.size == 0:  # no values: dx is empty and every gradient a sum of nothing
        device = _device.is_device_array(x)
        dmw, dvw = (_device.full(3, 0.0, x.dtype, device=device) for _ in range(2))
        dgamma = dbeta = None
        if gamma is not None:
            dgamma, dbeta = (_device.full(x.shape[1], 0.0, x.dtype, device=device) for _ in range(2))
        return (_device.empty(x.shape, x.dtype, device=device) if out is None else out), dgamma, dbeta, dmw, dvw
    dy3 = dy.reshape(x3.shape)
    dx, dgamma, dbeta, dmw, dvw = ops.switchable_backward(dy3, x3, g, mw, vw, stats[:8], training, out=target)
    return (dx.reshape(x.shape) if out is None else out), dgamma, dbeta, dmw, dvw
