"""The verifier has teeth: planted bugs are flagged with their cause named; correct layers pass; a student's
mistakes in calling it get clear errors and the checks that can still run, run."""

import numpy as np
import pytest
from conftest import case_params
from implementations import BACKWARD_BUGS, FORWARD_BUGS, compact_layer, student_layer

import verify
from verify.cases import CASES, Case

BN = Case("batch_norm", (6, 3, 2, 2))  # M = 24 values per channel
NORM_FOR_BUG = {
    "group_mod": Case("group_norm", (2, 6, 2, 2), num_groups=3),
    "instance_as_layer": Case("instance_norm", (2, 3, 4)),
}
# planted bug -> the hypothesis (verify.diagnose change keys) that must be named for it
HYPOTHESIS = {
    "subtract_sqrt": "subtract_sqrt",
    "var_all_axes": "var_all_axes",
    "unbiased_var": "var_divisor=23",
    "eps_outside": "eps_outside",
    "group_mod": "groups=c%G",
    "instance_as_layer": "axes=(1, 2)",
    "float32_path": "float32",
    "no_1_over_m_mean": "mean_path_divisor=1",
    "no_1_over_m_var": "var_path_divisor=1",
    "dmu_sign": "dmu_sign",
    "dsqrtvar_sign": "dsqrtvar_sign",
    "no_factor_2": "no_factor_2",
    "no_mean_path": "no_mean_path",
    "no_var_path": "no_var_path",
    "no_half": "no_half",
    "bwd_unbiased": "var_path_divisor=23",
    "swapped": "affine_grads_swapped",
    "gamma_ignored": "gamma_missing_backward",
    "dgamma_no_xhat": "dgamma_no_xhat",
}
ROW = {"modifies_input": "inputs unchanged by forward", "mutates_cache": "backward repeatable"}


def _check(case, layer, dtype=np.float64, seed=0, **kwargs):
    x, gamma, beta, _ = case.inputs(dtype, seed=seed)
    return verify.check(*layer, norm=case.norm, x=x, gamma=gamma, beta=beta, **case.layout_kwargs, **kwargs)


@pytest.mark.parametrize("bug", FORWARD_BUGS + BACKWARD_BUGS)
def test_planted_bug_is_flagged_and_its_cause_named(bug):
    case = NORM_FOR_BUG.get(bug, BN)
    report = _check(case, student_layer(case.norm, bug, **case.layout_kwargs))
    assert not report.passed, f"{bug} went unnoticed:\n{report}"
    if bug in ROW:
        assert ROW[bug] in [r.check for r in report.failures], str(report)
        return
    named = {r.hypothesis for r in report.failures if r.hypothesis}
    assert HYPOTHESIS[bug] in named, f"{bug}: expected {HYPOTHESIS[bug]!r}, named {named}\n{report}"


def test_backward_cache_entry_that_changed_is_named():
    report = _check(BN, student_layer("batch_norm", "mutates_cache"))
    row = report.row("backward repeatable")
    assert not row.passed and "cache['xmu']" in row.where and "writes into" in row.cause, str(report)


@pytest.mark.parametrize("case", case_params([c for c in CASES if "small" in c.tags]))
@pytest.mark.parametrize("make", [student_layer, compact_layer], ids=["staged", "compact"])
def test_correct_layers_pass(case, make, dtype):
    report = _check(case, make(case.norm, **case.layout_kwargs), dtype)
    assert report.passed, str(report)


@pytest.mark.parametrize("case", case_params(CASES))
def test_project_kernels_pass(case, dtype):
    report = _check(case, case.layer(), dtype)
    assert report.passed, str(report)


def test_report_reads_and_serializes():
    report = _check(BN, student_layer("batch_norm", "no_mean_path"))
    text = str(report)
    assert "FAIL" in text and "dx vs staged graph" in text and "likely cause" in text
    as_dict = report.to_dict()
    assert as_dict["passed"] is False and len(as_dict["rows"]) == len(report.rows)
    assert any(r["hypothesis"] == "no_mean_path" for r in as_dict["rows"])
    with pytest.raises(verify.GradcheckError, match="dx vs staged graph"):
        report.raise_if_failed()


