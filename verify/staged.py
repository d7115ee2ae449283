"""The staged computation graphs: the cs231n batch-norm assignment's, for all four norms of the family, and
RMSNorm's and Switchable Normalization's, written the same way.

The four norms of the family (batch, layer, instance, group norm), one stage a line, over the reduction axes of
the norm (M values per statistics group):

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

RMSNorm (Zhang and Sennrich, "Root Mean Square Layer Normalization", 2019), over the trailing normalized dims as
layer norm, with no mean subtracted and no shift (`RMSNormStages`):

    sq      = x ** 2
    ms      = mean(sq)                the mean square, per row
    rms     = sqrt(ms + eps)
    irms    = 1 / rms
    xhat    = x * irms
    out     = gamma * xhat

Switchable Normalization (Luo, Ren, Peng and Zhang, "Differentiable Learning-to-Normalize via Switchable
Normalization", 2018), x (N, C, *spatial) viewed as (N, C, S), statistics of three kinds mixed per row (n, c)
by softmaxed weights (`SwitchableNormStages`):

    mean_in = mean(x) over s           per (n, c)        var_in = mean((x - mean_in) ** 2) over s
    mean_ln = mean(x) over (c, s)      per n             var_ln = mean((x - mean_ln) ** 2) over (c, s)
    mean_bn = mean(x) over (n, s)      per c             var_bn = mean((x - mean_bn) ** 2) over (n, s)
    w       = softmax(mean_weight)     the paper's w_k   (order: instance, layer, batch)
    v       = softmax(var_weight)      the paper's w'_k
    mean    = w0 mean_in + w1 mean_ln + w2 mean_bn
    var     = v0 var_in  + v1 var_ln  + v2 var_bn
    xmu     = x - mean,  sqrtvar = sqrt(var + eps),  ivar = 1 / sqrtvar,  xhat = xmu * ivar
    gammax  = gamma * xhat,  out = gammax + beta

Every variance here is the biased one, each computed directly about its own mean (two passes, in float64): the
project's convention. The authors' reference code differs in two ways: its instance variance is the unbiased
one (torch's x.var(-1), dividing by S - 1), and it takes the layer and batch variances from the instance
moments as E[x^2] - E[x]^2 (mean(var_in + mean_in**2) - mean_ln**2), which cancels catastrophically in float32
when |mean| is much larger than the spread. verify.diagnose names the first as a mistake.

Each stage is one method of a graph class, so a variant of a graph is the same graph with some stages replaced
(`replace`): eval mode replaces the batch statistics by the running statistics (`eval_mode`), and the
verifier's diagnosis (verify.diagnose) builds its hypotheses of what an implementation got wrong the same way.
The norm registry (verify.norms) names each norm's graph class; `forward` and `backward` below run any of them.

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


class _Graph:
    """What every staged graph shares: its layout and eps, M, the sums over a statistics group and over every
    axis gamma does not vary along, and `replace`. A subclass lists its stage methods in STAGES (forward ones,
    then backward ones) and runs them in `run_forward` and `run_backward`."""

    STAGES: tuple = ()

    def __init__(self, lay: Layout, eps: float):
        self.lay = lay
        self.eps = eps
        self.m = lay.count  # M, the divisor of every mean over a statistics group

    def replace(self, **stages) -> _Graph:
        """A copy of this graph with the named stages replaced by fn(self, *inputs) -> output."""
        new = copy.copy(self)
        for name, fn in stages.items():
            if name not in self.STAGES:
                raise ValueError(f"no stage named {name!r} in {type(self).__name__}")
            setattr(new, name, types.MethodType(fn, new))
        return new

    def sum(self, a):
        """Sum over each statistics group, kept for broadcasting."""
        return a.sum(axis=self.lay.reduce_axes, keepdims=True)

    def sum_affine(self, a):
        """Sum over every axis of x that gamma does not vary along, in gamma's shape."""
        return a.sum(axis=self.lay.affine_reduce_axes).reshape(self.lay.affine_shape)

    def eval_mode(self, running_mean, running_var) -> _Graph:
        raise ValueError(f"{self.lay.norm} has no running statistics: it has no eval mode")

    def _affine(self, a, dtype, fill: float):
        """gamma or beta in the affine shape (fill where not given), and broadcast against x."""
        lay = self.lay
        if a is None:
            a = np.full(lay.affine_shape, fill, dtype)
        a = np.asarray(a, dtype=dtype).reshape(lay.affine_shape)
        return a, a.reshape(lay.affine_broadcast)


