"""The CPU kernels against PyTorch autograd, when PyTorch is installed (skipped otherwise): each norm's op of
torch.nn.functional (F.rms_norm for RMSNorm), and for Switchable Normalization, which has none, a composition of
torch ops (verify.norms)."""

import numpy as np
import pytest
from conftest import case_params

import normkernels as nk
from verify import compare

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _leaf(a):
    return None if a is None else torch.tensor(a, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("case", case_params())
def test_kernels_match_pytorch_autograd(case, dtype, affine):
    """y, dx and the gradient of every parameter the norm has."""
    inputs = case.inputs(dtype, affine)
    y, saved = case.run_forward(inputs)
    grads = case.run_backward(inputs.dy, inputs, saved)

    # float64 PyTorch on the same values is the oracle for both dtypes
    leaves = {"x": _leaf(inputs.x), **{name: _leaf(a) for name, a in inputs.params.items()}}
    ty = case.torch_forward(**leaves)
    ty.backward(torch.tensor(inputs.dy, dtype=torch.float64))
    tol = compare.kernel_tolerance(dtype)
    compare.assert_close(y, ty.detach().numpy(), tol, what="y")
    for name, grad in zip(case.norm_entry.gradients, grads, strict=True):
        leaf = leaves[name[1:]]
        if leaf is None:
            assert grad is None or name == "dbeta", f"{name} without {name[1:]}"
            continue
        compare.assert_close(grad, leaf.grad.numpy(), tol, what=name)


@pytest.mark.parametrize("shape", [(3, 7), (2, 3, 16)], ids=str)
def test_rms_norm_default_eps_is_f_rms_norm_default(shape, dtype):
    """eps None is torch.finfo(dtype).eps in both: the same y and gradients as F.rms_norm without eps, computed
    in the input's own dtype, to within that dtype's kernel tolerance."""
    rng = np.random.default_rng(3)
    x = (0.01 * rng.standard_normal(shape)).astype(dtype)  # a small mean square, where eps shows
    gamma = (1 + 0.5 * rng.standard_normal(shape[-1:])).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y, rstd = nk.rms_norm_forward(x, shape[-1:], gamma)
    dx, dgamma = nk.rms_norm_backward(dy, x, gamma, rstd)
    tx, tg = (torch.tensor(a, requires_grad=True) for a in (x, gamma))
    ty = F.rms_norm(tx, shape[-1:], tg)
    ty.backward(torch.tensor(dy))
    tol = compare.kernel_tolerance(dtype)
    for name, ours, theirs in (("y", y, ty), ("dx", dx, tx.grad), ("dgamma", dgamma, tg.grad)):
        compare.assert_close(ours, theirs.detach().numpy(), tol, what=name)


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
