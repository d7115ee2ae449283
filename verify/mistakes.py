"""Known mistakes: the staged graph with one thing done wrong, to name the likely cause of a failure.

When an implementation's output disagrees with the reference, the verifier recomputes the output with each
mistake below and reports those whose result the implementation matches. Each mistake is a knob of
``graph``; with no knob set, ``graph`` is the staged graph (a test holds it to that).
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np

from . import compare
from .staged import Layout


class Mistake(NamedTuple):
    knob: str
    tensors: tuple  # which outputs it changes
    cause: str  # what the report says
    norms: tuple = ("batch_norm", "layer_norm", "instance_norm", "group_norm")


MISTAKES = (
    Mistake("unbiased_var", ("y", "dx", "dgamma"), "the unbiased variance (1/(M-1)) used to normalize"),
    Mistake("eps_outside", ("y", "dx", "dgamma"), "eps outside the square root: 1 / (sqrt(var) + eps)"),
    Mistake("subtract_sqrt", ("y", "dx", "dgamma"), "subtracting sqrt(var + eps) instead of dividing by it"),
    Mistake("var_all_axes", ("y", "dx", "dgamma"), "variance taken over all axes instead of the normalized ones"),
    Mistake("group_mod", ("y", "dx", "dgamma"), "channels grouped as c % G instead of c // (C / G)", ("group_norm",)),
    Mistake(
        "instance_as_layer",
        ("y", "dx", "dgamma"),
        "statistics over (C, *spatial) per sample: layer norm, not instance norm",
        ("instance_norm",),
    ),
    Mistake("eval_grad", ("dx",), "dx is missing both the mean and the variance paths (dx = dy * gamma * rstd)"),
    Mistake("no_mean_path", ("dx",), "dx is missing the mean path (the gradient through mu)"),
    Mistake("no_var_path", ("dx",), "dx is missing the variance path (the gradient through var)"),
    Mistake("bwd_unbiased", ("dx",), "1/(M-1) instead of 1/M in the backward of var"),
    Mistake("no_1_over_m_mean", ("dx",), "missing 1/M in the backward of mu = mean(x)"),
    Mistake("no_1_over_m_var", ("dx",), "missing 1/M in the backward of var = mean(sq)"),
    Mistake("dmu_sign", ("dx",), "flipped sign in the backward of xmu = x - mu (dmu)"),
    Mistake("dsqrtvar_sign", ("dx",), "flipped sign in the backward of ivar = 1 / sqrtvar"),
    Mistake("no_factor_2", ("dx",), "missing factor 2 in the backward of sq = xmu ** 2"),
    Mistake("no_half", ("dx",), "missing factor 1/2 in the backward of sqrtvar = sqrt(var + eps)"),
    Mistake("gamma_ignored", ("dx",), "gamma ignored in the backward (dxhat = dy)"),
    Mistake("swapped", ("dgamma", "dbeta"), "dgamma and dbeta swapped"),
)


def _layout_for(knob: str, lay: Layout) -> Layout:
    if knob == "instance_as_layer":
        nd = len(lay.x_shape)
        return replace(lay, reduce_axes=tuple(range(1, nd)), stats_shape=lay.x_shape[:1])
    return lay


def graph(x, gamma, beta, dy, eps: float, lay: Layout, knob: str | None = None) -> dict:
    """y, dx, dgamma, dbeta of the staged graph in float64, with at most one mistake (knob) in it."""
    if knob == "group_mod":  # group channel c with c % G: permute channels so that is contiguous, then undo
        g = lay.groups
        perm = np.argsort(np.arange(lay.x_shape[1]) % g, kind="stable")
        inv = np.argsort(perm)
        out = graph(x[:, perm], gamma[perm], beta[perm], dy[:, perm], eps, lay)
        return dict(y=out["y"][:, inv], dx=out["dx"][:, inv], dgamma=out["dgamma"][inv], dbeta=out["dbeta"][inv])
    lay = _layout_for(knob, lay)
    ax = lay.reduce_axes
    m = lay.count
    gb = gamma.reshape(lay.affine_broadcast)
    xv = x.reshape(lay.view_shape)

    mu = xv.mean(axis=ax, keepdims=True)
    xmu = xv - mu
    sq = xmu**2
    if knob == "var_all_axes":
        var = np.full_like(mu, sq.mean())
    else:
        var = sq.sum(axis=ax, keepdims=True) / (m - 1 if knob == "unbiased_var" else m)
    sqrtvar = np.sqrt(var + eps)
    ivar = 1.0 / (np.sqrt(var) + eps if knob == "eps_outside" else sqrtvar)
    xhat = (xmu - sqrtvar if knob == "subtract_sqrt" else xmu * ivar).reshape(lay.x_shape)
    y = gb * xhat + beta.reshape(lay.affine_broadcast)

    sum_affine = lay.affine_reduce_axes
    dbeta = dy.sum(axis=sum_affine).reshape(lay.affine_shape)
    dgamma = (dy * xhat).sum(axis=sum_affine).reshape(lay.affine_shape)
    dxhat = (dy if knob == "gamma_ignored" else dy * gb).reshape(lay.view_shape)
    if knob == "subtract_sqrt":  # xhat = xmu - sqrtvar: d/dxmu = 1, d/dsqrtvar = -1
        dxmu1 = dxhat
        dsqrtvar = -dxhat.sum(axis=ax, keepdims=True)
    else:
        divar = (dxhat * xmu).sum(axis=ax, keepdims=True)
        dxmu1 = dxhat * ivar
        dsqrtvar = (1.0 if knob == "dsqrtvar_sign" else -1.0) / sqrtvar**2 * divar
    dvar = (1.0 if knob == "no_half" else 0.5) / np.sqrt(var + eps) * dsqrtvar
    if knob in ("no_var_path", "eval_grad"):
        dvar = np.zeros_like(dvar)
    scale_var = {"bwd_unbiased": 1.0 / (m - 1), "no_1_over_m_var": 1.0}.get(knob, 1.0 / m)
    dsq = np.ones_like(xmu) * scale_var * dvar
    dxmu2 = (1.0 if knob == "no_factor_2" else 2.0) * xmu * dsq
    dx1 = dxmu1 + dxmu2
    dmu = -dx1.sum(axis=ax, keepdims=True)
    dx2 = np.ones_like(xmu) * (1.0 if knob == "no_1_over_m_mean" else 1.0 / m) * dmu
    if knob in ("no_mean_path", "eval_grad"):
        dx2 = np.zeros_like(dx2)
    dx = (dx1 - dx2 if knob == "dmu_sign" else dx1 + dx2).reshape(lay.x_shape)
    if knob == "swapped":
        dgamma, dbeta = dbeta.copy(), dgamma.copy()
    return dict(y=y, dx=dx, dgamma=dgamma, dbeta=dbeta)


def diagnose(tensor: str, got, x, gamma, beta, dy, eps: float, lay: Layout, tol: compare.Tol) -> str:
    """The known mistakes whose `tensor` the implementation's `got` matches, as one sentence, or ""."""
    x, dy = (np.asarray(a, dtype=np.float64) for a in (x, dy))
    gamma = np.ones(lay.affine_shape) if gamma is None else np.asarray(gamma, dtype=np.float64)
    beta = np.zeros(lay.affine_shape) if beta is None else np.asarray(beta, dtype=np.float64)
    correct = graph(x, gamma, beta, dy, eps, lay)[tensor]
    if np.shape(got) != correct.shape:
        return ""
    err = compare.norm_rel_error(got, correct)
    close = max(100 * tol.rtol, 1e-6)  # a match: this near the mistaken result, and 10x nearer than to the right one
    found = []
    for mistake in MISTAKES:
        if tensor not in mistake.tensors or lay.norm not in mistake.norms:
            continue
        with np.errstate(all="ignore"):
            wrong = graph(x, gamma, beta, dy, eps, lay, mistake.knob)[tensor]
        d_wrong = compare.norm_rel_error(got, wrong)
        if d_wrong <= close and d_wrong < 0.1 * err:
            found.append(mistake.cause)
    if not found and np.asarray(got).dtype == np.float64 and 1e-9 < err < 1e-5:
        found.append(f"float32 precision in a float64 path (error {err:.1e} of the tensor's scale)")
    return " or ".join(found)
