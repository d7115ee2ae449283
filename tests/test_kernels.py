"""One harness: every CPU kernel against the float64 staged graph, over case x dtype x affine."""

import numpy as np
import pytest
from conftest import assert_matches_staged, case_params


@pytest.mark.parametrize("case", case_params())
def test_kernel_matches_staged_graph(case, dtype, affine):
    assert_matches_staged(case, dtype, affine)


@pytest.mark.parametrize("case", case_params())
def test_inputs_are_never_modified(case, affine):
    """Copies taken before the first call: a forward that writes into x the same way every time shows too."""
    x, gamma, beta, dy = case.inputs(np.float32, affine)
    given = [a for a in (x, gamma, beta, dy) if a is not None]
    before = [a.copy() for a in given]
    y, mean, rstd = case.forward(x, gamma, beta)
    stats = (mean.copy(), rstd.copy())
    case.backward(dy, x, gamma, mean, rstd)
    for a, b in zip(given + [mean, rstd], before + list(stats), strict=True):
        np.testing.assert_array_equal(a, b)
