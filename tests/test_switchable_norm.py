"""Switchable Normalization against an independent float64 NumPy reference (statistics by np.mean / np.var over
the axes directly), its gradients against central finite differences and, when torch is installed, autograd.

The cuda halves run on a GPU, or in Numba's simulator through test_cuda_simulator.py: tiny shapes there.
"""

import numpy as np
import pytest
from conftest import BACKENDS

import normkernels as nk
from verify import compare

CPU_SHAPES = [(2, 3, 5), (3, 4, 2, 3), (4, 6, 7, 5), (2, 3, 4, 3, 2)]
CUDA_SHAPES = [(2, 3, 5), (3, 4, 2, 3)]
MEAN_WEIGHT = [2.0, -1.0, 0.5]  # non-uniform: every statistic matters, none dominates
VAR_WEIGHT = [0.3, 1.0, -0.7]
STAT_SHAPES = dict(mean="nc", rstd="nc", mean_in="nc", var_in="nc", mean_ln="n", var_ln="n", mean_bn="c", var_bn="c")


def _params(cpu_shapes=CPU_SHAPES, cuda_shapes=CUDA_SHAPES):
    """(backend, shape) pairs, with the marks of conftest.BACKENDS (cuda: skip without a GPU or simulator)."""
    out = []
    for p in BACKENDS:
        (backend,) = p.values
        for shape in cpu_shapes if backend == "cpu" else cuda_shapes:
            out.append(pytest.param(backend, shape, id=f"{backend}-{'x'.join(map(str, shape))}", marks=p.marks))
    return out


CUDA = [p for p in BACKENDS if p.values == ("cuda",)]


# --- the reference ---------------------------------------------------------------------------------------


def _softmax(a):
    e = np.exp(a - np.max(a))
    return e / e.sum()


def reference(x, gamma, beta, mean_weight, var_weight, *, eps=1e-5, running=None):
    """Switchable Normalization in float64, written out: y and a dict of the statistics. running =
    (running_mean, running_var) replaces the batch statistics (eval mode)."""
    x = np.asarray(x, np.float64)
    spatial = tuple(range(2, x.ndim))
    w = _softmax(np.asarray(mean_weight, np.float64))
    v = _softmax(np.asarray(var_weight, np.float64))
    mean_in, var_in = x.mean(axis=spatial), x.var(axis=spatial)
    mean_ln, var_ln = x.mean(axis=(1, *spatial)), x.var(axis=(1, *spatial))
    if running is None:
        mean_bn, var_bn = x.mean(axis=(0, *spatial)), x.var(axis=(0, *spatial))
    else:
        mean_bn, var_bn = (np.asarray(a, np.float64) for a in running)
    mean = w[0] * mean_in + w[1] * mean_ln[:, None] + w[2] * mean_bn[None, :]
    var = v[0] * var_in + v[1] * var_ln[:, None] + v[2] * var_bn[None, :]
    rstd = 1.0 / np.sqrt(var + eps)
    per_row = (...,) + (None,) * len(spatial)
    per_channel = (slice(None),) + (None,) * len(spatial)
    y = (x - mean[per_row]) * rstd[per_row]
    if gamma is not None:
        y = y * np.asarray(gamma, np.float64)[per_channel]
    if beta is not None:
        y = y + np.asarray(beta, np.float64)[per_channel]
    stats = dict(
        mean=mean,
        rstd=rstd,
        mean_in=mean_in,
        var_in=var_in,
        mean_ln=mean_ln,
        var_ln=var_ln,
        mean_bn=mean_bn,
        var_bn=var_bn,
        mean_softmax=w,
        var_softmax=v,
    )
    return y, stats