def test_constant_gamma_is_replaced_and_said():
    x, _, beta, _ = BN.inputs()
    report = verify.check(*compact_layer("batch_norm"), norm="batch_norm", x=x, gamma=np.ones(3), beta=beta)
    assert report.passed and any("random gamma" in n for n in report.notes)


def test_a_forward_that_raises_is_a_failed_row_with_its_line():
    def forward(x, gamma, beta):
        raise RuntimeError("boom")

    report = verify.check(forward, None, norm="layer_norm", x=np.ones((2, 3)), normalized_shape=3)
    row = report.failures[0]
    assert not report.passed and "boom" in row.detail and "test_verify.py:" in row.detail and "raise" in row.detail


def test_a_backward_that_raises_still_gets_its_forward_checked():
    forward, backward = compact_layer("batch_norm")

    def broken_backward(dy, cache):
        return np.reshape(dy, (7, -1, 13)), None, None  # a reshape that cannot work

    report = _check(BN, (forward, broken_backward))
    row = report.row("backward runs")
    assert row is not None and not row.passed
    assert "ValueError" in row.detail and "test_verify.py:" in row.detail and "np.reshape" in row.detail
    assert report.row("y vs staged graph").passed and report.row("dx vs staged graph") is None


def test_a_forward_that_returns_none_is_said_so_and_nothing_else():
    report = verify.check(lambda x, g, b: None, None, norm="batch_norm", x=np.ones((4, 3)))
    assert [r.detail for r in report.failures] == ["forward returned None: it must return (y, cache)"]
    assert not any("float32" in n for n in report.notes)


