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
most 2 * n * exp(-lambda**2 / 2); lambda = 10 makes that 2e-16 for a million terms. So a sum of n terms
counts s(n) = min(n, 10 * sqrt(n)) roundings.

Per statistics group of M values, with A = max|x| over the group, r = rstd = 1 / sqrt(var + eps) and the
condition number kappa = A * r (how much larger the terms that cancel in x - mean are than the result):

    mean:        |d mu| <= (s(M) + 1) u A                          (sum, then the division)
    x - mean:    |d xmu_j| <= (s(M) + 3) u A                       (the mean's error, and the subtraction)
    rstd:        |d r| / r <= (s(M) + 4) u (1 + kappa)             two-pass: the errors of xmu enter var
                 through sum(2 xmu d xmu), where the mean's common error cancels (sum xmu = 0) and the rest
                 is <= 4 u A sigma, i.e. 4 u kappa relative to var + eps; Welford-type updates err by about
                 s(M) u kappa (Chan, Golub and LeVeque, 1983); then a sqrt and a division.
    xhat:        |d xhat_j| <= E_j = c (1 + |xhat_j|),  c = (s(M) + 5) u (1 + kappa)
                 (r |d xmu_j| + |xhat_j| |d r| / r, each term rounded up to c)
    y:           |d y_j| <= |gamma| E_j + 2 u (|gamma xhat_j| + |beta|)

The backward, with g = dy * gamma and means over the group, dx_j = r (g_j - mean(g) - xhat_j mean(g xhat)):

    rounding of that formula           (s(M) + 4) u r T_j,  T_j = |g_j| + mean|g| + |xhat_j| mean|g xhat|
    the errors of xhat it is fed        r (E_j |mean(g xhat)| + |xhat_j| mean(|g| E))
    the error of r                      |d r| / r * r T_j
    so |d dx_j| <= D_j = c r W_j,  W_j = 2 T_j + (1 + |xhat_j|) mean|g xhat| + |xhat_j| mean(|g| (1 + |xhat|))

The staged backward (dvar, dmu, ...) computes the same quantities through intermediate terms of the same
sizes (r |g|, r |g xhat|), so the bound covers it. With K the terms of each affine sum (every axis gamma
does not vary along):

    dgamma_c = sum(dy * xhat):  sum(|dy| E) + (s(K) + 1) u sum|dy xhat|
    dbeta_c  = sum(dy):         (s(K) + 1) u sum|dy|

The identities per group, sum(dx) = 0 and sum(dx * xhat) = eps term, hold exactly for the exact dx, so a
computed dx misses them by at most sum(D) and sum(D |xhat|); the second is taken with the reference's xhat,
whose own error adds sum(|dx| E) with |dx_j| <= r T_j and float64's E.

The float64 reference itself errs by the same bounds with float64's u, so a comparison allows the sum of
the two, times SAFETY = 4 for the second-order terms and the constants rounded off above. A real mistake
changes a tensor by a fraction of its size (1/M for the unbiased variance, all of it for a missing path),
far outside these bounds unless the input is so ill-conditioned (float32 at kappa 1e4) that no test in that
dtype can tell; `Bounds.loose` says when that is so. Where c >= 1 (float32 at kappa ~ 1e6: two values
a few ulps apart) no digit of xhat is guaranteed, a correct two-pass float32 implementation may return inf,
and the group is not judged at all (`Bounds.unjudged`).
"""

from __future__ import annotations

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
    dtype: np.dtype

    @property
    def loose(self) -> bool:
        """True when the input is so ill-conditioned for the dtype that y may be off by 1% and still pass."""
        return bool(np.nanmax(self.kappa, initial=0.0) * unit_roundoff(self.dtype) * 1e2 > 1e-2)

    @property
    def unjudged(self) -> int:
        """Elements of x in groups where the dtype guarantees no digit of xhat: not judged at all."""
        return int(np.isinf(self.y).sum())


@np.errstate(invalid="ignore", over="ignore")
def _one_dtype(cache: dict, dy: np.ndarray, dtype) -> dict:
    lay: Layout = cache["layout"]
    ax = lay.reduce_axes
    u = unit_roundoff(dtype)
    m = lay.count
    x = cache["x"].reshape(lay.view_shape)
    r = np.abs(cache["ivar"])
    big_a = np.max(np.abs(x), axis=ax, keepdims=True) if x.size else np.zeros_like(r)
    kappa = big_a * r
    c = (roundings(m) + 5) * u * (1 + kappa)  # per group
    # c >= 1: not one correct digit of xhat is guaranteed in this dtype (float32 at kappa ~ 1e6), so any
    # answer, inf and NaN included, is as good as another: such groups are not judged
    c = np.where(c >= 1, np.inf, c)

    xhat = cache["xhat"].reshape(lay.view_shape)
    gamma = np.abs(cache["gamma"]).reshape(lay.affine_broadcast)
    beta = np.abs(cache["beta"]).reshape(lay.affine_broadcast)
    err_xhat = c * (1 + np.abs(xhat))  # E_j
    err_xhat_x = err_xhat.reshape(lay.x_shape)
    xhat_x = xhat.reshape(lay.x_shape)
    y = gamma * err_xhat_x + 2 * u * (gamma * np.abs(xhat_x) + beta)

    def mean(a):
        return a.sum(axis=ax, keepdims=True) / m

    g = np.abs(dy * gamma).reshape(lay.view_shape)
    ax_hat = np.abs(xhat)
    g_xhat = mean(g * ax_hat)
    terms = g + mean(g) + ax_hat * g_xhat  # T_j
    weights = 2 * terms + (1 + ax_hat) * g_xhat + ax_hat * mean(g * (1 + ax_hat))  # W_j
    dx = c * r * weights  # D_j

    k = x.size // max(1, int(np.prod(lay.affine_shape)))
    axes = lay.affine_reduce_axes
    ady = np.abs(dy)
    s_k = roundings(k) + 1
    dgamma = (ady * err_xhat_x).sum(axis=axes).reshape(lay.affine_shape)
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
    test = _one_dtype(cache, dy, dtype)
    ref = _one_dtype(cache, dy, np.float64)
    with np.errstate(invalid="ignore"):
        total = {k: SAFETY * (test[k] + ref[k]) for k in test if k not in ("kappa", "xhat_term")}
        total["sum_dx_xhat"] += SAFETY * ref["xhat_term"]  # the identity is taken with the reference's xhat
    # 0 * inf in an unjudged group (a zero dy, say) is still unjudged
    total = {k: np.where(np.isnan(v), np.inf, v) for k, v in total.items()}
    return Bounds(**total, kappa=test["kappa"], dtype=np.dtype(dtype))
