"""Hard inputs, right answers, on both backends: each checked against the float64 staged graph or an exact
expectation. The cuda cases run on tiny shapes in the simulator (see conftest.backend_case_params)."""

import numpy as np
import pytest
from conftest import BACKENDS, SIMULATOR, backend_case_params

from verify import compare
from verify.cases import CASES, CUDA_TINY, Case

SMALL = [c for c in CASES if "small" in c.tags]
ON_BOTH = backend_case_params(SMALL, CUDA_TINY)


def _pairs(case, x, gamma, beta, dy, backend):
    """{name: (ours, float64 reference)} for y, mean, rstd, dx, dgamma, dbeta, and the staged cache."""
    return case.outputs_and_staged(x, gamma, beta, dy, backend=backend)


@pytest.mark.parametrize(
    "backend, case",
    backend_case_params(
        [
            Case("layer_norm", (8, 4096), normalized_ndim=1),
            Case("batch_norm", (64, 3, 50)),
            Case("instance_norm", (2, 3, 500)),
            Case("group_norm", (2, 8, 100), num_groups=4),
        ],
        CUDA_TINY,
    ),
)
def test_float32_large_mean_small_spread(backend, case):
    """Groups with mean 1e4 and std 1 in float32 normalize to within 1e-5 of the float64 answer: well
    inside the 1e-3 promised, and tight enough to catch a mean rounded to float32 before the subtraction
    (half an ulp of 1e4 is 4.9e-4), which the cuda batch norm did until it kept a float64 centre."""
    rng = np.random.default_rng(5)
    x32 = (1e4 + rng.standard_normal(case.shape)).astype(np.float32)
    y32 = case.forward(x32, None, None, backend=backend)[0]
    y64 = case.staged_forward(x32.astype(np.float64), None, None)[0]
    assert np.max(np.abs(y32 - y64)) < 1e-5


@pytest.mark.parametrize("backend, case", ON_BOTH)
def test_constant_groups_give_beta_and_finite_gradients(backend, case, dtype, affine):
    _, gamma, beta, dy = case.inputs(dtype, affine)
    x = np.full(case.shape, 3.25, dtype=dtype)
    pairs, cache = _pairs(case, x, gamma, beta, dy, backend)
    (y, _), (dx, ref_dx), (dgamma, _), (dbeta, ref_dbeta) = (pairs[k] for k in ("y", "dx", "dgamma", "dbeta"))
    shift = np.zeros(case.layout.affine_shape) if beta is None else beta
    expect = np.broadcast_to(shift.reshape(case.layout.affine_broadcast), case.shape)
    np.testing.assert_array_equal(y, expect.astype(dtype))
    assert np.all(np.isfinite(dx))
    # dx = rstd * gamma * (dy - mean(dy)) with rstd = 1 / sqrt(eps) ~ 316: errors in the last place of dx
    # scale with rstd, so the absolute tolerance does too
    tol = compare.kernel_tolerance(dtype)
    scaled = tol._replace(atol=tol.atol * float(np.max(cache["rstd"])))
    compare.assert_close(dx, ref_dx, scaled, what=f"{case.id} dx")
    if gamma is not None:  # xhat = 0 everywhere: dgamma = 0, dbeta = sum(dy)
        np.testing.assert_array_equal(dgamma, 0)
        compare.assert_close(dbeta, ref_dbeta, tol, what=f"{case.id} dbeta")


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("backend, case", ON_BOTH)
def test_nan_or_inf_stays_in_its_statistics_group(backend, case, bad):
    """One NaN or inf makes its own group's outputs NaN (inf - inf) and leaves every other group finite;
    dbeta = sum(dy) does not see x at all."""
    x, gamma, beta, dy = case.inputs(np.float64)
    x.reshape(-1)[0] = bad  # element 0 is in the first statistics group
    y, mean, rstd = case.forward(x, gamma, beta, backend=backend)
    dx, _, dbeta = case.backward(dy, x, gamma, mean, rstd, backend=backend)
    assert np.isfinite(dbeta).all()
    lay = case.layout
    # which elements share a statistics group with element 0, in the statistics view
    touched = np.zeros(lay.view_shape, dtype=bool)
    first = tuple(slice(None) if a in lay.reduce_axes else 0 for a in range(len(lay.view_shape)))
    touched[first] = True
    touched = touched.reshape(case.shape)
    for name, out in (("y", y), ("dx", dx)):
        assert np.isnan(out[touched]).all(), f"{name}: the {bad}'s own group should be NaN"
        assert np.isfinite(out[~touched]).all(), f"{name}: {bad} leaked out of its group"


