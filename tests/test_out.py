"""out=: every forward and backward writes its x-shaped result (y, dx) into a preallocated array when given one,
returns that array, and gives the same bits as without it; a bad out is refused naming what is wrong. The cuda
cases run in the simulator process (tests/test_cuda_simulator.py) on tiny shapes."""

import numpy as np
import pytest
from conftest import BACKENDS, SIMULATOR

import normkernels as nk
from normkernels._device import host
from verify.cases import CASES, CUDA_TINY


def _first_of_each_norm(cases):
    seen = {}
    for case in cases:
        seen.setdefault(case.norm, case)
    return list(seen.values())


def _cases(backend):
    return _first_of_each_norm(CUDA_TINY if backend == "cuda" else CASES)


def _out_like(a, backend):
    out = np.full(a.shape, np.nan, a.dtype)  # NaN: any element left unwritten shows
    if backend == "cuda" and not isinstance(a, np.ndarray):
        from numba import cuda

        return cuda.to_device(out)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_is_written_returned_and_bitwise_the_same(backend, dtype):
    for case in _cases(backend):
        inputs = case.inputs(dtype)
        before = [a.copy() for a in (inputs.x, inputs.dy)]
        y, saved = case.run_forward(inputs, backend)
        out = _out_like(y, backend)
        for _ in range(2):  # a reused buffer
            y_out, saved_out = case.run_forward(inputs, backend, out=out)
            assert y_out is out, case.id
            np.testing.assert_array_equal(host(y_out), host(y), err_msg=case.id)
        grads = case.run_backward(inputs.dy, inputs, saved, backend)
        dx_out = _out_like(grads[0], backend)
        grads_out = case.run_backward(inputs.dy, inputs, saved, backend, out=dx_out)
        assert grads_out[0] is dx_out, case.id
        for got, want in zip(grads_out, grads, strict=True):
            if want is not None:
                np.testing.assert_array_equal(host(got), host(want), err_msg=case.id)
        for a, b in zip((inputs.x, inputs.dy), before, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_split_batch_norm_takes_out_too(backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    count, m, m2 = nk.batch_norm_stats(x, backend=backend)
    mean, rstd = nk.batch_norm_gather_stats([count], host(m)[None], host(m2)[None], backend=backend)
    out = np.empty_like(x)
    assert nk.batch_norm_elemt(x, mean, rstd, backend=backend, out=out) is out
    np.testing.assert_array_equal(out, nk.batch_norm_elemt(x, mean, rstd, backend=backend))
    sums = nk.batch_norm_backward_reduce(dy, x, mean, rstd, backend=backend)
    dx = np.empty_like(x)
    assert nk.batch_norm_backward_elemt(dy, x, mean, rstd, None, *sums, count, backend=backend, out=dx) is dx
    np.testing.assert_array_equal(
        dx, nk.batch_norm_backward_elemt(dy, x, mean, rstd, None, *sums, count, backend=backend)
    )


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.values[0] == "cuda"])
def test_a_device_out_is_written_on_the_device(backend):
    from numba import cuda

    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    d_x = cuda.to_device(x)
    out = cuda.device_array_like(x)
    y, mean, rstd = nk.layer_norm_forward(d_x, (6,), backend=backend, out=out)
    assert y is out
    np.testing.assert_array_equal(out.copy_to_host(), nk.layer_norm_forward(x, (6,), backend=backend)[0])
    with pytest.raises(TypeError, match="x is a GPU array, so out must be one too"):
        nk.layer_norm_forward(d_x, (6,), backend=backend, out=np.empty_like(x))
    with pytest.raises(TypeError, match="expected out to be a numpy.ndarray"):
        nk.layer_norm_forward(x, (6,), backend=backend, out=out)


X = np.zeros((4, 3, 2), np.float32)
D = np.ones((4, 3, 2), np.float32)  # a dy
MEAN, RSTD = np.zeros(3, np.float32), np.ones(3, np.float32)
LN = (2,)
ROW_STATS = np.zeros((4, 3), np.float32), np.ones((4, 3), np.float32)  # layer norm's mean, rstd over (2,)
G = np.zeros((1, 2, 2), np.float32)  # gamma (2,) is G[0, 0]: out=G overlaps it


def _read_only():
    a = np.empty(X.shape, np.float32)
    a.flags.writeable = False
    return a


BAD = [
    ("wrong shape", ValueError, r"out of x's shape \(4, 3, 2\)", lambda: nk.batch_norm_forward(X, out=D.reshape(4, 6))),
    (
        "wrong dtype",
        TypeError,
        "out to have x's dtype float32",
        lambda: nk.layer_norm_forward(X, LN, out=np.empty(X.shape)),
    ),
    (
        "not contiguous",
        ValueError,
        "C-contiguous out",
        lambda: nk.instance_norm_forward(X, out=np.empty((4, 3, 4), "f4")[..., ::2]),
    ),
    ("read-only", ValueError, "out to be writable", lambda: nk.group_norm_forward(X, 3, out=_read_only())),
    ("a list", TypeError, "out to be a numpy.ndarray", lambda: nk.rms_norm_forward(X, LN, out=X.tolist())),
    ("a subclass", TypeError, "not a subclass", lambda: nk.batch_norm_forward(X[:, :, 0], out=np.asmatrix(D[:, :, 0]))),
    ("out is x", ValueError, "out may share memory with x", lambda: nk.batch_norm_forward(X, out=X)),
    (
        "out is dy",
        ValueError,
        "out may share memory with dy",
        lambda: nk.batch_norm_backward(D, X, None, MEAN, RSTD, out=D[...]),
    ),
    (
        "out views x",
        ValueError,
        "share memory with x",
        lambda: nk.layer_norm_backward(D, X, None, *ROW_STATS, out=X[:, :, :]),
    ),
    (
        "out holds gamma",
        ValueError,
        "share memory with gamma",
        lambda: nk.instance_norm_forward(D[:1, :2], G[0, 0], out=G),
    ),
]


@pytest.mark.skipif(SIMULATOR, reason="the cpu half")
@pytest.mark.parametrize("what, error, message, call", BAD, ids=[b[0] for b in BAD])
def test_a_bad_out_names_what_is_wrong(what, error, message, call):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_an_empty_batch(backend):
    """No rows: out comes back as it is, on every path (the row kernels, batch norm in eval, switchable)."""
    x = np.zeros((0, 3, 2), np.float32)
    stats = np.zeros((0, 3), np.float32), np.ones((0, 3), np.float32)
    running = dict(running_mean=np.zeros(3, np.float32), running_var=np.ones(3, np.float32))
    calls = (
        lambda out: nk.layer_norm_forward(x, (2,), backend=backend, out=out)[0],
        lambda out: nk.instance_norm_backward(x, x, None, *stats, backend=backend, out=out)[0],
        lambda out: nk.batch_norm_forward(x, training=False, **running, backend=backend, out=out)[0],
    )
    for call in calls:
        out = np.empty_like(x)
        assert call(out) is out
