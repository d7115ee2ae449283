"""The pytest-benchmark suite's options: --bench-sizes picks the shape sets (verify.cases.SIZES), each case
marked with its set's name (so -k small or -m large select within them); nothing runs under the CUDA simulator.
"""

import pytest

from benchmarks.harness import SIMULATOR
from verify.cases import SIZES


def pytest_addoption(parser):
    parser.addoption(
        "--bench-sizes",
        nargs="+",
        choices=list(SIZES),
        default=["small", "reference"],
        help="shape sets to benchmark (default: small reference)",
    )


def pytest_configure(config):
    for size in SIZES:
        config.addinivalue_line("markers", f"{size}: a case of the {size} benchmark shape set")


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    params = {}  # by id: a shape in two sets (large and sweep) is benchmarked once
    for size in metafunc.config.getoption("bench_sizes"):
        for case in SIZES[size]:
            params.setdefault(case.id, pytest.param(case, id=case.id, marks=getattr(pytest.mark, size)))
    metafunc.parametrize("case", list(params.values()))


@pytest.fixture(autouse=True)
def _not_in_the_simulator():
    if SIMULATOR:
        pytest.skip("benchmarks do not run under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")
