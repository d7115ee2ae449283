"""Central finite differences: the cs231n ``eval_numerical_gradient_array`` idea."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def default_step(x: np.ndarray) -> float:
    """h = cbrt(machine eps) * scale of x: balances truncation (~h**2) against rounding (~eps / h)."""
    scale = max(1.0, float(np.max(np.abs(x), initial=0.0)))
    return float(np.cbrt(np.finfo(np.float64).eps)) * scale


def numerical_gradient(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, df: np.ndarray, h: float | None = None
) -> np.ndarray:
    """Gradient of sum(f(x) * df) with respect to x by central differences, one element at a time.

    f: a function of x alone (close over the other inputs); df: the upstream gradient, f(x)'s shape.
    x is not modified; f sees float64 copies. Returns an array of x's shape, float64.
    """
    x = np.array(x, dtype=np.float64)  # a private copy
    df = np.asarray(df, dtype=np.float64)
    h = default_step(x) if h is None else float(h)
    grad = np.empty_like(x)
    flat = x.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + h
        plus = np.asarray(f(x.copy()), dtype=np.float64)
        flat[i] = orig - h
        minus = np.asarray(f(x.copy()), dtype=np.float64)
        flat[i] = orig
        grad.reshape(-1)[i] = np.sum((plus - minus) * df) / (2.0 * h)
    return grad
