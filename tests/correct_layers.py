"""Independently written, correct normalization layers, for testing the gradient verifier.

The verifier must never reject correct code.  This module is a collection of implementations that are correct by
construction but written in deliberately different styles: different statistics algorithms (two-pass, refined
two-pass, shifted, Chan/Welford merges, Kahan and exactly rounded sums, float64 accumulation), different layouts
(grouped views, (groups, M) matrices, channels-last, flat index labels, explicit index loops) and different ways of
getting the gradient (a hand-walked cs231n graph, closed forms, a small tape-based autodiff, torch autograd, jax.vjp).
None of it shares code with ``normkernels`` or ``verify``.

Every implementation follows the cs231n layer contract::

    forward, backward = make(name, norm, eps=1e-5, num_groups=None, normalized_shape=None)
    y, cache = forward(x, gamma, beta)
    dx, dgamma, dbeta = backward(dy, cache)

Semantics shared by all of them:

- ``norm`` is "batch_norm" (x (N, D) or (N, C, *spatial), statistics per channel over every other axis),
  "layer_norm" (statistics per leading index over the trailing ``normalized_shape`` dims), "instance_norm"
  (x (N, C, *spatial) with at least one spatial dim, statistics per (n, c)) or "group_norm" (x (N, C, *spatial),
  ``num_groups`` consecutive channel groups, statistics per (n, group)).  Layer norm without ``normalized_shape``
  normalizes over gamma's shape, or over the last dim when gamma is None.
- y = gamma * (x - mean) / sqrt(var + eps) + beta, with the biased variance.
- gamma None: no affine, y = xhat and backward returns (dx, None, None).  beta None with gamma given: beta = 0, and
  dbeta is still returned.  gamma/beta have shape (C,) or ``normalized_shape``; dgamma/dbeta have gamma's shape.
- Outputs have x's dtype (float32 or float64).  Arithmetic is in x's dtype unless an implementation's docstring says
  it accumulates in float64.
- Inputs, dy and the cache are never modified, and no output aliases an input or the cache.

RMSNorm and Switchable Normalization have implementations of their own (``rms_*``, ``switchable_*``; their
contracts are written above them), forward(x, gamma) and forward(x, gamma, beta, mean_weight, var_weight).

``IMPLEMENTATIONS`` maps names to factories; ``supports(name, norm)`` says which norms each computes;
``available(name)`` is False when an optional package (torch, jax, numba, scipy) is missing, in which case calling
that factory raises ImportError.
"""

from __future__ import annotations

import importlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

NORMS = ("batch_norm", "layer_norm", "instance_norm", "group_norm")


@dataclass(frozen=True)
class _Spec:
    norm: str
    eps: float
    num_groups: int | None
    normalized_shape: tuple[int, ...] | None


def _spec(norm, eps, num_groups, normalized_shape) -> _Spec:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    eps = float(eps)
    if not eps >= 0.0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if norm == "group_norm":
        if num_groups is None or int(num_groups) < 1:
            raise ValueError("group_norm needs num_groups >= 1")
        num_groups = int(num_groups)
    if normalized_shape is not None:
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (int(normalized_shape),)
        else:
            normalized_shape = tuple(int(n) for n in normalized_shape)
    return _Spec(norm, eps, num_groups, normalized_shape)


@dataclass(frozen=True)
class _Geometry:
    """x seen as a "grouped view" in which every statistics group is a slab over the ``stat`` axes."""

    view: tuple[int, ...]  # x.reshape(view); group norm splits C into (G, C // G)
    stat: tuple[int, ...]  # axes of view reduced for mean / var
    param: tuple[int, ...]  # axes of view that gamma spans
    param_view: tuple[int, ...]  # gamma.reshape(param_view) broadcasts against view
    param_shape: tuple[int, ...]  # gamma's own shape

    @property
    def count(self) -> int:  # M, values per statistics group
        return math.prod(self.view[a] for a in self.stat)

    @property
    def keep(self) -> tuple[int, ...]:  # shape of per-group statistics with keepdims
        return tuple(1 if a in self.stat else n for a, n in enumerate(self.view))

    @property
    def rest(self) -> tuple[int, ...]:  # axes summed for dgamma / dbeta
        return tuple(a for a in range(len(self.view)) if a not in self.param)


