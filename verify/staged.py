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

Each stage is one method of `Stages`, so a variant of the graph is the same graph with some stages
replaced (`Stages.replace`): eval mode replaces mu and var by the running statistics, and the verifier's
diagnosis (verify.diagnose) builds its hypotheses of what an implementation got wrong the same way.

Plain NumPy, float64 unless asked otherwise, written to be read, not to be fast: it is the reference the
kernels and the verifier are checked against.
"""

from __future__ import annotations

import copy
import math
import types
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np


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

    @property
    def stats_broadcast(self) -> tuple:
        """The view's shape with the reduced axes kept as 1: the shape of mu and var in the staged graph."""
        return tuple(1 if a in self.reduce_axes else d for a, d in enumerate(self.view_shape))

    def regroup(self, view_shape: tuple, reduce_axes: tuple) -> Layout:
        """The same layer with its statistics taken over another view of x (the affine is unchanged)."""
        kept = tuple(d for a, d in enumerate(view_shape) if a not in reduce_axes)
        return replace(self, view_shape=tuple(view_shape), reduce_axes=tuple(reduce_axes), stats_shape=kept)

    def describe(self, kind: str, index: tuple) -> str:
        """What an element means: kind "x" (x-shaped tensors), "stats" (mean, rstd) or "affine" (gamma...)."""
        from .norms import get

        return get(self.norm).describe(self, kind, tuple(int(i) for i in index))

    @cached_property
    def affine_reduce_axes(self) -> tuple:
        """Axes of x summed for dgamma and dbeta: every axis gamma does not vary along."""
        pad = len(self.x_shape) - len(self.affine_broadcast)
        bshape = (1,) * pad + self.affine_broadcast
        return tuple(a for a, d in enumerate(bshape) if d == 1)  # a size-1 axis of x summed is unchanged

    def stats_index(self) -> np.ndarray:
        """For every element of x (x's shape), the flat index of its statistics group."""
        ids = np.arange(math.prod(self.stats_broadcast)).reshape(self.stats_broadcast)
        return np.broadcast_to(ids, self.view_shape).reshape(self.x_shape)

    def affine_index(self) -> np.ndarray:
        """For every element of x (x's shape), the flat index of its element of gamma."""
        ids = np.arange(math.prod(self.affine_shape)).reshape(self.affine_broadcast)
        return np.broadcast_to(ids, self.x_shape)


def layout(
    norm: str, x_shape: tuple, *, num_groups: int | None = None, normalized_shape: tuple | int | None = None
) -> Layout:
    """The Layout of `norm` on an x of this shape (verify.norms); ValueError naming what is missing or does not
    fit."""
    from .norms import get

    return get(norm).layout(x_shape, num_groups=num_groups, normalized_shape=normalized_shape)


class Stages:
    """The stages of the graph, one method each, forward then backward, each the math of one line.

    Inputs and outputs of the statistics stages (mu ... xhat, and divar ... dx) live in the statistics
    view of x; gammax, out and the affine gradients live in x's own shape.
    """

    def __init__(self, lay: Layout, eps: float):
        self.lay = lay
        self.eps = eps
        self.m = lay.count  # M, the divisor of every mean below

    def replace(self, **stages) -> Stages:
        """A copy of this graph with the named stages replaced by fn(self, *inputs) -> output."""
        new = copy.copy(self)
        for name, fn in stages.items():
            if not callable(getattr(Stages, name, None)):
                raise ValueError(f"no stage named {name!r}")
            setattr(new, name, types.MethodType(fn, new))
        return new

    def sum(self, a):
        """Sum over each statistics group, kept for broadcasting."""
        return a.sum(axis=self.lay.reduce_axes, keepdims=True)

    def sum_affine(self, a):
        """Sum over every axis of x that gamma does not vary along, in gamma's shape."""
        return a.sum(axis=self.lay.affine_reduce_axes).reshape(self.lay.affine_shape)

    # forward
    def mu(self, x):
        return self.sum(x) / self.m

    def xmu(self, x, mu):
        return x - mu

    def sq(self, xmu):
        return xmu**2

    def var(self, sq):
        return self.sum(sq) / self.m

    def sqrtvar(self, var):
        return np.sqrt(var + self.eps)

    def ivar(self, sqrtvar):
        return 1.0 / sqrtvar

    def xhat(self, xmu, ivar):
        return xmu * ivar

    def gammax(self, gamma, xhat):
        return gamma * xhat

    def out(self, gammax, beta):
        return gammax + beta

    # backward, each stage's gradient from the ones after it
    def dbeta(self, dout):  # out = gammax + beta
        return self.sum_affine(dout)

    def dgamma(self, dgammax, xhat):  # gammax = gamma * xhat
        return self.sum_affine(dgammax * xhat)

    def dxhat(self, dgammax, gamma):
        return dgammax * gamma

    def divar(self, dxhat, xmu):  # xhat = xmu * ivar
        return self.sum(dxhat * xmu)

    def dxmu1(self, dxhat, ivar):
        return dxhat * ivar

    def dsqrtvar(self, divar, sqrtvar):  # ivar = 1 / sqrtvar
        return -1.0 / sqrtvar**2 * divar

    def dvar(self, dsqrtvar, var):  # sqrtvar = sqrt(var + eps)
        return 0.5 / np.sqrt(var + self.eps) * dsqrtvar

    def dsq(self, dvar, xmu):  # var = mean(sq)
        return np.ones_like(xmu) / self.m * dvar

    def dxmu2(self, dsq, xmu):  # sq = xmu ** 2
        return 2.0 * xmu * dsq

    def dx1(self, dxmu1, dxmu2):  # xmu = x - mu: the direct path
        return dxmu1 + dxmu2

    def dmu(self, dx1):  # ... and the path through mu
        return -self.sum(dx1)

    def dx2(self, dmu, xmu):  # mu = mean(x)
        return np.ones_like(xmu) / self.m * dmu

    def dx(self, dx1, dx2):
        return dx1 + dx2


