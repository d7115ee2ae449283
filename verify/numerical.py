"""Finite differences: the cs231n ``eval_numerical_gradient_array`` idea, and the extrapolated, error-estimated
derivatives the verifier uses.

The verifier's derivative of phi(t) = sum(dy * forward(x + t v)) at t = 0 takes central differences

    D(h) = (phi(h) - phi(-h)) / (2 h) = phi'(0) + phi'''(0) h**2 / 6 + O(h**4)

at h, h/2 and h/4 and extrapolates twice (Richardson): R(h) = (4 D(h/2) - D(h)) / 3 is accurate to O(h**4).
The value is R(h/2); its error estimate is |R(h) - R(h/2)|, which is about 15 times its truncation error
once h is inside the function's radius of analyticity (the step is chosen that way, see
verify.finite_differences.step_fraction), so the estimate is conservative. Rounding: if each phi is computed
to within nu, R(h/2) carries at most (16 + 2) / 3 * nu / h = 6 nu / h of it (`ROUNDING_GAIN`).

Steps are powers of two of at least 16 ulps of the perturbed value, so x +- h/4 is exactly representable
unless it crosses a power of two; the difference is divided by the step actually taken.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ROUNDING_GAIN = 6.0  # R(h/2) = (4 D(h/4) - D(h/2)) / 3 amplifies an error nu in phi to 6 nu / h


def default_step(x: np.ndarray) -> float:
    """h = cbrt(eps of x's dtype) * scale of x: balances truncation (~h**2) against rounding (~eps / h)."""
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    scale = max(1.0, float(np.max(np.abs(x), initial=0.0)))
    return float(np.cbrt(np.finfo(dtype).eps)) * scale


def exact_step(target, value, dtype) -> np.ndarray:
    """The largest power of two <= target that is at least 16 ulps of |value| + target in dtype, so that
    value +- step / 4 (and step / 2, and step) are exact in dtype unless they cross a power of two, where they
    are off by at most half an ulp of value. Elementwise."""
    target = np.asarray(target, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.exp2(np.floor(np.log2(target)))
    floor = ulps_power_of_two(np.abs(np.asarray(value, dtype=np.float64)) + target, dtype)
    return np.where(np.isfinite(step) & (step > 0), np.maximum(step, floor), floor)


def ulps_power_of_two(magnitude, dtype) -> np.ndarray:
    """The smallest power of two at least 16 ulps of |magnitude| in dtype, elementwise: a multiple of that
    added to a value of at most that magnitude is exact in dtype (unless the sum crosses a power of two)."""
    floor = 16 * np.spacing(np.abs(np.asarray(magnitude, dtype=np.float64)).astype(dtype)).astype(np.float64)
    return np.exp2(np.ceil(np.log2(floor)))


def richardson(phi: Callable[[float], float], h: float, taken: Callable[[float], float] | None = None) -> tuple:
    """phi'(0) from central differences at h, h/2, h/4, extrapolated: (value, error estimate). taken(t) is
    the offset a nominal step t really moves the input by, when rounding may change it."""
    taken = taken or (lambda t: t)
    d = [(phi(s) - phi(-s)) / (taken(s) - taken(-s)) for s in (h, h / 2, h / 4)]
    r1 = (4 * d[1] - d[0]) / 3
    r2 = (4 * d[2] - d[1]) / 3
    return r2, abs(r1 - r2)


def numerical_gradient(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, df: np.ndarray, h: float | None = None
) -> np.ndarray:
    """Gradient of sum(f(x) * df) with respect to x by central differences, one element at a time.

    f: a function of x alone (close over the other inputs); df: the upstream gradient, f(x)'s shape.
    f is called on copies of x in x's dtype (float64 for non-float x); x itself is never modified. The step
    divided by is the one actually taken after rounding to that dtype. Returns float64, x's shape.
    """
    xa = np.asarray(x)
    x = np.array(xa, dtype=xa.dtype if xa.dtype.kind == "f" else np.float64)  # a private copy
    df = np.asarray(df, dtype=np.float64)
    h = default_step(x) if h is None else float(h)
    grad = np.empty(x.shape)
    flat = x.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + h
        up = float(flat[i])
        plus = np.asarray(f(x.copy()), dtype=np.float64)
        flat[i] = orig - h
        down = float(flat[i])
        minus = np.asarray(f(x.copy()), dtype=np.float64)
        flat[i] = orig
        grad.reshape(-1)[i] = np.sum((plus - minus) * df) / (up - down)
    return grad


def directional_derivative(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, df: np.ndarray, u: np.ndarray, h: float | None = None
) -> float:
    """d/dt sum(f(x + t u) * df) at t = 0 by central differences: compare with sum(grad * u).

    One pair of calls whatever the size of x, so large inputs can be checked along random directions u.
    """
    x = np.asarray(x)
    h = default_step(x) if h is None else float(h)
    plus = np.asarray(f((x + h * u).astype(x.dtype)), dtype=np.float64)
    minus = np.asarray(f((x - h * u).astype(x.dtype)), dtype=np.float64)
    return float(np.sum((plus - minus) * np.asarray(df, dtype=np.float64)) / (2.0 * h))
