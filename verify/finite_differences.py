"""The finite-difference rows of verify.check: the implementation's analytic gradient against extrapolated
central differences of its own forward, with steps and tolerances that follow the function.

phi(t) = sum(dy * forward(x + t e_i)) for one element i of a statistics group with M values and
sigma = sqrt(var + eps): moving x_i by t moves the group's variance to

    var(t) + eps = (var + eps) + 2 t xmu_i / M + t**2 (M - 1) / M**2,

a quadratic whose two roots (complex, or one double root when eps = 0) have |t| = sigma M / sqrt(M - 1),
the product of the roots. rstd = (var + eps)**-1/2 and so phi are analytic in the disk of that radius R
and nowhere beyond it: a group of two values (R = 2 sigma) or a channel with little spread needs a step
that small, and a global step (cbrt(eps) * max|x|) is far too large there. The step is h = R * u**(1/5) at
most R / 4 (`step_fraction`; a power of two, see verify.numerical.exact_step), so the Taylor terms of D(h)
shrink by (h / R)**2 <= 1/16 an order and the Richardson estimate of verify.numerical is reliable. gamma and
beta enter y linearly: any step is exact but for rounding, and h = max(1, |gamma_c|) / 4 keeps rounding small.

Every norm's statistic is a quadratic form Q in x (var, or RMSNorm's ms, or Switchable Norm's mix of variances),
so along any direction v, Q(x + t v) + eps = (Q(x) + eps) + 2 t B(x, v) + t**2 Q(v), never 0 for real t when
eps > 0: its roots are complex conjugates with |t| = sqrt((Q(x) + eps) / Q(v)), and phi is analytic within the
smallest such radius over the groups v moves. For one element, Q(e_i) is (M - 1) / M**2 for the four norms
(above), 1 / M for RMSNorm (R = sqrt(M) * rms), and for Switchable Norm, whose element i of row (n, c) moves the
instance statistics of its row, the layer statistics of every row of sample n and the batch statistics of
every row of channel c, sum_k v_k (M_k - 1) / M_k**2 in its own row, v_1 (C S - 1) / (C S)**2 in the other
rows of sample n and v_2 (N S - 1) / (N S)**2 in those of channel c: R is the smallest of the three radii.

The mixing logits of Switchable Norm enter through softmaxes: sum_k c_k exp(a_k + t d_k) with every c_k > 0 (the
softmax's denominator, and var + eps = sum_k exp(...) (var_k + eps) / sum_k exp(...)) has no zero while |Im t|
ptp(d) < pi, since then the rotated terms lie within a half-plane. So R >= pi / ptp(d), pi for one logit, and the
step is step_fraction of that.

A random direction v (large inputs) is drawn per group in units of sigma, v = z * sigma with z standard
normal; var(t) + eps = sigma**2 (1 + 2 rho t + q t**2) with q = Q(z) (for the four norms the variance of z over
the group), whose roots have |t| = 1 / sqrt(q): h = step_fraction / sqrt(max q). A direction is rounded so that
x + t v is exact for the steps used, except where an element crosses a power of two; the tolerance adds what
that half ulp can move.

Tolerance of one comparison: the analytic side's own error bound (verify.bounds, for the dtype of the
gradient under test) + 2 x the Richardson estimate + the rounding of phi (6 nu / h, with nu the bound on
the rounding of sum(dy * y) in the forward's dtype over the elements a perturbation can change, plus the
float64 sum itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import bounds as error_bounds
from . import compare
from .numerical import ROUNDING_GAIN, exact_step, richardson, ulps_power_of_two
from .report import Row
from .staged import Layout

AFFINE, MIXING = "affine", "mixing"  # kinds of parameters (verify.norms)


def _entry(norm: str):
    """The norm's registry entry (verify.norms imports this module: a late import)."""
    from .norms import get as registry_entry

    return registry_entry(norm)


ESTIMATE_FACTOR = 2.0


@dataclass
class Target:
    """What one finite-difference row differentiates: argument `arg` of forward (0 x, then the norm's parameters
    in order: 1 gamma, 2 beta, ...)."""

    name: str  # "dx", "dgamma", "dbeta", "dmean_weight", ...
    arg: int
    kind: str  # "x", "affine" or "mixing" (verify.norms), for Layout.describe and the steps
    analytic: np.ndarray  # the implementation's gradient, float64, in the argument's shape
    bound: np.ndarray  # verify.bounds of the analytic gradient, same shape
    reference: np.ndarray  # the staged graph's gradient, same shape: the scale of the true one