@pytest.mark.parametrize("backend, case", ON_BOTH)
def test_float32_values_near_1e30_stay_finite_and_right(backend, case):
    """|x| ~ 1e30 in float32: squares overflow float32 (1e60) but not the float64 sums, so every output is
    finite and matches the float64 graph (dx ~ rstd ~ 1e-30: its absolute tolerance scales with rstd)."""
    x, gamma, beta, dy = case.inputs(np.float32)
    x = (x.astype(np.float64) * 1e30).astype(np.float32)
    pairs, cache = _pairs(case, x, gamma, beta, dy, backend)
    tol = compare.kernel_tolerance(np.float32)
    for name, (got, want) in pairs.items():
        assert np.all(np.isfinite(got)), f"{name} is not finite"
        scale = {"mean": 1e30, "rstd": 1e-30, "dx": float(np.max(cache["rstd"]))}.get(name, 1.0)
        compare.assert_close(got, want, tol._replace(atol=tol.atol * scale), what=f"{case.id} {name}")


ZERO_SIZE = [
    Case("batch_norm", (0, 5)),
    Case("batch_norm", (0, 3, 4)),
    Case("batch_norm", (4, 3, 0)),
    Case("layer_norm", (0, 7), normalized_ndim=1),
    Case("instance_norm", (0, 3, 5)),
    Case("group_norm", (0, 6, 4), num_groups=3),
    Case("batch_norm", (4, 0, 3)),  # no channels
    Case("instance_norm", (4, 0, 5)),
    Case("layer_norm", (4, 0), normalized_ndim=1),
]


@pytest.mark.parametrize("backend, case", backend_case_params(ZERO_SIZE, ZERO_SIZE))
def test_zero_size_batch_gives_empty_outputs(backend, case, dtype):
    """As PyTorch: no error, an empty y and dx, zero dgamma and dbeta (sums over nothing). Batch norm has
    no values per channel, so its mean and rstd are NaN and the running statistics are left alone."""
    x, gamma, beta, dy = case.inputs(dtype)
    kwargs = {}
    if case.norm == "batch_norm":
        kwargs = dict(running_mean=np.zeros(case.shape[1]), running_var=np.ones(case.shape[1]))
    y, mean, rstd = case.forward(x, gamma, beta, backend=backend, **kwargs)
    assert y.shape == x.shape and y.dtype == dtype
    assert mean.shape == rstd.shape == case.layout.stats_shape
    if case.norm == "batch_norm":
        assert np.isnan(mean).all() and np.isnan(rstd).all()
        np.testing.assert_array_equal(kwargs["running_mean"], 0)
        np.testing.assert_array_equal(kwargs["running_var"], 1)
    dx, dgamma, dbeta = case.backward(dy, x, gamma, mean, rstd, backend=backend)
    assert dx.shape == x.shape and dx.dtype == dtype
    for a in (dgamma, dbeta):
        assert a.shape == case.layout.affine_shape and a.dtype == dtype
        np.testing.assert_array_equal(a, 0)


def _layouts(a):
    """The same values as Fortran-order, reversed (negative strides) and every-other-element views."""
    if a is None:
        return dict.fromkeys(("fortran", "reversed", "strided"))
    flipped = np.ascontiguousarray(a[(slice(None, None, -1),) * a.ndim])
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    wide[..., ::2] = a
    return dict(
        fortran=np.asfortranarray(a), reversed=flipped[(slice(None, None, -1),) * a.ndim], strided=wide[..., ::2]
    )


