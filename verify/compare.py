"""Tolerances by dtype and the error measures every comparison in the project uses."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Tol(NamedTuple):
    rtol: float
    atol: float


# Kernel output against the float64 staged graph fed the same input values. float64 kernels differ from
# the graph only by summation order (~K * 2**-53 on a row of K values). float32 kernels take their sums in
# float64; some forward loops then compute y in float32 from coefficients rounded once (a few ulps on O(1)
# values), and the backward receives mean and rstd rounded to float32 (as the contract returns them),
# which moves xhat by ~2**-24 * (|mean| * rstd + 1): again a few float32 ulps on O(1) values.
KERNEL = {
    np.dtype(np.float64): Tol(rtol=1e-10, atol=1e-12),
    np.dtype(np.float32): Tol(rtol=1e-5, atol=1e-5),
}

# Central finite differences of a float64 function against its analytic gradient: truncation ~h**2 and
# rounding ~2**-53 / h with h ~ 6e-6 leave ~1e-10 relative; the margin covers curvature of the rstd term.
FINITE_DIFFERENCE = Tol(rtol=1e-6, atol=1e-8)


def kernel_tolerance(dtype) -> Tol:
    return KERNEL[np.dtype(dtype)]


def error(actual, expected) -> np.ndarray:
    """|a - b| in float64, elementwise; 0 where both are NaN or the same infinity (they agree)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        err = np.abs(actual - expected)
    agree = (np.isnan(actual) & np.isnan(expected)) | (np.isinf(actual) & (actual == expected))
    return np.where(agree, 0.0, err)


def over(err, allowed) -> np.ndarray:
    """err / allowed, elementwise: above 1 fails. 0 where err is 0 or allowed is +inf (not judged); inf where
    either is NaN, or allowed is 0 and err is not."""
    err = np.asarray(err, dtype=np.float64)
    allowed = np.asarray(allowed, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where((err == 0) | np.isposinf(allowed), 0.0, err / allowed)
    return np.where(np.isnan(ratio), np.inf, ratio)


def max_abs_error(actual, expected) -> float:
    """max |a - b| (error above); NaN where one side alone is NaN."""
    return float(np.max(error(actual, expected), initial=0.0))


def rel_error(actual, expected) -> float:
    """cs231n's relative error: max |a - b| / max(1e-8, |a| + |b|)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        rel = error(actual, expected) / np.maximum(1e-8, np.abs(actual) + np.abs(expected))
    return float(np.nanmax(rel, initial=0.0))


def norm_rel_error(actual, expected) -> float:
    """max |a - b| / max |b|: the error relative to the tensor's scale, blind to near-zero elements."""
    scale = float(np.nanmax(np.abs(np.asarray(expected, dtype=np.float64)), initial=0.0))
    return max_abs_error(actual, expected) / max(scale, np.finfo(np.float64).tiny)


def assert_close(actual, expected, tol: Tol, *, what: str) -> None:
    """np.testing.assert_allclose with the project's tolerance and a message that names the tensor."""
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64),
        np.asarray(expected, dtype=np.float64),
        rtol=tol.rtol,
        atol=tol.atol,
        equal_nan=True,
        err_msg=what,
    )
