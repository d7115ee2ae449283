"""How far a correct implementation may be from the float64 staged graph: error bounds that follow the
conditioning of the input and the dtype under test, element by element.

A fixed tolerance fails correct code on hard inputs (a group of two values, mean 1e4 with std 1) and
hides bugs on easy ones. These bounds are first-order rounding-error bounds for any numerically sound
algorithm (two-pass or Welford statistics, the staged or the closed-form backward, statistics cached in
the dtype under test), with unit roundoff u of that dtype (float32 2**-24, float64 2**-53).

Sums. Recursive summation of n terms errs by at most n * u * sum|terms| (Higham, "Accuracy and Stability
of Numerical Algorithms", section 4.2), a bound that is reached only by contrived data. For n > 100 we use
the probabilistic bound of Higham and Mary (SIAM J. Sci. Comput. 41(5), 2019, theorem 2.4): with rounding
errors that are mean-independent, the error exceeds lambda * sqrt(n) * u * sum|terms| with probability at
most 2 * n * exp(-lambda**2 / 2); lambda = 10 makes that 4e-16 for a million terms. So a sum of n terms
counts s(n) = min(n, 10 * sqrt(n)) roundings.

Per statistics group of M values, with A = max|x| over the group, r = rstd = 1 / sqrt(var + eps) and the
condition number kappa = A * r (how much larger the terms that cancel in x - mean are than the result), the
error of the computed xhat_j splits into a part that every element of the group shares and a part of its own:

    mean:        r |d mu| <= c_mu = (s(M) + 2) u kappa         (a sum of M terms, the division, and the
                 mean rounded to the dtype when a backward gets it from a cache)
    rstd:        |d r| / r <= c_r = (s(M) + 4) u (1 + kappa)    two-pass: the errors of xmu enter var through
                 sum(2 xmu d xmu), where the mean's shared error cancels (sum xmu = 0) and the rest is at most
                 4 u kappa relative to var + eps; Welford-type updates err by about s(M) u kappa (Chan, Golub
                 and LeVeque, 1983); then a sqrt and a division
    own:         e_j = 4 u (kappa + |xhat_j|)                   a few roundings of terms as large as x * r,
                 as in y = x * (gamma r) + (beta - mu gamma r)
    so           xhat_j + d xhat_j = xhat_j - d + rho xhat_j + e'_j with |d| <= c_mu, |rho| <= c_r and
                 |e'_j| <= e_j, d and rho the same for the whole group; |d xhat_j| <= E_j = c_mu + c_r |xhat_j| + e_j
    y:           |d y_j| <= |gamma| E_j + 2 u (|gamma xhat_j| + |beta|)

The backward, with g = dy * gamma and means over the group, dx_j = r (g_j - mean(g) - xhat_j mean(g xhat)).
A shared shift d of xhat moves dx_j by r d (mean(g xhat) + xhat_j mean(g)), and a shared scale rho by
rho (dx_j + 2 r xhat_j mean(g xhat)): both are weighted by the group's *signed* means, which for an upstream
gradient that is not constant are about 1/sqrt(M) of |g|. With T_j = |g_j| + |mean(g)| + |xhat_j| |mean(g xhat)|
(so r T_j >= |dx_j|):

    shared shift                r c_mu (|mean(g xhat)| + |xhat_j| |mean(g)|)
    shared scale                c_r r (T_j + 2 |xhat_j| |mean(g xhat)|)
    the two means' own sums     (s(M) + 2) u r (mean|g| + |xhat_j| mean|g xhat|)
    the elements' own errors    r (e_j |mean(g xhat)| + |xhat_j| mean(|g| e))
    the formula's last steps    5 u r T_j
    D_j, the bound on |d dx_j|, is their sum.

The staged backward (dvar, dmu, ...) computes the same quantities through intermediate terms of the same
sizes (r |g|, r |g xhat|; its sum(xmu), zero in exact arithmetic, is the mean's shared error again), so the
bound covers it. With K the terms of each affine sum (every axis gamma does not vary along), and the shared
errors summed over the part of each statistics group that feeds the affine element c:

    dgamma_c = sum(dy * xhat):  sum_groups (c_mu |sum dy| + c_r |sum dy xhat|) + sum(|dy| e) + (s(K) + 1) u sum|dy xhat|
    dbeta_c  = sum(dy):         (s(K) + 1) u sum|dy|

The identities per group, sum(dx) = 0 and sum(dx * xhat) = eps term, hold exactly for the exact dx, so a
computed dx misses them by at most sum(D) and sum(D |xhat|); the second is taken with the reference's xhat,
whose own error adds sum(|dx| E) with |dx_j| <= r T_j and float64's E.

The float64 reference itself errs by the same bounds with float64's u, so a comparison allows the sum of
the two, times SAFETY = 4 for the second-order terms and the constants rounded off above. A real mistake
changes a tensor by a fraction of its size (1/M for the unbiased variance, all of it for a missing path),
far outside these bounds unless the input is so ill-conditioned (float32 at kappa 1e4) that no test in that
dtype can tell; `Bounds.loose` says when that is so. Where c_mu or c_r reaches 1 (float32 at kappa ~ 1e6:
two values a few ulps apart) no digit of xhat is guaranteed, a correct two-pass float32 implementation may
return inf, and the group is not judged at all (`Bounds.unjudged`); nor is a group whose values are not all
finite (the reference itself is then NaN or inf there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .staged import Layout

SAFETY = 4.0
LAMBDA = 10.0  # Higham and Mary's lambda for sums of more than 100 terms


def unit_roundoff(dtype) -> float:
    """u: half the machine epsilon of a float dtype (2**-24 for float32, 2**-53 for float64)."""
    return float(np.finfo(np.dtype(dtype)).eps) / 2


def roundings(n) -> np.ndarray | float:
    """s(n): how many unit roundoffs a sum of n terms may cost, relative to the sum of their magnitudes."""
    n = np.asarray(n, dtype=np.float64)
    return np.minimum(n, LAMBDA * np.sqrt(n))


@dataclass
class Bounds:
    """Allowed |implementation - float64 staged graph| per element: y and dx have x's shape, dgamma and dbeta
    gamma's; sum_dx and sum_dx_xhat are per statistics group (the view's keepdims shape)."""

    y: np.ndarray
    dx: np.ndarray
    dgamma: np.ndarray
    dbeta: np.ndarray
    sum_dx: np.ndarray
    sum_dx_xhat: np.ndarray
    kappa: np.ndarray  # per statistics group, as the view's keepdims shape
    y_relative: float  # the largest bound on y relative to y's scale |gamma| (1 + |xhat|) + |beta|, judged groups

    @property
    def loose(self) -> bool:
        """True when the input is so ill-conditioned for the dtype that y may be off by 1% and still pass."""
        return self.y_relative > 1e-2

    @property
    def unjudged(self) -> int:
        """Elements of x in groups where the dtype guarantees no digit of xhat: not judged at all."""
        return int(np.isinf(self.y).sum())


def _per_group_and_affine(lay: Layout, *arrays: np.ndarray) -> list[np.ndarray]:
    """Sums of each array (x's shape) over every (statistics group, affine element) intersection, as
    (groups, affine size) arrays."""
    n_affine = math.prod(lay.affine_shape)
    joint = (lay.stats_index() * n_affine + lay.affine_index()).reshape(-1)
    n_groups = math.prod(lay.stats_broadcast)
    shape = (n_groups, n_affine)
    return [np.bincount(joint, weights=a.reshape(-1), minlength=n_groups * n_affine).reshape(shape) for a in arrays]


@np.errstate(invalid="ignore", over="ignore")
def _one_dtype(cache: dict, dy: np.ndarray, dtype) -> dict:
    lay: Layout = cache["layout"]
    ax = lay.reduce_axes
    u = unit_roundoff(dtype)
    m = lay.count
    s_m = roundings(m)
    x = cache["x"].reshape(lay.view_shape)
    r = np.abs(cache["ivar"])
    big_a = np.max(np.abs(x), axis=ax, keepdims=True, initial=0.0)
    kappa = big_a * r
    c_mu = (s_m + 2) * u * kappa  # per group: the shared shift of xhat
    c_r = (s_m + 4) * u * (1 + kappa)  # per group: its shared scale
    # no digit of xhat guaranteed in this dtype (float32 at kappa ~ 1e6), or a group that is not finite:
    # any answer, inf and NaN included, is as good as another, so such groups are not judged
    unjudged = (c_mu >= 1) | (c_r >= 1) | ~np.isfinite(kappa)
    c_mu = np.where(unjudged, np.inf, c_mu)
    c_r = np.where(unjudged, np.inf, c_r)

    xhat = cache["xhat"].reshape(lay.view_shape)
    ax_hat = np.abs(xhat)
    own = 4 * u * (kappa + ax_hat)  # e_j
    err_xhat = c_mu + c_r * ax_hat + own  # E_j
    gamma_b = cache["gamma"].reshape(lay.affine_broadcast)
    beta = np.abs(cache["beta"]).reshape(lay.affine_broadcast)
    xhat_x = xhat.reshape(lay.x_shape)
    y = np.abs(gamma_b) * err_xhat.reshape(lay.x_shape) + 2 * u * (np.abs(gamma_b * xhat_x) + beta)

    def mean(a):
        return a.sum(axis=ax, keepdims=True) / m

    g = (dy * gamma_b).reshape(lay.view_shape)
    mean_g, mean_gx = np.abs(mean(g)), np.abs(mean(g * xhat))
    ag = np.abs(g)
    terms = ag + mean_g + ax_hat * mean_gx  # T_j
    dx = r * (
        c_mu * (mean_gx + ax_hat * mean_g)
        + c_r * (terms + 2 * ax_hat * mean_gx)
        + (s_m + 2) * u * (mean(ag) + ax_hat * mean(ag * ax_hat))
        + own * mean_gx
        + ax_hat * mean(ag * own)
        + 5 * u * terms
    )  # D_j

    k = x.size // max(1, math.prod(lay.affine_shape))
    axes = lay.affine_reduce_axes
    ady = np.abs(dy)
    s_k = roundings(k) + 1
    sum_dy, sum_dy_xhat = _per_group_and_affine(lay, dy, dy * xhat_x)
    shared = (np.abs(sum_dy) * c_mu.reshape(-1, 1) + np.abs(sum_dy_xhat) * c_r.reshape(-1, 1)).sum(axis=0)
    dgamma = shared.reshape(lay.affine_shape) + (ady * own.reshape(lay.x_shape)).sum(axis=axes).reshape(
        lay.affine_shape
    )
    dgamma = dgamma + s_k * u * (ady * np.abs(xhat_x)).sum(axis=axes).reshape(lay.affine_shape)
    dbeta = s_k * u * ady.sum(axis=axes).reshape(lay.affine_shape)
    return dict(
        y=y,
        dx=dx.reshape(lay.x_shape),
        dgamma=dgamma,
        dbeta=dbeta,
        sum_dx=dx.sum(axis=ax, keepdims=True),
        sum_dx_xhat=(dx * ax_hat).sum(axis=ax, keepdims=True),
        # the identity multiplies dx (|dx_j| <= r T_j) by this dtype's xhat: its own error, for the reference
        xhat_term=(r * terms * err_xhat).sum(axis=ax, keepdims=True),
        kappa=kappa,
    )


def bounds(cache: dict, dy, dtype) -> Bounds:
    """The bounds for an implementation computing in `dtype`, from the float64 staged forward's cache (for
    the layer's inputs) and the upstream gradient dy. SAFETY * (its rounding + the reference's own)."""
    dy = np.asarray(dy, dtype=np.float64)
    ref = _one_dtype(cache, dy, np.float64)
    test = ref if np.dtype(dtype) == np.float64 else _one_dtype(cache, dy, dtype)
    with np.errstate(invalid="ignore"):
        total = {k: SAFETY * (test[k] + ref[k]) for k in test if k not in ("kappa", "xhat_term")}
        total["sum_dx_xhat"] += SAFETY * ref["xhat_term"]  # the identity is taken with the reference's xhat
    # 0 * inf in an unjudged group (a zero dy, say) is still unjudged
    total = {k: np.where(np.isnan(v), np.inf, v) for k, v in total.items()}
    lay: Layout = cache["layout"]
    scale = np.abs(cache["gamma"]).reshape(lay.affine_broadcast) * (1 + np.abs(cache["xhat"]))
    scale = scale + np.abs(cache["beta"]).reshape(lay.affine_broadcast)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.where(np.isfinite(total["y"]) & (scale > 0), total["y"] / scale, 0.0)
    return Bounds(**total, kappa=test["kappa"], y_relative=float(np.nanmax(relative, initial=0.0)))
