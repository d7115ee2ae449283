"""Layers in the cs231n contract for the verifier to judge: correct ones, and ones with planted bugs.

``student_layer`` is written the way the assignment is, stage by stage, for any norm through its
statistics view; each planted bug changes one line of it, the way students and kernel writers get it wrong.
With no bug it is a correct staged implementation; ``compact_layer`` is a correct one with the closed-form
backward. Both compute in the input's dtype. ``rms_layer`` and ``switchable_layer`` are the same for RMSNorm and
Switchable Normalization (with their own bugs), ``rms_compact_layer`` RMSNorm's closed form.
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


# --- RMSNorm and Switchable Normalization: a student's staged layer each, with planted bugs -------------------

RMS_BUGS = (
    "mean_subtracted",
    "eps_outside",
    "unbiased_ms",
    "sqrt_missing",
    "float32_path",
    "no_ms_path",
    "no_half",
    "gamma_ignored",
    "dgamma_no_xhat",
)


def rms_layer(bug=None, eps=1e-6, normalized_shape=None, **_):
    """RMSNorm the way the paper writes it, stage by stage: forward(x, gamma) -> (y, cache), backward(dy, cache)
    -> (dx, dgamma). Computes in the input's dtype; gamma None is no affine (dgamma None)."""

    def forward(x, gamma):
        k = len(np.shape(gamma)) if normalized_shape is None else len(np.atleast_1d(normalized_shape))
        axes = tuple(range(x.ndim - k, x.ndim))
        work = x.astype(np.float32) if bug == "float32_path" else x
        m = int(np.prod([x.shape[a] for a in axes]))
        xc = work - work.mean(axis=axes, keepdims=True) if bug == "mean_subtracted" else work
        sq = xc**2
        ms = sq.sum(axis=axes, keepdims=True) / (m - 1 if bug == "unbiased_ms" else m)
        if bug == "eps_outside":
            rms = np.sqrt(ms) + eps
        elif bug == "sqrt_missing":
            rms = ms + eps
        else:
            rms = np.sqrt(ms + eps)
        irms = 1.0 / rms
        xhat = xc * irms
        out = xhat if gamma is None else gamma * xhat
        return out.astype(x.dtype), dict(axes=axes, m=m, x=work, gamma=gamma, ms=ms, rms=rms, irms=irms, xhat=xhat)

    def backward(dy, cache):
        axes, m, x, gamma = cache["axes"], cache["m"], cache["x"], cache["gamma"]
        ms, rms, irms, xhat = cache["ms"], cache["rms"], cache["irms"], cache["xhat"]
        lead = tuple(range(x.ndim - len(axes)))
        dgamma = None
        if gamma is not None:
            dgamma = (dy if bug == "dgamma_no_xhat" else dy * xhat).sum(axis=lead)
        dxhat = dy if gamma is None or bug == "gamma_ignored" else dy * gamma
        dirms = (dxhat * x).sum(axis=axes, keepdims=True)
        drms = -dirms / rms**2
        dms = (1.0 if bug == "no_half" else 0.5) / np.sqrt(ms + eps) * drms
        dsq = np.ones_like(x) / m * dms
        dx = dxhat * irms + (0.0 if bug == "no_ms_path" else 2.0) * x * dsq
        return dx.astype(dy.dtype), None if dgamma is None else dgamma.astype(dy.dtype)

    return forward, backward


def rms_compact_layer(eps=1e-6, normalized_shape=None, **_):
    """Correct RMSNorm with the closed-form backward dx = rstd * (g - xhat * mean(g * xhat)), g = dy * gamma."""

    def forward(x, gamma):
        k = len(np.shape(gamma)) if normalized_shape is None else len(np.atleast_1d(normalized_shape))
        axes = tuple(range(x.ndim - k, x.ndim))
        rstd = 1 / np.sqrt((x * x).mean(axis=axes, keepdims=True) + x.dtype.type(eps))
        xhat = x * rstd
        return (xhat if gamma is None else gamma * xhat), (axes, xhat, rstd, gamma)

    def backward(dy, cache):
        axes, xhat, rstd, gamma = cache
        g = dy if gamma is None else dy * gamma
        dx = rstd * (g - xhat * (g * xhat).mean(axis=axes, keepdims=True))
        lead = tuple(range(dy.ndim - len(axes)))
        return dx, None if gamma is None else (dy * xhat).sum(axis=lead)

    return forward, backward


