"""BatchNorm running statistics over several steps, and eval mode, against values computed by hand."""

import numpy as np
import pytest

import normkernels as nk
from verify import compare

SHAPES = [(8, 5), (4, 3, 3, 2), (2, 3, 7)]


def _axes(shape):
    return (0,) + tuple(range(2, len(shape)))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_running_statistics_follow_pytorch_update(shape, dtype):
    rng = np.random.default_rng(1)
    c = shape[1]
    running_mean = rng.standard_normal(c).astype(dtype)
    running_var = rng.uniform(0.5, 2.0, c).astype(dtype)
    expect_mean = running_mean.astype(np.float64)
    expect_var = running_var.astype(np.float64)
    momentum = 0.3
    for step in range(4):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        nk.batch_norm_forward(x, running_mean=running_mean, running_var=running_var, momentum=momentum)
        x64 = x.astype(np.float64)
        expect_mean = (1 - momentum) * expect_mean + momentum * x64.mean(axis=_axes(shape))
        expect_var = (1 - momentum) * expect_var + momentum * x64.var(axis=_axes(shape), ddof=1)  # unbiased
        assert running_mean.dtype == dtype and running_var.dtype == dtype
        tol = compare.kernel_tolerance(dtype)
        compare.assert_close(running_mean, expect_mean, tol, what=f"running_mean step {step}")
        compare.assert_close(running_var, expect_var, tol, what=f"running_var step {step}")


def test_default_momentum_is_pytorch_0_1():
    x = np.arange(8.0).reshape(4, 2)
    running_mean = np.zeros(2)
    running_var = np.ones(2)
    nk.batch_norm_forward(x, running_mean=running_mean, running_var=running_var)
    np.testing.assert_allclose(running_mean, 0.1 * x.mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(running_var, 0.9 + 0.1 * x.var(axis=0, ddof=1), rtol=1e-15)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_eval_mode_uses_running_statistics(shape, dtype):
    rng = np.random.default_rng(2)
    c = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    running_mean = rng.standard_normal(c).astype(dtype)
    running_var = rng.uniform(0.5, 2.0, c).astype(dtype)
    before = running_mean.copy(), running_var.copy()
    eps = 1e-3

    y, mean, rstd = nk.batch_norm_forward(
        x, gamma, beta, eps=eps, training=False, running_mean=running_mean, running_var=running_var
    )
    dx, dgamma, dbeta = nk.batch_norm_backward(dy, x, gamma, mean, rstd, training=False)

    bshape = (1, c) + (1,) * (len(shape) - 2)
    rm, rv, g, b = (a.astype(np.float64).reshape(bshape) for a in (running_mean, running_var, gamma, beta))
    xhat = (x - rm) / np.sqrt(rv + eps)
    tol = compare.kernel_tolerance(dtype)
    compare.assert_close(y, xhat * g + b, tol, what="y")
    compare.assert_close(mean, running_mean, tol, what="mean")
    compare.assert_close(rstd, 1 / np.sqrt(running_var.astype(np.float64) + eps), tol, what="rstd")
    compare.assert_close(dx, dy * g / np.sqrt(rv + eps), tol, what="dx")
    compare.assert_close(dgamma, (dy * xhat).sum(axis=_axes(shape)), tol, what="dgamma")
    compare.assert_close(dbeta, dy.astype(np.float64).sum(axis=_axes(shape)), tol, what="dbeta")
    np.testing.assert_array_equal(running_mean, before[0])  # eval never updates
    np.testing.assert_array_equal(running_var, before[1])


def test_eval_mode_without_affine():
    x = np.linspace(-2, 2, 12).reshape(6, 2)
    dy = np.cos(x)
    y, mean, rstd = nk.batch_norm_forward(
        x, training=False, running_mean=np.array([0.5, -0.5]), running_var=np.array([2.0, 3.0]), eps=0.0
    )
    np.testing.assert_allclose(y, (x - [0.5, -0.5]) / np.sqrt([2.0, 3.0]), rtol=1e-14)
    dx, dgamma, dbeta = nk.batch_norm_backward(dy, x, None, mean, rstd, training=False)
    np.testing.assert_allclose(dx, dy / np.sqrt([2.0, 3.0]), rtol=1e-14)
    assert dgamma is None and dbeta is None


def test_eval_mode_takes_one_value_per_channel():
    """Training refuses one value per channel (test_errors.py); eval mode normalizes it."""
    y, _, _ = nk.batch_norm_forward(
        np.ones((1, 3, 1, 1)), training=False, running_mean=np.zeros(3), running_var=np.ones(3), eps=0.0
    )
    np.testing.assert_array_equal(y, np.ones((1, 3, 1, 1)))
