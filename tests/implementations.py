"""Layers in the cs231n contract for the verifier to judge: correct ones, and ones with planted bugs.

``student_layer`` is written the way the assignment is, stage by stage, for any norm through its
statistics view; each planted bug changes one line of it, the way students and kernel writers get it wrong.
With no bug it is a correct staged implementation; ``compact_layer`` is a correct one with the closed-form
backward. Both compute in the input's dtype.
"""

from __future__ import annotations

import numpy as np

from verify import staged

FORWARD_BUGS = (
    "subtract_sqrt",
    "var_all_axes",
    "unbiased_var",
    "eps_outside",
    "modifies_input",
    "float32_path",
    "group_mod",
    "instance_as_layer",
)
BACKWARD_BUGS = (
    "no_1_over_m_mean",
    "no_1_over_m_var",
    "dmu_sign",
    "dsqrtvar_sign",
    "no_factor_2",
    "no_mean_path",
    "no_var_path",
    "no_half",
    "bwd_unbiased",
    "swapped",
    "gamma_ignored",
    "dgamma_no_xhat",
    "mutates_cache",
)


def _view(norm, x, lay, bug):
    """x in the statistics view, with its reduced axes (where two of the bugs go wrong)."""
    if bug == "group_mod":  # groups of channels c with equal c % G, instead of consecutive channels
        n, c = x.shape[:2]
        g = lay.groups
        return x.reshape(n, c // g, g, -1), (1, 3)
    if bug == "instance_as_layer":
        return x, tuple(range(1, x.ndim))
    return x.reshape(lay.view_shape), lay.reduce_axes


def student_layer(norm, bug=None, eps=1e-5, **layout_kw):
    def forward(x, gamma, beta):
        lay = staged.layout(norm, x.shape, **layout_kw)
        work = x.astype(np.float32) if bug == "float32_path" else x
        xv, ax = _view(norm, work, lay, bug)
        m = int(np.prod([xv.shape[a] for a in ax]))
        mu = xv.mean(axis=ax, keepdims=True)
        if bug == "modifies_input":
            xv -= mu  # in place: x itself is now centred
            xmu = xv
        else:
            xmu = xv - mu
        sq = xmu**2
        if bug == "var_all_axes":
            var = sq.mean() * np.ones_like(mu)
        elif bug == "unbiased_var":
            var = sq.sum(axis=ax, keepdims=True) / (m - 1)
        else:
            var = sq.sum(axis=ax, keepdims=True) / m
        sqrtvar = np.sqrt(var) + eps if bug == "eps_outside" else np.sqrt(var + eps)
        ivar = 1.0 / sqrtvar
        xhat = xmu - sqrtvar if bug == "subtract_sqrt" else xmu * ivar
        xhat = xhat.reshape(x.shape)
        g = gamma.reshape(lay.affine_broadcast)
        out = g * xhat + beta.reshape(lay.affine_broadcast)
        cache = dict(lay=lay, ax=ax, m=m, g=g, xhat=xhat, xmu=xmu, ivar=ivar, sqrtvar=sqrtvar, var=var)
        return out.astype(x.dtype), cache

    def backward(dout, cache):
        lay, ax, m, g = cache["lay"], cache["ax"], cache["m"], cache["g"]
        xmu, ivar, sqrtvar, var = cache["xmu"], cache["ivar"], cache["sqrtvar"], cache["var"]
        sum_axes = lay.affine_reduce_axes
        dbeta = dout.sum(axis=sum_axes).reshape(lay.affine_shape)
        dgamma = (dout if bug == "dgamma_no_xhat" else dout * cache["xhat"]).sum(axis=sum_axes)
        dgamma = dgamma.reshape(lay.affine_shape)
        dxhat = (dout if bug == "gamma_ignored" else dout * g).reshape(xmu.shape)
        divar = np.sum(dxhat * xmu, axis=ax, keepdims=True)
        if bug == "mutates_cache":
            xmu *= ivar  # reuses the cache's buffer: a second backward sees xhat where xmu was
        dxmu1 = dxhat * ivar
        dsqrtvar = (1.0 if bug == "dsqrtvar_sign" else -1.0) / sqrtvar**2 * divar
        dvar = (1.0 if bug == "no_half" else 0.5) / np.sqrt(var + eps) * dsqrtvar
        if bug == "no_var_path":
            dvar = 0.0 * dvar
        n_var = {"no_1_over_m_var": 1.0, "bwd_unbiased": m - 1.0}.get(bug, float(m))
        dsq = np.ones_like(xmu) / n_var * dvar
        dxmu2 = (1.0 if bug == "no_factor_2" else 2.0) * xmu * dsq
        dx1 = dxmu1 + dxmu2
        dmu = -np.sum(dx1, axis=ax, keepdims=True)
        n_mean = 1.0 if bug == "no_1_over_m_mean" else float(m)
        dx2 = 0.0 * dx1 if bug == "no_mean_path" else np.ones_like(xmu) / n_mean * dmu
        dx = (dx1 - dx2 if bug == "dmu_sign" else dx1 + dx2).reshape(dout.shape)
        if bug == "swapped":
            dgamma, dbeta = dbeta, dgamma
        return dx, dgamma, dbeta

    return forward, backward


def compact_layer(norm, eps=1e-5, **layout_kw):
    """Correct, with the closed-form backward dx = rstd / M * (M * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat)).

    Computes in the input's dtype, so a float32 input is a float32 implementation.
    """

    def forward(x, gamma, beta):
        lay = staged.layout(norm, x.shape, **layout_kw)
        xv = x.reshape(lay.view_shape)
        mean = xv.mean(axis=lay.reduce_axes, keepdims=True)
        rstd = 1 / np.sqrt(xv.var(axis=lay.reduce_axes, keepdims=True) + x.dtype.type(eps))
        xhat = ((xv - mean) * rstd).reshape(x.shape)
        return gamma.reshape(lay.affine_broadcast) * xhat + beta.reshape(lay.affine_broadcast), (lay, xhat, rstd, gamma)

    def backward(dy, cache):
        lay, xhat, rstd, gamma = cache
        dxhat = (dy * gamma.reshape(lay.affine_broadcast)).reshape(lay.view_shape)
        xh = xhat.reshape(lay.view_shape)
        m = lay.count
        ax = lay.reduce_axes
        dx = rstd / m * (m * dxhat - dxhat.sum(axis=ax, keepdims=True) - xh * (dxhat * xh).sum(axis=ax, keepdims=True))
        axes = lay.affine_reduce_axes
        dgamma = (dy * xhat).sum(axis=axes).reshape(lay.affine_shape)
        dbeta = dy.sum(axis=axes).reshape(lay.affine_shape)
        return dx.reshape(dy.shape), dgamma, dbeta

    return forward, backward
