"""The staged computation graph of the cs231n batch-norm assignment, for all four norms.

Forward, one stage a line, over the reduction axes of the norm (M values per statistics group):

    mu      = mean(x)                 per statistics group
    xmu     = x - mu
    sq      = xmu ** 2
    var     = mean(sq)                biased
    sqrtvar = sqrt(var + eps)
    ivar    = 1 / sqrtvar
    xhat    = xmu * ivar
    gammax  = gamma * xhat
    out     = gammax + beta

Backward walks the same stages in reverse, one line each. The four norms differ only in how x is viewed
for the statistics and which axes are reduced:

    norm           statistics view                    reduced axes of the view    gamma broadcast
    batch_norm     x (N, C, *spatial) or (N, D)       0 and 2..                   (1, C, 1, ...)
    layer_norm     x                                  the trailing len(ns)        normalized_shape
    instance_norm  x (N, C, *spatial)                 2..                         (1, C, 1, ...)
    group_norm     x as (N, G, C // G * prod(spatial)) 2                          (1, C, 1, ...)

Plain NumPy in float64, written to be read, not to be fast: it is the reference the kernels and the
verifier are checked against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NORMS = ("batch_norm", "layer_norm", "instance_norm", "group_norm")


@dataclass(frozen=True)
class Layout:
    """How one norm sees x: the statistics view, its reduced axes, and how gamma broadcasts against x."""

    norm: str
    x_shape: tuple
    view_shape: tuple  # x.reshape(view_shape) is what the statistics are taken over
    reduce_axes: tuple  # axes of the view reduced for the statistics
    affine_shape: tuple  # shape of gamma, beta, dgamma, dbeta
    affine_broadcast: tuple  # gamma.reshape(affine_broadcast) broadcasts against x
    stats_shape: tuple  # shape of mean and rstd as the kernels return them

    @property
    def count(self) -> int:
        """M: values per statistics group."""
        return math.prod(self.view_shape[a] for a in self.reduce_axes)

    @property
    def groups(self) -> int:
        """G for group norm (the view's second dim), else 0."""
        return self.view_shape[1] if self.norm == "group_norm" else 0

    def describe(self, kind: str, index: tuple) -> str:
        """What an element means: kind "x" (x-shaped tensors), "stats" (mean, rstd) or "affine" (gamma...)."""
        index = tuple(int(i) for i in index)
        if self.norm == "layer_norm":
            lead = len(self.stats_shape)
            if kind == "x":
                return f"row {index[:lead]}, element {index[lead:]}"
            return f"row {index}" if kind == "stats" else f"element {index}"
        if kind == "affine":
            return f"channel {index[0]}"
        n, c = (index + (0, 0))[:2]
        if self.norm == "batch_norm":
            return f"channel {index[0]}" if kind == "stats" else f"n={n}, channel {c}"
        if self.norm == "instance_norm":
            return f"row (n={n}, channel {c})"
        if kind == "stats":
            return f"row (n={n}, group {c})"
        return f"row (n={n}, group {c // (self.x_shape[1] // self.groups)}), channel {c}"

    @property
    def affine_reduce_axes(self) -> tuple:
        """Axes of x summed for dgamma and dbeta: every axis gamma does not vary along."""
        pad = len(self.x_shape) - len(self.affine_broadcast)
        bshape = (1,) * pad + self.affine_broadcast
        return tuple(a for a, d in enumerate(bshape) if d == 1)  # a size-1 axis of x summed is unchanged


def layout(
    norm: str, x_shape: tuple, *, num_groups: int | None = None, normalized_shape: tuple | int | None = None
) -> Layout:
    x_shape = tuple(x_shape)
    nd = len(x_shape)
    if norm == "layer_norm":
        ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        lead = x_shape[: nd - len(ns)]
        return Layout(norm, x_shape, x_shape, tuple(range(nd - len(ns), nd)), ns, ns, lead)
    n, c = x_shape[:2]
    spatial = (1,) * (nd - 2)
    channel = (1, c) + spatial
    if norm == "batch_norm":
        return Layout(norm, x_shape, x_shape, (0,) + tuple(range(2, nd)), (c,), channel, (c,))
    if norm == "instance_norm":
        return Layout(norm, x_shape, x_shape, tuple(range(2, nd)), (c,), channel, (n, c))
    if norm == "group_norm":
        g = num_groups
        return Layout(norm, x_shape, (n, g, (c // g) * math.prod(x_shape[2:])), (2,), (c,), channel, (n, g))
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def forward(
    x, gamma=None, beta=None, *, norm: str, eps: float = 1e-5, num_groups: int | None = None, normalized_shape=None
):
    """Staged forward in float64. Returns (out, cache); cache holds every stage and the layout.

    gamma/beta None mean no affine (gamma = 1, beta = 0). cache["mean"], cache["rstd"] have the kernels'
    stats shape.
    """
    lay = layout(norm, np.shape(x), num_groups=num_groups, normalized_shape=normalized_shape)
    x = np.asarray(x, dtype=np.float64)
    affine = gamma is not None
    gamma = np.ones(lay.affine_shape) if gamma is None else np.asarray(gamma, dtype=np.float64)
    beta = np.zeros(lay.affine_shape) if beta is None else np.asarray(beta, dtype=np.float64)
    gamma_b = gamma.reshape(lay.affine_broadcast)
    beta_b = beta.reshape(lay.affine_broadcast)
    ax = lay.reduce_axes

    xv = x.reshape(lay.view_shape)
    mu = xv.mean(axis=ax, keepdims=True)  # stats shape, kept for broadcasting
    xmu = xv - mu
    sq = xmu**2
    var = sq.mean(axis=ax, keepdims=True)
    sqrtvar = np.sqrt(var + eps)
    ivar = 1.0 / sqrtvar
    xhat = (xmu * ivar).reshape(lay.x_shape)
    gammax = gamma_b * xhat
    out = gammax + beta_b

    cache = dict(
        layout=lay,
        affine=affine,
        eps=eps,
        x=x,
        gamma=gamma,
        mu=mu,
        xmu=xmu,
        sq=sq,
        var=var,
        sqrtvar=sqrtvar,
        ivar=ivar,
        xhat=xhat,
        gammax=gammax,
        out=out,
        mean=mu.reshape(lay.stats_shape),
        rstd=ivar.reshape(lay.stats_shape),
    )
    return out, cache


def backward(dout, cache) -> dict:
    """Staged backward in float64: every stage's gradient, with dx, dgamma, dbeta among them.

    dgamma and dbeta are None when the forward had no affine.
    """
    lay: Layout = cache["layout"]
    ax = lay.reduce_axes
    m = lay.count
    dout = np.asarray(dout, dtype=np.float64)
    gamma_b = cache["gamma"].reshape(lay.affine_broadcast)
    xmu, ivar, sqrtvar, var, eps = cache["xmu"], cache["ivar"], cache["sqrtvar"], cache["var"], cache["eps"]
    sum_affine = lay.affine_reduce_axes

    # out = gammax + beta
    dbeta = dout.sum(axis=sum_affine).reshape(lay.affine_shape)
    dgammax = dout
    # gammax = gamma * xhat
    dgamma = (dgammax * cache["xhat"]).sum(axis=sum_affine).reshape(lay.affine_shape)
    dxhat = (dgammax * gamma_b).reshape(lay.view_shape)
    # xhat = xmu * ivar
    divar = (dxhat * xmu).sum(axis=ax, keepdims=True)
    dxmu1 = dxhat * ivar
    # ivar = 1 / sqrtvar
    dsqrtvar = -1.0 / sqrtvar**2 * divar
    # sqrtvar = sqrt(var + eps)
    dvar = 0.5 / np.sqrt(var + eps) * dsqrtvar
    # var = mean(sq)
    dsq = np.ones_like(xmu) / m * dvar
    # sq = xmu ** 2
    dxmu2 = 2.0 * xmu * dsq
    # xmu = x - mu
    dx1 = dxmu1 + dxmu2
    dmu = -dx1.sum(axis=ax, keepdims=True)
    # mu = mean(x)
    dx2 = np.ones_like(xmu) / m * dmu
    dx = (dx1 + dx2).reshape(lay.x_shape)

    if not cache["affine"]:
        dgamma = dbeta = None
    return dict(
        dx=dx,
        dgamma=dgamma,
        dbeta=dbeta,
        dout=dout,
        dgammax=dgammax,
        dxhat=dxhat,
        divar=divar,
        dxmu1=dxmu1,
        dsqrtvar=dsqrtvar,
        dvar=dvar,
        dsq=dsq,
        dxmu2=dxmu2,
        dx1=dx1,
        dmu=dmu,
        dx2=dx2,
    )
