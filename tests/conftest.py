import numpy as np
import pytest

from verify.cases import AFFINE, CASES

DTYPES = (np.float32, np.float64)


def case_params(cases=CASES):
    return [pytest.param(c, id=c.id) for c in cases]


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return request.param


@pytest.fixture(params=AFFINE)
def affine(request):
    return request.param
