"""The staged graphs themselves against central finite differences, in float64, on every element, and against
the definitions they stand for."""

import numpy as np
import pytest
from conftest import case_params

from verify import compare, numerical_gradient, staged
from verify.cases import CASES, Case

SMALL = [c for c in CASES if "small" in c.tags]


@pytest.mark.parametrize("case", case_params(SMALL))
def test_staged_gradients_match_finite_differences(case, affine):
    """dx and the gradient of every parameter the norm has (gamma, beta, the mixing logits)."""
    inputs = case.inputs(np.float64, affine)
    names = case.norm_entry.param_names
    _, cache = case.staged_forward(inputs.x, *inputs.values())
    grads = staged.backward(inputs.dy, cache)
    tol = compare.FINITE_DIFFERENCE

    def out_with(name, value):
        params = [value if n == name else inputs.params[n] for n in names]
        x = value if name == "x" else inputs.x
        return case.staged_forward(x, *params)[0]

    for name, value in {"x": inputs.x, **inputs.params}.items():
        if value is None:
            assert name == "x" or grads[f"d{name}"] is None or name == "beta", f"d{name} without {name}"
            continue
        numeric = numerical_gradient(lambda v, name=name: out_with(name, v), value, inputs.dy)
        compare.assert_close(grads[f"d{name}"], numeric, tol, what=f"d{name}")


def _stage_gradients_match(cache, grads, dy, after: dict, names: dict) -> None:
    """Each stage's gradient is d(sum(dy * out))/d(stage): perturb the stage, recompute what follows it."""
    for stage, f in after.items():
        numeric = numerical_gradient(f, cache[stage], dy)
        analytic = grads[names[stage]].reshape(numeric.shape)
        compare.assert_close(analytic, numeric, compare.FINITE_DIFFERENCE, what=stage)


@pytest.mark.parametrize("case", case_params([c for c in SMALL if c.norm_entry.stages is staged.Stages]))
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
    _stage_gradients_match(cache, grads, dy, after, names)


@pytest.mark.parametrize("case", case_params([c for c in SMALL if c.norm == "rms_norm"]))
def test_every_rms_norm_stage_gradient_matches_finite_differences(case):
    x, gamma, _, dy = case.inputs(np.float64)
    _, cache = case.staged_forward(x, gamma)
    grads = staged.backward(dy, cache)
    g, eps = gamma.reshape(cache["layout"].affine_broadcast), cache["eps"]
    after = {
        "xhat": lambda v: g * v,
        "irms": lambda v: g * (x * v),
        "rms": lambda v: g * (x / v),
        "ms": lambda v: g * (x / np.sqrt(v + eps)),
    }
    names = {"xhat": "dxhat", "irms": "dirms", "rms": "drms", "ms": "dms"}
    _stage_gradients_match(cache, grads, dy, after, names)


@pytest.mark.parametrize("case", case_params([c for c in SMALL if c.norm == "switchable_norm"]))
def test_every_switchable_norm_stage_gradient_matches_finite_differences(case):
    """Down to the statistics of each kind and the softmaxed weights."""
    inputs = case.inputs(np.float64)
    _, cache = case.staged_forward(inputs.x, *inputs.values())
    grads = staged.backward(inputs.dy, cache)
    lay, c = cache["layout"], cache
    xv = inputs.x.reshape(lay.view_shape)
    g = inputs.gamma.reshape(1, -1, 1)
    b = inputs.beta.reshape(1, -1, 1)
    eps = c["eps"]

    def out(mean, var):
        return (g * (xv - mean) / np.sqrt(var + eps) + b).reshape(inputs.x.shape)

    def mixed(weights, stage, value):  # the mixed mean or var with one statistic (e.g. "mean_ln") replaced
        kind = stage.split("_")[0]
        stats = [value if f"{kind}_{k}" == stage else c[f"{kind}_{k}"] for k in ("in", "ln", "bn")]
        return sum(wk * sk for wk, sk in zip(weights, stats, strict=True))

    after = {
        "xhat": lambda v: (g * v.reshape(lay.view_shape) + b).reshape(inputs.x.shape),
        "ivar": lambda v: (g * c["xmu"] * v + b).reshape(inputs.x.shape),
        "sqrtvar": lambda v: (g * c["xmu"] / v + b).reshape(inputs.x.shape),
        "var": lambda v: out(c["mean"], v),
        "mean": lambda v: out(v, c["var"]),
        "w": lambda v: out(sum(wk * c[f"mean_{k}"] for wk, k in zip(v, ("in", "ln", "bn"), strict=True)), c["var"]),
        "v": lambda v: out(c["mean"], sum(vk * c[f"var_{k}"] for vk, k in zip(v, ("in", "ln", "bn"), strict=True))),
    }
    for kind in ("in", "ln", "bn"):
        after[f"mean_{kind}"] = lambda v, kind=kind: out(mixed(c["w"], f"mean_{kind}", v), c["var"])
        after[f"var_{kind}"] = lambda v, kind=kind: out(c["mean"], mixed(c["v"], f"var_{kind}", v))
    names = {stage: f"d{stage}" for stage in after}
    names |= {"xhat": "dxhat", "ivar": "divar"}
    _stage_gradients_match(cache, grads, inputs.dy, after, names)


