"""Determinism and the numerical promises of DESIGN.md section 4."""

import numba
import numpy as np
import pytest
from conftest import case_params

from verify import compare, staged
from verify.cases import CASES, Case

# the cases big enough for several parallel blocks
PARALLEL = [c for c in CASES if "small" not in c.tags]


def _run(case, dtype):
    x, gamma, beta, dy = case.inputs(dtype)
    y, mean, rstd = case.forward(x, gamma, beta)
    return (y, mean, rstd, *case.backward(dy, x, gamma, mean, rstd))


@pytest.mark.parametrize("case", case_params(PARALLEL))
def test_bit_identical_across_runs_and_thread_counts(case, dtype):
    first = _run(case, dtype)
    again = _run(case, dtype)
    default = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        serial = _run(case, dtype)
    finally:
        numba.set_num_threads(default)
    for a, b, c in zip(first, again, serial, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize(
    "case",
    case_params(
        [
            Case("layer_norm", (8, 4096), normalized_ndim=1),
            Case("batch_norm", (64, 3, 50)),
            Case("instance_norm", (2, 3, 500)),
            Case("group_norm", (2, 8, 100), num_groups=4),
        ]
    ),
)
def test_float32_large_mean_small_spread(case):
    """Rows with mean 1e4 and std 1 in float32 normalize to within 1e-3 of the float64 answer."""
    rng = np.random.default_rng(5)
    x32 = (1e4 + rng.standard_normal(case.shape)).astype(np.float32)
    y32 = case.forward(x32, None, None)[0]
    y64 = case.staged_forward(x32.astype(np.float64), None, None)[0]
    assert np.max(np.abs(y32 - y64)) < 1e-3


SMALL = [c for c in CASES if "small" in c.tags]


@pytest.mark.parametrize("case", case_params(SMALL))
def test_constant_groups_give_beta_and_finite_gradients(case, dtype, affine):
    _, gamma, beta, dy = case.inputs(dtype, affine)
    x = np.full(case.shape, 3.25, dtype=dtype)
    y, mean, rstd = case.forward(x, gamma, beta)
    shift = np.zeros(case.layout.affine_shape) if beta is None else beta
    expect = np.broadcast_to(shift.reshape(case.layout.affine_broadcast), case.shape)
    np.testing.assert_array_equal(y, expect.astype(dtype))
    dx, dgamma, dbeta = case.backward(dy, x, gamma, mean, rstd)
    assert np.all(np.isfinite(dx))
    # dx = rstd * gamma * (dy - mean(dy)) with rstd = 1 / sqrt(eps) ~ 316: errors in the last place of dx
    # scale with rstd, so the absolute tolerance does too
    _, cache = case.staged_forward(x, gamma, beta)
    ref = staged.backward(dy, cache)
    tol = compare.kernel_tolerance(dtype)
    scaled = tol._replace(atol=tol.atol * float(np.max(cache["rstd"])))
    compare.assert_close(dx, ref["dx"], scaled, what=f"{case.id} dx")
    if gamma is not None:  # xhat = 0 everywhere: dgamma = 0, dbeta = sum(dy)
        np.testing.assert_array_equal(dgamma, 0)
        want = dy.astype(np.float64).sum(axis=case.layout.affine_reduce_axes)
        compare.assert_close(dbeta, want.reshape(case.layout.affine_shape), tol, what=f"{case.id} dbeta")


@pytest.mark.parametrize("case", case_params(SMALL))
def test_nan_stays_in_its_statistics_group(case):
    x, gamma, beta, dy = case.inputs(np.float64)
    x.reshape(-1)[0] = np.nan  # element 0 is in the first statistics group
    y, mean, rstd = case.forward(x, gamma, beta)
    dx, _, _ = case.backward(dy, x, gamma, mean, rstd)
    lay = case.layout
    # which elements share a statistics group with element 0, in the statistics view
    touched = np.zeros(lay.view_shape, dtype=bool)
    first = tuple(slice(None) if a in lay.reduce_axes else 0 for a in range(len(lay.view_shape)))
    touched[first] = True
    touched = touched.reshape(case.shape)
    for name, out in (("y", y), ("dx", dx)):
        assert np.isnan(out[touched]).all(), f"{name}: the NaN's own group should be NaN"
        assert np.isfinite(out[~touched]).all(), f"{name}: NaN leaked out of its group"
