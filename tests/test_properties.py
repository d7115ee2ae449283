"""Property-based tests: random shapes, dtypes, affine modes and input scales against the float64 staged graph."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import normkernels as nk
from verify import compare, staged
from verify.cases import AFFINE, Case, Inputs

MAX_ELEMENTS = 2000  # every drawn shape holds at most this many values
DTYPES = (np.float32, np.float64)
# derandomize: the same examples on every run and machine; no example database to read or write
PROPERTY = settings(max_examples=100, deadline=None, derandomize=True, database=None)


def _dims(draw, count: int, budget: int = MAX_ELEMENTS, high: int = 9) -> tuple:
    """count dims in [1, high] whose product stays within budget, drawn in a random order of positions so that
    no position gets the larger dims by coming first."""
    dims = [1] * count
    for i in draw(st.permutations(range(count))):
        dims[i] = draw(st.integers(1, max(1, min(high, budget // math.prod(dims)))))
    return tuple(dims)


@st.composite
def batch_norm_cases(draw):
    """(N, D) or (N, C, *spatial) with 1-3 spatial dims; more than one value per channel (training refuses one)."""
    shape = _dims(draw, draw(st.integers(2, 5)))
    if shape[0] * math.prod(shape[2:]) == 1:
        shape = (2,) + shape[1:]
    return Case("batch_norm", shape)


@st.composite
def layer_norm_cases(draw):
    """x of 1-4 dims normalized over 1-3 trailing dims, all of x included (mean and rstd are then 0-d)."""
    ndim = draw(st.integers(1, 4))
    return Case("layer_norm", _dims(draw, ndim), normalized_ndim=draw(st.integers(1, min(3, ndim))))


@st.composite
def instance_norm_cases(draw):
    """(N, C, *spatial) with 1-3 spatial dims holding more than one value (one value per row is refused)."""
    shape = _dims(draw, draw(st.integers(3, 5)))
    if math.prod(shape[2:]) == 1:
        shape = shape[:2] + (2,) + shape[3:]
    return Case("instance_norm", shape)


@st.composite
def group_norm_cases(draw):
    """(N, C, *spatial) with 0-3 spatial dims and num_groups among the divisors of C."""
    shape = _dims(draw, draw(st.integers(2, 5)), high=12)
    c = shape[1]
    return Case("group_norm", shape, num_groups=draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0])))


@st.composite
def rms_norm_cases(draw):
    """As layer norm's: x of 1-4 dims normalized over 1-3 trailing dims, with an eps from F.rms_norm's float32
    default to 1e-5."""
    ndim = draw(st.integers(1, 4))
    eps = draw(st.sampled_from([float(np.finfo(np.float32).eps), 1e-6, 1e-5]))
    return Case("rms_norm", _dims(draw, ndim), normalized_ndim=draw(st.integers(1, min(3, ndim))), eps=eps)


@st.composite
def switchable_norm_cases(draw):
    """(N, C, *spatial) with 1-3 spatial dims holding more than one value (switchable norm refuses one)."""
    shape = _dims(draw, draw(st.integers(3, 5)))
    if math.prod(shape[2:]) == 1:
        shape = shape[:2] + (2,) + shape[3:]
    return Case("switchable_norm", shape)


CASES = {
    "batch_norm": batch_norm_cases(),
    "layer_norm": layer_norm_cases(),
    "instance_norm": instance_norm_cases(),
    "group_norm": group_norm_cases(),
    "rms_norm": rms_norm_cases(),
    "switchable_norm": switchable_norm_cases(),
}
dtypes = st.sampled_from(DTYPES)
affines = st.sampled_from(AFFINE)
seeds = st.integers(0, 2**32 - 1)


# x = standard normal * scale + offset, the values drawn by NumPy from a seed (hypothesis arrays are slow).
def _decades(low: int, high: int):
    """Values from 10**low to 10**high: a decade drawn uniformly times a mantissa in [1, 10]."""
    return st.builds(lambda k, m: m * 10.0**k, st.integers(low, high - 1), st.floats(1.0, 10.0))


def _signed(values):
    return st.builds(lambda sign, v: sign * v, st.sampled_from((1.0, -1.0)), values)


# (scale, offset) strategies: anything in range (the spread from 1e-3 to 1e3, the offset 0 or up to 1e3 either
# way), and an offset 1e2 to 1e6 times the spread, which the first one seldom draws
VALUES = {
    "any_values": st.tuples(_decades(-3, 3), st.one_of(st.just(0.0), _signed(_decades(-3, 3)))),
    "offset_over_spread": st.tuples(_decades(-3, 0), _signed(_decades(2, 3))),
}


def make_inputs(case, dtype, affine, seed, scale, offset) -> Inputs:
    """The parameters and dy from the case recipe (values of order 1); x from the drawn scale and offset."""
    inputs = case.inputs(dtype, affine, seed=seed)
    x = (np.random.default_rng(seed + 1).standard_normal(case.shape) * scale + offset).astype(dtype)
    return Inputs(x, inputs.params, inputs.dy)


def tolerances(dtype, cache, dy, names) -> dict:
    """The kernel tolerance for each output, its atol in the units that output's error scales with.

    compare.KERNEL is calibrated on the case recipe: x of order 1 and cond = |mean| * rstd below 1. Here the
    spread of x runs from 1e-3 to 1e3 and its offset up to 1e3. The graph gets the very values x holds (rounded
    to x's dtype), so y stays of order 1, but two errors grow with the input:
    - a mean with relative rounding u moves xhat = (x - mean) * rstd by u * cond. In the forward the kernel and
      the graph both hold the mean in float64 (u = 2**-53: nothing against float32's tolerance, cond times
      float64's). The backward receives the mean in x's dtype, as the contract returns it: for float32 xhat
      moves by ~2**-24 * cond (compare.KERNEL's comment gives this for cond ~ 1), and dx and dgamma =
      sum(dy * xhat) with it, even when the kernel's arithmetic is exact. (RMSNorm has no mean: cond = 1.)
    - dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) is of order rstd (up to 1 / sqrt(eps) ~ 316 here).
    The statistics and dbeta need no scaling: they are accurate relative to themselves.
    - Switchable Norm's weight gradients are sums over every row of a * mean_k and b * var_k (a = dmean, b = dvar
      per row, the staged graph's): the statistics reach the backward rounded to x's dtype (relative u), which
      moves each term by u times its size, and b by u * 0.5 rstd**2 |a| |mean| through x - mean. The error is a
      few u times the sum of those magnitudes, which scales atol (KERNEL's atol is 168 float32 u, 9000 float64 u).
    """
    tol = compare.kernel_tolerance(dtype)
    mean = cache["statistics"].get("mean", 0.0)
    cond = max(1.0, float(np.max(np.abs(mean) * cache["rstd"], initial=0.0)))
    rstd = max(1.0, float(np.max(cache["rstd"], initial=0.0)))
    forward = max(1.0, cond * np.finfo(np.float64).eps / np.finfo(dtype).eps)
    out = dict.fromkeys(names, tol)
    out.update(
        y=tol._replace(atol=tol.atol * forward),
        dx=tol._replace(atol=tol.atol * cond * rstd),
        dgamma=tol._replace(atol=tol.atol * cond),
    )
    if "dmean_weight" in names:
        ref = staged.backward(dy, cache)
        a, b, r = np.abs(ref["dmean"]), np.abs(ref["dvar"]), cache["ivar"]
        kinds = ("in", "ln", "bn")
        terms_w = sum(np.sum(a * np.abs(cache[f"mean_{k}"])) for k in kinds)
        terms_v = sum(np.sum((b + 0.5 * r**2 * a * np.abs(cache["mean"])) * cache[f"var_{k}"]) for k in kinds)
        out.update(
            dmean_weight=tol._replace(atol=tol.atol * max(1.0, float(terms_w))),
            dvar_weight=tol._replace(atol=tol.atol * max(1.0, float(terms_v))),
        )
    return out


def outputs_against_staged(case, inputs) -> tuple[dict, dict]:
    """{name: (kernel output, float64 staged reference)} for y, the statistics, dx and the parameters'
    gradients (reference None for dgamma and dbeta without gamma), and the tolerances for them."""
    pairs, cache = case.outputs_and_staged(inputs)
    return pairs, tolerances(inputs.x.dtype, cache, np.asarray(inputs.dy, np.float64), pairs)


@pytest.mark.parametrize("values", list(VALUES))
@pytest.mark.parametrize("norm", list(CASES))
@PROPERTY
@given(data=st.data(), dtype=dtypes, affine=affines, seed=seeds)
def test_matches_staged_graph(norm, values, data, dtype, affine, seed):
    """Forward (y and the statistics) and backward (dx and every parameter's gradient) match the float64 staged
    graph fed the same x, with the contract's dtypes and shapes, whatever the shape, affine mode, spread and
    offset of x."""
    case = data.draw(CASES[norm], label="case")
    scale, offset = data.draw(VALUES[values], label="scale, offset")
    inputs = make_inputs(case, dtype, affine, seed, scale, offset)
    pairs, tols = outputs_against_staged(case, inputs)
    for name, (got, want) in pairs.items():
        if want is None:
            assert got is None, f"{name} should be None without gamma"
            continue
        assert got.dtype == dtype and got.shape == np.shape(want), f"{name}: {got.dtype} {got.shape}"
        compare.assert_close(got, want, tols[name], what=f"{case.id} {np.dtype(dtype).name} {affine} {name}")


@PROPERTY
@given(
    case=batch_norm_cases(),
    dtype=dtypes,
    running_dtype=dtypes,
    affine=affines,
    seed=seeds,
    values=VALUES["any_values"],
    momentum=st.floats(0.0, 1.0),
)
def test_batch_norm_training_ignores_running_statistics(case, dtype, running_dtype, affine, seed, values, momentum):
    """In training, y, mean and rstd are bit-identical with and without running_mean/running_var."""
    x, gamma, beta, _ = make_inputs(case, dtype, affine, seed, *values)
    c = case.shape[1]
    rng = np.random.default_rng(seed)
    running_mean = rng.standard_normal(c).astype(running_dtype)
    running_var = rng.uniform(0.5, 2.0, c).astype(running_dtype)
    plain = nk.batch_norm_forward(x, gamma, beta)
    tracked = nk.batch_norm_forward(
        x, gamma, beta, running_mean=running_mean, running_var=running_var, momentum=momentum
    )
    for name, a, b in zip(("y", "mean", "rstd"), plain, tracked, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"{case.id} {name}")
