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

RMSNorm (`rms_bounds`). Per row of M values, ms = mean(x**2) is a sum of M terms that are all >= 0: nothing
cancels, and its computed value has relative error at most (s(M) + 1) u whatever the mean of x is; adding eps,
the square root (which halves a relative error), the division and the rounding of rstd to the dtype when the
backward gets it from the forward add a few u. So r = rstd = 1 / sqrt(ms + eps) carries one relative error
shared by the row,

    rstd:        |d r| / r <= c_r = (s(M) + 4) u               no kappa: there is no x - mean to cancel
    own:         e_j = 4 u |xhat_j|                            xhat_j = x_j * r and y = gamma * xhat, each a
                 product of terms of size |xhat_j|
    so           xhat_j + d xhat_j = (1 + rho) xhat_j + e'_j, |rho| <= c_r, |e'_j| <= e_j: E_j = c_r |xhat_j| + e_j
    y:           |d y_j| <= |gamma| E_j + 2 u |gamma xhat_j|

Backward, with g = dy * gamma: dx_j = r (g_j - xhat_j mean(g xhat)). The shared scale moves r and both xhats
of the product: dx_j becomes r (1 + rho) (g_j - (1 + rho)**2 xhat_j mean(g xhat)), off by rho r (g_j - 3 xhat_j
mean(g xhat)) to first order. With T_j = |g_j| + |xhat_j| |mean(g xhat)| (r T_j >= |dx_j|):

    shared scale                c_r r (|g_j| + 3 |xhat_j| |mean(g xhat)|)
    the mean's own sum          (s(M) + 2) u r |xhat_j| mean|g xhat|
    the elements' own errors    r (e_j |mean(g xhat)| + |xhat_j| mean(|g| e))
    the formula's last steps    5 u r T_j
    D_j, the bound on |d dx_j|, is their sum; dgamma_c = sum(dy * xhat) errs by the shared scales
    sum_rows c_r |sum dy xhat| + sum(|dy| e) + (s(K) + 1) u sum|dy xhat|, as above without the shift.

The identity sum(dx * xhat) = r M mean(g xhat) eps / (ms + eps) holds for RMSNorm as for layer norm (the same
algebra with ms for var); sum(dx) = 0 does not (nothing is centred). Its bound is sum(D |xhat|) plus the
reference xhat's own error sum(r T E), as above.

Switchable Normalization (`switchable_bounds`). The statistics groups are the rows (n, c) of the (N, C, S) view,
but a row's mean and var mix in the layer statistics (over the C S values of sample n) and the batch statistics
(over the N S values of channel c). The same first-order analysis holds with the conditioning taken over the
largest group a row's statistics depend on: A_row = max|x| over sample n and channel c together (the running
mean, in eval mode, counted in), kappa = A_row * r, and s over the largest count M = max(S, C S, N S):

    mean:        r |d mean| <= c_mu = (s(M) + 8) u kappa      each mean_k errs by (s(M_k) + 2) u A_k <= that
                 of A_row; mixing them with weights (softmaxed to within a few u) that sum to 1 adds a few u
    rstd:        |d r| / r <= c_r = (s(M) + 8) u (1 + kappa)  each var_k (two-pass about its own mean) errs by
                 (s(M_k) + 4) u var_k + 4 u A_k sqrt(var_k); mixed with weights v_k summing to 1, and
                 sum_k v_k sqrt(var_k) <= sqrt(var) (Cauchy-Schwarz), that is (s(M) + 4) u var + 4 u A_row
                 sqrt(var) <= (s(M) + 4 + 4 kappa) u (var + eps)
    own, y:      as above for the four norms, with this kappa