def test_float64_outputs_for_float32_input_warn_unless_strict():
    forward, backward = compact_layer("batch_norm")

    def forward64(x, gamma, beta):
        return forward(x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64))

    lenient = _check(BN, (forward64, backward), np.float32)
    row = lenient.row("dtypes")
    assert lenient.passed and row.warn and "float64 for float32 input" in row.where, str(lenient)
    assert not _check(BN, (forward64, backward), np.float32, strict_dtype=True).passed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(norm="group_norm"), "num_groups"),
        (dict(norm="layer_norm"), "normalized_shape"),
        (dict(norm="batchnorm"), "norm must be one of"),
        (dict(norm="group_norm", num_groups=4), "num_groups=4"),
        (dict(norm="layer_norm", normalized_shape=(5,)), "normalized_shape=(5,)"),
    ],
)
def test_a_missing_or_wrong_layout_argument_is_a_value_error_naming_it(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        verify.check(*compact_layer("batch_norm"), x=np.ones((2, 6, 3)), **kwargs)


def test_cs231n_gamma_shape_is_taken_and_dgamma_in_that_shape_passes():
    case = Case("group_norm", (2, 6, 2, 2), num_groups=2)
    forward, backward = compact_layer("group_norm", num_groups=2)

    def forward_1c11(x, gamma, beta):  # the older assignment's (1, C, 1, 1) affine, in and out
        return forward(x, gamma.reshape(-1), beta.reshape(-1))

    def backward_1c11(dy, cache):
        dx, dgamma, dbeta = backward(dy, cache)
        return dx, dgamma.reshape(1, -1, 1, 1), dbeta.reshape(1, -1, 1, 1)

    x, gamma, beta, _ = case.inputs()
    report = verify.check(
        forward_1c11, backward_1c11, norm="group_norm", num_groups=2, x=x,
        gamma=gamma.reshape(1, -1, 1, 1), beta=beta.reshape(1, -1, 1, 1),
    )  # fmt: skip
    assert report.passed, str(report)
    with pytest.raises(ValueError, match="gamma of shape"):
        verify.check(forward, backward, norm="group_norm", num_groups=2, x=x, gamma=gamma[:3], beta=beta)


def test_eval_mode_is_checked_against_the_running_statistics():
    x, gamma, beta, _ = BN.inputs()
    rm, rv = np.linspace(-1, 1, 3), np.linspace(0.5, 2, 3)

    def forward(x, gamma, beta, rv_used=rv):
        shape = (1, -1, 1, 1)
        rstd = 1 / np.sqrt(rv_used.reshape(shape) + 1e-5)
        return gamma.reshape(shape) * (x - rm.reshape(shape)) * rstd + beta.reshape(shape), rstd

    kwargs = dict(norm="batch_norm", x=x, gamma=gamma, beta=beta, training=False, running_mean=rm, running_var=rv)
    assert verify.check(forward, None, **kwargs).row("y vs staged graph").passed
    wrong = verify.check(lambda x, g, b: forward(x, g, b, rv + 1), None, **kwargs)
    assert not wrong.passed
    batch_stats = verify.check(lambda x, g, b: compact_layer("batch_norm")[0](x, g, b), None, **kwargs)
    assert batch_stats.row("y vs staged graph").hypothesis == "batch_statistics", str(batch_stats)


def test_large_inputs_use_directions_and_samples():
    case = Case("layer_norm", (40, 30), normalized_ndim=1)
    report = _check(case, case.layer())
    fd = next(r for r in report.rows if r.check == "dx vs finite differences")
    assert report.passed and "directions" in fd.detail
    bad = _check(case, student_layer("layer_norm", "no_var_path", normalized_shape=(30,)))
    assert "dx vs finite differences" in [r.check for r in bad.failures]


def test_read_only_inputs_are_checked_and_left_alone():
    case = Case("group_norm", (2, 6, 2, 2), num_groups=3)
    x, gamma, beta, dy = case.inputs(np.float64)
    for a in (x, gamma, beta, dy):
        a.setflags(write=False)
    kept = [a.copy() for a in (x, gamma, beta, dy)]
    report = verify.check(*case.layer(), norm=case.norm, x=x, gamma=gamma, beta=beta, dy=dy, **case.layout_kwargs)
    assert report.passed, str(report)
    for a, k in zip((x, gamma, beta, dy), kept, strict=True):
        np.testing.assert_array_equal(a, k)


def test_sampled_finite_differences_without_random_directions():
    """directions=0 on an input above full_fd_limit: the sampled elements alone decide the row."""
    case = Case("layer_norm", (3, 50), normalized_ndim=1)
    x, gamma, beta, _ = case.inputs(np.float64)
    report = verify.check(
        *case.layer(),
        norm=case.norm,
        x=x,
        gamma=gamma,
        beta=beta,
        normalized_shape=(50,),
        full_fd_limit=10,
        directions=0,
        sampled=5,
    )
    rows = [r for r in report.rows if "finite differences" in r.check]
    assert rows and all(r.passed and "0 directions + 5 elements" in r.detail for r in rows), str(report)


def test_a_backward_that_writes_into_dy_is_flagged_and_the_other_checks_see_the_true_dy():
    case = Case("layer_norm", (4, 6), normalized_ndim=1)
    forward, backward = case.layer()

    def scribbling_backward(dy, cache):
        out = backward(dy, cache)
        dy[...] = 0.0
        return out

    x, gamma, beta, _ = case.inputs(np.float64)
    report = verify.check(
        forward, scribbling_backward, norm=case.norm, x=x, gamma=gamma, beta=beta, normalized_shape=(6,)
    )
    failed = {r.check for r in report.failures}
    assert failed == {"inputs unchanged by backward"}, str(report)


@pytest.mark.parametrize("bug", ["no_mean_path", "no_var_path", "dgamma_no_xhat", "gamma_ignored"])
def test_large_groups_in_float32_still_catch_real_mistakes(bug):
    """80000 values per channel in float32: the widest bounds the catalogue has, and still far from a bug."""
    case = next(c for c in CASES if c.id == "batch_norm-16x3x5000")
    assert _check(case, compact_layer("batch_norm"), np.float32, explain=False).passed
    assert not _check(case, student_layer("batch_norm", bug), np.float32, explain=False).passed


def test_a_forward_returning_y_of_the_wrong_shape_gets_rows_not_a_crash():
    forward, backward = compact_layer("batch_norm")
    report = _check(BN, (lambda x, g, b: (lambda y, c: (y.reshape(-1, 3), c))(*forward(x, g, b)), backward))
    assert not report.row("shapes").passed and "not comparable" in report.row("y vs staged graph").detail
    assert report.row("dx vs staged graph").passed and report.row("dx vs finite differences") is None


@pytest.mark.parametrize("shape", [(0, 3), (4, 0)])
def test_empty_inputs_are_checked_without_a_crash(shape):
    report = verify.check(
        *compact_layer("layer_norm", normalized_shape=shape[-1:]),
        norm="layer_norm",
        x=np.ones(shape),
        gamma=np.linspace(0.5, 1.5, shape[-1]),
        beta=np.zeros(shape[-1]),
        normalized_shape=shape[-1:],
    )
    assert report.row("y vs staged graph") is not None and report.passed, str(report)


def test_a_nan_group_leaves_the_finite_differences_of_the_others_judging():
    x, gamma, beta, _ = BN.inputs()
    x[2, 0, 0, 0] = np.nan  # channel 0 is NaN, channels 1 and 2 are not
    good = verify.check(*compact_layer("batch_norm"), norm="batch_norm", x=x, gamma=gamma, beta=beta)
    assert good.passed and any("NaN" in n for n in good.notes), str(good)
    bad = verify.check(*student_layer("batch_norm", "no_mean_path"), norm="batch_norm", x=x, gamma=gamma, beta=beta)
    assert not bad.row("dx vs finite differences").passed, str(bad)


def test_a_bias_not_given_may_get_no_gradient_and_a_bias_alone_gets_one():
    forward, backward = compact_layer("layer_norm", normalized_shape=(6,))
    x, gamma, beta, _ = Case("layer_norm", (4, 6), normalized_ndim=1).inputs()

    def no_bias(x, gamma, beta):
        return forward(x, gamma, np.zeros(6))

    def without_dbeta(dy, cache):
        return (*backward(dy, cache)[:2], None)  # as PyTorch does for a bias it was not given

    ok = verify.check(no_bias, without_dbeta, norm="layer_norm", normalized_shape=6, x=x, gamma=gamma, beta=None)
    assert ok.passed, str(ok)

    def shift_only(x, gamma, beta):
        y, cache = forward(x, np.ones(6), beta)
        return y, cache

    def shift_only_backward(dy, cache):
        dx, _, dbeta = backward(dy, cache)
        return dx, None, dbeta

    report = verify.check(shift_only, shift_only_backward, norm="layer_norm", normalized_shape=6, x=x, beta=beta)
    assert report.passed and report.row("dbeta vs staged graph") is not None, str(report)


def test_the_kernels_without_gamma_but_with_beta_pass():
    """The contract: gamma None gives dgamma None and dbeta None, whatever beta is."""
    case = Case("batch_norm", (4, 3))
    x, _, beta, _ = case.inputs()
    report = verify.check(*case.layer(), norm="batch_norm", x=x, beta=beta)
    assert report.passed, str(report)


def test_a_forward_that_rounds_to_float32_inside_gets_float32_differences():
    forward, backward = compact_layer("batch_norm")

    def forward32(x, gamma, beta):  # a float32 kernel behind a float64 interface
        y, cache = forward(x.astype(np.float32), gamma.astype(np.float32), beta.astype(np.float32))
        return y.astype(x.dtype), cache

    def backward32(dy, cache):
        return tuple(a.astype(dy.dtype) for a in backward(dy.astype(np.float32), cache))

    report = _check(Case("batch_norm", (6, 3, 2)), (forward32, backward32), np.float32)
    assert report.passed and any("rounds its input to float32" in n for n in report.notes), str(report)


def test_a_forward_that_returns_float32_for_float64_input_fails_dtypes_but_not_its_differences():
    forward, backward = compact_layer("batch_norm")

    def forward32(x, gamma, beta):
        return forward(x.astype(np.float32), gamma.astype(np.float32), beta.astype(np.float32))

    report = _check(Case("batch_norm", (6, 3, 2)), (forward32, backward), np.float64, explain=False)
    assert not report.row("dtypes").passed, str(report)
    fd = [r for r in report.rows if "finite differences" in r.check]
    assert fd and all(r.passed for r in fd) and any("float32" in n for n in report.notes), str(report)


def test_the_report_says_when_the_bounds_are_too_wide_to_show_small_mistakes():
    offset = Case("batch_norm", (6, 3, 2), recipe="offset")
    loose = _check(offset, compact_layer("batch_norm"), np.float32, explain=False)
    assert loose.passed and any("ill-conditioned for float32" in n for n in loose.notes), str(loose)
    for case, dtype in [(offset, np.float64), (Case("batch_norm", (6, 3, 2)), np.float32)]:
        assert not any("ill-conditioned" in n for n in _check(case, compact_layer("batch_norm"), dtype).notes)
