"""One harness: every CPU kernel against the float64 staged graph, over case x dtype x affine."""

import numpy as np
import pytest
from conftest import case_params

from verify import compare, staged


@pytest.mark.parametrize("case", case_params())
def test_kernel_matches_staged_graph(case, dtype, affine):
    x, gamma, beta, dy = case.inputs(dtype, affine)
    before = [None if a is None else a.copy() for a in (x, gamma, beta, dy)]

    y, mean, rstd = case.forward(x, gamma, beta)
    dx, dgamma, dbeta = case.backward(dy, x, gamma, mean, rstd)

    ref_y, cache = case.staged_forward(x, gamma, beta)
    ref = staged.backward(dy, cache)
    tol = compare.kernel_tolerance(dtype)
    lay = case.layout
    for name, got, want, shape in [
        ("y", y, ref_y, case.shape),
        ("mean", mean, cache["mean"], lay.stats_shape),
        ("rstd", rstd, cache["rstd"], lay.stats_shape),
        ("dx", dx, ref["dx"], case.shape),
    ]:
        assert got.dtype == dtype and got.shape == shape, f"{name}: {got.dtype} {got.shape}"
        compare.assert_close(got, want, tol, what=f"{case.id} {name}")
    if gamma is None:
        assert dgamma is None and dbeta is None
    else:
        for name, got, want in [("dgamma", dgamma, ref["dgamma"]), ("dbeta", dbeta, ref["dbeta"])]:
            assert got.dtype == dtype and got.shape == lay.affine_shape, f"{name}: {got.dtype} {got.shape}"
            compare.assert_close(got, want, tol, what=f"{case.id} {name}")
    for a, b in zip((x, gamma, beta, dy), before, strict=True):
        assert a is None or np.array_equal(a, b), "an input was modified"


@pytest.mark.parametrize("case", case_params())
def test_strided_input_gives_the_contiguous_answer(case):
    x, gamma, beta, dy = case.inputs(np.float64)
    x_strided = np.asfortranarray(x)
    dy_strided = np.asfortranarray(dy)
    y, mean, rstd = case.forward(x, gamma, beta)
    ys, means, rstds = case.forward(x_strided, gamma, beta)
    np.testing.assert_array_equal(ys, y)
    grads = case.backward(dy, x, gamma, mean, rstd)
    grads_s = case.backward(dy_strided, x_strided, gamma, means, rstds)
    for a, b in zip(grads, grads_s, strict=True):
        np.testing.assert_array_equal(a, b)
