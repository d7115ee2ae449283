"""RMSNorm (nk.rms_norm_forward / nk.rms_norm_backward) on both backends: against an independent float64
closed form, F.rms_norm and its autograd when PyTorch is installed, on hard rows, and on bad input.

The cuda cases run in the simulator process (tests/test_cuda_simulator.py) on tiny shapes."""

import numpy as np
import pytest
from conftest import BACKENDS, SIMULATOR

import normkernels as nk
from verify import compare

# (x shape, normalized_shape): one and two normalized dims, rows of one element, a 1-D x (one row)
SHAPES = [((6, 10), (10,)), ((3, 4, 5), (4, 5)), ((7, 1), (1,)), ((9,), (9,)), ((2, 3, 21), (21,))]
SHAPE_IDS = ["-".join(map(str, s)) + f"-last{len(n)}" for s, n in SHAPES]


def reference(x, gamma, dy, normalized_ndim: int, eps: float):
    """y, rstd, dx, dgamma in float64 by the closed form: xhat = x * rstd, y = gamma * xhat,
    dx = rstd * (g - xhat * mean(g * xhat)) with g = dy * gamma, dgamma = sum(dy * xhat) over the leading dims."""
    x, dy = (np.asarray(a, np.float64) for a in (x, dy))
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    g64 = np.ones(x.shape[x.ndim - normalized_ndim :]) if gamma is None else np.asarray(gamma, np.float64)
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + eps)
    xhat = x * rstd
    g = dy * g64
    dx = rstd * (g - xhat * np.mean(g * xhat, axis=axes, keepdims=True))
    lead = tuple(range(x.ndim - normalized_ndim))
    dgamma = None if gamma is None else (dy * xhat).sum(axis=lead)
    return g64 * xhat, rstd.reshape(x.shape[: x.ndim - normalized_ndim]), dx, dgamma