class _Normalize(_Graph):
    """The stages after the statistics that the family's graph and Switchable Normalization's share: subtract the
    mean, divide by sqrt(var + eps), scale and shift; and their gradients. One spelling for both graphs."""

    def xmu(self, x, mu):
        return x - mu

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

    def dbeta(self, dout):  # out = gammax + beta
        return self.sum_affine(dout)

    def dgamma(self, dgammax, xhat):  # gammax = gamma * xhat
        return self.sum_affine(dgammax * xhat)

    def dxhat(self, dgammax, gamma):
        return dgammax * gamma

    def divar(self, dxhat, xmu):  # xhat = xmu * ivar
        return self.sum(dxhat * xmu)

    def dsqrtvar(self, divar, sqrtvar):  # ivar = 1 / sqrtvar
        return -1.0 / sqrtvar**2 * divar

    def dvar(self, dsqrtvar, var):  # sqrtvar = sqrt(var + eps)
        return 0.5 / np.sqrt(var + self.eps) * dsqrtvar


class Stages(_Normalize):
    """The four norms of the family: the stages of the cs231n graph, one method each, forward then backward, each
    the math of one line.

    Inputs and outputs of the statistics stages (mu ... xhat, and divar ... dx) live in the statistics
    view of x; gammax, out and the affine gradients live in x's own shape.
    """

    STAGES = (
        "mu", "xmu", "sq", "var", "sqrtvar", "ivar", "xhat", "gammax", "out",
        "dbeta", "dgamma", "dxhat", "divar", "dxmu1", "dsqrtvar", "dvar", "dsq", "dxmu2", "dx1", "dmu", "dx2", "dx",
    )  # fmt: skip

    # forward
    def mu(self, x):
        return self.sum(x) / self.m

    def sq(self, xmu):
        return xmu**2

    def var(self, sq):
        return self.sum(sq) / self.m

    # backward, each stage's gradient from the ones after it
    def dxmu1(self, dxhat, ivar):
        return dxhat * ivar

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

    def eval_mode(self, running_mean, running_var) -> Stages:
        """mu and var are the running statistics, constants: nothing flows back through them."""
        shape = self.lay.stats_broadcast
        rm = np.asarray(running_mean, dtype=np.float64).reshape(shape)
        rv = np.asarray(running_var, dtype=np.float64).reshape(shape)
        return self.replace(
            mu=lambda s, x: rm.astype(x.dtype),
            var=lambda s, sq: rv.astype(sq.dtype),
            dvar=lambda s, dsqrtvar, var: np.zeros_like(dsqrtvar),
            dmu=lambda s, dx1: np.zeros_like(s.sum(dx1)),
        )

    def run_forward(self, x, gamma=None, beta=None):
        s, lay = self, self.lay
        affine = gamma is not None or beta is not None
        gamma, gamma_b = self._affine(gamma, x.dtype, 1.0)
        beta, beta_b = self._affine(beta, x.dtype, 0.0)

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
            affine=affine,
            gamma=gamma,
            beta=beta,
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
        cache["statistics"] = dict(mean=cache["mean"], rstd=cache["rstd"])  # as the kernels return them
        return out, cache

    def run_backward(self, dout, cache) -> dict:
        s, lay = self, self.lay
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


