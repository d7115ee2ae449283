"""Bad input raises ValueError or TypeError naming the argument, never a Numba typing error, on either backend.

BAD is also the table of the README's "Errors and edge cases" section: ``python tests/test_errors.py``
prints each call's exception and message.
"""

import numpy as np
import pytest
from conftest import BACKENDS

import normkernels as nk

X = np.ones((4, 6, 3), dtype=np.float32)
STATS = np.zeros((4, 6), dtype=np.float32)
LOGITS = np.zeros(3, dtype=np.float32)
READ_ONLY = np.zeros(6)
READ_ONLY.flags.writeable = False

# (what, error, message pattern, call(backend))
BAD = [
    (
        "x a list",
        TypeError,
        "expected x to be a numpy.ndarray",
        lambda b: nk.layer_norm_forward([[1.0, 2.0]], 2, backend=b),
    ),
    (
        "x int64",
        TypeError,
        "dtype float32 or float64",
        lambda b: nk.batch_norm_forward(np.ones((3, 2), int), backend=b),
    ),
    (
        "x float16",
        TypeError,
        "dtype float32 or float64",
        lambda b: nk.group_norm_forward(X.astype(np.float16), 2, backend=b),
    ),
    ("x 1-D, batch norm", ValueError, "at least 2 dimensions", lambda b: nk.batch_norm_forward(np.ones(5), backend=b)),
    (
        "x 2-D, instance norm",
        ValueError,
        "at least 3 dimensions",
        lambda b: nk.instance_norm_forward(np.ones((2, 3)), backend=b),
    ),
    (
        "gamma shape",
        ValueError,
        r"expected gamma of shape \(6,\)",
        lambda b: nk.batch_norm_forward(X, np.ones(5), backend=b),
    ),
    (
        "beta shape",
        ValueError,
        r"expected beta of shape \(6,\)",
        lambda b: nk.instance_norm_forward(X, np.ones(6), np.ones(3), backend=b),
    ),
    (
        "gamma int32",
        TypeError,
        "expected gamma to have a floating-point dtype",
        lambda b: nk.group_norm_forward(X, 3, np.ones(6, np.int32), backend=b),
    ),
    (
        "gamma a list",
        TypeError,
        "expected gamma to be a numpy.ndarray",
        lambda b: nk.layer_norm_forward(X, 3, [1.0] * 3, backend=b),
    ),
    (
        "C not divisible by num_groups",
        ValueError,
        "Expected number of channels in input to be divisible by num_groups",
        lambda b: nk.group_norm_forward(X, 4, backend=b),
    ),
    ("num_groups 0", ValueError, "num_groups to be a positive int", lambda b: nk.group_norm_forward(X, 0, backend=b)),
    ("num_groups 2.0", TypeError, "num_groups to be an int", lambda b: nk.group_norm_forward(X, 2.0, backend=b)),
    (
        "normalized_shape not trailing",
        ValueError,
        r"Given normalized_shape=\[6\], expected input with shape \[\*, 6\]",
        lambda b: nk.layer_norm_forward(X, 6, backend=b),
    ),
    ("normalized_shape ()", ValueError, "at least 1-dimensional", lambda b: nk.layer_norm_forward(X, (), backend=b)),
    (
        "eps 10**400",
        ValueError,
        "eps to be a finite number",
        lambda b: nk.layer_norm_forward(X, 3, eps=10**400, backend=b),
    ),
    (
        "num_groups 10**30 with no channels",
        ValueError,
        "divisible by num_groups",
        lambda b: nk.group_norm_forward(np.ones((2, 0, 3)), 10**30, backend=b),
    ),
    (
        "normalized_shape 3.0",
        TypeError,
        "expected normalized_shape to be an int or a tuple of ints",
        lambda b: nk.layer_norm_forward(X, 3.0, backend=b),
    ),
    (
        "eps negative",
        ValueError,
        r"expected eps to be a finite number in \[0.0, inf\], got -1.0",
        lambda b: nk.layer_norm_forward(X, 3, eps=-1.0, backend=b),
    ),
    (
        "eps NaN",
        ValueError,
        "expected eps to be a finite number",
        lambda b: nk.layer_norm_forward(X, 3, eps=float("nan"), backend=b),
    ),
    (
        "eps True",
        TypeError,
        "expected eps to be a real number, got bool",
        lambda b: nk.layer_norm_forward(X, 3, eps=True, backend=b),
    ),
    (
        "momentum None",
        TypeError,
        "expected momentum to be a real number, got NoneType",
        lambda b: nk.batch_norm_forward(X, momentum=None, backend=b),
    ),
    (
        "training 'no'",
        TypeError,
        "expected training to be a bool",
        lambda b: nk.batch_norm_forward(X, training="no", backend=b),
    ),
    (
        "batch norm training, one value per channel",
        ValueError,
        r"Expected more than 1 value per channel when training, got input size \[1, 3, 1, 1\]",
        lambda b: nk.batch_norm_forward(np.ones((1, 3, 1, 1)), backend=b),
    ),
    (
        "instance norm, one spatial element",
        ValueError,
        r"Expected more than 1 spatial element when training, got input size \[2, 3, 1\]",
        lambda b: nk.instance_norm_forward(np.ones((2, 3, 1)), backend=b),
    ),
    (
        "eval without running statistics",
        ValueError,
        "expected running_mean and running_var when training=False",
        lambda b: nk.batch_norm_forward(X, training=False, backend=b),
    ),
    (
        "running_mean without running_var",
        ValueError,
        "both given or both None",
        lambda b: nk.batch_norm_forward(X, running_mean=np.zeros(6), backend=b),
    ),
    (
        "running_var shape",
        ValueError,
        r"expected running_var of shape \(6,\)",
        lambda b: nk.batch_norm_forward(X, running_mean=np.zeros(6), running_var=np.ones(5), backend=b),
    ),
    (
        "running_mean read-only",
        ValueError,
        "expected running_mean to be writable",
        lambda b: nk.batch_norm_forward(X, running_mean=READ_ONLY, running_var=np.ones(6), backend=b),
    ),
    (
        "running_mean float16",
        TypeError,
        "expected running_mean to have dtype float32 or float64, got float16",
        lambda b: nk.batch_norm_forward(
            X, running_mean=np.zeros(6, np.float16), running_var=np.ones(6, np.float16), training=False, backend=b
        ),
    ),
    (
        "running_var longdouble, switchable norm",
        TypeError,
        "expected running_var to have dtype float32 or float64, got float128",
        lambda b: nk.switchable_norm_forward(
            X,
            None,
            None,
            np.zeros(3),
            np.zeros(3),
            running_mean=np.zeros(6),
            running_var=np.ones(6, np.longdouble),
            backend=b,
        ),
    ),
    (
        "running_var int",
        TypeError,
        "expected running_var to have a floating-point dtype",
        lambda b: nk.batch_norm_forward(X, running_mean=np.zeros(6), running_var=np.ones(6, int), backend=b),
    ),
    (
        "unknown backend",
        ValueError,
        r"backend must be one of \('cpu', 'cuda'\), got 'gpu'",
        lambda b: nk.layer_norm_forward(X, 3, backend="gpu"),
    ),
    (
        "dy shape",
        ValueError,
        "expected dy of shape",
        lambda b: nk.instance_norm_backward(X[:2], X, None, STATS, STATS, backend=b),
    ),
    (
        "dy int",
        TypeError,
        "expected dy to have a floating-point dtype",
        lambda b: nk.instance_norm_backward(X.astype(int), X, None, STATS, STATS, backend=b),
    ),
    (
        "mean shape",
        ValueError,
        "expected mean of shape",
        lambda b: nk.instance_norm_backward(X, X, None, STATS[:2], STATS, backend=b),
    ),
    (
        "rstd shape",
        ValueError,
        "expected rstd of shape",
        lambda b: nk.batch_norm_backward(X, X, None, np.zeros(6), np.zeros(5), backend=b),
    ),
    (
        "mean ndim",
        ValueError,
        "expected mean with ndim",
        lambda b: nk.group_norm_backward(X, X, None, STATS[0], STATS, backend=b),
    ),
    (
        "num_groups from mean",
        ValueError,
        r"expected mean of shape \(N, num_groups\) with num_groups dividing the 6 channels of x, got \(4, 4\)",
        lambda b: nk.group_norm_backward(X, X, None, np.zeros((4, 4)), np.zeros((4, 4)), backend=b),
    ),
    (
        "mean a list",
        TypeError,
        "expected mean to be a numpy.ndarray",
        lambda b: nk.layer_norm_backward(X, X, None, [0.0] * 24, STATS, backend=b),
    ),
    (
        "rms norm: normalized_shape not trailing",
        ValueError,
        r"Given normalized_shape=\[6\], expected input with shape \[\*, 6\]",
        lambda b: nk.rms_norm_forward(X, 6, backend=b),
    ),
    (
        "rms norm: gamma shape",
        ValueError,
        r"expected gamma of shape \(3,\)",
        lambda b: nk.rms_norm_forward(X, 3, np.ones(4), backend=b),
    ),
    (
        "rms norm: rstd shape",
        ValueError,
        r"expected rstd of shape \(4, 6\)",
        lambda b: nk.rms_norm_backward(X, X, None, np.ones((4, 5)), backend=b),
    ),
    (
        "switchable norm: x 2-D",
        ValueError,
        "at least 3 dimensions",
        lambda b: nk.switchable_norm_forward(np.ones((4, 6)), None, None, LOGITS, LOGITS, backend=b),
    ),
    (
        "switchable norm: one spatial element",
        ValueError,
        r"Expected more than 1 spatial element when training, got input size \[2, 3, 1\]",
        lambda b: nk.switchable_norm_forward(np.ones((2, 3, 1)), None, None, LOGITS, LOGITS, backend=b),
    ),
    (
        "switchable norm: mean_weight shape",
        ValueError,
        r"expected mean_weight of shape \(3,\)",
        lambda b: nk.switchable_norm_forward(X, None, None, np.zeros(2), LOGITS, backend=b),
    ),
    (
        "switchable norm: stats not the forward's",
        TypeError,
        "expected stats to be the SwitchableStats that switchable_norm_forward returned",
        lambda b: nk.switchable_norm_backward(X, X, None, LOGITS, LOGITS, (1, 2), backend=b),
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("what, error, message, call", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_clear_error(what, error, message, call, backend):
    with pytest.raises(error, match=message):
        call(backend)


def test_numpy_scalars_and_sequences_are_accepted():
    """np.int64 counts, np.float32 eps and momentum, np.bool_ training and tuples of np.int64 are numbers too."""
    x = np.random.default_rng(0).standard_normal((4, 6, 3))
    want = nk.group_norm_forward(x, 3, eps=float(np.float32(1e-3)))  # the same eps, as a float
    for got, ref in zip(nk.group_norm_forward(x, np.int64(3), eps=np.float32(1e-3)), want, strict=True):
        np.testing.assert_array_equal(got, ref)
    for got, ref in zip(
        nk.layer_norm_forward(x, (np.int64(6), np.int64(3))), nk.layer_norm_forward(x, (6, 3)), strict=True
    ):
        np.testing.assert_array_equal(got, ref)
    rm, rv = np.zeros(6), np.ones(6)
    nk.batch_norm_forward(x, training=np.bool_(True), running_mean=rm, running_var=rv, momentum=np.float32(0.5))
    assert np.all(rm != 0) and np.all(rv != 1)


def test_cuda_backend_without_a_gpu_says_what_is_missing():
    cuda_backend = pytest.importorskip("normkernels.cuda")
    if cuda_backend.available():
        pytest.skip("a GPU (or the simulator) is available here")
    with pytest.raises(RuntimeError, match="needs an NVIDIA GPU"):
        nk.layer_norm_forward(X, 3, backend="cuda")


if __name__ == "__main__":  # the table: what each bad input gets
    for what, _, _, call in BAD:
        try:
            call("cpu")
        except (TypeError, ValueError) as exc:
            print(f"| {what} | {type(exc).__name__} | {exc} |")
        else:
            print(f"| {what} | no error |")
