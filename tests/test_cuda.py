"""The CUDA backend against the staged graph: tiny shapes in the simulator (NUMBA_ENABLE_CUDASIM=1, run by
test_cuda_simulator.py), and the same plus real sizes on a GPU (the tests marked `@gpu`)."""

import numpy as np
import pytest
from conftest import assert_matches_staged, case_params

import normkernels as nk
from verify import compare
from verify.cases import CASES, CUDA_TINY, REFERENCE

cuda_backend = pytest.importorskip("normkernels.cuda", reason="the cuda extra (numba-cuda) is not installed")
if not cuda_backend.available():
    pytest.skip(
        "no GPU and not in the CUDA simulator (test_cuda_simulator.py runs this file there)", allow_module_level=True
    )

from numba import cuda  # noqa: E402

from normkernels.cuda._config import SIMULATOR  # noqa: E402

gpu = pytest.mark.skipif(SIMULATOR, reason="real sizes need a real GPU")


def _against_staged(case, dtype, affine):
    assert_matches_staged(case, dtype, affine, backend="cuda")


@pytest.mark.parametrize("case", case_params(CUDA_TINY))
def test_tiny_shapes_match_staged_graph(case, dtype):
    _against_staged(case, dtype, "gamma_beta")


@pytest.mark.parametrize("affine", ["none", "gamma"])
@pytest.mark.parametrize("case", case_params([CUDA_TINY[1], CUDA_TINY[2], CUDA_TINY[5]]))
def test_tiny_shapes_without_affine(case, affine):
    _against_staged(case, np.float64, affine)


@gpu
@pytest.mark.parametrize("case", case_params(CASES + REFERENCE))
def test_real_sizes_match_staged_graph(case, dtype, affine):
    _against_staged(case, dtype, affine)


@pytest.mark.parametrize("case", case_params([CUDA_TINY[0], CUDA_TINY[3], CUDA_TINY[5]]))
def test_device_arrays_in_give_device_arrays_out_and_the_same_bits(case):
    x, gamma, beta, dy = case.inputs(np.float32)
    host = case.forward(x, gamma, beta, backend="cuda")
    host_grads = case.backward(dy, x, gamma, host[1], host[2], backend="cuda")
    d = [cuda.to_device(a) for a in (x, gamma, beta, dy)]
    dev = case.forward(d[0], d[1], d[2], backend="cuda")
    dev_grads = case.backward(d[3], d[0], d[1], dev[1], dev[2], backend="cuda")
    for got, want in zip(dev + dev_grads, host + host_grads, strict=True):
        assert not isinstance(got, np.ndarray) and hasattr(got, "copy_to_host")
        np.testing.assert_array_equal(got.copy_to_host(), want)
    again = case.forward(x, gamma, beta, backend="cuda")
    for a, b in zip(again, host, strict=True):
        np.testing.assert_array_equal(a, b)  # reruns are bit-identical


@pytest.mark.parametrize("shape", [(9, 5), (3, 3, 11)], ids=str)
def test_running_statistics_and_eval_mode(shape):
    rng = np.random.default_rng(7)
    c = shape[1]
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    gamma = rng.uniform(0.5, 1.5, c)
    stats = {b: (np.zeros(c), np.ones(c)) for b in ("cpu", "cuda")}
    for backend, (rm, rv) in stats.items():
        for _ in range(2):
            nk.batch_norm_forward(x, gamma, None, running_mean=rm, running_var=rv, momentum=0.3, backend=backend)
    tol = compare.kernel_tolerance(np.float64)
    for got, want in zip(stats["cuda"], stats["cpu"], strict=True):
        compare.assert_close(got, want, tol, what="running statistics")
    rm, rv = stats["cuda"]
    outs = {}
    for backend in ("cpu", "cuda"):
        y, mean, rstd = nk.batch_norm_forward(
            x, gamma, None, training=False, running_mean=rm, running_var=rv, backend=backend
        )
        outs[backend] = (
            y,
            mean,
            rstd,
            *nk.batch_norm_backward(dy, x, gamma, mean, rstd, training=False, backend=backend),
        )
    for got, want in zip(outs["cuda"], outs["cpu"], strict=True):
        compare.assert_close(got, want, tol, what="eval mode")


def _dev(*shape, dtype=np.float64, fill=1.0):
    return cuda.to_device(np.full(shape, fill, dtype))


DEVICE_ERRORS = [
    (
        "x not C-contiguous",
        ValueError,
        "expected a C-contiguous device array for x",
        lambda: nk.layer_norm_forward(_dev(4, 6)[:, ::2], 3, backend="cuda"),
    ),
    (
        "GPU x, backend cpu",
        TypeError,
        'x is a GPU array .*: pass backend="cuda"',
        lambda: nk.layer_norm_forward(_dev(4, 6), 6),
    ),
    (
        "GPU x, NumPy gamma",
        TypeError,
        "gamma must be one too",
        lambda: nk.batch_norm_forward(_dev(4, 6), np.ones(6), backend="cuda"),
    ),
    (
        "GPU x, gamma of another dtype",
        TypeError,
        "expected gamma to have x's dtype float64, got float32",
        lambda: nk.layer_norm_forward(_dev(4, 6), 6, _dev(6, dtype=np.float32), backend="cuda"),
    ),
    (
        "GPU x, NumPy running_mean",
        TypeError,
        "running_mean must be one too",
        lambda: nk.batch_norm_forward(_dev(4, 6), running_mean=np.zeros(6), running_var=np.ones(6), backend="cuda"),
    ),
    (
        "NumPy x, GPU running_mean",
        TypeError,
        "expected running_mean to be a numpy.ndarray",
        lambda: nk.batch_norm_forward(np.ones((4, 6)), running_mean=_dev(6), running_var=np.ones(6), backend="cuda"),
    ),
    (
        "GPU x, NumPy mean",
        TypeError,
        "mean must be one too",
        lambda: nk.layer_norm_backward(_dev(4, 6), _dev(4, 6), None, np.zeros(4), np.ones(4), backend="cuda"),
    ),
]


@pytest.mark.parametrize("what, error, message, call", DEVICE_ERRORS, ids=[e[0] for e in DEVICE_ERRORS])
def test_device_arrays_get_clear_errors(what, error, message, call):
    """The GPU-array rules: a GPU x takes GPU companions of its dtype, C-contiguous, and backend="cuda"."""
    with pytest.raises(error, match=message):
        call()


def test_rows_of_no_elements_match_the_cpu():
    """Rows of length 0 (zero-size batches are in test_hard_inputs.py): an empty y, NaN mean and rstd."""
    x = np.ones((3, 0))
    for got, want in zip(
        nk.layer_norm_forward(x, (0,), backend="cuda"), nk.layer_norm_forward(x, (0,)), strict=True
    ):  # y of shape (3, 0); mean and rstd NaN
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        assert np.isnan(want).all()