class RMSNormStages(_Graph):
    """RMSNorm: the stages of Zhang and Sennrich's paper, one method each. Rows are layer norm's (the trailing
    normalized dims); there is no mean and no beta. Statistics stages (sq ... xhat, dirms ... dx) live in x's
    shape, which is its own statistics view."""

    STAGES = (
        "sq", "ms", "rms", "irms", "xhat", "out",
        "dgamma", "dxhat", "dirms", "dx1", "drms", "dms", "dsq", "dx2", "dx",
    )  # fmt: skip

    # forward
    def sq(self, x):
        return x**2

    def ms(self, sq):
        return self.sum(sq) / self.m

    def rms(self, ms):
        return np.sqrt(ms + self.eps)

    def irms(self, rms):
        return 1.0 / rms

    def xhat(self, x, irms):
        return x * irms

    def out(self, gamma, xhat):
        return gamma * xhat

    # backward
    def dgamma(self, dout, xhat):  # out = gamma * xhat
        return self.sum_affine(dout * xhat)

    def dxhat(self, dout, gamma):
        return dout * gamma

    def dirms(self, dxhat, x):  # xhat = x * irms
        return self.sum(dxhat * x)

    def dx1(self, dxhat, irms):  # ... its direct path to x
        return dxhat * irms

    def drms(self, dirms, rms):  # irms = 1 / rms
        return -1.0 / rms**2 * dirms

    def dms(self, drms, ms):  # rms = sqrt(ms + eps)
        return 0.5 / np.sqrt(ms + self.eps) * drms

    def dsq(self, dms, x):  # ms = mean(sq)
        return np.ones_like(x) / self.m * dms

    def dx2(self, dsq, x):  # sq = x ** 2: the path through the statistic, -xhat * mean(g * xhat) * irms
        return 2.0 * x * dsq

    def dx(self, dx1, dx2):
        return dx1 + dx2

    def run_forward(self, x, gamma=None):
        s, lay = self, self.lay
        affine = gamma is not None
        gamma, gamma_b = self._affine(gamma, x.dtype, 1.0)
        sq = s.sq(x)
        ms = s.ms(sq)  # one per row, kept for broadcasting
        rms = s.rms(ms)
        irms = s.irms(rms)
        xhat = s.xhat(x, irms)
        out = s.out(gamma_b, xhat)
        cache = dict(
            affine=affine,
            gamma=gamma,
            sq=sq,
            ms=ms,
            rms=rms,
            irms=irms,
            xhat=xhat,
            out=out,
            rstd=irms.reshape(lay.stats_shape),
        )
        cache["statistics"] = dict(rstd=cache["rstd"])  # as rms_norm_forward returns it
        return out, cache

    def run_backward(self, dout, cache) -> dict:
        s, lay = self, self.lay
        x, irms, rms, ms = cache["x"], cache["irms"], cache["rms"], cache["ms"]
        dgamma = s.dgamma(dout, cache["xhat"])
        dxhat = s.dxhat(dout, cache["gamma"].reshape(lay.affine_broadcast))
        dirms = s.dirms(dxhat, x)
        dx1 = s.dx1(dxhat, irms)
        drms = s.drms(dirms, rms)
        dms = s.dms(drms, ms)
        dsq = s.dsq(dms, x)
        dx2 = s.dx2(dsq, x)
        dx = s.dx(dx1, dx2)
        return dict(
            dx=dx,
            dgamma=dgamma if cache["affine"] else None,
            dout=dout,
            dxhat=dxhat,
            dirms=dirms,
            dx1=dx1,
            drms=drms,
            dms=dms,
            dsq=dsq,
            dx2=dx2,
        )


# The axes of the (N, C, S) view that each kind of switchable statistics is taken over, and its index in the
# mixing weights.
SWITCHABLE_KINDS = {"in": ((2,), 0), "ln": ((1, 2), 1), "bn": ((0, 2), 2)}


def _softmax(logits):
    e = np.exp(logits - np.max(logits))  # shifted: the same softmax, no overflow
    return e / e.sum()


