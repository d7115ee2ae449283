"""LayerNorm, InstanceNorm, GroupNorm and RMSNorm: validate, view x as (R, K) rows, dispatch to the row kernel.

Each op is a view onto the one row kernel (see ``normkernels.cpu.rows``):

    op             rows R     row length K          groups   inner    mean/rstd shape
    layer_norm     prod(lead) prod(normalized)      1        1        x.shape[:-len(normalized_shape)]
    instance_norm  N * C      HW                    C        HW       (N, C)
    group_norm     N * G      (C // G) * HW         G        HW       (N, G)
    rms_norm       prod(lead) prod(normalized)      1        1        rstd only, as layer_norm; not centered

Every forward and backward takes ``out=``: an array for y (dx), of x's shape and dtype, C-contiguous, of x's kind
(NumPy or GPU) and sharing no memory with an input, written in place and returned as y (dx), so a loop that
reuses its buffers does not pay for fresh pages on every call.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import _backends, _checks, _device


class _RowView(NamedTuple):
    rows: int  # R
    length: int  # K
    groups: int  # affine index of element k of row r: (r % groups) * (K // inner) + k // inner
    inner: int
    stats_shape: tuple  # shape of mean and rstd
    affine_shape: tuple  # shape of gamma, beta, dgamma, dbeta


def _layer_norm_view(x_shape: tuple, normalized: tuple) -> _RowView:
    lead = x_shape[: len(x_shape) - len(normalized)]
    return _RowView(math.prod(lead), math.prod(normalized), 1, 1, lead, normalized)


def _group_norm_view(x_shape: tuple, groups: int) -> _RowView:
    """Also instance norm's view: group norm with one channel per group (groups = C)."""
    n, c = x_shape[:2]
    hw = math.prod(x_shape[2:])
    per_group = c // groups if groups else 0  # instance norm of no channels: no rows at all
    return _RowView(n * groups, per_group * hw, groups, hw, (n, groups), (c,))


def _forward(op, x, view: _RowView, gamma, beta, eps, ops, centered=True, *, out=None, x_in=None):
    """The row kernel's forward; out: the caller's array for y (checked against x_in, x as the caller gave it)."""
    eps = _checks.eps(eps, op=op)
    g, b = _checks.affine(gamma, beta, view.affine_shape, x, op=op)
    x2 = x.reshape(view.rows, view.length)
    target = _checks.out_array(out, x, inputs=dict(x=x_in, gamma=gamma, beta=beta), view_shape=x2.shape, op=op)
    y, mean, rstd = ops.rows_forward(x2, g, b, eps, view.groups, view.inner, centered, out=target)
    y = y.reshape(x.shape) if out is None else out
    return y, mean.reshape(view.stats_shape), rstd.reshape(view.stats_shape)


def _backward(op, dy, x, gamma, mean, rstd, view: _RowView, ops, centered=True, *, out=None, x_in=None):
    """The row kernel's backward; out: the caller's array for dx (checked against the inputs as given)."""
    given = dict(x=x_in, dy=dy, gamma=gamma, mean=mean, rstd=rstd)
    dy = _checks.like_input("dy", dy, x.shape, x, op=op)
    rstd = _checks.like_input("rstd", rstd, view.stats_shape, x, op=op)
    # uncentered rows have no mean (0, never read): rstd stands in for the argument
    mean = _checks.like_input("mean", mean, view.stats_shape, x, op=op) if centered else rstd
    g, _ = _checks.affine(gamma, None, view.affine_shape, x, op=op)
    x2 = x.reshape(view.rows, view.length)
    target = _checks.out_array(out, x, inputs=given, view_shape=x2.shape, op=op)
    dy2 = dy.reshape(x2.shape)
    dx, dgamma, dbeta = ops.rows_backward(dy2, x2, g, mean, rstd, view.groups, view.inner, centered, out=target)
    dx = dx.reshape(x.shape) if out is None else out
    if gamma is None:
        return dx, None, None
    if dgamma is None:  # an empty affine shape (no channels): the CUDA ops read an empty gamma as none
        device = _device.is_device_array(x)
        dgamma, dbeta = (_device.empty(view.affine_shape, x.dtype, device=device) for _ in range(2))
    return dx, dgamma.reshape(view.affine_shape), dbeta.reshape(view.affine_shape)


def layer_norm_forward(
    x: np.ndarray,
    normalized_shape,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    *,
    eps: float = 1e-5,
    backend: str = "cpu",
    out: np.ndarray | None = None,
):
    """LayerNorm over the trailing ``normalized_shape`` dims of x.

    x: (*lead, *normalized_shape); gamma, beta: normalized_shape or None.
    Returns y (x.shape), mean and rstd (lead), rstd = 1 / sqrt(biased var + eps).
    """
    op = "layer_norm_forward"
    ops = _backends.select(backend, op=op)
    x_in, x = x, _checks.input_array(x, min_ndim=1, op=op, backend=backend)
    normalized = _checks.normalized_shape(normalized_shape, x.shape, op=op)
    return _forward(op, x, _layer_norm_view(x.shape, normalized), gamma, beta, eps, ops, out=out, x_in=x_in)