@dataclass
class Budget:
    full_limit: int  # every element up to this many
    directions: int  # else this many random directions
    sampled: int  # plus this many random elements


def step_fraction(dtype) -> float:
    """h / R: truncation of R(h/2) falls like (h / R)**4 and rounding grows like u / h, which balance near
    h / R = u**(1/5) (0.036 for float32, 6e-4 for float64); never above 1/4, where the estimate stops being
    reliable."""
    return min(0.25, error_bounds.unit_roundoff(dtype) ** 0.2)


def _sigma(cache: dict) -> np.ndarray:
    """sqrt(var + eps) (or rms) per statistics group, kept for broadcasting against the view."""
    lay: Layout = cache["layout"]
    return 1.0 / np.abs(cache["rstd"]).reshape(lay.stats_broadcast)


def _noise_per_group(lay: Layout, y_bound: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """nu per element of x from the forward: the rounding of sum(dy * y) over its statistics group, the only
    outputs that moving the element changes."""
    group = (np.abs(dy) * y_bound).reshape(lay.view_shape).sum(axis=lay.reduce_axes, keepdims=True)
    return np.broadcast_to(group, lay.view_shape).reshape(lay.x_shape)


def centred_elements(cache: dict, y_bound: np.ndarray, dy: np.ndarray) -> tuple:
    """The four norms: R = sigma M / sqrt(M - 1) per group (the module docstring), and the group's rounding."""
    lay: Layout = cache["layout"]
    m = max(lay.count, 2)
    radius = _sigma(cache) * m / np.sqrt(m - 1)
    return np.broadcast_to(radius, lay.view_shape).reshape(lay.x_shape), _noise_per_group(lay, y_bound, dy)


def rms_elements(cache: dict, y_bound: np.ndarray, dy: np.ndarray) -> tuple:
    """RMSNorm: ms(t) + eps = (ms + eps) + 2 t x_i / M + t**2 / M, roots of modulus sqrt(M) * rms."""
    lay: Layout = cache["layout"]
    radius = _sigma(cache) * np.sqrt(max(lay.count, 1))
    return np.broadcast_to(radius, lay.x_shape), _noise_per_group(lay, y_bound, dy)


def switchable_elements(cache: dict, y_bound: np.ndarray, dy: np.ndarray) -> tuple:
    """Switchable Norm: the smallest radius of the rows an element moves (the module docstring), and the
    rounding of the outputs of its sample and its channel, the rows whose statistics it enters."""
    lay: Layout = cache["layout"]
    stages = cache["stages"]
    v = cache["v"]
    moved = {k: (stages.count(k) - 1) / stages.count(k) ** 2 for k in ("in", "ln", "bn")}
    sigma = _sigma(cache)  # (N, C, 1)
    with np.errstate(divide="ignore"):
        own = sigma / np.sqrt(v[0] * moved["in"] + v[1] * moved["ln"] + v[2] * moved["bn"])
        same_n = np.min(sigma, axis=1, keepdims=True) / np.sqrt(v[1] * moved["ln"])
        same_c = np.min(sigma, axis=0, keepdims=True) / np.sqrt(v[2] * moved["bn"])
    radius = np.minimum(np.minimum(own, same_n), same_c)
    outputs = (np.abs(dy) * y_bound).reshape(lay.view_shape)
    noise = outputs.sum(axis=(1, 2), keepdims=True) + outputs.sum(axis=(0, 2), keepdims=True)
    return (
        np.broadcast_to(radius, lay.view_shape).reshape(lay.x_shape),
        np.broadcast_to(noise, lay.view_shape).reshape(lay.x_shape),
    )


def centred_quadratic(cache: dict, v: np.ndarray) -> np.ndarray:
    """Q(v) per group: the variance of v over each statistics group."""
    lay: Layout = cache["layout"]
    return v.reshape(lay.view_shape).var(axis=lay.reduce_axes, keepdims=True)


def rms_quadratic(cache: dict, v: np.ndarray) -> np.ndarray:
    """Q(v) per row: the mean square of v."""
    lay: Layout = cache["layout"]
    return (v**2).mean(axis=lay.reduce_axes, keepdims=True)


def switchable_quadratic(cache: dict, v: np.ndarray) -> np.ndarray:
    """Q(v) per row: the variances of v over each row, sample and channel, mixed with the weights v_k (the batch
    ones too in eval mode, where they are constants: a larger Q, a smaller radius, a safe step)."""
    lay: Layout = cache["layout"]
    vv = v.reshape(lay.view_shape)
    weights = cache["v"]
    return (
        weights[0] * vv.var(axis=2, keepdims=True)
        + weights[1] * vv.var(axis=(1, 2), keepdims=True)
        + (weights[2] * vv.var(axis=(0, 2), keepdims=True))
    )


@dataclass
class Probe:
    """The implementation's forward at the checked inputs, once for every finite-difference row: y, which
    outputs are finite, and the rounding nu of phi = sum(dy * y) that every row's tolerance adds."""

    forward_y: Callable  # [x, *params] in fd_dtype -> y as float64, in x's shape
    args: list  # the inputs in fd_dtype
    dtype: np.dtype  # fd_dtype
    finite: np.ndarray  # outputs finite at the inputs: phi sums these only
    dy: np.ndarray  # dy, 0 where the output is not finite
    y_bound: np.ndarray  # verify.bounds of y in fd_dtype, 0 where the output is not finite
    summed: float  # the rounding of the float64 sum of dy * y itself

    @classmethod
    def at(cls, forward_y: Callable, inputs: list, dy: np.ndarray, y_bound: np.ndarray, dtype) -> Probe:
        args = [None if a is None else np.array(a, dtype=dtype) for a in inputs]
        y0 = forward_y(args)
        # outputs that are not finite at x (a NaN group) are left out of phi, so one bad group cannot make
        # every difference NaN; its own elements are not judged (their bound is inf)
        finite = np.isfinite(y0)
        dy_used = np.where(finite, dy, 0.0)
        summed = error_bounds.roundings(dy.size) * error_bounds.unit_roundoff(np.float64)
        summed *= float(np.sum(np.abs(dy_used * np.where(finite, y0, 0.0))))
        return cls(forward_y, args, np.dtype(dtype), finite, dy_used, np.where(finite, y_bound, 0.0), summed)

    @property
    def noise_all(self) -> float:
        """nu when every group moves."""
        return float(np.sum(np.abs(self.dy) * self.y_bound)) + self.summed


def finite_difference_row(probe: Probe, target: Target, cache: dict, rng: np.random.Generator, budget: Budget) -> Row:
    """One row: target.analytic against finite differences of the probed forward."""
    lay: Layout = cache["layout"]
    check = f"{target.name} vs finite differences"
    fd_dtype, args = probe.dtype, probe.args
    base = args[target.arg]
    n = base.size
    if n == 0 or probe.dy.size == 0:
        return Row(check, True, detail="nothing to check (empty input)")
    bound = target.bound
    if target.kind == "x":
        radius, noise = _entry(lay.norm).fd_elements(cache, probe.y_bound, probe.dy)
        steps = exact_step(radius * step_fraction(fd_dtype), base, fd_dtype)
        noise = noise + probe.summed
    else:
        if target.kind == MIXING:  # analytic within pi of the logits (the module docstring)
            steps = exact_step(np.full(base.shape, np.pi * step_fraction(fd_dtype)), base, fd_dtype)
            seen = np.full(base.shape, probe.finite.all())
        else:  # linear
            steps = exact_step(np.maximum(1.0, np.abs(base)) / 4, base, fd_dtype)
            seen = probe.finite.all(axis=lay.affine_reduce_axes).reshape(base.shape)
        noise = np.full(base.shape, probe.noise_all)
        # a parameter some of whose outputs are not finite: phi cannot see all it does, so it is not judged
        bound = np.where(seen, bound, np.inf)

    def phi_along(direction: np.ndarray) -> Callable[[float], float]:
        def phi(t: float) -> float:
            moved = list(args)
            moved[target.arg] = (base + t * direction).astype(fd_dtype)
            return float(np.sum(np.where(probe.finite, probe.forward_y(moved), 0.0) * probe.dy))

        return phi

    def element(i: int) -> tuple[float, float, float]:
        e = np.zeros(base.shape)
        e.reshape(-1)[i] = 1.0
        h = float(steps.reshape(-1)[i])
        at = float(base.reshape(-1)[i])

        def taken(t: float) -> float:  # the step x_i + t rounds to: exact but where it crosses a power of two
            return float(np.asarray(at + t, dtype=fd_dtype)) - at

        value, estimate = richardson(phi_along(e), h, taken)
        return value, estimate, ROUNDING_GAIN * float(noise.reshape(-1)[i]) / h

    analytic = target.analytic
    if n <= budget.full_limit:
        picks, directions = np.arange(n), 0
        detail = f"every element, steps from {np.nanmin(steps):.1e} to {np.nanmax(steps):.1e}"
    else:
        picks = rng.choice(n, size=min(budget.sampled, n), replace=False)
        directions = budget.directions
        detail = f"{directions} directions + {len(picks)} elements"

    worst = None  # (excess, error, tolerance, estimate, where, rel)

    def consider(exact, value, tol, estimate, where):
        nonlocal worst
        err = abs(exact - value)
        excess = float(compare.over(err, tol))
        if worst is None or excess > worst[0]:
            worst = (excess, err, tol, estimate, where, compare.rel_error(exact, value))

    for i in picks:
        allowed = float(bound.reshape(-1)[i])
        if allowed == np.inf:  # an element whose group is not judged
            continue
        value, estimate, rounding = element(int(i))
        idx = np.unravel_index(int(i), base.shape)
        where = f"[{', '.join(map(str, idx))}] {lay.describe(target.kind, idx)}"
        exact = float(analytic.reshape(-1)[i])
        consider(exact, value, allowed + ESTIMATE_FACTOR * estimate + rounding, estimate, where)
    for _ in range(directions):
        v, h = _DIRECTIONS[target.kind](cache, base, fd_dtype, rng)
        v = np.where(np.isinf(bound), 0.0, v)  # unjudged elements stay put
        value, estimate = richardson(phi_along(v), h)
        # x + t v is exact but where an element crosses a power of two: off by half an ulp there, which moves
        # the difference by |gradient| * ulp / 2 per element (the reference gradient stands for the true one)
        off = np.spacing(np.abs(base).astype(fd_dtype)).astype(np.float64) / 2
        inexact = ROUNDING_GAIN * float(np.sum(np.abs(target.reference) * off)) / h
        rounding = ROUNDING_GAIN * probe.noise_all / h + inexact
        allowed = float(np.sum(np.where(v == 0, 0.0, bound) * np.abs(v)))
        consider(float(np.sum(analytic * v)), value, allowed + ESTIMATE_FACTOR * estimate + rounding, estimate,
                 "random direction")  # fmt: skip
    if worst is None:
        return Row(
            check, True, detail="nothing judged: every group is not finite, or too ill-conditioned for the dtype"
        )
    excess, err, tol, estimate, where, rel = worst
    return Row(
        check,
        bool(excess <= 1),
        err,
        rel,
        where,
        tol=tol,
        ratio=excess,
        estimate=estimate,
        detail=f"{detail}; FD error estimate {estimate:.1e} at the worst element",
    )


def _direction(cache: dict, base: np.ndarray, dtype, rng) -> tuple[np.ndarray, float]:
    """A random direction in units of each group's sigma, rounded so that base + t v is exact; and its step."""
    lay: Layout = cache["layout"]
    sigma = np.broadcast_to(_sigma(cache), lay.view_shape)
    z = rng.standard_normal(lay.view_shape)
    v = (z * sigma).reshape(lay.x_shape)
    # q = Q(v) / sigma**2 per group; the radius is 1 / sqrt(q) at the worst group
    with np.errstate(invalid="ignore", divide="ignore"):
        q = _entry(lay.norm).quadratic(cache, v) / _sigma(cache) ** 2
    radius = 1.0 / np.sqrt(max(float(np.nanmax(q, initial=0.0)), 1e-3))
    h = float(exact_step(radius * step_fraction(dtype), 0.0, np.float64))
    return _exact_direction(v, base, h, dtype), h


def _affine_direction(cache: dict, base: np.ndarray, dtype, rng) -> tuple[np.ndarray, float]:
    v = rng.standard_normal(base.shape) * np.maximum(1.0, np.abs(base))
    return _exact_direction(v, base, 0.25, base.dtype), 0.25


def _mixing_direction(cache: dict, base: np.ndarray, dtype, rng) -> tuple[np.ndarray, float]:
    """Random logits' direction d, and a step within pi / ptp(d) (the module docstring)."""
    v = rng.standard_normal(base.shape)
    radius = np.pi / max(float(np.ptp(v)), 1e-3)
    h = float(exact_step(radius * step_fraction(dtype), 0.0, np.float64))
    return _exact_direction(v, base, h, base.dtype), h


_DIRECTIONS = {"x": _direction, AFFINE: _affine_direction, MIXING: _mixing_direction}


def _exact_direction(v: np.ndarray, base: np.ndarray, h: float, dtype) -> np.ndarray:
    """v rounded to multiples of q / (h / 4), q = 16 ulps of |base| + |h v|: then base +- (h / 2**k) v, k <= 2,
    are exact in dtype (unless they cross a power of two)."""
    unit = ulps_power_of_two(np.abs(base) + np.abs(h * v), dtype) / (h / 4)
    return np.round(v / unit) * unit