def _geometry(spec: _Spec, shape: tuple[int, ...], gamma) -> _Geometry:
    nd = len(shape)
    if spec.norm == "layer_norm":
        if spec.normalized_shape is not None:
            trailing = spec.normalized_shape
        else:
            trailing = tuple(np.shape(gamma)) if gamma is not None else tuple(shape[-1:])
        k = len(trailing)
        if k == 0 or k > nd or tuple(shape[nd - k :]) != trailing:
            raise ValueError(f"normalized_shape {trailing} does not match the trailing dims of x {shape}")
        stat = tuple(range(nd - k, nd))
        return _Geometry(tuple(shape), stat, stat, (1,) * (nd - k) + trailing, trailing)
    if nd < 2:
        raise ValueError(f"{spec.norm} needs x of shape (N, C, *spatial), got {shape}")
    n, c, spatial = shape[0], shape[1], tuple(shape[2:])
    ones = (1,) * len(spatial)
    if spec.norm == "batch_norm":
        return _Geometry(tuple(shape), (0,) + tuple(range(2, nd)), (1,), (1, c) + ones, (c,))
    if spec.norm == "instance_norm":
        if not spatial:
            raise ValueError(f"instance_norm needs at least one spatial dim, got {shape}")
        return _Geometry(tuple(shape), tuple(range(2, nd)), (1,), (1, c) + ones, (c,))
    groups = spec.num_groups
    if c % groups:
        raise ValueError(f"num_groups {groups} does not divide C = {c}")
    view = (n, groups, c // groups) + spatial
    return _Geometry(view, tuple(range(2, nd + 1)), (1, 2), (1, groups, c // groups) + ones, (c,))


def _prepare(spec: _Spec, x, gamma, beta):
    """Validates the arguments; returns private copies of x, gamma and beta (zeros when only gamma is given) in x's
    dtype, so that a cache never shares memory with the caller's arrays, and the geometry."""
    x = np.array(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"x must be float32 or float64, got {x.dtype}")
    geo = _geometry(spec, x.shape, gamma)
    if gamma is None:
        return x, None, None, geo
    gamma = np.array(gamma, dtype=x.dtype)
    beta = np.zeros_like(gamma) if beta is None else np.array(beta, dtype=x.dtype)
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p.shape != geo.param_shape:
            raise ValueError(f"{name} has shape {p.shape}, expected {geo.param_shape}")
    return x, gamma, beta, geo


def _dy(dy, x_shape, dtype) -> np.ndarray:
    dy = np.asarray(dy, dtype=dtype)
    if dy.shape != tuple(x_shape):
        raise ValueError(f"dy has shape {dy.shape}, expected {tuple(x_shape)}")
    return dy


def _staged(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """The cs231n step-by-step graph (mu, xmu, sq, var, sqrtvar, ivar, xhat, gammax, out), walked back in reverse."""
    spec = _spec(norm, eps, num_groups, normalized_shape)

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        e = x.dtype.type(spec.eps)
        xv = x.reshape(geo.view)  # (view)
        mu = xv.mean(axis=geo.stat, keepdims=True)  # (keep)
        xmu = xv - mu  # (view)
        sq = xmu**2
        var = sq.mean(axis=geo.stat, keepdims=True)  # (keep)
        sqrtvar = np.sqrt(var + e)
        ivar = 1.0 / sqrtvar
        xhat = xmu * ivar  # (view)
        if gamma is None:
            g, out = None, xhat.copy()
        else:
            g = gamma.reshape(geo.param_view)
            gammax = g * xhat
            out = gammax + beta.reshape(geo.param_view)
        return out.reshape(x.shape), (xhat, g, xmu, ivar, sqrtvar, var, e, geo, x.shape)

    def backward(dy, cache):
        xhat, g, xmu, ivar, sqrtvar, var, e, geo, shape = cache
        dout = _dy(dy, shape, xhat.dtype).reshape(geo.view)
        if g is None:
            dgamma = dbeta = None
            dxhat = dout
        else:
            dbeta = dout.sum(axis=geo.rest).reshape(geo.param_shape)
            dgammax = dout
            dgamma = (dgammax * xhat).sum(axis=geo.rest).reshape(geo.param_shape)
            dxhat = dgammax * g
        m = geo.count
        divar = (dxhat * xmu).sum(axis=geo.stat, keepdims=True)
        dxmu1 = dxhat * ivar
        dsqrtvar = -1.0 / sqrtvar**2 * divar
        dvar = 0.5 * 1.0 / np.sqrt(var + e) * dsqrtvar
        dsq = 1.0 / m * np.ones_like(xmu) * dvar
        dxmu2 = 2 * xmu * dsq
        dx1 = dxmu1 + dxmu2
        dmu = -1 * dx1.sum(axis=geo.stat, keepdims=True)
        dx2 = 1.0 / m * np.ones_like(xmu) * dmu
        dx = dx1 + dx2
        return dx.reshape(shape), dgamma, dbeta

    return forward, backward


def _compact(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """Two-pass statistics; closed-form backward dx = rstd/M * (M*dxhat - sum(dxhat) - xhat*sum(dxhat*xhat))."""
    spec = _spec(norm, eps, num_groups, normalized_shape)

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        xv = x.reshape(geo.view)  # (view)
        mean = xv.mean(axis=geo.stat, keepdims=True)  # (keep)
        xc = xv - mean
        var = (xc * xc).mean(axis=geo.stat, keepdims=True)
        rstd = 1.0 / np.sqrt(var + x.dtype.type(spec.eps))
        xhat = xc * rstd
        g = None if gamma is None else gamma.reshape(geo.param_view)
        y = xhat.copy() if g is None else xhat * g + beta.reshape(geo.param_view)
        return y.reshape(x.shape), (xhat, rstd, g, geo, x.shape)

    def backward(dy, cache):
        xhat, rstd, g, geo, shape = cache
        dy = _dy(dy, shape, xhat.dtype).reshape(geo.view)
        if g is None:
            dxhat, dgamma, dbeta = dy, None, None
        else:
            dxhat = dy * g
            dgamma = (dy * xhat).sum(axis=geo.rest).reshape(geo.param_shape)
            dbeta = dy.sum(axis=geo.rest).reshape(geo.param_shape)
        m = geo.count
        s1 = dxhat.sum(axis=geo.stat, keepdims=True)
        s2 = (dxhat * xhat).sum(axis=geo.stat, keepdims=True)
        dx = rstd / m * (m * dxhat - s1 - xhat * s2)
        return dx.reshape(shape), dgamma, dbeta

    return forward, backward


def _loop_groups(spec: _Spec, shape, param_shape):
    """Yields (element indices, gamma indices) of every statistics group, enumerated with explicit loops."""
    if spec.norm == "layer_norm":
        k = len(param_shape)
        for lead in itertools.product(*(range(n) for n in shape[: len(shape) - k])):
            members, params = [], []
            for t in itertools.product(*(range(n) for n in param_shape)):
                members.append(lead + t)
                params.append(t)
            yield members, params
        return
    n, c = shape[0], shape[1]
    spatial = list(itertools.product(*(range(s) for s in shape[2:])))
    if spec.norm == "batch_norm":
        channel_sets = [(None, [ch]) for ch in range(c)]
    elif spec.norm == "instance_norm":
        channel_sets = [(i, [ch]) for i in range(n) for ch in range(c)]
    else:
        per = c // spec.num_groups
        channel_sets = [(i, list(range(gr * per, (gr + 1) * per))) for i in range(n) for gr in range(spec.num_groups)]
    for sample, channels in channel_sets:
        samples = range(n) if sample is None else [sample]
        members, params = [], []
        for i in samples:
            for ch in channels:
                for s in spatial:
                    members.append((i, ch) + s)
                    params.append((ch,))
        yield members, params


def _kahan(values, zero):
    """Kahan-compensated sum of numpy scalars, in their own precision."""
    total = zero
    comp = zero
    for v in values:
        yk = v - comp
        t = total + yk
        comp = (t - total) - yk
        total = t
    return total


def _loops(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """Explicit Python loops over statistics groups and their elements; scalar math with Kahan sums in x's dtype.

    No broadcasting at all: every group's element indices are enumerated one by one.  Slow; meant for small inputs.
    """
    spec = _spec(norm, eps, num_groups, normalized_shape)

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        dt = x.dtype.type
        e = dt(spec.eps)
        y = np.empty_like(x)
        means, rstds = [], []
        for members, params in _loop_groups(spec, x.shape, geo.param_shape):
            m = dt(len(members))
            mean = _kahan([x[i] for i in members], dt(0)) / m
            var = _kahan([(x[i] - mean) * (x[i] - mean) for i in members], dt(0)) / m
            rstd = dt(1) / np.sqrt(var + e)
            for i, p in zip(members, params, strict=True):
                xhat = (x[i] - mean) * rstd
                y[i] = xhat if gamma is None else xhat * gamma[p] + beta[p]
            means.append(mean)
            rstds.append(rstd)
        cache = (x, gamma, np.array(means, dtype=x.dtype), np.array(rstds, dtype=x.dtype), geo.param_shape)
        return y, cache

    def backward(dy, cache):
        x, gamma, means, rstds, param_shape = cache
        dy = _dy(dy, x.shape, x.dtype)
        dt = x.dtype.type
        dx = np.empty_like(x)
        acc = {}  # gamma index -> [dgamma partial sums, dbeta partial sums]
        for k, (members, params) in enumerate(_loop_groups(spec, x.shape, param_shape)):
            mean, rstd, m = means[k], rstds[k], dt(len(members))
            xhat = [(x[i] - mean) * rstd for i in members]
            dys = [dy[i] for i in members]
            dxhat = dys if gamma is None else [d * gamma[p] for d, p in zip(dys, params, strict=True)]
            s1 = _kahan(dxhat, dt(0))
            s2 = _kahan([a * b for a, b in zip(dxhat, xhat, strict=True)], dt(0))
            for i, a, b in zip(members, dxhat, xhat, strict=True):
                dx[i] = rstd / m * (m * a - s1 - b * s2)
            for p, d, h in zip(params, dys, xhat, strict=True):
                acc.setdefault(p, ([], []))
                acc[p][0].append(d * h)
                acc[p][1].append(d)
        if gamma is None:
            return dx, None, None
        dgamma = np.empty(param_shape, dtype=x.dtype)
        dbeta = np.empty(param_shape, dtype=x.dtype)
        for p, (gterms, bterms) in acc.items():
            dgamma[p] = _kahan(gterms, dt(0))
            dbeta[p] = _kahan(bterms, dt(0))
        return dx, dgamma, dbeta

    return forward, backward


def _einsum(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """Every reduction and the gamma broadcast written as np.einsum; the mean is refined by a second (residual) pass."""
    spec = _spec(norm, eps, num_groups, normalized_shape)

    def subscripts(geo: _Geometry):
        full = "abcdefghijklmnopqrstuvwxyz"[: len(geo.view)]
        keep = "".join(ch for a, ch in enumerate(full) if a not in geo.stat)
        par = "".join(full[a] for a in geo.param)
        return full, keep, par

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        full, keep, par = subscripts(geo)
        m = geo.count
        xv = x.reshape(geo.view)  # (view)
        mean = (np.einsum(f"{full}->{keep}", xv) / m).reshape(geo.keep)  # (keep)
        mean = mean + (np.einsum(f"{full}->{keep}", xv - mean) / m).reshape(geo.keep)
        xc = xv - mean
        var = (np.einsum(f"{full},{full}->{keep}", xc, xc) / m).reshape(geo.keep)
        rstd = 1.0 / np.sqrt(var + x.dtype.type(spec.eps))
        xhat = xc * rstd
        if gamma is None:
            y = xhat.copy()
        else:
            gp = gamma.reshape(tuple(geo.view[a] for a in geo.param))  # (C,), (G, C // G) or normalized_shape
            y = np.einsum(f"{full},{par}->{full}", xhat, gp) + beta.reshape(geo.param_view)
        return y.reshape(x.shape), (xhat, rstd, gamma, geo, x.shape)

    def backward(dy, cache):
        xhat, rstd, gamma, geo, shape = cache
        full, keep, par = subscripts(geo)
        dy = _dy(dy, shape, xhat.dtype).reshape(geo.view)
        if gamma is None:
            dxhat, dgamma, dbeta = dy, None, None
        else:
            gp = gamma.reshape(tuple(geo.view[a] for a in geo.param))
            dxhat = np.einsum(f"{full},{par}->{full}", dy, gp)
            dgamma = np.einsum(f"{full},{full}->{par}", dy, xhat).reshape(geo.param_shape)
            dbeta = np.einsum(f"{full}->{par}", dy).reshape(geo.param_shape)
        m = geo.count
        c1 = (np.einsum(f"{full}->{keep}", dxhat) / m).reshape(geo.keep)
        c2 = (np.einsum(f"{full},{full}->{keep}", dxhat, xhat) / m).reshape(geo.keep)
        dx = rstd * (dxhat - c1 - xhat * c2)
        return dx.reshape(shape), dgamma, dbeta

    return forward, backward


def _to_rows(xv: np.ndarray, geo: _Geometry) -> np.ndarray:
    """(view) -> (groups, M): the statistics axes moved last and flattened."""
    tail = range(len(xv.shape) - len(geo.stat), len(xv.shape))
    return np.moveaxis(xv, geo.stat, tail).reshape(-1, geo.count)


def _welford64(norm, *, eps=1e-5, num_groups=None, normalized_shape=None, chunk=64):
    """Float64 accumulation: Chan's parallel merge of per-chunk (count, mean, M2); float64 backward too.

    The whole point of this one is float64 accumulation; results are rounded to x's dtype at the end.
    """
    spec = _spec(norm, eps, num_groups, normalized_shape)

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        rows = _to_rows(x.reshape(geo.view), geo).astype(np.float64)  # (groups, M)
        count = 0
        mean = np.zeros(rows.shape[0])
        m2 = np.zeros(rows.shape[0])
        for start in range(0, geo.count, chunk):
            block = rows[:, start : start + chunk]
            nb = block.shape[1]
            mb = block.mean(axis=1)
            m2b = ((block - mb[:, None]) ** 2).sum(axis=1)
            delta = mb - mean
            total = count + nb
            mean = mean + delta * (nb / total)
            m2 = m2 + m2b + delta**2 * (count * nb / total)
            count = total
        mean = mean.reshape(geo.keep)  # (keep)
        rstd = 1.0 / np.sqrt(m2.reshape(geo.keep) / count + spec.eps)
        xhat = (x.reshape(geo.view).astype(np.float64) - mean) * rstd  # (view), float64
        y = xhat
        if gamma is not None:
            g64, b64 = gamma.astype(np.float64), beta.astype(np.float64)
            y = xhat * g64.reshape(geo.param_view) + b64.reshape(geo.param_view)
        return y.reshape(x.shape).astype(x.dtype), (x, gamma, mean, rstd, geo)

    def backward(dy, cache):
        x, gamma, mean, rstd, geo = cache
        dy64 = _dy(dy, x.shape, x.dtype).astype(np.float64).reshape(geo.view)
        xhat = (x.reshape(geo.view).astype(np.float64) - mean) * rstd
        if gamma is None:
            dxhat, dgamma, dbeta = dy64, None, None
        else:
            dxhat = dy64 * gamma.astype(np.float64).reshape(geo.param_view)
            dgamma = (dy64 * xhat).sum(axis=geo.rest).reshape(geo.param_shape).astype(x.dtype)
            dbeta = dy64.sum(axis=geo.rest).reshape(geo.param_shape).astype(x.dtype)
        c1 = dxhat.mean(axis=geo.stat, keepdims=True)
        c2 = (dxhat * xhat).mean(axis=geo.stat, keepdims=True)
        dx = rstd * (dxhat - c1 - xhat * c2)
        return dx.reshape(x.shape).astype(x.dtype), dgamma, dbeta

    return forward, backward


class _MatrixLayout:
    """Its own derivation of the layout: x <-> a (groups, M) matrix via transpose + reshape, gamma per element."""

    def __init__(self, spec: _Spec, shape, param_shape):
        self.spec, self.shape, self.param_shape = spec, tuple(shape), tuple(param_shape)
        if spec.norm == "layer_norm":
            self.m = math.prod(param_shape)
        else:
            self.n, self.c, self.s = shape[0], shape[1], math.prod(shape[2:])

    def to_matrix(self, a: np.ndarray) -> np.ndarray:
        norm = self.spec.norm
        if norm == "layer_norm":
            return a.reshape(-1, self.m)  # (N*, prod(normalized_shape))
        if norm == "batch_norm":
            return np.moveaxis(a, 1, 0).reshape(self.c, -1)  # (C, N*S)
        if norm == "instance_norm":
            return a.reshape(self.n * self.c, self.s)  # (N*C, S)
        return a.reshape(self.n * self.spec.num_groups, -1)  # (N*G, C/G*S)

    def from_matrix(self, am: np.ndarray) -> np.ndarray:
        if self.spec.norm == "batch_norm":
            return np.ascontiguousarray(np.moveaxis(am.reshape((self.c, self.n) + self.shape[2:]), 0, 1))
        return am.reshape(self.shape)

    def gamma_matrix(self, gamma: np.ndarray) -> np.ndarray:
        """gamma arranged to broadcast against the matrix."""
        norm = self.spec.norm
        if norm == "layer_norm":
            return gamma.reshape(1, self.m)
        if norm == "batch_norm":
            return gamma[:, None]
        if norm == "instance_norm":
            return np.tile(gamma, self.n)[:, None]
        g = self.spec.num_groups
        return np.tile(np.repeat(gamma, self.s).reshape(g, -1), (self.n, 1))

    def to_param(self, pm: np.ndarray) -> np.ndarray:
        """Sums a per-element matrix into gamma's shape."""
        norm = self.spec.norm
        if norm == "layer_norm":
            return pm.sum(axis=0).reshape(self.param_shape)
        if norm == "batch_norm":
            return pm.sum(axis=1)
        if norm == "instance_norm":
            return pm.sum(axis=1).reshape(self.n, self.c).sum(axis=0)
        g = self.spec.num_groups
        return pm.reshape(self.n, g, self.c // g, self.s).sum(axis=(0, 3)).reshape(self.c)


def _matrix(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """Works on a 2-D (groups, M) matrix; row sums are matrix-vector products with a ones vector (BLAS).

    The mean is refined with a residual pass, since BLAS sums are not pairwise.
    """
    spec = _spec(norm, eps, num_groups, normalized_shape)

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        lay = _MatrixLayout(spec, x.shape, geo.param_shape)
        xm = lay.to_matrix(x)  # (R, M)
        m = xm.shape[1]
        ones = np.ones(m, dtype=x.dtype)
        mean = (xm @ ones) / m  # (R,)
        mean = mean + ((xm - mean[:, None]) @ ones) / m
        xc = xm - mean[:, None]
        var = ((xc * xc) @ ones) / m
        rstd = 1.0 / np.sqrt(var + x.dtype.type(spec.eps))
        xhat = xc * rstd[:, None]  # (R, M)
        ym = xhat if gamma is None else xhat * lay.gamma_matrix(gamma) + lay.gamma_matrix(beta)
        return lay.from_matrix(ym).copy(), (xhat, rstd, gamma, lay)

    def backward(dy, cache):
        xhat, rstd, gamma, lay = cache
        dym = lay.to_matrix(_dy(dy, lay.shape, xhat.dtype))  # (R, M)
        m = xhat.shape[1]
        ones = np.ones(m, dtype=xhat.dtype)
        if gamma is None:
            dxhat, dgamma, dbeta = dym, None, None
        else:
            dxhat = dym * lay.gamma_matrix(gamma)
            dgamma = lay.to_param(dym * xhat)
            dbeta = lay.to_param(dym)
        s1 = dxhat @ ones  # (R,)
        s2 = (dxhat * xhat) @ ones
        dxm = (rstd / m)[:, None] * (m * dxhat - s1[:, None] - xhat * s2[:, None])
        return lay.from_matrix(dxm), dgamma, dbeta

    return forward, backward


def _channels_last(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """Moves the channel axis last (layer norm: flattens the normalized dims last) and works in that layout.

    Statistics are reductions along the leading (strided) axes, which NumPy sums row after row.  The backward uses
    x - mean and the variance rather than xhat:
    dx = rstd*(dxhat - mean(dxhat)) - rstd**3 * xmu * mean(dxhat*xmu).
    """
    spec = _spec(norm, eps, num_groups, normalized_shape)

    def layout(shape, param_shape):
        """(channels-last shape, statistics axes, gamma shape in that layout)."""
        if spec.norm == "layer_norm":
            m = math.prod(param_shape)
            return (math.prod(shape) // m, m), (1,), (m,)  # (R, M)
        n, c = shape[0], shape[1]
        if spec.norm == "batch_norm":
            return (-1, c), (0,), (c,)  # (N*S, C)
        if spec.norm == "instance_norm":
            return (n, -1, c), (1,), (c,)  # (N, S, C)
        g = spec.num_groups
        return (n, -1, g, c // g), (1, 3), (g, c // g)  # (N, S, G, C/G)

    def to_last(a, shape):
        return a.reshape(shape) if spec.norm == "layer_norm" else np.moveaxis(a, 1, -1)

    def from_last(a, shape):
        if spec.norm == "layer_norm":
            return a.reshape(shape)
        moved = a.reshape((shape[0],) + tuple(shape[2:]) + (shape[1],))  # (N, *S, C)
        return np.ascontiguousarray(np.moveaxis(moved, -1, 1))

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        cl_shape, axes, gshape = layout(x.shape, geo.param_shape)
        xl = to_last(x, x.shape).reshape(cl_shape)
        mean = xl.mean(axis=axes, keepdims=True)
        xmu = xl - mean
        var = (xmu * xmu).mean(axis=axes, keepdims=True)
        rstd = 1.0 / np.sqrt(var + x.dtype.type(spec.eps))
        xhat = xmu * rstd
        yl = xhat if gamma is None else xhat * gamma.reshape(gshape) + beta.reshape(gshape)
        return from_last(yl, x.shape).copy(), (xmu, var, rstd, gamma, x.shape, geo.param_shape)

    def backward(dy, cache):
        xmu, var, rstd, gamma, shape, param_shape = cache
        cl_shape, axes, gshape = layout(shape, param_shape)
        dyl = to_last(_dy(dy, shape, xmu.dtype), shape).reshape(xmu.shape)
        batch_axes = tuple(range(xmu.ndim - len(gshape)))
        if gamma is None:
            dxhat, dgamma, dbeta = dyl, None, None
        else:
            dxhat = dyl * gamma.reshape(gshape)
            dgamma = (dyl * xmu * rstd).sum(axis=batch_axes).reshape(param_shape)
            dbeta = dyl.sum(axis=batch_axes).reshape(param_shape)
        dmean = dxhat.mean(axis=axes, keepdims=True)
        dcov = (dxhat * xmu).mean(axis=axes, keepdims=True)
        dxl = rstd * (dxhat - dmean) - rstd**3 * xmu * dcov
        return from_last(dxl, shape), dgamma, dbeta

    return forward, backward


def _shifted(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """Shifted-data statistics: with k the first element of each group, var = mean((x-k)^2) - mean(x-k)^2.

    Exact differences x - k make it very accurate for large means; it loses about log2(1 + ((k - mean)/std)^2) bits
    when the first element is far from the mean.  The backward is written in the shifted variables too
    (x - mean = d - mean(d), with d = x - k).
    """
    spec = _spec(norm, eps, num_groups, normalized_shape)

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        xv = x.reshape(geo.view)  # (view)
        first = tuple(slice(0, 1) if a in geo.stat else slice(None) for a in range(len(geo.view)))
        k = xv[first]  # (keep): one element of every group
        d = xv - k
        s1 = d.mean(axis=geo.stat, keepdims=True)
        s2 = (d * d).mean(axis=geo.stat, keepdims=True)
        var = np.maximum(s2 - s1 * s1, 0)
        rstd = 1.0 / np.sqrt(var + x.dtype.type(spec.eps))
        xhat = (d - s1) * rstd
        g = None if gamma is None else gamma.reshape(geo.param_view)
        y = xhat.copy() if g is None else g * xhat + beta.reshape(geo.param_view)
        return y.reshape(x.shape), (d, s1, rstd, g, geo, x.shape)

    def backward(dy, cache):
        d, s1, rstd, g, geo, shape = cache
        dy = _dy(dy, shape, d.dtype).reshape(geo.view)
        centred = d - s1
        dxhat = dy if g is None else dy * g
        m = geo.count
        a = dxhat.sum(axis=geo.stat, keepdims=True) / m
        b = (dxhat * centred).sum(axis=geo.stat, keepdims=True) / m
        dx = rstd * (dxhat - a) - (rstd * rstd * rstd * b) * centred
        if g is None:
            return dx.reshape(shape), None, None
        dgamma = (dy * centred * rstd).sum(axis=geo.rest).reshape(geo.param_shape)
        dbeta = dy.sum(axis=geo.rest).reshape(geo.param_shape)
        return dx.reshape(shape), dgamma, dbeta

    return forward, backward


def _pairwise_dx(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """Kernel-like cache (x, mean, rstd, gamma only); the backward recomputes xhat and uses
    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).  Statistics via np.var (two-pass)."""
    spec = _spec(norm, eps, num_groups, normalized_shape)

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        xv = x.reshape(geo.view)  # (view)
        mean = xv.mean(axis=geo.stat, keepdims=True)  # (keep)
        rstd = 1.0 / np.sqrt(np.var(xv, axis=geo.stat, keepdims=True) + x.dtype.type(spec.eps))
        xhat = (xv - mean) * rstd
        if gamma is not None:
            xhat = xhat * gamma.reshape(geo.param_view) + beta.reshape(geo.param_view)
        return xhat.reshape(x.shape), (x, mean, rstd, gamma)

    def backward(dy, cache):
        x, mean, rstd, gamma = cache
        geo = _geometry(spec, x.shape, gamma)
        dy = _dy(dy, x.shape, x.dtype).reshape(geo.view)
        xhat = (x.reshape(geo.view) - mean) * rstd
        dxhat = dy if gamma is None else dy * gamma.reshape(geo.param_view)
        dx = rstd * (
            dxhat - dxhat.mean(axis=geo.stat, keepdims=True) - xhat * (dxhat * xhat).mean(axis=geo.stat, keepdims=True)
        )
        if gamma is None:
            return dx.reshape(x.shape), None, None
        dgamma = (dy * xhat).sum(axis=geo.rest).reshape(geo.param_shape)
        return dx.reshape(x.shape), dgamma, dy.sum(axis=geo.rest).reshape(geo.param_shape)

    return forward, backward


def _float32_cached_stats(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """Like a GPU kernel: statistics and backward reductions accumulated in float64, mean and rstd rounded to x's
    dtype and cached; every elementwise step (xhat, y, dx) is in x's dtype, using the rounded statistics."""
    spec = _spec(norm, eps, num_groups, normalized_shape)

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        xv = x.reshape(geo.view)  # (view)
        x64 = xv.astype(np.float64)
        mean64 = x64.mean(axis=geo.stat, keepdims=True)  # (keep)
        var64 = ((x64 - mean64) ** 2).mean(axis=geo.stat, keepdims=True)
        mean = mean64.astype(x.dtype)
        rstd = (1.0 / np.sqrt(var64 + spec.eps)).astype(x.dtype)
        xhat = (xv - mean) * rstd  # x's dtype
        if gamma is not None:
            xhat = xhat * gamma.reshape(geo.param_view) + beta.reshape(geo.param_view)
        return xhat.reshape(x.shape), (x, mean, rstd, gamma, geo)

    def backward(dy, cache):
        x, mean, rstd, gamma, geo = cache
        dy = _dy(dy, x.shape, x.dtype).reshape(geo.view)
        xhat = (x.reshape(geo.view) - mean) * rstd
        dxhat = dy if gamma is None else dy * gamma.reshape(geo.param_view)
        c1 = dxhat.astype(np.float64).mean(axis=geo.stat, keepdims=True).astype(x.dtype)
        c2 = (dxhat.astype(np.float64) * xhat).mean(axis=geo.stat, keepdims=True).astype(x.dtype)
        dx = (dxhat - c1 - xhat * c2) * rstd
        if gamma is None:
            return dx.reshape(x.shape), None, None
        dgamma = (dy.astype(np.float64) * xhat).sum(axis=geo.rest).reshape(geo.param_shape).astype(x.dtype)
        dbeta = dy.astype(np.float64).sum(axis=geo.rest).reshape(geo.param_shape).astype(x.dtype)
        return dx.reshape(x.shape), dgamma, dbeta

    return forward, backward


def _labels(spec: _Spec, shape, param_shape):
    """Statistics-group id and gamma index of every element of x (C order), from arithmetic on the flat index.

    Returns (group ids, number of groups, gamma ids).
    """
    flat = np.arange(math.prod(shape))
    if spec.norm == "layer_norm":
        m = math.prod(param_shape)
        return flat // m, math.prod(shape) // m, flat % m
    n, c, s = shape[0], shape[1], math.prod(shape[2:])
    channel = (flat // s) % c
    sample = flat // (c * s)
    if spec.norm == "batch_norm":
        return channel, c, channel
    if spec.norm == "instance_norm":
        return sample * c + channel, n * c, channel
    g = spec.num_groups
    return sample * g + channel // (c // g), n * g, channel


def _segments(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """Segmented reductions: elements sorted by group label, summed with np.add.reduceat, scattered back by index.

    Geometry comes only from per-element labels; the mean is refined by a residual pass.
    """
    spec = _spec(norm, eps, num_groups, normalized_shape)

    def segment_sum(values, order, starts):
        return np.add.reduceat(values[order], starts)

    def plan(labels, n):
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=n)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return order, starts

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        gid, ngroups, pid = _labels(spec, x.shape, geo.param_shape)
        order, starts = plan(gid, ngroups)
        xf = x.ravel()  # (size,)
        counts = np.bincount(gid, minlength=ngroups).astype(x.dtype)  # (groups,)
        mean = segment_sum(xf, order, starts) / counts
        mean = mean + segment_sum(xf - mean[gid], order, starts) / counts
        xc = xf - mean[gid]
        var = segment_sum(xc * xc, order, starts) / counts
        rstd = 1.0 / np.sqrt(var + x.dtype.type(spec.eps))
        xhat = xc * rstd[gid]
        y = xhat.copy() if gamma is None else xhat * gamma.ravel()[pid] + beta.ravel()[pid]
        return y.reshape(x.shape), (xhat, rstd, gamma, x.shape, geo.param_shape)

    def backward(dy, cache):
        xhat, rstd, gamma, shape, param_shape = cache
        gid, ngroups, pid = _labels(spec, shape, param_shape)
        order, starts = plan(gid, ngroups)
        counts = np.bincount(gid, minlength=ngroups).astype(xhat.dtype)
        dyf = _dy(dy, shape, xhat.dtype).ravel()
        if gamma is None:
            dxhat, dgamma, dbeta = dyf, None, None
        else:
            dxhat = dyf * gamma.ravel()[pid]
            porder, pstarts = plan(pid, math.prod(param_shape))
            dgamma = segment_sum(dyf * xhat, porder, pstarts).reshape(param_shape)
            dbeta = segment_sum(dyf, porder, pstarts).reshape(param_shape)
        c1 = segment_sum(dxhat, order, starts) / counts
        c2 = segment_sum(dxhat * xhat, order, starts) / counts
        dx = rstd[gid] * (dxhat - c1[gid] - xhat * c2[gid])
        return dx.reshape(shape), dgamma, dbeta

    return forward, backward


def _scipy_sparse(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """Group and gamma reductions as products with sparse 0/1 indicator matrices (scipy.sparse), in x's dtype.

    Sparse products sum sequentially, so the mean is refined by a residual pass.
    """
    spec = _spec(norm, eps, num_groups, normalized_shape)
    sparse = importlib.import_module("scipy.sparse")

    def indicator(labels, n, dtype):
        """(n, size) matrix with a 1 at (label of j, j)."""
        size = labels.shape[0]
        return sparse.csr_matrix((np.ones(size, dtype=dtype), (labels, np.arange(size))), shape=(n, size))

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        gid, ngroups, pid = _labels(spec, x.shape, geo.param_shape)
        a = indicator(gid, ngroups, x.dtype)  # (groups, size)
        xf = x.ravel()
        counts = a @ np.ones_like(xf)  # (groups,)
        mean = (a @ xf) / counts
        mean = mean + (a @ (xf - mean[gid])) / counts
        xc = xf - mean[gid]
        var = (a @ (xc * xc)) / counts
        rstd = 1.0 / np.sqrt(var + x.dtype.type(spec.eps))
        xhat = xc * rstd[gid]
        y = xhat.copy() if gamma is None else xhat * gamma.ravel()[pid] + beta.ravel()[pid]
        return y.reshape(x.shape), (xhat, rstd, gamma, x.shape, geo.param_shape)

    def backward(dy, cache):
        xhat, rstd, gamma, shape, param_shape = cache
        gid, ngroups, pid = _labels(spec, shape, param_shape)
        a = indicator(gid, ngroups, xhat.dtype)
        counts = a @ np.ones_like(xhat)
        dyf = _dy(dy, shape, xhat.dtype).ravel()
        if gamma is None:
            dxhat, dgamma, dbeta = dyf, None, None
        else:
            dxhat = dyf * gamma.ravel()[pid]
            p = indicator(pid, math.prod(param_shape), xhat.dtype)  # (gamma size, size)
            dgamma = (p @ (dyf * xhat)).reshape(param_shape)
            dbeta = (p @ dyf).reshape(param_shape)
        c1 = (a @ dxhat) / counts
        c2 = (a @ (dxhat * xhat)) / counts
        dx = (dxhat - c1[gid] - xhat * c2[gid]) * rstd[gid]
        return dx.reshape(shape), dgamma, dbeta

    return forward, backward


class _Tape:
    """A minimal reverse-mode autodiff over numpy arrays; the tape is plain data (op names, ids, arrays)."""

    def __init__(self):
        self.values: list[np.ndarray] = []
        self.ops: list[tuple] = []  # (op, output id, input ids, aux)

    def leaf(self, value) -> int:
        self.values.append(value)
        return len(self.values) - 1

    def _emit(self, op, ins, value, aux=None) -> int:
        out = self.leaf(value)
        self.ops.append((op, out, ins, aux))
        return out

    def add(self, a, b):
        return self._emit("add", (a, b), self.values[a] + self.values[b])

    def sub(self, a, b):
        return self._emit("sub", (a, b), self.values[a] - self.values[b])

    def mul(self, a, b):
        return self._emit("mul", (a, b), self.values[a] * self.values[b])

    def square(self, a):
        return self._emit("square", (a,), self.values[a] * self.values[a])

    def mean(self, a, axes):
        return self._emit("mean", (a,), self.values[a].mean(axis=axes, keepdims=True), axes)

    def rsqrt(self, a, eps):
        return self._emit("rsqrt", (a,), 1.0 / np.sqrt(self.values[a] + eps), eps)


def _unbroadcast(g: np.ndarray, shape) -> np.ndarray:
    """Sums g over the axes along which an operand of ``shape`` was broadcast."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _tape_grad(values, ops, out, seed, wrt):
    """Walks the tape backwards from values[out] with adjoint ``seed``; returns the adjoints of ``wrt``."""
    adj = {out: seed}
    for op, o, ins, aux in reversed(ops):
        if o not in adj:
            continue
        g = adj[o]
        if op == "add":
            contribs = [_unbroadcast(g, values[i].shape) for i in ins]
        elif op == "sub":
            contribs = [_unbroadcast(g, values[ins[0]].shape), -_unbroadcast(g, values[ins[1]].shape)]
        elif op == "mul":
            a, b = values[ins[0]], values[ins[1]]
            contribs = [_unbroadcast(g * b, a.shape), _unbroadcast(g * a, b.shape)]
        elif op == "square":
            contribs = [2 * values[ins[0]] * g]
        elif op == "mean":
            a = values[ins[0]]
            m = math.prod(a.shape[ax] for ax in aux)
            contribs = [np.broadcast_to(g / m, a.shape)]
        elif op == "rsqrt":
            contribs = [-0.5 * values[o] ** 3 * g]
        else:
            raise AssertionError(op)
        for i, c in zip(ins, contribs, strict=True):
            adj[i] = adj[i] + c if i in adj else c
    return [None if i is None else np.array(adj[i]) for i in wrt]


def _autodiff_tape(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """The formula recorded on a small hand-written tape (mean, sub, square, rsqrt, mul, add) and differentiated
    generically by walking the tape; broadcasting is undone by summing, as any autodiff does."""
    spec = _spec(norm, eps, num_groups, normalized_shape)

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        t = _Tape()
        xi = t.leaf(x.reshape(geo.view))  # (view)
        mu = t.mean(xi, geo.stat)  # (keep)
        xmu = t.sub(xi, mu)
        var = t.mean(t.square(xmu), geo.stat)
        xhat = t.mul(xmu, t.rsqrt(var, x.dtype.type(spec.eps)))
        gi = bi = None
        out = xhat
        if gamma is not None:
            gi = t.leaf(gamma.reshape(geo.param_view))
            bi = t.leaf(beta.reshape(geo.param_view))
            out = t.add(t.mul(xhat, gi), bi)
        y = t.values[out].reshape(x.shape).copy()
        return y, (t.values, t.ops, out, (xi, gi, bi), geo, x.shape)

    def backward(dy, cache):
        values, ops, out, wrt, geo, shape = cache
        seed = _dy(dy, shape, values[out].dtype).reshape(geo.view)
        dx, dgamma, dbeta = _tape_grad(values, ops, out, seed, wrt)
        if dgamma is not None:
            dgamma, dbeta = dgamma.reshape(geo.param_shape), dbeta.reshape(geo.param_shape)
        return dx.reshape(shape), dgamma, dbeta

    return forward, backward


def _fsum_exact(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """Float64 with correctly rounded sums (math.fsum) for every reduction, one group at a time.

    The whole point of this one is float64 accumulation; results are rounded to x's dtype at the end.
    """
    spec = _spec(norm, eps, num_groups, normalized_shape)

    def row_sums(rows):
        return np.array([math.fsum(r) for r in rows.tolist()], dtype=np.float64)

    def param_sums(a, geo):
        """(view) -> gamma's shape, summing exactly over the non-gamma axes."""
        moved = np.moveaxis(a, geo.param, range(len(geo.param))).reshape(math.prod(geo.param_shape), -1)
        return row_sums(moved).reshape(geo.param_shape)

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        rows = _to_rows(x.reshape(geo.view), geo).astype(np.float64)  # (groups, M)
        m = geo.count
        mean = row_sums(rows) / m  # (groups,)
        var = row_sums((rows - mean[:, None]) ** 2) / m
        mean, rstd = mean.reshape(geo.keep), (1.0 / np.sqrt(var + spec.eps)).reshape(geo.keep)
        xhat = (x.reshape(geo.view).astype(np.float64) - mean) * rstd  # (view)
        if gamma is not None:
            xhat = xhat * gamma.reshape(geo.param_view) + beta.reshape(geo.param_view).astype(np.float64)
        return xhat.reshape(x.shape).astype(x.dtype), (x, mean, rstd, gamma, geo)

    def backward(dy, cache):
        x, mean, rstd, gamma, geo = cache
        dy64 = _dy(dy, x.shape, x.dtype).astype(np.float64).reshape(geo.view)
        xhat = (x.reshape(geo.view).astype(np.float64) - mean) * rstd
        dxhat = dy64 if gamma is None else dy64 * gamma.astype(np.float64).reshape(geo.param_view)
        m = geo.count
        c1 = (row_sums(_to_rows(dxhat, geo)) / m).reshape(geo.keep)
        c2 = (row_sums(_to_rows(dxhat * xhat, geo)) / m).reshape(geo.keep)
        dx = (rstd * (dxhat - c1 - xhat * c2)).reshape(x.shape).astype(x.dtype)
        if gamma is None:
            return dx, None, None
        return dx, param_sums(dy64 * xhat, geo).astype(x.dtype), param_sums(dy64, geo).astype(x.dtype)

    return forward, backward


_NUMBA_KERNELS: dict[str, Callable] = {}


def _numba_kernels() -> dict[str, Callable]:
    """Compiles (once, lazily) scalar-loop kernels over x seen as (N, C, S) with a per-channel or grouped mapping."""
    if _NUMBA_KERNELS:
        return _NUMBA_KERNELS
    numba = importlib.import_module("numba")

    @numba.njit(cache=False)
    def forward(x3, per_channel, groups, gamma, beta, eps, m):
        n_, c_, s_ = x3.shape
        ng = c_ if per_channel else n_ * groups
        cg = c_ // groups
        zero = m - m
        total = np.zeros(ng, x3.dtype)
        for n in range(n_):
            for c in range(c_):
                g = c if per_channel else n * groups + c // cg
                for s in range(s_):
                    total[g] += x3[n, c, s]
        shift = total / m  # first-pass mean
        s1 = np.zeros(ng, x3.dtype)
        s2 = np.zeros(ng, x3.dtype)
        for n in range(n_):
            for c in range(c_):
                g = c if per_channel else n * groups + c // cg
                for s in range(s_):
                    d = x3[n, c, s] - shift[g]
                    s1[g] += d
                    s2[g] += d * d
        mean = np.empty(ng, x3.dtype)
        rstd = np.empty(ng, x3.dtype)
        for g in range(ng):
            mean[g] = shift[g] + s1[g] / m
            var = (s2[g] - s1[g] * s1[g] / m) / m
            if var < zero:
                var = zero
            rstd[g] = (m / m) / np.sqrt(var + eps)
        y = np.empty_like(x3)
        for n in range(n_):
            for c in range(c_):
                g = c if per_channel else n * groups + c // cg
                for s in range(s_):
                    y[n, c, s] = (x3[n, c, s] - mean[g]) * rstd[g] * gamma[c] + beta[c]
        return y, mean, rstd

    @numba.njit(cache=False)
    def backward(x3, dy3, per_channel, groups, gamma, mean, rstd, m):
        n_, c_, s_ = x3.shape
        ng = c_ if per_channel else n_ * groups
        cg = c_ // groups
        a = np.zeros(ng, x3.dtype)
        b = np.zeros(ng, x3.dtype)
        dgamma = np.zeros(c_, x3.dtype)
        dbeta = np.zeros(c_, x3.dtype)
        for n in range(n_):
            for c in range(c_):
                g = c if per_channel else n * groups + c // cg
                for s in range(s_):
                    xhat = (x3[n, c, s] - mean[g]) * rstd[g]
                    dxhat = dy3[n, c, s] * gamma[c]
                    a[g] += dxhat
                    b[g] += dxhat * xhat
                    dgamma[c] += dy3[n, c, s] * xhat
                    dbeta[c] += dy3[n, c, s]
        dx = np.empty_like(x3)
        for n in range(n_):
            for c in range(c_):
                g = c if per_channel else n * groups + c // cg
                for s in range(s_):
                    xhat = (x3[n, c, s] - mean[g]) * rstd[g]
                    dxhat = dy3[n, c, s] * gamma[c]
                    dx[n, c, s] = rstd[g] * (dxhat - a[g] / m - xhat * (b[g] / m))
        return dx, dgamma, dbeta

    _NUMBA_KERNELS.update(forward=forward, backward=backward)
    return _NUMBA_KERNELS


def _numba_loops(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """Numba-compiled scalar loops in x's dtype over an (N, C, S) view, like a CPU kernel, with sequential sums;
    corrected two-pass statistics (sums of x - first-pass mean and of its square).  Compiles on first use."""
    spec = _spec(norm, eps, num_groups, normalized_shape)
    kernels = _numba_kernels()

    def as3(a, geo):
        """(x's shape) -> (N, C, S), plus the per-channel flag and group count of the kernel mapping."""
        if spec.norm == "layer_norm":
            return np.ascontiguousarray(a.reshape(-1, math.prod(geo.param_shape), 1)), False, 1
        a3 = np.ascontiguousarray(a.reshape(a.shape[0], a.shape[1], -1))
        if spec.norm == "batch_norm":
            return a3, True, 1
        return a3, False, a.shape[1] if spec.norm == "instance_norm" else spec.num_groups

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        x3, per_channel, groups = as3(x, geo)
        if gamma is None:
            g3, b3 = np.ones(x3.shape[1], x.dtype), np.zeros(x3.shape[1], x.dtype)
        else:
            g3, b3 = np.ascontiguousarray(gamma.ravel()), np.ascontiguousarray(beta.ravel())
        dt = x.dtype.type
        y3, mean, rstd = kernels["forward"](x3, per_channel, groups, g3, b3, dt(spec.eps), dt(geo.count))
        return y3.reshape(x.shape), (x, gamma, mean, rstd, geo)

    def backward(dy, cache):
        x, gamma, mean, rstd, geo = cache
        x3, per_channel, groups = as3(x, geo)
        dy3, _, _ = as3(_dy(dy, x.shape, x.dtype), geo)
        g3 = np.ones(x3.shape[1], x.dtype) if gamma is None else np.ascontiguousarray(gamma.ravel())
        m = x.dtype.type(geo.count)
        dx3, dgamma, dbeta = kernels["backward"](x3, dy3, per_channel, groups, g3, mean, rstd, m)
        if gamma is None:
            return dx3.reshape(x.shape), None, None
        return dx3.reshape(x.shape), dgamma.reshape(geo.param_shape), dbeta.reshape(geo.param_shape)

    return forward, backward


def _torch_formula(torch, xt, gt, bt, geo: _Geometry, eps: float):
    xv = xt.reshape(geo.view)
    mean = xv.mean(dim=geo.stat, keepdim=True)
    xmu = xv - mean
    var = (xmu * xmu).mean(dim=geo.stat, keepdim=True)
    y = xmu * torch.rsqrt(var + eps)
    if gt is not None:
        y = y * gt.reshape(geo.param_view) + bt.reshape(geo.param_view)
    return y.reshape(xt.shape)


def _torch_grads(torch, build, x, gamma, beta, dy):
    """Runs ``build`` on fresh leaf tensors and returns numpy gradients of <y, dy> w.r.t. x, gamma, beta."""
    xt = torch.tensor(x, requires_grad=True)
    gt = None if gamma is None else torch.tensor(gamma, requires_grad=True)
    bt = None if gamma is None else torch.tensor(beta, requires_grad=True)
    y = build(xt, gt, bt)
    inputs = [xt] if gamma is None else [xt, gt, bt]
    grads = torch.autograd.grad(y, inputs, grad_outputs=torch.tensor(dy))
    out = [gr.detach().numpy().astype(x.dtype) for gr in grads]
    return (out[0], None, None) if gamma is None else tuple(out)


def _torch_autograd(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """The formula in torch ops on tensors of x's dtype; gradients from torch.autograd.grad."""
    spec = _spec(norm, eps, num_groups, normalized_shape)
    torch = importlib.import_module("torch")

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        with torch.no_grad():
            y = _torch_formula(
                torch,
                torch.tensor(x),
                None if gamma is None else torch.tensor(gamma),
                None if gamma is None else torch.tensor(beta),
                geo,
                spec.eps,
            )
        return y.numpy().astype(x.dtype), (x, gamma, beta, geo)

    def backward(dy, cache):
        x, gamma, beta, geo = cache
        dy = _dy(dy, x.shape, x.dtype)
        with torch.enable_grad():
            return _torch_grads(
                torch, lambda xt, gt, bt: _torch_formula(torch, xt, gt, bt, geo, spec.eps), x, gamma, beta, dy
            )

    return forward, backward


def _torch_functional(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """torch.nn.functional.{batch,layer,instance,group}_norm (batch norm in training mode), autograd gradients.

    Batch norm with eps = 0 goes to torch.batch_norm, since the functional wrapper rejects it in training mode.
    """
    spec = _spec(norm, eps, num_groups, normalized_shape)
    torch = importlib.import_module("torch")
    functional = importlib.import_module("torch.nn.functional")

    def build(xt, gt, bt, geo):
        if spec.norm == "batch_norm":
            if spec.eps > 0:
                return functional.batch_norm(xt, None, None, gt, bt, training=True, eps=spec.eps)
            # functional.batch_norm refuses eps = 0 in training mode; the underlying op does not.
            return torch.batch_norm(xt, gt, bt, None, None, True, 0.1, 0.0, False)
        if spec.norm == "layer_norm":
            return functional.layer_norm(xt, geo.param_shape, gt, bt, eps=spec.eps)
        if spec.norm == "instance_norm":
            return functional.instance_norm(xt, None, None, gt, bt, use_input_stats=True, eps=spec.eps)
        return functional.group_norm(xt, spec.num_groups, gt, bt, eps=spec.eps)

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        with torch.no_grad():
            gt = None if gamma is None else torch.tensor(gamma)
            bt = None if gamma is None else torch.tensor(beta)
            y = build(torch.tensor(x), gt, bt, geo)
        return y.numpy().astype(x.dtype), (x, gamma, beta, geo)

    def backward(dy, cache):
        x, gamma, beta, geo = cache
        dy = _dy(dy, x.shape, x.dtype)
        with torch.enable_grad():
            return _torch_grads(torch, lambda xt, gt, bt: build(xt, gt, bt, geo), x, gamma, beta, dy)

    return forward, backward


def _jax_modules():
    jax = importlib.import_module("jax")
    if not jax.config.read("jax_enable_x64"):
        jax.config.update("jax_enable_x64", True)
    return jax, importlib.import_module("jax.numpy")


def _jax_vjp(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """The formula in jax.numpy, differentiated with jax.vjp (float64 enabled on first use; dtype follows x)."""
    spec = _spec(norm, eps, num_groups, normalized_shape)
    jax, jnp = _jax_modules()

    def formula(geo):
        def f(x, gamma=None, beta=None):
            xv = x.reshape(geo.view)
            mean = jnp.mean(xv, axis=geo.stat, keepdims=True)
            xmu = xv - mean
            var = jnp.mean(xmu * xmu, axis=geo.stat, keepdims=True)
            y = xmu / jnp.sqrt(var + spec.eps)
            if gamma is not None:
                y = y * gamma.reshape(geo.param_view) + beta.reshape(geo.param_view)
            return y.reshape(x.shape)

        return f

    def args(x, gamma, beta):
        a = [jnp.asarray(x)]
        if gamma is not None:
            a += [jnp.asarray(gamma), jnp.asarray(beta)]
        return a

    def forward(x, gamma, beta):
        x, gamma, beta, geo = _prepare(spec, x, gamma, beta)
        y = formula(geo)(*args(x, gamma, beta))
        return np.asarray(y).astype(x.dtype), (x, gamma, beta, geo)

    def backward(dy, cache):
        x, gamma, beta, geo = cache
        dy = _dy(dy, x.shape, x.dtype)
        _, vjp = jax.vjp(formula(geo), *args(x, gamma, beta))
        grads = [np.asarray(g).astype(x.dtype) for g in vjp(jnp.asarray(dy))]
        return (grads[0], None, None) if gamma is None else tuple(grads)

    return forward, backward


# --- RMSNorm and Switchable Normalization ---------------------------------------------------------------------
#
# RMSNorm (Zhang and Sennrich, 2019): y = gamma * x / sqrt(mean(x**2) + eps) over the trailing normalized dims,
# forward(x, gamma) -> (y, cache), backward(dy, cache) -> (dx, dgamma); gamma None: no affine, dgamma None.
# Switchable Normalization (Luo et al., 2018): x (N, C, *spatial); mean = sum_k w_k mean_k, var = sum_k v_k var_k
# over instance (per (n, c)), layer (per n) and batch (per c) statistics, biased variances, w = softmax(mean_weight),
# v = softmax(var_weight); y = gamma * (x - mean) / sqrt(var + eps) + beta. forward(x, gamma, beta, mean_weight,
# var_weight) -> (y, cache), backward(dy, cache) -> (dx, dgamma, dbeta, dmean_weight, dvar_weight); gamma None:
# no affine (beta ignored), dgamma and dbeta None.


def _rms_axes(x, gamma, normalized_shape) -> tuple[int, ...]:
    """The trailing normalized axes of x: normalized_shape, else gamma's shape, else the last axis."""
    if normalized_shape is not None:
        k = 1 if isinstance(normalized_shape, (int, np.integer)) else len(tuple(normalized_shape))
    else:
        k = np.ndim(gamma) if gamma is not None else 1
    return tuple(range(x.ndim - k, x.ndim))


def _rms_prepare(x, gamma, normalized_shape, norm):
    if norm != "rms_norm":
        raise ValueError(f"this implementation is rms_norm's, not {norm!r}")
    x = np.array(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"x must be float32 or float64, got {x.dtype}")
    axes = _rms_axes(x, gamma, normalized_shape)
    return x, None if gamma is None else np.array(gamma, dtype=x.dtype), axes


def _rms_staged(norm, *, eps=1e-6, num_groups=None, normalized_shape=None):
    """The paper's graph stage by stage (sq, ms, rms, irms, xhat, out), walked back in reverse, in x's dtype."""

    def forward(x, gamma):
        x, gamma, axes = _rms_prepare(x, gamma, normalized_shape, norm)
        e = x.dtype.type(eps)
        sq = x * x
        ms = sq.mean(axis=axes, keepdims=True)
        rms = np.sqrt(ms + e)
        irms = 1.0 / rms
        xhat = x * irms
        out = xhat.copy() if gamma is None else gamma * xhat
        return out, (x, gamma, axes, ms, rms, irms, xhat, e)

    def backward(dy, cache):
        x, gamma, axes, ms, rms, irms, xhat, e = cache
        dy = _dy(dy, x.shape, x.dtype)
        lead = tuple(range(x.ndim - len(axes)))
        dgamma = None if gamma is None else (dy * xhat).sum(axis=lead)
        dxhat = dy if gamma is None else dy * gamma
        dirms = (dxhat * x).sum(axis=axes, keepdims=True)
        drms = -dirms / (rms * rms)
        dms = 0.5 / np.sqrt(ms + e) * drms
        m = math.prod(x.shape[a] for a in axes)
        dsq = np.ones_like(x) * (dms / m)
        return dxhat * irms + 2 * x * dsq, dgamma

    return forward, backward


def _rms_closed_form(norm, *, eps=1e-6, num_groups=None, normalized_shape=None):
    """Rows as a (rows, M) matrix, the row norms from np.linalg.norm (scaled, so no overflow of x**2), sums in
    float64; dx = rstd * (g - xhat * mean(g * xhat)), g = dy * gamma, in float64 and rounded to x's dtype."""

    def forward(x, gamma):
        x, gamma, axes = _rms_prepare(x, gamma, normalized_shape, norm)
        lead = x.shape[: x.ndim - len(axes)]
        m = math.prod(x.shape[a] for a in axes)
        rows = x.reshape(-1, m).astype(np.float64)
        norms = np.linalg.norm(rows, axis=1, keepdims=True) if m else np.zeros((rows.shape[0], 1))
        rstd = 1.0 / np.sqrt(norms**2 / max(m, 1) + eps)
        xhat = rows * rstd
        g = np.ones(m) if gamma is None else gamma.reshape(-1).astype(np.float64)
        y = (xhat * g).reshape(x.shape).astype(x.dtype)
        return y, (x.shape, x.dtype, lead, gamma, xhat, rstd, g)

    def backward(dy, cache):
        shape, dtype, lead, gamma, xhat, rstd, g = cache
        dy = _dy(dy, shape, dtype).reshape(xhat.shape).astype(np.float64)
        gy = dy * g
        dx = rstd * (gy - xhat * (gy * xhat).mean(axis=1, keepdims=True))
        dgamma = None if gamma is None else (dy * xhat).sum(axis=0).reshape(gamma.shape).astype(dtype)
        return dx.reshape(shape).astype(dtype), dgamma

    return forward, backward


def _rms_torch(norm, *, eps=1e-6, num_groups=None, normalized_shape=None):
    """torch.nn.functional.rms_norm on tensors of x's dtype; gradients from torch.autograd.grad."""
    torch = importlib.import_module("torch")

    def forward(x, gamma):
        x, gamma, axes = _rms_prepare(x, gamma, normalized_shape, norm)
        shape = tuple(x.shape[a] for a in axes)
        return _rms_torch_run(torch, x, gamma, shape, eps, None)[0], (x, gamma, shape)

    def backward(dy, cache):
        x, gamma, shape = cache
        return _rms_torch_run(torch, x, gamma, shape, eps, _dy(dy, x.shape, x.dtype))[1:]

    return forward, backward


def _rms_torch_run(torch, x, gamma, shape, eps, dy):
    xt = torch.tensor(x, requires_grad=dy is not None)
    gt = None if gamma is None else torch.tensor(gamma, requires_grad=dy is not None)
    with torch.enable_grad() if dy is not None else torch.no_grad():
        y = torch.nn.functional.rms_norm(xt, shape, gt, eps=eps)
        if dy is None:
            return y.numpy(), None, None
        grads = torch.autograd.grad(y, [xt] if gt is None else [xt, gt], grad_outputs=torch.tensor(dy))
    out = [gr.numpy().astype(x.dtype) for gr in grads]
    return y.detach().numpy(), out[0], (out[1] if gt is not None else None)


_KIND_AXES = {"instance": (2,), "layer": (1, 2), "batch": (0, 2)}  # of the (N, C, S) view, weight order


def _switchable_prepare(norm, x, gamma, beta, mean_weight, var_weight):
    if norm != "switchable_norm":
        raise ValueError(f"this implementation is switchable_norm's, not {norm!r}")
    x = np.array(x)
    if x.dtype not in (np.float32, np.float64) or x.ndim < 3:
        raise TypeError(f"x must be float32 or float64 of shape (N, C, *spatial), got {x.dtype} {x.shape}")
    n, c = x.shape[:2]
    cast = [None if a is None else np.array(a, dtype=x.dtype) for a in (gamma, beta, mean_weight, var_weight)]
    if cast[0] is not None and cast[1] is None:
        cast[1] = np.zeros(c, x.dtype)
    return x, x.reshape(n, c, -1), *cast


def _softmax3(a):
    e = np.exp(a - a.max())
    return e / e.sum()


def _switchable_direct(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """Every statistic taken directly over its own axes (two passes), in x's dtype; the backward as a sum over the
    three kinds of each one's mean and variance path, and the weights' gradients through the softmax's Jacobian
    matrix diag(w) - w w^T."""

    def forward(x, gamma, beta, mean_weight, var_weight):
        x, xv, gamma, beta, mw, vw = _switchable_prepare(norm, x, gamma, beta, mean_weight, var_weight)
        means = [xv.mean(axis=ax, keepdims=True) for ax in _KIND_AXES.values()]
        variances = [
            ((xv - mu) ** 2).mean(axis=ax, keepdims=True) for mu, ax in zip(means, _KIND_AXES.values(), strict=True)
        ]
        w, v = _softmax3(mw), _softmax3(vw)
        mean = sum(wk * mk for wk, mk in zip(w, means, strict=True))
        var = sum(vk * sk for vk, sk in zip(v, variances, strict=True))
        rstd = 1.0 / np.sqrt(var + x.dtype.type(eps))
        xhat = (xv - mean) * rstd
        c = xv.shape[1]
        y = xhat if gamma is None else xhat * gamma.reshape(1, c, 1) + beta.reshape(1, c, 1)
        return y.reshape(x.shape).copy(), (x.shape, xv, gamma, means, variances, w, v, mean, rstd, xhat)

    def backward(dy, cache):
        shape, xv, gamma, means, variances, w, v, mean, rstd, xhat = cache
        n, c, s = xv.shape
        dyv = _dy(dy, shape, xv.dtype).reshape(xv.shape)
        g = dyv if gamma is None else dyv * gamma.reshape(1, c, 1)
        dmean = -rstd * g.sum(axis=2, keepdims=True)  # d/d mean[n, c]
        dvar = -0.5 * rstd**3 * (g * (xv - mean)).sum(axis=2, keepdims=True)  # d/d var[n, c]
        dx = g * rstd
        for k, ax in enumerate(_KIND_AXES.values()):
            rows = tuple(a for a in ax if a != 2)  # the rows (n, c) a statistic of this kind gathers
            count = math.prod(xv.shape[a] for a in ax)
            dmean_k = w[k] * dmean.sum(axis=rows, keepdims=True)
            dvar_k = v[k] * dvar.sum(axis=rows, keepdims=True)
            dx = dx + dmean_k / count + dvar_k * 2 * (xv - means[k]) / count
        dw = np.array([(dmean * mk).sum() for mk in means])
        dv = np.array([(dvar * sk).sum() for sk in variances])
        dmw = (np.diag(w) - np.outer(w, w)) @ dw
        dvw = (np.diag(v) - np.outer(v, v)) @ dv
        dgamma = dbeta = None
        if gamma is not None:
            dgamma, dbeta = (dyv * xhat).sum(axis=(0, 2)), dyv.sum(axis=(0, 2))
        return dx.reshape(shape), dgamma, dbeta, dmw.astype(xv.dtype), dvw.astype(xv.dtype)

    return forward, backward


def _switchable_merged(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """The layer and batch statistics merged from the instance ones by the law of total variance (var over a group
    of equal-size rows = mean of the rows' variances + variance of the rows' means: no E[x^2] - E[x]^2), in float64;
    the backward through those merges back to the instance statistics, then to x."""

    def forward(x, gamma, beta, mean_weight, var_weight):
        x, xv, gamma, beta, mw, vw = _switchable_prepare(norm, x, gamma, beta, mean_weight, var_weight)
        x64 = xv.astype(np.float64)
        m_in = x64.mean(axis=2, keepdims=True)
        v_in = ((x64 - m_in) ** 2).mean(axis=2, keepdims=True)
        merged = {}
        for name, rows in (("layer", 1), ("batch", 0)):
            m = m_in.mean(axis=rows, keepdims=True)
            merged[name] = (m, v_in.mean(axis=rows, keepdims=True) + ((m_in - m) ** 2).mean(axis=rows, keepdims=True))
        w, v = _softmax3(mw.astype(np.float64)), _softmax3(vw.astype(np.float64))
        mean = w[0] * m_in + w[1] * merged["layer"][0] + w[2] * merged["batch"][0]
        var = v[0] * v_in + v[1] * merged["layer"][1] + v[2] * merged["batch"][1]
        rstd = 1.0 / np.sqrt(var + eps)
        xhat = (x64 - mean) * rstd
        c = xv.shape[1]
        y = xhat if gamma is None else xhat * gamma.reshape(1, c, 1) + beta.reshape(1, c, 1)
        cache = (x.shape, x.dtype, x64, gamma, m_in, v_in, merged, w, v, mean, rstd, xhat)
        return y.reshape(x.shape).astype(x.dtype), cache

    def backward(dy, cache):
        shape, dtype, x64, gamma, m_in, v_in, merged, w, v, mean, rstd, xhat = cache
        n, c, s = x64.shape
        dyv = _dy(dy, shape, dtype).reshape(x64.shape).astype(np.float64)
        g = dyv if gamma is None else dyv * gamma.reshape(1, c, 1).astype(np.float64)
        d_mean = -rstd * g.sum(axis=2, keepdims=True)
        d_var = -0.5 * rstd**3 * (g * (x64 - mean)).sum(axis=2, keepdims=True)
        # back to the instance statistics: m = mean_rows(m_in), var = mean_rows(v_in) + mean_rows((m_in - m)**2)
        d_m_in = w[0] * d_mean
        d_v_in = v[0] * d_var
        dw, dv = [np.sum(d_mean * m_in)], [np.sum(d_var * v_in)]
        for k, (name, rows) in enumerate((("layer", 1), ("batch", 0)), start=1):
            m, var_k = merged[name]
            count = x64.shape[rows]
            d_m = w[k] * d_mean.sum(axis=rows, keepdims=True)
            d_var_k = v[k] * d_var.sum(axis=rows, keepdims=True)
            d_m_in = d_m_in + d_m / count + d_var_k * 2 * (m_in - m) / count  # the (m_in - m) terms sum to 0 over m
            d_v_in = d_v_in + d_var_k / count
            dw.append(np.sum(d_mean * m))
            dv.append(np.sum(d_var * var_k))
        dx = g * rstd + d_m_in / s + d_v_in * 2 * (x64 - m_in) / s
        dw, dv = np.array(dw), np.array(dv)
        dmw = w * (dw - np.dot(w, dw))
        dvw = v * (dv - np.dot(v, dv))
        dgamma = dbeta = None
        if gamma is not None:
            dgamma = (dyv * xhat).sum(axis=(0, 2)).astype(dtype)
            dbeta = dyv.sum(axis=(0, 2)).astype(dtype)
        return dx.reshape(shape).astype(dtype), dgamma, dbeta, dmw.astype(dtype), dvw.astype(dtype)

    return forward, backward


def _switchable_torch(norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """The formula as a plain composition of torch ops (mean, var(unbiased=False), softmax) on tensors of x's
    dtype; gradients from torch.autograd.grad."""
    torch = importlib.import_module("torch")

    def formula(xt, gt, bt, mwt, vwt):
        xv = xt.reshape(xt.shape[0], xt.shape[1], -1)
        stats = [
            (xv.mean(dim=ax, keepdim=True), xv.var(dim=ax, unbiased=False, keepdim=True)) for ax in _KIND_AXES.values()
        ]
        w, v = torch.softmax(mwt, 0), torch.softmax(vwt, 0)
        mean = sum(w[k] * stats[k][0] for k in range(3))
        var = sum(v[k] * stats[k][1] for k in range(3))
        y = (xv - mean) / torch.sqrt(var + eps)
        if gt is not None:
            y = y * gt.reshape(1, -1, 1) + bt.reshape(1, -1, 1)
        return y.reshape(xt.shape)

    def forward(x, gamma, beta, mean_weight, var_weight):
        x, _, gamma, beta, mw, vw = _switchable_prepare(norm, x, gamma, beta, mean_weight, var_weight)
        args = [x, gamma, beta, mw, vw]
        with torch.no_grad():
            y = formula(*(None if a is None else torch.tensor(a) for a in args))
        return y.numpy().copy(), args

    def backward(dy, cache):
        x = cache[0]
        dy = _dy(dy, x.shape, x.dtype)
        leaves = [None if a is None else torch.tensor(a, requires_grad=True) for a in cache]
        with torch.enable_grad():
            y = formula(*leaves)
            wrt = [t for t in leaves if t is not None]
            grads = iter(torch.autograd.grad(y, wrt, grad_outputs=torch.tensor(dy)))
        return tuple(None if t is None else next(grads).numpy().astype(x.dtype) for t in leaves)

    return forward, backward


IMPLEMENTATIONS: dict[str, Callable] = {
    "staged": _staged,
    "compact": _compact,
    "loops": _loops,
    "einsum": _einsum,
    "welford64": _welford64,
    "matrix": _matrix,
    "channels_last": _channels_last,
    "shifted": _shifted,
    "pairwise_dx": _pairwise_dx,
    "float32_cached_stats": _float32_cached_stats,
    "segments": _segments,
    "autodiff_tape": _autodiff_tape,
    "fsum_exact": _fsum_exact,
    "scipy_sparse": _scipy_sparse,
    "numba_loops": _numba_loops,
    "torch_autograd": _torch_autograd,
    "torch_functional": _torch_functional,
    "jax_vjp": _jax_vjp,
    "rms_staged": _rms_staged,
    "rms_closed_form": _rms_closed_form,
    "rms_torch": _rms_torch,
    "switchable_direct": _switchable_direct,
    "switchable_merged": _switchable_merged,
    "switchable_torch": _switchable_torch,
}

# the norms each implementation computes: the four of the family, unless listed here
_NORMS_OF = {
    "rms_staged": ("rms_norm",),
    "rms_closed_form": ("rms_norm",),
    "rms_torch": ("rms_norm",),
    "switchable_direct": ("switchable_norm",),
    "switchable_merged": ("switchable_norm",),
    "switchable_torch": ("switchable_norm",),
}

_REQUIRES = {
    "scipy_sparse": "scipy.sparse",
    "numba_loops": "numba",
    "torch_autograd": "torch",
    "torch_functional": "torch",
    "jax_vjp": "jax",
    "rms_torch": "torch",
    "switchable_torch": "torch",
}


def available(name: str) -> bool:
    """False when the optional package that implementation ``name`` needs cannot be imported."""
    if name not in IMPLEMENTATIONS:
        raise KeyError(f"unknown implementation {name!r}")
    module = _REQUIRES.get(name)
    if module is None:
        return True
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def supports(name: str, norm: str) -> bool:
    """Does implementation ``name`` compute ``norm``?"""
    return norm in _NORMS_OF.get(name, NORMS)


def make(name, norm, *, eps=1e-5, num_groups=None, normalized_shape=None):
    """(forward, backward) of implementation ``name`` for ``norm``."""
    if name not in IMPLEMENTATIONS:
        raise KeyError(f"unknown implementation {name!r}; expected one of {sorted(IMPLEMENTATIONS)}")
    return IMPLEMENTATIONS[name](norm, eps=eps, num_groups=num_groups, normalized_shape=normalized_shape)