class SwitchableNormStages(_Normalize):
    """Switchable Normalization: the stages of Luo et al.'s paper, one method each, on x viewed as (N, C, S).

    Every statistic is kept for broadcasting against the view: instance ones (N, C, 1), layer ones (N, 1, 1),
    batch ones (1, C, 1); the mixed mean and var, and everything per row, (N, C, 1). The mixing weights and their
    gradients are (3,) in the order instance, layer, batch. gammax, out and dgamma, dbeta live in x's own shape.
    """

    STAGES = (
        "mean_in", "var_in", "mean_ln", "var_ln", "mean_bn", "var_bn", "w", "v", "mean", "var",
        "xmu", "sqrtvar", "ivar", "xhat", "gammax", "out",
        "dbeta", "dgamma", "dxhat", "divar", "dxmu", "dsqrtvar", "dvar", "dmean", "dw", "dv",
        "dmean_weight", "dvar_weight", "dmean_in", "dmean_ln", "dmean_bn", "dvar_in", "dvar_ln", "dvar_bn",
        "dx_in", "dx_ln", "dx_bn", "dx",
    )  # fmt: skip

    def count(self, kind: str) -> int:
        """M_k: the values each statistic of this kind is taken over (S, C S or N S)."""
        axes, _ = SWITCHABLE_KINDS[kind]
        return math.prod(self.lay.view_shape[a] for a in axes)

    def mean_over(self, a, kind: str):
        return a.sum(axis=SWITCHABLE_KINDS[kind][0], keepdims=True) / self.count(kind)

    # forward: the three kinds of statistics, each two-pass
    def mean_in(self, x):
        return self.mean_over(x, "in")

    def var_in(self, x, mean_in):
        return self.mean_over((x - mean_in) ** 2, "in")

    def mean_ln(self, x):
        return self.mean_over(x, "ln")

    def var_ln(self, x, mean_ln):
        return self.mean_over((x - mean_ln) ** 2, "ln")

    def mean_bn(self, x):
        return self.mean_over(x, "bn")

    def var_bn(self, x, mean_bn):
        return self.mean_over((x - mean_bn) ** 2, "bn")

    # ... mixed by softmaxed weights
    def w(self, mean_weight):
        return _softmax(mean_weight)

    def v(self, var_weight):
        return _softmax(var_weight)

    def mean(self, w, mean_in, mean_ln, mean_bn):
        return w[0] * mean_in + w[1] * mean_ln + w[2] * mean_bn

    def var(self, v, var_in, var_ln, var_bn):
        return v[0] * var_in + v[1] * var_ln + v[2] * var_bn

    # ... and normalized with them
    # backward
    def dxmu(self, dxhat, ivar):
        return dxhat * ivar

    def dmean(self, dxmu):  # xmu = x - mean
        return -self.sum(dxmu)

    def dw(self, dmean, mean_in, mean_ln, mean_bn):  # mean = sum_k w_k mean_k
        return np.array([np.sum(dmean * mean_in), np.sum(dmean * mean_ln), np.sum(dmean * mean_bn)])

    def dv(self, dvar, var_in, var_ln, var_bn):  # var = sum_k v_k var_k
        return np.array([np.sum(dvar * var_in), np.sum(dvar * var_ln), np.sum(dvar * var_bn)])

    def dmean_weight(self, dw, w):  # w = softmax(mean_weight): dw_j/dlogit_i = w_j (delta_ij - w_i)
        return w * (dw - np.sum(w * dw))

    def dvar_weight(self, dv, v):  # v = softmax(var_weight)
        return v * (dv - np.sum(v * dv))

    def dmean_in(self, dmean, w):  # mean = w0 mean_in + ...: each statistic gets its rows' gradients summed
        return w[0] * dmean

    def dmean_ln(self, dmean, w):
        return w[1] * dmean.sum(axis=1, keepdims=True)

    def dmean_bn(self, dmean, w):
        return w[2] * dmean.sum(axis=0, keepdims=True)

    def dvar_in(self, dvar, v):
        return v[0] * dvar

    def dvar_ln(self, dvar, v):
        return v[1] * dvar.sum(axis=1, keepdims=True)

    def dvar_bn(self, dvar, v):
        return v[2] * dvar.sum(axis=0, keepdims=True)

    # mean_k = mean(x), var_k = mean((x - mean_k)**2) over the M_k values of the group: d mean_k / dx = 1 / M_k,
    # d var_k / dx = 2 (x - mean_k) / M_k (its path through mean_k is -2 mean(x - mean_k) / M_k = 0)
    def dx_in(self, dmean_in, dvar_in, x, mean_in):
        return (dmean_in + 2.0 * (x - mean_in) * dvar_in) / self.count("in")

    def dx_ln(self, dmean_ln, dvar_ln, x, mean_ln):
        return (dmean_ln + 2.0 * (x - mean_ln) * dvar_ln) / self.count("ln")

    def dx_bn(self, dmean_bn, dvar_bn, x, mean_bn):
        return (dmean_bn + 2.0 * (x - mean_bn) * dvar_bn) / self.count("bn")

    def dx(self, dxmu, dx_in, dx_ln, dx_bn):  # the direct path, and the paths through the statistics
        return dxmu + dx_in + dx_ln + dx_bn

    def eval_mode(self, running_mean, running_var) -> SwitchableNormStages:
        """The batch statistics are the running ones, constants: nothing flows back to x through them, though
        the weight gradients still see their values."""
        shape = (1, self.lay.view_shape[1], 1)
        rm = np.asarray(running_mean, dtype=np.float64).reshape(shape)
        rv = np.asarray(running_var, dtype=np.float64).reshape(shape)
        return self.replace(
            mean_bn=lambda s, x: rm.astype(x.dtype),
            var_bn=lambda s, x, mean_bn: rv.astype(x.dtype),
            dx_bn=lambda s, dmean_bn, dvar_bn, x, mean_bn: np.zeros_like(x),
        )

    def run_forward(self, x, gamma=None, beta=None, mean_weight=None, var_weight=None):
        s, lay = self, self.lay
        if mean_weight is None or var_weight is None:
            raise ValueError("switchable_norm needs mean_weight and var_weight, the (3,) logits of the mixing weights")
        affine = gamma is not None or beta is not None
        gamma, gamma_b = self._affine(gamma, x.dtype, 1.0)
        beta, beta_b = self._affine(beta, x.dtype, 0.0)
        mean_weight = np.asarray(mean_weight, dtype=x.dtype).reshape(3)
        var_weight = np.asarray(var_weight, dtype=x.dtype).reshape(3)

        xv = x.reshape(lay.view_shape)
        mean_in = s.mean_in(xv)
        var_in = s.var_in(xv, mean_in)
        mean_ln = s.mean_ln(xv)
        var_ln = s.var_ln(xv, mean_ln)
        mean_bn = s.mean_bn(xv)
        var_bn = s.var_bn(xv, mean_bn)
        w = s.w(mean_weight)
        v = s.v(var_weight)
        mean = s.mean(w, mean_in, mean_ln, mean_bn)
        var = s.var(v, var_in, var_ln, var_bn)
        xmu = s.xmu(xv, mean)
        sqrtvar = s.sqrtvar(var)
        ivar = s.ivar(sqrtvar)
        xhat = s.xhat(xmu, ivar).reshape(lay.x_shape)
        gammax = s.gammax(gamma_b, xhat)
        out = s.out(gammax, beta_b)

        n, c, _ = lay.view_shape
        cache = dict(
            affine=affine,
            gamma=gamma,
            beta=beta,
            mean_weight=mean_weight,
            var_weight=var_weight,
            mean_in=mean_in,
            var_in=var_in,
            mean_ln=mean_ln,
            var_ln=var_ln,
            mean_bn=mean_bn,
            var_bn=var_bn,
            w=w,
            v=v,
            mean=mean,
            var=var,
            xmu=xmu,
            sqrtvar=sqrtvar,
            ivar=ivar,
            xhat=xhat,
            gammax=gammax,
            out=out,
            rstd=ivar.reshape(n, c),
            # the statistics as switchable_norm_forward returns them (normkernels.SwitchableStats)
            statistics=dict(
                mean=mean.reshape(n, c),
                rstd=ivar.reshape(n, c),
                mean_in=mean_in.reshape(n, c),
                var_in=var_in.reshape(n, c),
                mean_ln=mean_ln.reshape(n),
                var_ln=var_ln.reshape(n),
                mean_bn=mean_bn.reshape(c),
                var_bn=var_bn.reshape(c),
                mean_softmax=w,
                var_softmax=v,
            ),
        )
        return out, cache

    def run_backward(self, dout, cache) -> dict:
        s, lay = self, self.lay
        c = cache
        xv = c["x"].reshape(lay.view_shape)
        stats_in, stats_ln, stats_bn = (c[f"mean_{k}"] for k in ("in", "ln", "bn"))
        vars_in, vars_ln, vars_bn = (c[f"var_{k}"] for k in ("in", "ln", "bn"))

        dbeta = s.dbeta(dout)
        dgammax = dout
        dgamma = s.dgamma(dgammax, c["xhat"])
        dxhat = s.dxhat(dgammax, c["gamma"].reshape(lay.affine_broadcast)).reshape(lay.view_shape)
        divar = s.divar(dxhat, c["xmu"])
        dxmu = s.dxmu(dxhat, c["ivar"])
        dsqrtvar = s.dsqrtvar(divar, c["sqrtvar"])
        dvar = s.dvar(dsqrtvar, c["var"])
        dmean = s.dmean(dxmu)
        dw = s.dw(dmean, stats_in, stats_ln, stats_bn)
        dv = s.dv(dvar, vars_in, vars_ln, vars_bn)
        dmean_weight = s.dmean_weight(dw, c["w"])
        dvar_weight = s.dvar_weight(dv, c["v"])
        dmean_in = s.dmean_in(dmean, c["w"])
        dmean_ln = s.dmean_ln(dmean, c["w"])
        dmean_bn = s.dmean_bn(dmean, c["w"])
        dvar_in = s.dvar_in(dvar, c["v"])
        dvar_ln = s.dvar_ln(dvar, c["v"])
        dvar_bn = s.dvar_bn(dvar, c["v"])
        dx_in = s.dx_in(dmean_in, dvar_in, xv, stats_in)
        dx_ln = s.dx_ln(dmean_ln, dvar_ln, xv, stats_ln)
        dx_bn = s.dx_bn(dmean_bn, dvar_bn, xv, stats_bn)
        dx = s.dx(dxmu, dx_in, dx_ln, dx_bn).reshape(lay.x_shape)

        if not c["affine"]:
            dgamma = dbeta = None
        return dict(
            dx=dx,
            dgamma=dgamma,
            dbeta=dbeta,
            dmean_weight=dmean_weight,
            dvar_weight=dvar_weight,
            dout=dout,
            dxhat=dxhat,
            divar=divar,
            dxmu=dxmu,
            dsqrtvar=dsqrtvar,
            dvar=dvar,
            dmean=dmean,
            dw=dw,
            dv=dv,
            dmean_in=dmean_in,
            dmean_ln=dmean_ln,
            dmean_bn=dmean_bn,
            dvar_in=dvar_in,
            dvar_ln=dvar_ln,
            dvar_bn=dvar_bn,
            dx_in=dx_in,
            dx_ln=dx_ln,
            dx_bn=dx_bn,
        )


