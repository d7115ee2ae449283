"""Bad input raises ValueError or TypeError naming the argument, never a Numba typing error."""

import numpy as np
import pytest

import normkernels as nk

X = np.ones((4, 6, 3), dtype=np.float32)
STATS = np.zeros((4, 6), dtype=np.float32)

BAD = [
    ("x list", TypeError, "expected x to be a numpy.ndarray", lambda: nk.layer_norm_forward([[1.0, 2.0]], 2)),
    ("x int", TypeError, "dtype float32 or float64", lambda: nk.batch_norm_forward(np.ones((3, 2), np.int64))),
    ("x float16", TypeError, "dtype float32 or float64", lambda: nk.group_norm_forward(X.astype(np.float16), 2)),
    ("x 1-D batch", ValueError, "at least 2 dimensions", lambda: nk.batch_norm_forward(np.ones(5))),
    ("x 2-D instance", ValueError, "at least 3 dimensions", lambda: nk.instance_norm_forward(np.ones((2, 3)))),
    ("gamma shape", ValueError, r"expected gamma of shape \(6,\)", lambda: nk.batch_norm_forward(X, np.ones(5))),
    (
        "beta shape",
        ValueError,
        r"expected beta of shape \(6,\)",
        lambda: nk.instance_norm_forward(X, np.ones(6), np.ones(3)),
    ),
    (
        "gamma int",
        TypeError,
        "expected gamma to have a floating-point dtype",
        lambda: nk.group_norm_forward(X, 3, np.ones(6, np.int32)),
    ),
    (
        "groups",
        ValueError,
        "Expected number of channels in input to be divisible by num_groups",
        lambda: nk.group_norm_forward(X, 4),
    ),
    ("groups zero", ValueError, "num_groups to be a positive int", lambda: nk.group_norm_forward(X, 0)),
    (
        "normalized_shape",
        ValueError,
        r"Given normalized_shape=\[6\], expected input with shape \[\*, 6\]",
        lambda: nk.layer_norm_forward(X, 6),
    ),
    ("normalized_shape float", TypeError, "normalized_shape", lambda: nk.layer_norm_forward(X, 3.0)),
    ("eps", ValueError, "eps", lambda: nk.layer_norm_forward(X, 3, eps=-1.0)),
    ("eps bool", TypeError, "eps", lambda: nk.layer_norm_forward(X, 3, eps=True)),
    ("momentum", TypeError, "momentum", lambda: nk.batch_norm_forward(X, momentum=None)),
    (
        "running_var shape",
        ValueError,
        "running_var",
        lambda: nk.batch_norm_forward(X, running_mean=np.zeros(6), running_var=np.ones(5)),
    ),
    (
        "backend",
        ValueError,
        r"backend must be one of \('cpu', 'cuda'\), got 'gpu'",
        lambda: nk.layer_norm_forward(X, 3, backend="gpu"),
    ),
    ("dy shape", ValueError, "expected dy of shape", lambda: nk.instance_norm_backward(X[:2], X, None, STATS, STATS)),
    (
        "mean shape",
        ValueError,
        "expected mean of shape",
        lambda: nk.instance_norm_backward(X, X, None, STATS[:2], STATS),
    ),
    (
        "rstd shape",
        ValueError,
        "expected rstd of shape",
        lambda: nk.batch_norm_backward(X, X, None, np.zeros(6), np.zeros(5)),
    ),
    ("mean ndim", ValueError, "expected mean with ndim", lambda: nk.group_norm_backward(X, X, None, STATS[0], STATS)),
    (
        "groups from mean",
        ValueError,
        "divisible by num_groups",
        lambda: nk.group_norm_backward(X, X, None, np.zeros((4, 4)), np.zeros((4, 4))),
    ),
]


@pytest.mark.parametrize("what, error, message, call", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_clear_error(what, error, message, call):
    with pytest.raises(error, match=message):
        call()


def test_cuda_backend_without_a_gpu_says_what_is_missing():
    cuda_backend = pytest.importorskip("normkernels.cuda")
    if cuda_backend.available():
        pytest.skip("a GPU (or the simulator) is available here")
    with pytest.raises(RuntimeError, match="needs an NVIDIA GPU"):
        nk.layer_norm_forward(X, 3, backend="cuda")