def layer_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    gamma: np.ndarray | None,
    mean: np.ndarray,
    rstd: np.ndarray,
    *,
    backend: str = "cpu",
    out=None,
):
    """Gradients of layer_norm_forward. The normalized dims are the ones mean does not have.

    dy, x: (*lead, *normalized); mean, rstd: (lead); gamma: normalized or None.
    Returns dx (x.shape), dgamma and dbeta (normalized; None when gamma is None).
    """
    op = "layer_norm_backward"
    ops = _backends.select(backend, op=op)
    x_in, x = x, _checks.input_array(x, min_ndim=1, op=op, backend=backend)
    lead = _checks.stats_ndim("mean", mean, x, range(x.ndim), op=op)
    view = _layer_norm_view(x.shape, x.shape[lead:])
    return _backward(op, dy, x, gamma, mean, rstd, view, ops, out=out, x_in=x_in)


def instance_norm_forward(
    x: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    *,
    eps: float = 1e-5,
    backend: str = "cpu",
    out: np.ndarray | None = None,
):
    """InstanceNorm: x (N, C, *spatial); gamma, beta (C,) or None. Returns y, mean and rstd (N, C)."""
    op = "instance_norm_forward"
    ops = _backends.select(backend, op=op)
    x_in, x = x, _checks.input_array(x, min_ndim=3, op=op, backend=backend)
    _checks.spatial_elements(x.shape, op=op)
    return _forward(op, x, _group_norm_view(x.shape, x.shape[1]), gamma, beta, eps, ops, out=out, x_in=x_in)


def instance_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    gamma: np.ndarray | None,
    mean: np.ndarray,
    rstd: np.ndarray,
    *,
    backend: str = "cpu",
    out=None,
):
    """Gradients of instance_norm_forward. Returns dx (N, C, *spatial), dgamma and dbeta (C,) or None."""
    op = "instance_norm_backward"
    ops = _backends.select(backend, op=op)
    x_in, x = x, _checks.input_array(x, min_ndim=3, op=op, backend=backend)
    return _backward(op, dy, x, gamma, mean, rstd, _group_norm_view(x.shape, x.shape[1]), ops, out=out, x_in=x_in)


def group_norm_forward(
    x: np.ndarray,
    num_groups: int,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    *,
    eps: float = 1e-5,
    backend: str = "cpu",
    out: np.ndarray | None = None,
):
    """GroupNorm: x (N, C, *spatial), channels split into num_groups consecutive groups of C // num_groups.

    gamma, beta: (C,) or None. Returns y, mean and rstd (N, num_groups).
    """
    op = "group_norm_forward"
    ops = _backends.select(backend, op=op)
    x_in, x = x, _checks.input_array(x, min_ndim=2, op=op, backend=backend)
    groups = _checks.num_groups(num_groups, x.shape, op=op)
    return _forward(op, x, _group_norm_view(x.shape, groups), gamma, beta, eps, ops, out=out, x_in=x_in)


def group_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    gamma: np.ndarray | None,
    mean: np.ndarray,
    rstd: np.ndarray,
    *,
    backend: str = "cpu",
    out=None,
):
    """Gradients of group_norm_forward; the group count is mean.shape[1]. Returns dx, dgamma, dbeta (C,)."""
    op = "group_norm_backward"
    ops = _backends.select(backend, op=op)
    x_in, x = x, _checks.input_array(x, min_ndim=2, op=op, backend=backend)
    _checks.stats_ndim("mean", mean, x, (2,), op=op)
    groups = _checks.groups_from_stats(mean.shape, x.shape, op=op)
    return _backward(op, dy, x, gamma, mean, rstd, _group_norm_view(x.shape, groups), ops, out=out, x_in=x_in)


def rms_norm_forward(
    x: np.ndarray,
    normalized_shape,
    gamma: np.ndarray | None = None,
    *,
    eps: float | None = None,
    backend: str = "cpu",
    out: np.ndarray | None = None,
):
    """RMSNorm over the trailing ``normalized_shape`` dims of x (Zhang and Sennrich, 2019), as F.rms_norm.

    x: (*lead, *normalized_shape); gamma: normalized_shape or None. eps None is the machine epsilon of x's
    dtype, as PyTorch takes it. Returns y (x.shape) and rstd (lead), rstd = 1 / sqrt(mean(x**2) + eps).
    """
    op = "rms_norm_forward"
    ops = _backends.select(backend, op=op)
    x_in, x = x, _checks.input_array(x, min_ndim=1, op=op, backend=backend)
    normalized = _checks.normalized_shape(normalized_shape, x.shape, op=op)
    eps = float(np.finfo(x.dtype).eps) if eps is None else eps
    view = _layer_norm_view(x.shape, normalized)
    y, _, rstd = _forward(op, x, view, gamma, None, eps, ops, centered=False, out=out, x_in=x_in)
    return y, rstd


def rms_norm_backward(
    dy: np.ndarray, x: np.ndarray, gamma: np.ndarray | None, rstd: np.ndarray, *, backend: str = "cpu", out=None
):
    """Gradients of rms_norm_forward. The normalized dims are the ones rstd does not have.

    dy, x: (*lead, *normalized); rstd: (lead); gamma: normalized or None.
    Returns dx (x.shape) and dgamma (normalized; None when gamma is None).
    """
    op = "rms_norm_backward"
    ops = _backends.select(backend, op=op)
    x_in, x = x, _checks.input_array(x, min_ndim=1, op=op, backend=backend)
    lead = _checks.stats_ndim("rstd", rstd, x, range(x.ndim), op=op)
    view = _layer_norm_view(x.shape, x.shape[lead:])
    dx, dgamma, _ = _backward(op, dy, x, gamma, None, rstd, view, ops, centered=False, out=out, x_in=x_in)
    return dx, dgamma
