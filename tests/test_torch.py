"""The CPU kernels against PyTorch autograd, when PyTorch is installed (skipped otherwise)."""

import numpy as np
import pytest
from conftest import case_params

import normkernels as nk
from verify import compare

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("case", case_params())
def test_kernels_match_pytorch_autograd(case, dtype, affine):
    x, gamma, beta, dy = case.inputs(dtype, affine)
    y, mean, rstd = case.forward(x, gamma, beta)
    dx, dgamma, dbeta = case.backward(dy, x, gamma, mean, rstd)

    # float64 PyTorch on the same values is the oracle for both dtypes
    tx, tg, tb = (
        None if a is None else torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, gamma, beta)
    )
    ty = case.torch_forward(tx, tg, tb)
    ty.backward(torch.tensor(dy, dtype=torch.float64))
    tol = compare.kernel_tolerance(dtype)
    compare.assert_close(y, ty.detach().numpy(), tol, what="y")
    compare.assert_close(dx, tx.grad.numpy(), tol, what="dx")
    if tg is not None:
        compare.assert_close(dgamma, tg.grad.numpy(), tol, what="dgamma")
    if tb is not None:
        compare.assert_close(dbeta, tb.grad.numpy(), tol, what="dbeta")


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5, 2)], ids=str)
def test_running_statistics_match_pytorch(shape, dtype):
    rng = np.random.default_rng(4)
    c = shape[1]
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    trm, trv = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    for step in range(3):
        x = (rng.standard_normal(shape) * 2 + step).astype(dtype)
        F.batch_norm(torch.tensor(x, dtype=torch.float64), trm, trv, training=True, momentum=0.1)
        nk.batch_norm_forward(x, running_mean=rm, running_var=rv, momentum=0.1)
    tol = compare.kernel_tolerance(dtype)
    compare.assert_close(rm, trm.numpy(), tol, what="running_mean")
    compare.assert_close(rv, trv.numpy(), tol, what="running_var")
