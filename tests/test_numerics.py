"""Determinism and the numerical promises of DESIGN.md section 4."""

import numba
import numpy as np
import pytest
from conftest import case_params

from verify.cases import CASES

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