SWITCHABLE_BUGS = (
    "raw_logits",
    "weights_by_sum",
    "unbiased_var_in",
    "float32_path",
    "no_softmax_backward",
    "no_instance_path",
    "no_layer_path",
    "no_batch_path",
    "gamma_ignored",
)


def switchable_layer(bug=None, eps=1e-5, **_):
    """Switchable Normalization written from the paper: forward(x, gamma, beta, mean_weight, var_weight) ->
    (y, cache), backward(dy, cache) -> (dx, dgamma, dbeta, dmean_weight, dvar_weight). x (N, C, *spatial),
    computed in the input's dtype; gamma and beta (C,) (both None: no affine)."""
    kinds = {"in": (2,), "ln": (1, 2), "bn": (0, 2)}

    def weights(logits):
        if bug == "raw_logits":
            return logits
        if bug == "weights_by_sum":
            return logits / logits.sum()
        e = np.exp(logits - logits.max())
        return e / e.sum()

    def forward(x, gamma, beta, mean_weight, var_weight):
        work = x.astype(np.float32) if bug == "float32_path" else x
        n, c = x.shape[:2]
        xv = work.reshape(n, c, -1)
        means = {k: xv.mean(axis=ax, keepdims=True) for k, ax in kinds.items()}
        variances = {k: ((xv - means[k]) ** 2).mean(axis=ax, keepdims=True) for k, ax in kinds.items()}
        if bug == "unbiased_var_in":
            variances["in"] = xv.var(axis=2, keepdims=True, ddof=1)
        w, v = weights(mean_weight.astype(work.dtype)), weights(var_weight.astype(work.dtype))
        mean = w[0] * means["in"] + w[1] * means["ln"] + w[2] * means["bn"]
        var = v[0] * variances["in"] + v[1] * variances["ln"] + v[2] * variances["bn"]
        rstd = 1 / np.sqrt(var + eps)
        xhat = (xv - mean) * rstd
        g = np.ones((1, c, 1)) if gamma is None else gamma.reshape(1, c, 1)
        b = np.zeros((1, c, 1)) if beta is None else beta.reshape(1, c, 1)
        y = (g * xhat + b).reshape(x.shape).astype(x.dtype)
        cache = dict(xv=xv, means=means, variances=variances, w=w, v=v, mean=mean, rstd=rstd, xhat=xhat, gamma=gamma)
        return y, cache

    def backward(dy, cache):
        xv, xhat, rstd, w, v, gamma = (cache[k] for k in ("xv", "xhat", "rstd", "w", "v", "gamma"))
        n, c, s = xv.shape
        dyv = dy.reshape(xv.shape)
        g = dyv if gamma is None or bug == "gamma_ignored" else dyv * gamma.reshape(1, c, 1)
        dvar = -0.5 * rstd**3 * (g * (xv - cache["mean"])).sum(axis=2, keepdims=True)
        dmean = -rstd * g.sum(axis=2, keepdims=True)
        dx = g * rstd
        sums = {"in": (), "ln": (1,), "bn": (0,)}
        counts = {"in": s, "ln": c * s, "bn": n * s}
        for i, k in enumerate(kinds):
            if (bug, k) in (("no_instance_path", "in"), ("no_layer_path", "ln"), ("no_batch_path", "bn")):
                continue
            dmean_k = w[i] * dmean.sum(axis=sums[k], keepdims=True)
            dvar_k = v[i] * dvar.sum(axis=sums[k], keepdims=True)
            dx = dx + (dmean_k + 2 * (xv - cache["means"][k]) * dvar_k) / counts[k]
        dw = np.array([(dmean * cache["means"][k]).sum() for k in kinds])
        dv = np.array([(dvar * cache["variances"][k]).sum() for k in kinds])
        if bug in ("no_softmax_backward", "raw_logits"):  # raw logits: w is the logits, its gradient is dw
            dmw, dvw = dw, dv
        else:
            dmw, dvw = w * (dw - (w * dw).sum()), v * (dv - (v * dv).sum())
        dgamma = dbeta = None
        if gamma is not None:
            dgamma = (dyv * xhat).sum(axis=(0, 2))
            dbeta = dyv.sum(axis=(0, 2))
        cast = [None if a is None else np.asarray(a).astype(dy.dtype) for a in (dgamma, dbeta, dmw, dvw)]
        return (dx.reshape(dy.shape).astype(dy.dtype), *cast)

    return forward, backward
