"""pytest-benchmark suite: every op, forward and backward, on every backend that can run here (float32).

    pytest benchmarks --benchmark-only [--bench-sizes small reference large sweep]

Groups are "<op> <direction>"; extra_info holds the minimum-bytes model and the GB/s of the median time.
Inputs are already on their device and one untimed call comes first, so JIT compilation is never timed.
"""

import numpy as np
import pytest

from benchmarks import harness as h

DTYPE = np.float32


@pytest.fixture(scope="module", autouse=True)
def _same_threads():
    """PyTorch gets Numba's thread count, as in python -m benchmarks."""
    h.same_threads()


@pytest.mark.parametrize("backend", h.BACKENDS)
@pytest.mark.parametrize("direction", h.DIRECTIONS)
def test_norm(benchmark, case, direction, backend):
    reason = h.unavailable(backend)
    if reason:
        pytest.skip(reason)
    fn = h.calls(case, backend, DTYPE)[direction]
    fn()  # warm-up: compiles the kernels
    moved = h.model_bytes(case, direction, DTYPE)
    benchmark.group = f"{case.norm} {direction}"
    benchmark.extra_info.update(
        op=case.norm,
        shape=list(case.shape),
        direction=direction,
        backend=backend,
        dtype=np.dtype(DTYPE).name,
        model_bytes=moved,
    )
    benchmark(fn)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["gbps"] = moved / benchmark.stats.stats.median / 1e9