def naive_float32(x, mean_weight, var_weight, *, eps=1e-5):
    """The authors' reference code in float32: var = E[x^2] - E[x]^2, layer and batch statistics from the
    instance ones' E[x] and E[x^2]. Returns y without affine."""
    x = np.asarray(x, np.float32)
    spatial = tuple(range(2, x.ndim))
    w = _softmax(np.asarray(mean_weight, np.float64)).astype(np.float32)
    v = _softmax(np.asarray(var_weight, np.float64)).astype(np.float32)
    mean_in = x.mean(axis=spatial, dtype=np.float32)
    sq_in = (x * x).mean(axis=spatial, dtype=np.float32)
    var_in = sq_in - mean_in**2
    mean_ln = mean_in.mean(axis=1, keepdims=True)
    var_ln = sq_in.mean(axis=1, keepdims=True) - mean_ln**2
    mean_bn = mean_in.mean(axis=0, keepdims=True)
    var_bn = sq_in.mean(axis=0, keepdims=True) - mean_bn**2
    mean = w[0] * mean_in + w[1] * mean_ln + w[2] * mean_bn
    var = v[0] * var_in + v[1] * var_ln + v[2] * var_bn
    per_row = (...,) + (None,) * len(spatial)
    with np.errstate(invalid="ignore"):  # a negative "variance" gives NaN, as it would in the authors' code
        return (x - mean[per_row]) / np.sqrt(var[per_row] + np.float32(eps))


def finite_differences(f, args, index, h=1e-5):
    """d f(*args) / d args[index] by central differences, f scalar, float64."""
    a = np.array(args[index], dtype=np.float64)
    grad = np.empty_like(a)
    for i in np.ndindex(a.shape):
        shifted = []
        for step in (h, -h):
            b = a.copy()
            b[i] += step
            shifted.append(f(*args[:index], b, *args[index + 1 :]))
        grad[i] = (shifted[0] - shifted[1]) / (2 * h)
    return grad