def eval_mode(stages: Stages, running_mean, running_var) -> Stages:
    """The graph normalizing with running statistics: mu and var are constants, so nothing flows back
    through them (dx = dy * gamma * rstd)."""
    shape = stages.lay.stats_broadcast
    rm = np.asarray(running_mean, dtype=np.float64).reshape(shape)
    rv = np.asarray(running_var, dtype=np.float64).reshape(shape)
    return stages.replace(
        mu=lambda s, x: rm.astype(x.dtype),
        var=lambda s, sq: rv.astype(sq.dtype),
        dvar=lambda s, dsqrtvar, var: np.zeros_like(dsqrtvar),
        dmu=lambda s, dx1: np.zeros_like(s.sum(dx1)),
    )


def forward(
    x,
    gamma=None,
    beta=None,
    *,
    norm: str | None = None,
    eps: float = 1e-5,
    num_groups: int | None = None,
    normalized_shape=None,
    stages: Stages | None = None,
    dtype=np.float64,
):
    """Staged forward, in float64 unless dtype says otherwise. Returns (out, cache); cache holds every stage.

    gamma/beta None mean gamma = 1, beta = 0 (and with both None, no affine gradients); any shape holding
    the affine's elements is taken, cs231n's (1, C, 1, 1) among them. cache["mean"], cache["rstd"] have the
    kernels' stats shape. A variant of the graph comes in as `stages` (which also brings the layout and eps).
    """
    if stages is None:
        lay = layout(norm, np.shape(x), num_groups=num_groups, normalized_shape=normalized_shape)
        stages = Stages(lay, eps)
    s, lay = stages, stages.lay
    x = np.asarray(x, dtype=dtype)
    affine = gamma is not None or beta is not None
    gamma = np.ones(lay.affine_shape, dtype) if gamma is None else np.asarray(gamma, dtype=dtype)
    beta = np.zeros(lay.affine_shape, dtype) if beta is None else np.asarray(beta, dtype=dtype)
    gamma_b = gamma.reshape(lay.affine_broadcast)
    beta_b = beta.reshape(lay.affine_broadcast)

    xv = x.reshape(lay.view_shape)
    mu = s.mu(xv)  # one per statistics group, kept for broadcasting
    xmu = s.xmu(xv, mu)
    sq = s.sq(xmu)
    var = s.var(sq)
    sqrtvar = s.sqrtvar(var)
    ivar = s.ivar(sqrtvar)
    xhat = s.xhat(xmu, ivar).reshape(lay.x_shape)
    gammax = s.gammax(gamma_b, xhat)
    out = s.out(gammax, beta_b)

    cache = dict(
        layout=lay,
        stages=s,
        affine=affine,
        eps=s.eps,
        x=x,
        gamma=gamma.reshape(lay.affine_shape),
        beta=beta.reshape(lay.affine_shape),
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
    """Staged backward, in the forward's dtype: every stage's gradient, with dx, dgamma, dbeta among them.

    dgamma and dbeta are None when the forward was given neither gamma nor beta.
    """
    s: Stages = cache["stages"]
    lay = s.lay
    dout = np.asarray(dout, dtype=cache["x"].dtype)
    gamma_b = cache["gamma"].reshape(lay.affine_broadcast)
    xmu, ivar, sqrtvar, var = cache["xmu"], cache["ivar"], cache["sqrtvar"], cache["var"]

    dbeta = s.dbeta(dout)
    dgammax = dout
    dgamma = s.dgamma(dgammax, cache["xhat"])
    dxhat = s.dxhat(dgammax, gamma_b).reshape(lay.view_shape)
    divar = s.divar(dxhat, xmu)
    dxmu1 = s.dxmu1(dxhat, ivar)
    dsqrtvar = s.dsqrtvar(divar, sqrtvar)
    dvar = s.dvar(dsqrtvar, var)
    dsq = s.dsq(dvar, xmu)
    dxmu2 = s.dxmu2(dsq, xmu)
    dx1 = s.dx1(dxmu1, dxmu2)
    dmu = s.dmu(dx1)
    dx2 = s.dx2(dmu, xmu)
    dx = s.dx(dx1, dx2).reshape(lay.x_shape)

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