@pytest.mark.parametrize("backend, case", ON_BOTH)
def test_any_memory_layout_gives_the_contiguous_answer(backend, case):
    """Fortran-order, negative-stride and strided arrays (every input, mean and rstd too): the same bits."""
    x, gamma, beta, dy = case.inputs(np.float32)
    want = case.forward(x, gamma, beta, backend=backend)
    want_grads = case.backward(dy, x, gamma, want[1], want[2], backend=backend)
    views = {name: _layouts(a) for name, a in dict(x=x, gamma=gamma, beta=beta, dy=dy).items()}
    for layout in ("fortran", "reversed", "strided"):
        v = {name: views[name][layout] for name in views}
        got = case.forward(v["x"], v["gamma"], v["beta"], backend=backend)
        stats = [_layouts(a)[layout] for a in got[1:]]
        grads = case.backward(v["dy"], v["x"], v["gamma"], *stats, backend=backend)
        for a, b in zip(got + grads, want + want_grads, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=layout)


def _by_id(cases, *ids):
    return [c for c in cases if c.id in ids]


@pytest.mark.parametrize(
    "backend, case",
    backend_case_params(
        _by_id(SMALL, "batch_norm-2x5", "layer_norm-2x7-last1"),
        _by_id(CUDA_TINY, "batch_norm-9x5", "layer_norm-5x21-last1"),
    ),
)
def test_mixed_dtypes_follow_x(backend, case):
    """Documented: host companions of another float dtype are converted to x's dtype; outputs have x's dtype."""
    x, gamma, beta, dy = case.inputs(np.float32)
    as64 = [a.astype(np.float64) for a in (gamma, beta, dy)]
    y, mean, rstd = case.forward(x, as64[0], as64[1], backend=backend)
    want = case.forward(x, gamma, beta, backend=backend)
    grads = case.backward(as64[2], x, as64[0], mean.astype(np.float64), rstd.astype(np.float64), backend=backend)
    want_grads = case.backward(dy, x, gamma, *want[1:], backend=backend)
    for a, b in zip((y, mean, rstd, *grads), want + want_grads, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)


MILLION = [
    Case("layer_norm", (2, 1 << 20), normalized_ndim=1, why="rows of a million elements"),
    Case("layer_norm", (1 << 20, 2), normalized_ndim=1, why="a million rows"),
    Case("batch_norm", (1 << 20, 2), why="a million samples of 2 features"),
    Case("batch_norm", (2, 2, 1 << 19), why="a million values per channel, spatial"),
    Case("instance_norm", (1, 2, 1 << 20), why="a million spatial elements"),
    Case("group_norm", (1, 4, 1 << 18), num_groups=2, why="groups of half a million"),
]


@pytest.mark.skipif(SIMULATOR, reason="a million elements is too many for the simulator")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", MILLION, ids=[c.id for c in MILLION])
def test_a_million_elements_per_group_or_a_million_groups(case, backend):
    x, gamma, beta, dy = case.inputs(np.float32)
    pairs, cache = _pairs(case, x, gamma, beta, dy, backend)
    tol = compare.kernel_tolerance(np.float32)
    for name, (got, want) in pairs.items():
        if name != "dx":
            compare.assert_close(got, want, tol, what=f"{case.id} {name}")
    # The backward gets mean and rstd rounded to float32, as the contract returns them, which moves xhat by
    # about 2**-24 * (|mean| * rstd + 1). A million rows of two values hold pairs a few 1e-4 apart, where
    # that factor reaches 1e4: dx is held to the tolerance times its group's factor.
    lay = case.layout
    factor = np.abs(cache["mu"]) * cache["ivar"] + 1.0  # per group, broadcast over the view
    got, want = (np.asarray(a, dtype=np.float64).reshape(lay.view_shape) for a in pairs["dx"])
    err = np.abs(got - want)
    bound = (tol.atol + tol.rtol * np.abs(want)) * factor
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert np.all(err <= bound), f"{case.id} dx: {err[worst]} > {bound[worst]} at {worst}"
