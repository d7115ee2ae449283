import background
import numpy as np
import pytest

from normkernels import _backends
from verify import compare
from verify.cases import AFFINE, CASES

DTYPES = (np.float32, np.float64)


def case_params(cases=CASES):
    return [pytest.param(c, id=c.id) for c in cases]


# The cuda half of a test parametrized over backends runs where a GPU is, or in the second process that
# test_cuda_simulator.py starts with NUMBA_ENABLE_CUDASIM=1; in that process the cpu half is left out (the
# main run has it).
SIMULATOR = _backends.simulator()


_CPU = pytest.mark.skipif(SIMULATOR, reason="the simulator process runs only the cuda cases")
_CUDA = pytest.mark.skipif(
    not _backends.cuda_mode(), reason="no GPU: test_cuda_simulator.py runs the cuda cases in Numba's CUDA simulator"
)
BACKENDS = [pytest.param("cpu", marks=_CPU), pytest.param("cuda", marks=_CUDA)]


def backend_case_params(cpu_cases, cuda_cases):
    """(backend, case) pairs: the cpu ones with cpu_cases, the cuda ones with cuda_cases (tiny shapes for
    the simulator)."""
    return [pytest.param("cpu", c, id=f"cpu-{c.id}", marks=_CPU) for c in cpu_cases] + [
        pytest.param("cuda", c, id=f"cuda-{c.id}", marks=_CUDA) for c in cuda_cases
    ]


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return request.param


@pytest.fixture(params=AFFINE)
def affine(request):
    return request.param


def assert_matches_staged(case, dtype, affine="gamma_beta", backend="cpu"):
    """Every output of the project's forward and backward against the float64 staged graph: y, each statistic
    the forward returns, dx and the gradient of every parameter (the norm's registry entry says which). NumPy
    arrays of x's dtype and the contract's shapes (the staged graph's), within the kernel tolerance; None for
    dgamma/dbeta without gamma."""
    tol = compare.kernel_tolerance(dtype)
    for name, (got, want) in case.against_staged(dtype, affine, backend=backend).items():
        if want is None:  # no gamma: no dgamma, no dbeta
            assert got is None, f"{name} should be None without gamma"
            continue
        assert isinstance(got, np.ndarray), f"{name}: NumPy in gives NumPy out"
        assert got.dtype == dtype and got.shape == np.shape(want), f"{name}: {got.dtype} {got.shape}"
        compare.assert_close(got, want, tol, what=f"{case.id} {backend} {name}")


def pytest_collection_modifyitems(session, config, items):
    """The tests that wait for a background subprocess run last, so the rest of the suite runs meanwhile."""
    items.sort(key=lambda item: bool(getattr(getattr(item, "module", None), "BACKGROUND", None)))


def pytest_collection_finish(session):
    """Start the long subprocesses of the selected tests now, to run beside the rest (tests/background.py)."""
    for item in session.items:
        commands = getattr(getattr(item, "module", None), "BACKGROUND", {})
        for key, (argv, env, needed_by) in commands.items():
            if needed_by is None or item.originalname in needed_by:
                background.start(key, argv, env)


def pytest_sessionfinish(session):
    background.stop_all()
