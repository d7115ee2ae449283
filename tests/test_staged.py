"""The staged graph itself against central finite differences, in float64, on every element."""

import numpy as np
import pytest
from conftest import case_params

from verify import compare, numerical_gradient, staged
from verify.cases import CASES, Case

SMALL = [c for c in CASES if "small" in c.tags]


@pytest.mark.parametrize("case", case_params(SMALL))
def test_staged_gradients_match_finite_differences(case, affine):
    x, gamma, beta, dy = case.inputs(np.float64, affine)
    _, cache = case.staged_forward(x, gamma, beta)
    grads = staged.backward(dy, cache)
    tol = compare.FINITE_DIFFERENCE

    def out(x_=x, gamma_=gamma, beta_=beta):
        return case.staged_forward(x_, gamma_, beta_)[0]

    compare.assert_close(grads["dx"], numerical_gradient(lambda v: out(x_=v), x, dy), tol, what="dx")
    if gamma is not None:
        compare.assert_close(
            grads["dgamma"], numerical_gradient(lambda v: out(gamma_=v), gamma, dy), tol, what="dgamma"
        )
    if beta is not None:
        compare.assert_close(grads["dbeta"], numerical_gradient(lambda v: out(beta_=v), beta, dy), tol, what="dbeta")


@pytest.mark.parametrize("case", case_params(SMALL))
def test_every_stage_gradient_matches_finite_differences_of_the_later_stages(case):
    """Each stage's gradient is d(sum(dy * out))/d(stage): perturb the stage, recompute what follows it."""
    x, gamma, beta, dy = case.inputs(np.float64)
    _, cache = case.staged_forward(x, gamma, beta)
    grads = staged.backward(dy, cache)
    lay = cache["layout"]
    g = gamma.reshape(lay.affine_broadcast)
    b = beta.reshape(lay.affine_broadcast)
    eps = cache["eps"]
    # out as a function of one stage, the stages before it held fixed
    after = {
        "xhat": lambda v: g * v + b,
        "ivar": lambda v: g * (cache["xmu"] * v).reshape(lay.x_shape) + b,
        "sqrtvar": lambda v: g * (cache["xmu"] / v).reshape(lay.x_shape) + b,
        "var": lambda v: g * (cache["xmu"] / np.sqrt(v + eps)).reshape(lay.x_shape) + b,
    }
    names = {"xhat": "dxhat", "ivar": "divar", "sqrtvar": "dsqrtvar", "var": "dvar"}
    for stage, f in after.items():
        numeric = numerical_gradient(f, cache[stage], dy)
        analytic = grads[names[stage]].reshape(numeric.shape)
        compare.assert_close(analytic, numeric, compare.FINITE_DIFFERENCE, what=stage)


def test_staged_mean_and_rstd_are_the_definitions():
    x = np.arange(12.0).reshape(2, 6) ** 1.5
    _, cache = staged.forward(x, norm="layer_norm", normalized_shape=(6,), eps=1e-3)
    np.testing.assert_allclose(cache["mean"], x.mean(axis=1), rtol=1e-15)
    np.testing.assert_allclose(cache["rstd"], 1 / np.sqrt(x.var(axis=1) + 1e-3), rtol=1e-15)


def test_numerical_gradient_leaves_its_input_alone():
    x = np.linspace(-1, 1, 5)
    before = x.copy()
    grad = numerical_gradient(lambda v: v**3, x, np.ones(5))
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(grad, 3 * x**2, rtol=1e-8, atol=1e-10)


def test_a_replaced_stage_changes_that_stage_and_what_follows_only():
    """verify.diagnose builds hypotheses by replacing stages: the reference stays untouched."""
    case = Case("batch_norm", (5, 3))
    x, gamma, beta, dy = case.inputs(np.float64)
    ref_y, ref_cache = case.staged_forward(x, gamma, beta)
    lay = ref_cache["layout"]
    unbiased = staged.Stages(lay, 1e-5).replace(var=lambda s, sq: s.sum(sq) / (s.m - 1))
    y, cache = staged.forward(x, gamma, beta, stages=unbiased)
    np.testing.assert_array_equal(cache["mu"], ref_cache["mu"])
    np.testing.assert_allclose(cache["var"], ref_cache["var"] * 5 / 4, rtol=1e-14)
    assert not np.allclose(y, ref_y)
    np.testing.assert_array_equal(case.staged_forward(x, gamma, beta)[0], ref_y)
    with pytest.raises(ValueError, match="no stage named"):
        staged.Stages(lay, 1e-5).replace(variance=lambda s, sq: sq)


def test_eval_mode_normalizes_with_the_running_statistics_and_stops_the_gradient_there():
    case = Case("batch_norm", (4, 3, 2))
    x, gamma, beta, dy = case.inputs(np.float64)
    rm, rv = np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.25, 4.0])
    stages = staged.eval_mode(staged.Stages(case.layout, 1e-5), rm, rv)
    y, cache = staged.forward(x, gamma, beta, stages=stages)
    rstd = 1 / np.sqrt(rv + 1e-5)
    np.testing.assert_allclose(y, gamma[:, None] * (x - rm[:, None]) * rstd[:, None] + beta[:, None], rtol=1e-14)
    grads = staged.backward(dy, cache)
    np.testing.assert_allclose(grads["dx"], dy * (gamma * rstd)[:, None], rtol=1e-14)