@pytest.mark.parametrize(
    "kind, norm",
    [(0, "instance_norm"), (1, "layer_norm"), (2, "batch_norm")],
    ids=["instance", "layer", "batch"],
)
def test_switchable_norm_with_one_kind_of_statistics_is_that_norm(kind, norm):
    """Logits of 50 on one kind make its softmaxed weight 1 to within 2e-22: the switchable graph is then the
    instance, layer (over every dim but N) or batch norm graph, forward and backward."""
    case = Case("switchable_norm", (3, 4, 2, 3))
    inputs = case.inputs(np.float64)
    one_hot = np.where(np.arange(3) == kind, 50.0, 0.0)
    _, cache = case.staged_forward(inputs.x, inputs.gamma, inputs.beta, one_hot, one_hot)
    grads = staged.backward(inputs.dy, cache)
    gamma_b, beta_b = inputs.gamma.reshape(1, 4, 1, 1), inputs.beta.reshape(1, 4, 1, 1)
    if norm == "layer_norm":  # gamma per channel, not per element of the normalized dims: dxhat = dy * gamma
        y, other = staged.forward(inputs.x, norm=norm, normalized_shape=(4, 2, 3))
        y, want = gamma_b * y + beta_b, {"dx": staged.backward(inputs.dy * gamma_b, other)["dx"]}
    else:
        y, other = staged.forward(inputs.x, inputs.gamma, inputs.beta, norm=norm)
        want = staged.backward(inputs.dy, other)
    np.testing.assert_allclose(cache["out"], y, rtol=1e-13, atol=1e-13)
    for name in want.keys() & {"dx", "dgamma", "dbeta"}:
        np.testing.assert_allclose(grads[name], want[name], rtol=1e-12, atol=1e-12, err_msg=name)


def test_staged_mean_and_rstd_are_the_definitions():
    x = np.arange(12.0).reshape(2, 6) ** 1.5
    _, cache = staged.forward(x, norm="layer_norm", normalized_shape=(6,), eps=1e-3)
    np.testing.assert_allclose(cache["mean"], x.mean(axis=1), rtol=1e-15)
    np.testing.assert_allclose(cache["rstd"], 1 / np.sqrt(x.var(axis=1) + 1e-3), rtol=1e-15)
    _, cache = staged.forward(x, norm="rms_norm", normalized_shape=(6,), eps=1e-3)
    np.testing.assert_allclose(cache["rstd"], 1 / np.sqrt((x**2).mean(axis=1) + 1e-3), rtol=1e-15)


def test_rms_norm_eps_defaults_to_the_machine_epsilon_of_x():
    """As F.rms_norm: eps None is torch.finfo(x.dtype).eps, for the graph too (given x in that dtype)."""
    x = np.linspace(-1, 2, 8).reshape(2, 4)
    for dtype in (np.float32, np.float64):
        _, cache = staged.forward(x.astype(dtype), norm="rms_norm", normalized_shape=4)
        assert cache["eps"] == np.finfo(dtype).eps


def test_switchable_norm_statistics_are_the_definitions():
    """Biased variances of each kind, the softmaxed weights, the mixed mean and rstd, in the kernels' shapes."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5))
    mw, vw = np.array([0.5, -1.0, 2.0]), np.array([1.0, 0.0, -0.5])
    _, cache = staged.forward(x, None, None, mw, vw, norm="switchable_norm", eps=1e-3)
    stats = cache["statistics"]
    w, v = np.exp(mw) / np.exp(mw).sum(), np.exp(vw) / np.exp(vw).sum()
    np.testing.assert_allclose(stats["var_in"], x.var(axis=2), rtol=1e-14)
    np.testing.assert_allclose(stats["var_ln"], x.var(axis=(1, 2)), rtol=1e-14)
    np.testing.assert_allclose(stats["var_bn"], x.var(axis=(0, 2)), rtol=1e-14)
    np.testing.assert_allclose(stats["mean_softmax"], w, rtol=1e-15)
    mean = w[0] * x.mean(axis=2) + w[1] * x.mean(axis=(1, 2))[:, None] + w[2] * x.mean(axis=(0, 2))
    var = v[0] * x.var(axis=2) + v[1] * x.var(axis=(1, 2))[:, None] + v[2] * x.var(axis=(0, 2))
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-14)
    np.testing.assert_allclose(stats["rstd"], 1 / np.sqrt(var + 1e-3), rtol=1e-14)


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


def test_switchable_eval_mode_holds_the_batch_statistics_constant():
    """The running statistics replace the batch ones: no gradient reaches x through them (the batch path is 0),
    the weight gradients still see their values, and the graph still matches finite differences."""
    case = Case("switchable_norm", (3, 4, 5))
    inputs = case.inputs(np.float64)
    rm, rv = np.array([0.5, -1.0, 2.0, 0.0]), np.array([1.5, 0.25, 4.0, 1.0])
    stages = staged.eval_mode(staged.graph("switchable_norm", case.layout, 1e-5), rm, rv)

    def out(x, *params):
        return staged.forward(x, *params, stages=stages)[0]

    _, cache = staged.forward(inputs.x, *inputs.values(), stages=stages)
    np.testing.assert_array_equal(cache["statistics"]["var_bn"], rv)
    grads = staged.backward(inputs.dy, cache)
    np.testing.assert_array_equal(grads["dx_bn"], 0.0)
    numeric = numerical_gradient(lambda v: out(v, *inputs.values()), inputs.x, inputs.dy)
    compare.assert_close(grads["dx"], numeric, compare.FINITE_DIFFERENCE, what="dx")
    params = list(inputs.values())
    numeric = numerical_gradient(lambda v: out(inputs.x, *params[:2], v, params[3]), params[2], inputs.dy)
    compare.assert_close(grads["dmean_weight"], numeric, compare.FINITE_DIFFERENCE, what="dmean_weight")


def test_rms_norm_has_no_eval_mode():
    case = Case("rms_norm", (2, 4), normalized_ndim=1)
    with pytest.raises(ValueError, match="rms_norm has no running statistics"):
        staged.eval_mode(staged.graph("rms_norm", case.layout, 1e-5), np.zeros(2), np.ones(2))
