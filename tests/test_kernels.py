"""One harness: every CPU kernel against the float64 staged graph, over case x dtype x affine."""

import numpy as np
import pytest
from conftest import assert_matches_staged, case_params


@pytest.mark.parametrize("case", case_params())
def test_kernel_matches_staged_graph(case, dtype, affine):
    assert_matches_staged(case, dtype, affine)


@pytest.mark.parametrize("case", case_params())
def test_inputs_are_never_modified(case, affine):
    x, gamma, beta, dy = case.inputs(np.float32, affine)
    y, mean, rstd = case.forward(x, gamma, beta)
    given = [a for a in (x, gamma, beta, dy, mean, rstd) if a is not None]
    before = [a.copy() for a in given]
    case.forward(x, gamma, beta)
    case.backward(dy, x, gamma, mean, rstd)
    for a, b in zip(given, before, strict=True):
        np.testing.assert_array_equal(a, b)


def _strided(a):
    """The same values in a non-contiguous, reversed layout: every other element of a bigger buffer."""
    if a is None:
        return None
    buf = np.zeros(a.shape + (2,), dtype=a.dtype)[..., ::-1]
    buf[..., 1] = a
    return buf[..., 1]


@pytest.mark.parametrize("case", case_params())
def test_strided_inputs_give_the_contiguous_answer(case, dtype):
    x, gamma, beta, dy = case.inputs(dtype)
    ys = case.forward(_strided(x), _strided(gamma), _strided(beta))
    y = case.forward(x, gamma, beta)
    for a, b in zip(ys, y, strict=True):
        np.testing.assert_array_equal(a, b)
    grads = case.backward(dy, x, gamma, y[1], y[2])
    grads_s = case.backward(_strided(dy), _strided(x), _strided(gamma), _strided(y[1]), _strided(y[2]))
    for a, b in zip(grads_s, grads, strict=True):
        np.testing.assert_array_equal(a, b)