def draw(shape, normalized, dtype, seed=0, offset=0.5, spread=1.5):
    rng = np.random.default_rng(seed)
    x = (offset + spread * rng.standard_normal(shape)).astype(dtype)
    gamma = (1.0 + 0.5 * rng.standard_normal(normalized)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, dy


def run(x, normalized, gamma, dy, backend, eps=None):
    y, rstd = nk.rms_norm_forward(x, normalized, gamma, eps=eps, backend=backend)
    dx, dgamma = nk.rms_norm_backward(dy, x, gamma, rstd, backend=backend)
    return y, rstd, dx, dgamma


@pytest.mark.parametrize("with_gamma", [True, False], ids=["gamma", "no-gamma"])
@pytest.mark.parametrize("shape, normalized", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_the_float64_closed_form(backend, shape, normalized, dtype, with_gamma):
    x, gamma, dy = draw(shape, normalized, dtype)
    gamma = gamma if with_gamma else None
    got = run(x, normalized, gamma, dy, backend)
    want = reference(x, gamma, dy, len(normalized), float(np.finfo(dtype).eps))
    tol = compare.kernel_tolerance(dtype)
    for name, a, b in zip(("y", "rstd", "dx", "dgamma"), got, want, strict=True):
        if b is None:
            assert a is None, f"{name} should be None without gamma"
            continue
        assert isinstance(a, np.ndarray) and a.dtype == dtype and a.shape == b.shape, (name, type(a), a.shape)
        compare.assert_close(a, b, tol, what=f"rms_norm {backend} {name}")


def test_eps_none_is_the_machine_epsilon_of_the_dtype(dtype):
    """As F.rms_norm: eps None is torch.finfo(dtype).eps, which for a zero row sets rstd = 1 / sqrt(eps)."""
    x = np.zeros((2, 8), dtype)
    _, rstd = nk.rms_norm_forward(x, 8)
    np.testing.assert_allclose(rstd, 1.0 / np.sqrt(np.finfo(dtype).eps), rtol=1e-6)
    _, rstd = nk.rms_norm_forward(x, 8, eps=0.25)
    np.testing.assert_allclose(rstd, 2.0, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hard_rows(backend, dtype):
    """Constant rows, rows of zeros, a 1e4 offset with spread 1 (nothing cancels in mean(x**2): float32 keeps
    its full relative accuracy, unlike layer norm's x - mean), and rows of one element (y = gamma * x / |x|)."""
    tol = compare.kernel_tolerance(dtype)
    rows = {
        "constant": np.full((4, 16), -3.25, dtype),
        "zeros": np.zeros((4, 16), dtype),
        "offset 1e4": (1e4 + np.random.default_rng(1).standard_normal((4, 16))).astype(dtype),
        "one element": np.array([[2.0], [-0.5], [1e-3], [0.0]], dtype),
    }
    for what, x in rows.items():
        k = x.shape[-1]
        gamma = np.linspace(0.5, 1.5, k).astype(dtype)
        dy = np.random.default_rng(2).standard_normal(x.shape).astype(dtype)
        eps = float(np.finfo(dtype).eps)
        got = run(x, k, gamma, dy, backend)
        want = reference(x, gamma, dy, 1, eps)
        for name, a, b in zip(("y", "rstd", "dx", "dgamma"), got, want, strict=True):
            assert np.all(np.isfinite(a)), f"{what}: {name} not finite"
            # dx scales with rstd, which is 1 / sqrt(eps) on a zero row: the tolerance scales with it
            scale = float(np.max(want[1])) if name == "dx" else 1.0
            compare.assert_close(a, b, tol._replace(atol=tol.atol * scale), what=f"{what} {backend} {name}")


@pytest.mark.skipif(SIMULATOR, reason="a million elements is too many for the simulator")
def test_a_million_element_row(dtype):
    x, gamma, dy = draw((2, 1 << 20), (1 << 20,), dtype, seed=3)
    got = run(x, 1 << 20, gamma, dy, "cpu")
    want = reference(x, gamma, dy, 1, float(np.finfo(dtype).eps))
    tol = compare.kernel_tolerance(dtype)
    for name, a, b in zip(("y", "rstd", "dx", "dgamma"), got, want, strict=True):
        compare.assert_close(a, b, tol, what=f"million-element row {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bitwise_repeatable_and_inputs_untouched(backend):
    x, gamma, dy = draw((5, 3, 7), (3, 7), np.float32)
    copies = [a.copy() for a in (x, gamma, dy)]
    first = run(x, (3, 7), gamma, dy, backend)
    second = run(x, (3, 7), gamma, dy, backend)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip((x, gamma, dy), copies, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(SIMULATOR, reason="the cpu half")
def test_any_strides():
    x, gamma, dy = draw((6, 10), (10,), np.float64)
    xt = np.asfortranarray(x)
    np.testing.assert_array_equal(run(xt, 10, gamma, dy, "cpu")[0], run(x, 10, gamma, dy, "cpu")[0])


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.values[0] == "cuda"])
def test_device_arrays_in_give_device_arrays_out(backend):
    from numba import cuda

    x, gamma, dy = draw((5, 9), (9,), np.float32)
    host = run(x, 9, gamma, dy, backend)
    device = run(cuda.to_device(x), 9, cuda.to_device(gamma), cuda.to_device(dy), backend)
    for a, b in zip(device, host, strict=True):
        assert not isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a.copy_to_host(), b)


@pytest.mark.skipif(SIMULATOR, reason="the cpu half")
@pytest.mark.parametrize("shape, normalized", SHAPES[:3], ids=SHAPE_IDS[:3])
def test_matches_torch_rms_norm_and_its_autograd(shape, normalized, dtype):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    x, gamma, dy = draw(shape, normalized, dtype, seed=4)
    y, rstd, dx, dgamma = run(x, normalized, gamma, dy, "cpu")
    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(gamma, requires_grad=True)
    ty = F.rms_norm(tx, normalized, tg)  # eps None on both sides
    ty.backward(torch.tensor(dy))
    tol = compare.kernel_tolerance(dtype)
    for name, a, b in (("y", y, ty.detach()), ("dx", dx, tx.grad), ("dgamma", dgamma, tg.grad)):
        compare.assert_close(a, b.numpy().astype(np.float64), tol, what=f"rms_norm vs F.rms_norm {name}")


X = np.ones((4, 6), np.float32)
BAD = [
    ("normalized_shape not trailing", ValueError, "normalized_shape", lambda b: nk.rms_norm_forward(X, 4, backend=b)),
    ("normalized_shape a float", TypeError, "normalized_shape", lambda b: nk.rms_norm_forward(X, 6.0, backend=b)),
    ("x int", TypeError, "dtype float32 or float64", lambda b: nk.rms_norm_forward(X.astype(int), 6, backend=b)),
    ("gamma shape", ValueError, r"expected gamma of shape \(6,\)", lambda b: nk.rms_norm_forward(X, 6, X, backend=b)),
    ("eps negative", ValueError, "eps", lambda b: nk.rms_norm_forward(X, 6, eps=-1.0, backend=b)),
    ("eps a string", TypeError, "eps", lambda b: nk.rms_norm_forward(X, 6, eps="1e-6", backend=b)),
    ("backend", ValueError, "backend must be one of", lambda b: nk.rms_norm_forward(X, 6, backend="tpu")),
    (
        "rstd shape",
        ValueError,
        r"expected rstd of shape \(4,\)",
        lambda b: nk.rms_norm_backward(X, X, None, np.ones(3, np.float32), backend=b),
    ),
    (
        "rstd ndim",
        ValueError,
        "expected rstd with ndim",
        lambda b: nk.rms_norm_backward(X, X, None, np.ones((4, 6, 1), np.float32), backend=b),
    ),
    (
        "dy shape",
        ValueError,
        r"expected dy of shape \(4, 6\)",
        lambda b: nk.rms_norm_backward(X[:2], X, None, np.ones(4, np.float32), backend=b),
    ),
]


@pytest.mark.parametrize("what, error, message, call", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_names_the_argument(backend, what, error, message, call):
    with pytest.raises(error, match=message) as info:
        call(backend)
    assert "rms_norm" in str(info.value) or what == "backend"