The backward adds gradients from other rows. Per row, a = dmean = -r sum_s g and b = dvar = -0.5 r**2 sum_s
g xhat; every statistic k (instance, layer, batch, with weight w_k, v_k and M_k values) gathers them over its
rows, dmean_k = w_k sum a, dvar_k = v_k sum b, and sends back to every element of its group
(dmean_k + 2 dvar_k (x_j - mean_k)) / M_k, with |x_j - mean_k| <= 2 A_k. So

    d a        <= r (c_r |sum g| + (s(S) + 2) u sum|g|)
    d b        <= 0.5 r**2 (3 c_r |sum g xhat| + c_mu |sum g| + sum(|g| e) + (s(S) + 2) u sum|g xhat|)
                  (r**2 and xhat both scale with the shared rho; the shift of xhat moves sum g xhat by
                  d sum g; the elements' own errors; the row sum)
    d dmean_k  <= w_k (sum d a + (s(rows) + 2) u sum|a|),   d dvar_k likewise with v_k and b
    each path  (d dmean_k + 4 A_k d dvar_k + (s(M_k) + 6) u (|dmean_k| + 4 A_k |dvar_k|)) / M_k
               (the last term: the roundings of mean_k, of x_j - mean_k and of the products)
    direct     (c_r + 2 u) r |g_j|, and 4 u times the magnitudes of the four terms added
    D_j, the bound on |d dx_j|, is their sum. dgamma and dbeta are the four norms' bounds with rows as groups.

The mixing weights: dmean_weight_j = w_j (dw_j - sum_k w_k dw_k), with dw_k = sum over all rows of a mean_k,
and dvar_weight likewise with dv_k = sum of b var_k: sums over every element of x. Their errors are the rows'
d a |mean_k| summed over the N C rows; each statistic's own error d mean_k = (s(M_k) + 2) u A_k times the
signed sum of a over the rows it feeds (it is one number for all of them); and (s(N C) + 2) u sum |a mean_k|
for the sum itself (likewise d b var_k, d var_k, |b var_k|); the softmax's Jacobian then gives
w_j (d dw_j + sum_k w_k d dw_k) + 6 u w_j (|dw_j| + sum_k w_k |dw_k|) (the weights' own error and the
products). Neither per-row identity holds for it: the mixed statistics are neither centred nor scaled per row.
But moving all of x by a constant moves every mean_k by it (and so the mixed mean: the weights sum to 1) and no
variance, so sum(dx) over the whole tensor is 0 for the exact dx, and a computed one misses it by at most
sum(D) over every element.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .staged import SWITCHABLE_KINDS, Layout

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
    gamma's, dmean_weight and dvar_weight (switchable norm) (3,); sum_dx and sum_dx_xhat are per statistics group
    (the view's keepdims shape). A tensor or identity the norm does not have is None."""

    y: np.ndarray
    dx: np.ndarray
    kappa: np.ndarray  # per statistics group, as the view's keepdims shape
    y_relative: float  # the largest bound on y relative to y's scale |gamma| (1 + |xhat|) + |beta|, judged groups
    dgamma: np.ndarray | None = None
    dbeta: np.ndarray | None = None
    dmean_weight: np.ndarray | None = None
    dvar_weight: np.ndarray | None = None
    sum_dx: np.ndarray | None = None
    sum_dx_xhat: np.ndarray | None = None
    sum_dx_all: np.ndarray | None = None  # a scalar: sum(dx) over the whole tensor

    def of(self, tensor: str) -> np.ndarray:
        """The bound of a tensor by its name: "y", "dx", "dgamma", ..."""
        return getattr(self, tensor)

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


def _unjudged(c_mu, c_r, kappa):
    """c_mu and c_r, inf in groups where no digit of xhat is guaranteed in this dtype (float32 at kappa ~ 1e6)
    or that are not finite: any answer, inf and NaN included, is as good as another, so they are not judged."""
    unjudged = (c_mu >= 1) | (c_r >= 1) | ~np.isfinite(kappa)
    return np.where(unjudged, np.inf, c_mu), np.where(unjudged, np.inf, c_r)


def _xhat_and_y(cache: dict, u: float, kappa, c_mu, c_r) -> tuple:
    """(xhat, |xhat|, e_j, E_j) in the statistics view, and the bound on y in x's shape."""
    lay: Layout = cache["layout"]
    xhat = cache["xhat"].reshape(lay.view_shape)
    ax_hat = np.abs(xhat)
    own = 4 * u * (kappa + ax_hat)  # e_j
    err_xhat = c_mu + c_r * ax_hat + own  # E_j
    gamma_b = cache["gamma"].reshape(lay.affine_broadcast)
    beta = np.abs(cache["beta"]).reshape(lay.affine_broadcast) if "beta" in cache else 0.0
    xhat_x = xhat.reshape(lay.x_shape)
    y = np.abs(gamma_b) * err_xhat.reshape(lay.x_shape) + 2 * u * (np.abs(gamma_b * xhat_x) + beta)
    return xhat, ax_hat, own, err_xhat, y


def _affine(lay: Layout, dy, xhat, own, u: float, c_mu, c_r) -> tuple:
    """(dgamma, dbeta): the sums of dy * xhat and of dy over every axis gamma does not vary along, with the
    shared errors of each statistics group summed over the part of it that feeds each affine element."""
    xhat_x = xhat.reshape(lay.x_shape)
    k = xhat_x.size // max(1, math.prod(lay.affine_shape))
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
    return dgamma, dbeta


@np.errstate(invalid="ignore", over="ignore")
def centred_bounds(cache: dict, dy: np.ndarray, dtype) -> dict:
    """The four norms of the family, in one dtype (the derivation above)."""
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
    c_mu, c_r = _unjudged(c_mu, c_r, kappa)
    xhat, ax_hat, own, err_xhat, y = _xhat_and_y(cache, u, kappa, c_mu, c_r)

    def mean(a):
        return a.sum(axis=ax, keepdims=True) / m

    g = (dy * cache["gamma"].reshape(lay.affine_broadcast)).reshape(lay.view_shape)
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
    dgamma, dbeta = _affine(lay, dy, xhat, own, u, c_mu, c_r)
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


@np.errstate(invalid="ignore", over="ignore")
def rms_bounds(cache: dict, dy: np.ndarray, dtype) -> dict:
    """RMSNorm, in one dtype (the derivation above): no shared shift, and a shared scale free of kappa."""
    lay: Layout = cache["layout"]
    ax = lay.reduce_axes
    u = unit_roundoff(dtype)
    m = lay.count
    s_m = roundings(m)
    x = cache["x"]
    r = np.abs(cache["irms"])
    big_a = np.max(np.abs(x), axis=ax, keepdims=True, initial=0.0)
    # nothing cancels in ms: the statistic is as well conditioned as a sum of squares can be (kappa 1 for the
    # report; max|x| * r <= sqrt(M) always); a row that is not finite, or all zeros with eps = 0, is not judged
    conditioning = np.where(np.isfinite(big_a * r), 1.0, np.inf)
    c_mu = np.zeros_like(r)
    c_r = (s_m + 4) * u * np.ones_like(r)  # per row: the shared scale of xhat
    c_mu, c_r = _unjudged(c_mu, c_r, conditioning)
    xhat, ax_hat, own, err_xhat, y = _xhat_and_y(cache, u, 0.0, c_mu, c_r)

    def mean(a):
        return a.sum(axis=ax, keepdims=True) / m

    g = dy * cache["gamma"].reshape(lay.affine_broadcast)
    mean_gx = np.abs(mean(g * xhat))
    ag = np.abs(g)
    terms = ag + ax_hat * mean_gx  # T_j
    dx = r * (
        c_r * (ag + 3 * ax_hat * mean_gx)
        + (s_m + 2) * u * ax_hat * mean(ag * ax_hat)
        + own * mean_gx
        + ax_hat * mean(ag * own)
        + 5 * u * terms
    )  # D_j
    dgamma, _ = _affine(lay, dy, xhat, own, u, c_mu, c_r)
    return dict(
        y=y,
        dx=dx,
        dgamma=dgamma,
        sum_dx_xhat=(dx * ax_hat).sum(axis=ax, keepdims=True),
        xhat_term=(r * terms * err_xhat).sum(axis=ax, keepdims=True),
        kappa=conditioning,
    )


@np.errstate(invalid="ignore", over="ignore")
def switchable_bounds(cache: dict, dy: np.ndarray, dtype) -> dict:
    """Switchable Normalization, in one dtype (the derivation above): rows as the statistics groups, kappa over
    the sample and the channel a row's statistics mix in, and the paths through the layer and batch statistics."""
    lay: Layout = cache["layout"]
    stages = cache["stages"]
    u = unit_roundoff(dtype)
    n, c, s = lay.view_shape
    x = cache["x"].reshape(lay.view_shape)
    ax_x = np.abs(x)
    r = np.abs(cache["ivar"])  # (N, C, 1)
    a_in = np.max(ax_x, axis=2, keepdims=True, initial=0.0)
    a_ln = np.max(a_in, axis=1, keepdims=True, initial=0.0)
    a_bn = np.maximum(np.max(a_in, axis=0, keepdims=True, initial=0.0), np.abs(cache["mean_bn"]))
    largest = {"in": a_in, "ln": a_ln, "bn": a_bn}
    s_max = roundings(max(stages.count(k) for k in largest))
    kappa = np.maximum(a_ln, a_bn) * r
    c_mu = (s_max + 8) * u * kappa
    c_r = (s_max + 8) * u * (1 + kappa)
    c_mu, c_r = _unjudged(c_mu, c_r, kappa)
    xhat, ax_hat, own, _, y = _xhat_and_y(cache, u, kappa, c_mu, c_r)

    g = (dy * cache["gamma"].reshape(lay.affine_broadcast)).reshape(lay.view_shape)
    ag = np.abs(g)
    s_s = roundings(s)

    def row_sum(a):
        return a.sum(axis=2, keepdims=True)

    a = -r * row_sum(g)  # dmean per row
    b = -0.5 * r**2 * row_sum(g * xhat)  # dvar per row
    da = r * (c_r * np.abs(row_sum(g)) + (s_s + 2) * u * row_sum(ag))
    db = (
        0.5
        * r**2
        * (
            3 * c_r * np.abs(row_sum(g * xhat))
            + c_mu * np.abs(row_sum(g))
            + row_sum(ag * own)
            + (s_s + 2) * u * row_sum(ag * ax_hat)
        )
    )
    direct = r * ag
    dx = (c_r + 2 * u) * direct
    magnitudes = direct
    w, v = cache["w"], cache["v"]
    dw_err, dv_err, dw_abs, dv_abs = np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3)
    rows_sum = {"in": (), "ln": (1,), "bn": (0,)}  # the rows each statistic gathers its gradient from
    for kind, (_, k) in SWITCHABLE_KINDS.items():
        axes = rows_sum[kind]
        m_k = stages.count(kind)
        big_a = largest[kind]
        rows = math.prod(lay.view_shape[i] for i in axes)
        s_rows = roundings(rows) + 2
        dmean_k = w[k] * a.sum(axis=axes, keepdims=True)
        dvar_k = v[k] * b.sum(axis=axes, keepdims=True)
        d_dmean = w[k] * (da.sum(axis=axes, keepdims=True) + s_rows * u * np.abs(a).sum(axis=axes, keepdims=True))
        d_dvar = v[k] * (db.sum(axis=axes, keepdims=True) + s_rows * u * np.abs(b).sum(axis=axes, keepdims=True))
        size = np.abs(dmean_k) + 4 * big_a * np.abs(dvar_k)
        dx = dx + (d_dmean + 4 * big_a * d_dvar + (roundings(m_k) + 6) * u * size) / m_k
        magnitudes = magnitudes + size / m_k
        # the weight gradients: dw_k = sum_rows a mean_k, dv_k = sum_rows b var_k
        mean_k, var_k = np.abs(cache[f"mean_{kind}"]), np.abs(cache[f"var_{kind}"])
        d_mean_k = (roundings(m_k) + 2) * u * big_a
        d_var_k = (roundings(m_k) + 4) * u * var_k + 4 * u * big_a * np.sqrt(var_k)
        s_all = roundings(n * c) + 2
        # a statistic's own error is shared by the rows it feeds: it meets their gradients' signed sum
        dw_err[k] = np.sum(da * mean_k) + np.sum(np.abs(a.sum(axis=axes, keepdims=True)) * d_mean_k)
        dw_err[k] += s_all * u * np.sum(np.abs(a) * mean_k)
        dv_err[k] = np.sum(db * var_k) + np.sum(np.abs(b.sum(axis=axes, keepdims=True)) * d_var_k)
        dv_err[k] += s_all * u * np.sum(np.abs(b) * var_k)
        dw_abs[k] = np.abs(np.sum(a * cache[f"mean_{kind}"]))
        dv_abs[k] = np.abs(np.sum(b * cache[f"var_{kind}"]))
    dx = dx + 4 * u * magnitudes  # the four terms added
    dgamma, dbeta = _affine(lay, dy, xhat, own, u, c_mu, c_r)

    def softmax_backward(weights, err, size):  # d_j = weights_j (dw_j - sum_k weights_k dw_k)
        return weights * (err + np.sum(weights * err)) + 6 * u * weights * (size + np.sum(weights * size))

    return dict(
        y=y,
        dx=dx.reshape(lay.x_shape),
        dgamma=dgamma,
        dbeta=dbeta,
        dmean_weight=softmax_backward(w, dw_err, dw_abs),
        dvar_weight=softmax_backward(v, dv_err, dv_abs),
        sum_dx_all=dx.sum(),
        kappa=kappa,
    )


def bounds(cache: dict, dy, dtype) -> Bounds:
    """The bounds for an implementation computing in `dtype`, from the float64 staged forward's cache (for
    the layer's inputs) and the upstream gradient dy. SAFETY * (its rounding + the reference's own). The
    norm's registry entry (verify.norms) says which derivation applies."""
    from .norms import get

    one_dtype = get(cache["layout"].norm).error_bounds
    dy = np.asarray(dy, dtype=np.float64)
    ref = one_dtype(cache, dy, np.float64)
    test = ref if np.dtype(dtype) == np.float64 else one_dtype(cache, dy, dtype)
    with np.errstate(invalid="ignore"):
        total = {k: SAFETY * (test[k] + ref[k]) for k in test if k not in ("kappa", "xhat_term")}
        if "sum_dx_xhat" in total:  # the identity is taken with the reference's xhat
            total["sum_dx_xhat"] += SAFETY * ref["xhat_term"]
    # 0 * inf in an unjudged group (a zero dy, say) is still unjudged
    total = {k: np.where(np.isnan(v), np.inf, v) for k, v in total.items()}
    lay: Layout = cache["layout"]
    scale = np.abs(cache["gamma"]).reshape(lay.affine_broadcast) * (1 + np.abs(cache["xhat"]))
    if "beta" in cache:
        scale = scale + np.abs(cache["beta"]).reshape(lay.affine_broadcast)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.where(np.isfinite(total["y"]) & (scale > 0), total["y"] / scale, 0.0)
    return Bounds(**total, kappa=test["kappa"], y_relative=float(np.nanmax(relative, initial=0.0)))
