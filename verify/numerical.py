"""Central finite differences: the cs231n ``eval_numerical_gradient_array`` idea, and a directional variant."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def default_step(x: np.ndarray) -> float:
    """h = cbrt(eps of x's dtype) * scale of x: balances truncation (~h**2) against rounding (~eps / h)."""
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    scale = max(1.0, float(np.max(np.abs(x), initial=0.0)))
    return float(np.cbrt(np.finfo(dtype).eps)) * scale


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