def eval_mode(stages: _Graph, running_mean, running_var) -> _Graph:
    """The graph normalizing with running statistics, which are constants: nothing flows back through them
    (for the four norms dx = dy * gamma * rstd). ValueError for a norm without running statistics."""
    return stages.eval_mode(running_mean, running_var)


def graph(norm: str, lay: Layout, eps: float) -> _Graph:
    """The staged graph of a norm (the class its registry entry names) on a layout."""
    from .norms import get

    return get(norm).stages(lay, eps)


def forward(
    x,
    *params,
    norm: str | None = None,
    eps: float | None = None,
    num_groups: int | None = None,
    normalized_shape=None,
    stages: _Graph | None = None,
    dtype=np.float64,
):
    """Staged forward, in float64 unless dtype says otherwise. Returns (out, cache); cache holds every stage.

    params: the norm's parameters after x, in its registry entry's order: (gamma, beta) for the four norms of
    the family, (gamma,) for rms_norm, (gamma, beta, mean_weight, var_weight) for switchable_norm. gamma/beta
    None mean gamma = 1, beta = 0 (and with both None, no affine gradients); any shape holding the affine's
    elements is taken, cs231n's (1, C, 1, 1) among them. cache["mean"], cache["rstd"] (and for switchable norm
    cache["statistics"]) have the kernels' shapes. eps None is the norm's default for x's dtype (1e-5; for
    rms_norm the machine epsilon of x's dtype, as torch's F.rms_norm). A variant of a graph comes in as
    `stages` (which also brings the layout and eps).
    """
    if stages is None:
        from .norms import get

        entry = get(norm)
        lay = entry.layout(np.shape(x), num_groups=num_groups, normalized_shape=normalized_shape)
        stages = entry.stages(lay, entry.resolve_eps(eps, np.asarray(x).dtype))
    x = np.asarray(x, dtype=dtype)
    out, cache = stages.run_forward(x, *params)
    cache.update(layout=stages.lay, stages=stages, eps=stages.eps, x=x)
    return out, cache


def backward(dout, cache) -> dict:
    """Staged backward, in the forward's dtype: every stage's gradient, with dx and the gradient of every
    parameter ("d" + its name) among them. Affine gradients are None when the forward was given no affine."""
    stages: _Graph = cache["stages"]
    return stages.run_backward(np.asarray(dout, dtype=cache["x"].dtype), cache)