def inputs(shape, dtype, seed=0, *, offset=0.0):
    """x, gamma, beta, mean_weight, var_weight, dy in dtype (the values the reference takes too)."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (offset + rng.standard_normal(shape)).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, np.array(MEAN_WEIGHT, dtype), np.array(VAR_WEIGHT, dtype), dy


def running_stats(c, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(c) * 0.3, rng.uniform(0.5, 2.0, c)


def _stat_shape(key, shape):
    return {"nc": tuple(shape[:2]), "n": (shape[0],), "c": (shape[1],)}[key]


def assert_forward_matches(y, stats, want_y, want_stats, dtype, what):
    tol = compare.kernel_tolerance(dtype)
    assert isinstance(y, np.ndarray) and y.dtype == dtype and y.shape == want_y.shape
    compare.assert_close(y, want_y, tol, what=f"{what} y")
    assert isinstance(stats, nk.SwitchableStats)
    for name in nk.SwitchableStats._fields:
        got = getattr(stats, name)
        assert isinstance(got, np.ndarray) and got.dtype == dtype, name
        assert got.shape == want_stats[name].shape, f"{name}: {got.shape}"
        compare.assert_close(got, want_stats[name], tol, what=f"{what} {name}")


# --- forward ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backend, shape", _params())
def test_forward_matches_reference(backend, shape, dtype, training):
    x, gamma, beta, mw, vw, _ = inputs(shape, dtype)
    running = running_stats(shape[1])
    rm, rv = (a.copy() for a in running)
    y, stats = nk.switchable_norm_forward(
        x, gamma, beta, mw, vw, training=training, running_mean=rm, running_var=rv, backend=backend
    )
    want_y, want = reference(x, gamma, beta, mw, vw, running=None if training else running)
    assert_forward_matches(y, stats, want_y, want, dtype, f"{backend} {shape}")
    if not training:  # eval mode leaves the running statistics alone
        np.testing.assert_array_equal(rm, running[0])
        np.testing.assert_array_equal(rv, running[1])


@pytest.mark.parametrize("affine", ["none", "gamma", "beta"])
@pytest.mark.parametrize("backend, shape", _params(CPU_SHAPES[1:2], CUDA_SHAPES[:1]))
def test_forward_without_affine(backend, shape, affine):
    x, gamma, beta, mw, vw, _ = inputs(shape, np.float64)
    gamma = gamma if affine == "gamma" else None
    beta = beta if affine == "beta" else None
    y, stats = nk.switchable_norm_forward(x, gamma, beta, mw, vw, eps=1e-3, backend=backend)
    want_y, want = reference(x, gamma, beta, mw, vw, eps=1e-3)
    assert_forward_matches(y, stats, want_y, want, np.float64, affine)


@pytest.mark.parametrize("backend, shape", _params(CPU_SHAPES[:3], CUDA_SHAPES[1:]))
def test_running_statistics_are_batch_norms(backend, shape):
    """Two training steps update running_mean and running_var exactly as batch_norm_forward does (unbiased
    variance, PyTorch's momentum); eval mode then normalizes with them."""
    c = shape[1]
    x, gamma, beta, mw, vw, _ = inputs(shape, np.float64)
    x2 = inputs(shape, np.float64, seed=5)[0]
    ours = running_stats(c)
    theirs = tuple(a.copy() for a in ours)
    for xb in (x, x2):
        nk.switchable_norm_forward(
            xb, gamma, beta, mw, vw, running_mean=ours[0], running_var=ours[1], momentum=0.3, backend=backend
        )
        nk.batch_norm_forward(xb, running_mean=theirs[0], running_var=theirs[1], momentum=0.3, backend=backend)
    tol = compare.kernel_tolerance(np.float64)
    compare.assert_close(ours[0], theirs[0], tol, what="running_mean")
    compare.assert_close(ours[1], theirs[1], tol, what="running_var")
    y, stats = nk.switchable_norm_forward(
        x, gamma, beta, mw, vw, training=False, running_mean=ours[0], running_var=ours[1], backend=backend
    )
    want_y, _ = reference(x, gamma, beta, mw, vw, running=ours)
    compare.assert_close(y, want_y, tol, what="eval y")
    np.testing.assert_array_equal(stats.mean_bn, ours[0])  # used as stored
    np.testing.assert_array_equal(stats.var_bn, ours[1])


# Logits of 50 against 0: the other two weights are e^-50 ~ 2e-22, so the mix is one statistic to within
# float64 rounding.
REDUCTIONS = {
    "instance": ([50.0, 0.0, 0.0], lambda x, g, b, be: nk.instance_norm_forward(x, g, b, backend=be)),
    "layer": ([0.0, 50.0, 0.0], lambda x, g, b, be: _layer_norm_per_channel(x, g, b, be)),
    "batch": ([0.0, 0.0, 50.0], lambda x, g, b, be: nk.batch_norm_forward(x, g, b, backend=be)),
}


def _layer_norm_per_channel(x, gamma, beta, backend):
    """Layer norm over (C, *spatial) with a per-channel affine (layer norm's own affine is per element)."""
    y, mean, rstd = nk.layer_norm_forward(x, x.shape[1:], backend=backend)
    per_channel = (slice(None),) + (None,) * (x.ndim - 2)
    return y * gamma[per_channel] + beta[per_channel], mean, rstd


@pytest.mark.parametrize("kind", REDUCTIONS)
@pytest.mark.parametrize("backend, shape", _params(CPU_SHAPES[1:3], CUDA_SHAPES[1:]))
def test_dominant_weights_reduce_to_instance_layer_and_batch_norm(backend, shape, kind):
    logits, other = REDUCTIONS[kind]
    x, gamma, beta, _, _, dy = inputs(shape, np.float64)
    y, stats = nk.switchable_norm_forward(x, gamma, beta, np.array(logits), np.array(logits), backend=backend)
    want_y, mean, rstd = other(x, gamma, beta, backend)
    tol = compare.kernel_tolerance(np.float64)
    compare.assert_close(y, want_y, tol, what=f"{kind} y")
    per = {"instance": shape[:2], "layer": (shape[0], 1), "batch": (1, shape[1])}[kind]
    for name, want in (("mean", mean), ("rstd", rstd)):
        want = np.broadcast_to(np.reshape(want, per), shape[:2])
        compare.assert_close(getattr(stats, name), want, tol, what=f"{kind} {name}")
    dx = nk.switchable_norm_backward(dy, x, gamma, np.array(logits), np.array(logits), stats, backend=backend)[0]
    if kind == "layer":  # a per-channel gamma after layer norm: d(LN(x) * gamma) = LN's backward of dy * gamma
        per_channel = (slice(None),) + (None,) * (x.ndim - 2)
        want_dx = nk.layer_norm_backward(dy * gamma[per_channel], x, None, mean, rstd, backend=backend)[0]
    else:
        backward = nk.instance_norm_backward if kind == "instance" else nk.batch_norm_backward
        want_dx = backward(dy, x, gamma, mean, rstd, backend=backend)[0]
    compare.assert_close(dx, want_dx, tol, what=f"{kind} dx")


@pytest.mark.parametrize("backend, shape", _params([(4, 8, 16, 16)], [(2, 3, 5)]))
def test_float32_with_a_large_offset(backend, shape):
    """Mean 1e4, std 1 in float32: within 1e-3 of the float64 answer, where E[x^2] - E[x]^2 in float32 (the
    authors' reference code) is not."""
    x, _, _, mw, vw, _ = inputs(shape, np.float32, offset=1e4)
    y, _ = nk.switchable_norm_forward(x, None, None, mw, vw, backend=backend)
    want, _ = reference(x, None, None, mw, vw)
    ours = compare.max_abs_error(y, want)
    naive = compare.max_abs_error(naive_float32(x, mw, vw), want)
    assert ours <= 1e-3, ours
    assert not naive <= 1e-3, naive  # NaN (a negative "variance") counts as worse
    assert not naive <= ours


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_stays_in_the_groups_that_share_its_statistics(backend, training):
    """A NaN in row (1, 2) reaches mean_ln[1] and mean_bn[2], so y[1] and y[:, 2]: nothing else. In eval the
    batch statistics are the running ones: only y[1]."""
    shape = (3, 4, 5)
    x, gamma, beta, mw, vw, _ = inputs(shape, np.float64)
    x[1, 2, 3] = np.nan
    rm, rv = running_stats(shape[1])
    y, stats = nk.switchable_norm_forward(
        x, gamma, beta, mw, vw, training=training, running_mean=rm, running_var=rv, backend=backend
    )
    expect = np.zeros(shape, bool)
    expect[1] = True
    if training:
        expect[:, 2] = True
    np.testing.assert_array_equal(np.isnan(y), expect)
    row = np.zeros(shape[:2], bool)
    row[1, 2] = True
    np.testing.assert_array_equal(np.isnan(stats.mean_in), row)
    channel = np.arange(shape[1]) == 2
    np.testing.assert_array_equal(np.isnan(rm), channel if training else False)  # eval: left alone


# --- backward --------------------------------------------------------------------------------------------


def _loss(dy, running):
    """sum(y * dy) of the reference, as a function of (x, gamma, beta, mean_weight, var_weight)."""

    def loss(x, gamma, beta, mean_weight, var_weight):
        y, _ = reference(x, gamma, beta, mean_weight, var_weight, running=running)
        return float(np.sum(y * dy))

    return loss


def _gradients(shape, dtype, training, backend, *, affine=True):
    x, gamma, beta, mw, vw, dy = inputs(shape, dtype)
    running = running_stats(shape[1])
    rm, rv = (a.copy() for a in running)
    g, b = (gamma, beta) if affine else (None, None)
    _, stats = nk.switchable_norm_forward(
        x, g, b, mw, vw, training=training, running_mean=rm, running_var=rv, backend=backend
    )
    got = nk.switchable_norm_backward(dy, x, g, mw, vw, stats, training=training, backend=backend)
    return (x, gamma, beta, mw, vw, dy), None if training else running, got


GRADIENTS = ("dx", "dgamma", "dbeta", "dmean_weight", "dvar_weight")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backend, shape", _params(CPU_SHAPES[:2], CUDA_SHAPES))
def test_gradients_match_finite_differences(backend, shape, training):
    args, running, got = _gradients(shape, np.float64, training, backend)
    loss = _loss(args[5], running)
    tol = compare.FINITE_DIFFERENCE
    for index, (name, g) in enumerate(zip(GRADIENTS, got, strict=True)):
        assert isinstance(g, np.ndarray) and g.dtype == np.float64 and g.shape == np.shape(args[index]), name
        compare.assert_close(g, finite_differences(loss, args[:5], index), tol, what=f"{backend} {shape} {name}")


def torch_gradients(args, running, *, eps=1e-5, affine=True):
    """dx, dgamma, dbeta, dmean_weight, dvar_weight of sum(y * dy) by torch autograd, in float64."""
    torch = pytest.importorskip("torch")
    x, gamma, beta, mw, vw, dy = (torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in args)
    spatial = tuple(range(2, x.ndim))
    w = torch.softmax(mw, 0)
    v = torch.softmax(vw, 0)
    mean_in, var_in = x.mean(spatial), x.var(spatial, correction=0)
    mean_ln, var_ln = x.mean((1, *spatial)), x.var((1, *spatial), correction=0)
    if running is None:
        mean_bn, var_bn = x.mean((0, *spatial)), x.var((0, *spatial), correction=0)
    else:
        mean_bn, var_bn = (torch.tensor(a) for a in running)  # constants: no gradient flows through them
    mean = w[0] * mean_in + w[1] * mean_ln[:, None] + w[2] * mean_bn[None, :]
    var = v[0] * var_in + v[1] * var_ln[:, None] + v[2] * var_bn[None, :]
    per_row = (...,) + (None,) * len(spatial)
    per_channel = (slice(None),) + (None,) * len(spatial)
    y = (x - mean[per_row]) / torch.sqrt(var[per_row] + eps)
    if affine:
        y = y * gamma[per_channel] + beta[per_channel]
    (y * dy.detach()).sum().backward()
    grads = [x.grad, gamma.grad, beta.grad, mw.grad, vw.grad]
    return [None if g is None else g.numpy() for g in grads]


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backend, shape", _params(CPU_SHAPES, CUDA_SHAPES[1:]))
def test_gradients_match_torch_autograd(backend, shape, dtype, training, affine):
    pytest.importorskip("torch")
    args, running, got = _gradients(shape, dtype, training, backend, affine=affine)
    want = torch_gradients(args, running, affine=affine)
    tol = compare.kernel_tolerance(dtype)
    for name, g, w in zip(GRADIENTS, got, want, strict=True):
        if not affine and name in ("dgamma", "dbeta"):
            assert g is None, f"{name} should be None without gamma"
            continue
        assert isinstance(g, np.ndarray) and g.dtype == dtype and g.shape == w.shape, name
        compare.assert_close(g, w, tol, what=f"{backend} {shape} {np.dtype(dtype).name} {name}")


# --- determinism, inputs, types --------------------------------------------------------------------------


def _run_all(backend, x, gamma, beta, mw, vw, dy, running, training=True):
    rm, rv = (a.copy() for a in running)
    y, stats = nk.switchable_norm_forward(
        x, gamma, beta, mw, vw, training=training, running_mean=rm, running_var=rv, backend=backend
    )
    grads = nk.switchable_norm_backward(dy, x, gamma, mw, vw, stats, training=training, backend=backend)
    return [y, *stats, *grads, rm, rv]


@pytest.mark.parametrize("backend, shape", _params([(8, 16, 9, 7)], CUDA_SHAPES[1:]))
def test_bitwise_identical_run_to_run_and_at_any_thread_count(backend, shape, dtype):
    x, gamma, beta, mw, vw, dy = inputs(shape, dtype)
    running = running_stats(shape[1])
    first = _run_all(backend, x, gamma, beta, mw, vw, dy, running)
    again = _run_all(backend, x, gamma, beta, mw, vw, dy, running)
    runs = [again]
    if backend == "cpu":
        import numba

        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            runs.append(_run_all(backend, x, gamma, beta, mw, vw, dy, running))
        finally:
            numba.set_num_threads(threads)
    for run in runs:
        for a, b in zip(first, run, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_inputs_are_never_modified_and_numpy_in_gives_numpy_out(backend, dtype, training):
    shape = (2, 3, 4, 2)
    x, gamma, beta, mw, vw, dy = inputs(shape, dtype)
    x = np.asfortranarray(x)  # any strides are accepted
    mw64 = mw.astype(np.float64)  # any float dtype for the weights on the host
    before = [a.copy() for a in (x, gamma, beta, mw64, vw, dy)]
    rm, rv = running_stats(shape[1])
    y, stats = nk.switchable_norm_forward(
        x, gamma, beta, mw64, vw, training=training, running_mean=rm, running_var=rv, backend=backend
    )
    stats_before = [a.copy() for a in stats]
    grads = nk.switchable_norm_backward(dy, x, gamma, mw64, vw, stats, training=training, backend=backend)
    for a, b in zip((x, gamma, beta, mw64, vw, dy), before, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(stats, stats_before, strict=True):
        np.testing.assert_array_equal(a, b)
    for name, a in zip(("y", *nk.SwitchableStats._fields, *GRADIENTS), (y, *stats, *grads), strict=True):
        assert type(a) is np.ndarray and a.dtype == dtype, f"{name}: {type(a).__name__} {a.dtype}"
    for name, key in STAT_SHAPES.items():
        assert getattr(stats, name).shape == _stat_shape(key, shape), name
    assert y.shape == grads[0].shape == shape
    want_y, _ = reference(x, gamma, beta, mw64, vw, running=None if training else (rm, rv))
    compare.assert_close(y, want_y, compare.kernel_tolerance(dtype), what="strided x")


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_empty_batch_leaves_the_running_statistics_alone(backend):
    x = np.ones((0, 3, 4))
    rm, rv = np.zeros(3), np.ones(3)
    y, stats = nk.switchable_norm_forward(
        x, None, None, np.zeros(3), np.zeros(3), running_mean=rm, running_var=rv, backend=backend
    )
    assert y.shape == x.shape and stats.mean.shape == (0, 3) and np.isnan(stats.mean_bn).all()
    np.testing.assert_array_equal(rm, 0.0)
    np.testing.assert_array_equal(rv, 1.0)
    dx, dgamma, dbeta, dmw, dvw = nk.switchable_norm_backward(
        x, x, np.ones(3), np.zeros(3), np.zeros(3), stats, backend=backend
    )
    assert dx.shape == x.shape
    for a in (dgamma, dbeta, dmw, dvw):
        np.testing.assert_array_equal(a, 0.0)


# --- bad input -------------------------------------------------------------------------------------------

X = np.ones((2, 3, 4))
W = np.zeros(3)


def _stats(**replace):
    _, stats = nk.switchable_norm_forward(X, None, None, W, W)
    return stats._replace(**replace)


BAD = [
    (
        "mean_weight shape",
        ValueError,
        r"expected mean_weight of shape \(3,\)",
        lambda b: nk.switchable_norm_forward(X, None, None, np.zeros(2), W, backend=b),
    ),
    (
        "var_weight shape",
        ValueError,
        r"expected var_weight of shape \(3,\)",
        lambda b: nk.switchable_norm_forward(X, None, None, W, np.zeros((3, 1)), backend=b),
    ),
    (
        "mean_weight None",
        TypeError,
        "expected mean_weight to be a numpy.ndarray",
        lambda b: nk.switchable_norm_forward(X, None, None, None, W, backend=b),
    ),
    (
        "var_weight int",
        TypeError,
        "expected var_weight to have a floating-point dtype",
        lambda b: nk.switchable_norm_forward(X, None, None, W, np.zeros(3, int), backend=b),
    ),
    (
        "gamma shape",
        ValueError,
        r"expected gamma of shape \(3,\)",
        lambda b: nk.switchable_norm_forward(X, np.ones(4), None, W, W, backend=b),
    ),
    (
        "beta shape",
        ValueError,
        r"expected beta of shape \(3,\)",
        lambda b: nk.switchable_norm_forward(X, None, np.ones(2), W, W, backend=b),
    ),
    (
        "x 2-D",
        ValueError,
        "switchable_norm_forward: expected x with at least 3 dimensions",
        lambda b: nk.switchable_norm_forward(np.ones((2, 3)), None, None, W, W, backend=b),
    ),
    (
        "one spatial element",
        ValueError,
        "Expected more than 1 spatial element",
        lambda b: nk.switchable_norm_forward(np.ones((4, 3, 1, 1)), None, None, W, W, backend=b),
    ),
    (
        "x int",
        TypeError,
        "expected x to have dtype float32 or float64",
        lambda b: nk.switchable_norm_forward(np.ones((2, 3, 4), int), None, None, W, W, backend=b),
    ),
    (
        "x a list",
        TypeError,
        "expected x to be a numpy.ndarray",
        lambda b: nk.switchable_norm_forward(X.tolist(), None, None, W, W, backend=b),
    ),
    (
        "eval without running statistics",
        ValueError,
        "expected running_mean and running_var when training=False",
        lambda b: nk.switchable_norm_forward(X, None, None, W, W, training=False, backend=b),
    ),
    (
        "one running statistic",
        ValueError,
        "running_mean and running_var both given or both None",
        lambda b: nk.switchable_norm_forward(X, None, None, W, W, running_mean=np.zeros(3), backend=b),
    ),
    (
        "running_var shape",
        ValueError,
        r"expected running_var of shape \(3,\)",
        lambda b: nk.switchable_norm_forward(
            X, None, None, W, W, running_mean=np.zeros(3), running_var=np.ones(4), backend=b
        ),
    ),
    (
        "training a string",
        TypeError,
        "expected training to be a bool",
        lambda b: nk.switchable_norm_forward(X, None, None, W, W, training="yes", backend=b),
    ),
    (
        "eps negative",
        ValueError,
        "expected eps to be a finite number",
        lambda b: nk.switchable_norm_forward(X, None, None, W, W, eps=-1.0, backend=b),
    ),
    (
        "momentum None",
        TypeError,
        "expected momentum to be a real number",
        lambda b: nk.switchable_norm_forward(X, None, None, W, W, momentum=None, backend=b),
    ),
    (
        "backend",
        ValueError,
        "backend must be one of",
        lambda b: nk.switchable_norm_forward(X, None, None, W, W, backend="tpu"),
    ),
    (
        "stats of the wrong shape",
        ValueError,
        r"switchable_norm_backward: expected stats.mean_ln of shape \(2,\)",
        lambda b: nk.switchable_norm_backward(X, X, None, W, W, _stats(mean_ln=np.zeros(3)), backend=b),
    ),
    (
        "stats field per row",
        ValueError,
        r"expected stats.rstd of shape \(2, 3\)",
        lambda b: nk.switchable_norm_backward(X, X, None, W, W, _stats(rstd=np.zeros(6)), backend=b),
    ),
    (
        "stats a tuple of two",
        TypeError,
        "expected stats to be the SwitchableStats",
        lambda b: nk.switchable_norm_backward(X, X, None, W, W, (np.zeros((2, 3)), np.ones((2, 3))), backend=b),
    ),
    (
        "stats None",
        TypeError,
        "expected stats to be the SwitchableStats",
        lambda b: nk.switchable_norm_backward(X, X, None, W, W, None, backend=b),
    ),
    (
        "dy shape",
        ValueError,
        r"expected dy of shape \(2, 3, 4\)",
        lambda b: nk.switchable_norm_backward(np.ones((2, 3, 5)), X, None, W, W, _stats(), backend=b),
    ),
    (
        "backward gamma shape",
        ValueError,
        r"expected gamma of shape \(3,\)",
        lambda b: nk.switchable_norm_backward(X, X, np.ones(2), W, W, _stats(), backend=b),
    ),
    (
        "backward mean_weight shape",
        ValueError,
        r"switchable_norm_backward: expected mean_weight of shape \(3,\)",
        lambda b: nk.switchable_norm_backward(X, X, None, np.zeros(4), W, _stats(), backend=b),
    ),
]


@pytest.mark.parametrize("what, error, message, call", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_names_the_argument(backend, what, error, message, call):
    with pytest.raises(error, match=message):
        call(backend)


# --- device arrays ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backend", CUDA)
def test_device_arrays_in_give_device_arrays_out_and_the_same_bits(backend, training):
    from numba import cuda

    shape = (3, 4, 2, 3)
    x, gamma, beta, mw, vw, dy = inputs(shape, np.float32)
    running = tuple(a.astype(np.float32) for a in running_stats(shape[1]))
    host = _run_all(backend, x, gamma, beta, mw, vw, dy, running, training)
    d_x, d_gamma, d_beta, d_mw, d_vw, d_dy, d_rm, d_rv = (
        cuda.to_device(a) for a in (x, gamma, beta, mw, vw, dy, *running)
    )
    y, stats = nk.switchable_norm_forward(
        d_x, d_gamma, d_beta, d_mw, d_vw, training=training, running_mean=d_rm, running_var=d_rv, backend=backend
    )
    grads = nk.switchable_norm_backward(d_dy, d_x, d_gamma, d_mw, d_vw, stats, training=training, backend=backend)
    device = [y, *stats, *grads, d_rm, d_rv]
    for got, want in zip(device, host, strict=True):
        assert not isinstance(got, np.ndarray) and hasattr(got, "copy_to_host"), type(got).__name__
        np.testing.assert_array_equal(got.copy_to_host(), want)
    np.testing.assert_array_equal(d_x.copy_to_host(), x)  # the input is left alone on the device too


def test_exports():
    assert {"switchable_norm_forward", "switchable_norm_backward", "SwitchableStats"} <= set(nk.__all__)
    assert nk.SwitchableStats._fields == (*STAT_SHAPES, "mean_softmax", "var_softmax")
