"""The verifier has teeth: planted bugs are flagged with their cause named; correct layers pass; a student's
mistakes in calling it get clear errors and the checks that can still run, run."""

import numpy as np
import pytest
from conftest import case_params
from implementations import (
    BACKWARD_BUGS,
    FORWARD_BUGS,
    RMS_BUGS,
    SWITCHABLE_BUGS,
    compact_layer,
    rms_compact_layer,
    rms_layer,
    student_layer,
    switchable_layer,
)

import normkernels as nk
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

RMS = Case("rms_norm", (4, 7), normalized_ndim=1, eps=1e-6)  # M = 7 values per row
SWITCHABLE = Case("switchable_norm", (3, 4, 5))  # S = 5, C S = 20, N S = 15 values per statistic
# planted RMSNorm and Switchable Norm bug -> the hypothesis that must be named for it
RMS_HYPOTHESIS = {
    "mean_subtracted": "mean_subtracted",
    "eps_outside": "eps_outside",
    "unbiased_ms": "ms_divisor=6",
    "sqrt_missing": "sqrt_missing",
    "float32_path": "float32",
    "no_ms_path": "no_ms_path",
    "no_half": "no_half",
    "gamma_ignored": "gamma_missing_backward",
    "dgamma_no_xhat": "dgamma_no_xhat",
}
SWITCHABLE_HYPOTHESIS = {
    "raw_logits": "raw_logits",
    "weights_by_sum": "weights_by_sum",
    "unbiased_var_in": "unbiased_var_in",
    "float32_path": "float32",
    "no_softmax_backward": "no_softmax_backward",
    "no_instance_path": "no_instance_path",
    "no_layer_path": "no_layer_path",
    "no_batch_path": "no_batch_path",
    "gamma_ignored": "gamma_missing_backward",
}
# correct layers of tests/implementations.py by norm: the staged one and the closed form
CORRECT = {
    "rms_norm": {"staged": rms_layer, "compact": rms_compact_layer},
    "switchable_norm": {"staged": switchable_layer},
}


def _check(case, layer, dtype=np.float64, seed=0, **kwargs):
    inputs = case.inputs(dtype, seed=seed)
    return verify.check(*layer, norm=case.norm, **case.check_inputs(inputs), **case.check_kwargs, **kwargs)


def _named(report) -> set:
    return {r.hypothesis for r in report.failures if r.hypothesis}


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


@pytest.mark.parametrize("bug", RMS_BUGS)
def test_planted_rms_norm_bug_is_flagged_and_its_cause_named(bug):
    report = _check(RMS, rms_layer(bug, **RMS.check_kwargs))
    assert not report.passed, f"{bug} went unnoticed:\n{report}"
    assert RMS_HYPOTHESIS[bug] in _named(report), f"{bug}: named {_named(report)}\n{report}"


@pytest.mark.parametrize("bug", SWITCHABLE_BUGS)
def test_planted_switchable_norm_bug_is_flagged_and_its_cause_named(bug):
    report = _check(SWITCHABLE, switchable_layer(bug, **SWITCHABLE.check_kwargs))
    assert not report.passed, f"{bug} went unnoticed:\n{report}"
    assert SWITCHABLE_HYPOTHESIS[bug] in _named(report), f"{bug}: named {_named(report)}\n{report}"


def test_the_reports_name_the_new_norms_mistakes_in_words():
    """What a student reads: the mistake in words, and where (a row, a channel, a weight by its kind)."""
    report = _check(RMS, rms_layer("mean_subtracted", **RMS.check_kwargs))
    assert "layer norm without beta" in report.row("y vs staged graph").cause, str(report)
    assert report.row("y vs staged graph").where.split("] ")[1].startswith("row ("), str(report)
    report = _check(SWITCHABLE, switchable_layer("no_softmax_backward"))
    row = report.row("dmean_weight vs staged graph")
    assert "softmax's gradient is missing" in row.cause and "statistics)" in row.where, str(report)
    report = _check(SWITCHABLE, switchable_layer("no_batch_path"))
    assert "batch statistics" in report.row("dx vs staged graph").cause, str(report)


def test_backward_cache_entry_that_changed_is_named():
    report = _check(BN, student_layer("batch_norm", "mutates_cache"))
    row = report.row("backward repeatable")
    assert not row.passed and "cache['xmu']" in row.where and "writes into" in row.cause, str(report)


@pytest.mark.parametrize("case", case_params([c for c in CASES if "small" in c.tags and c.norm not in CORRECT]))
@pytest.mark.parametrize("make", [student_layer, compact_layer], ids=["staged", "compact"])
def test_correct_layers_pass(case, make, dtype):
    report = _check(case, make(case.norm, **case.layout_kwargs), dtype)
    assert report.passed, str(report)


@pytest.mark.parametrize(
    "case, style",
    [
        pytest.param(c, style, id=f"{c.id}-{style}")
        for c in CASES
        if "small" in c.tags and c.norm in CORRECT
        for style in CORRECT[c.norm]
    ],
)
def test_correct_rms_and_switchable_layers_pass(case, style, dtype):
    for affine in case.norm_entry.affine_variants:
        inputs = case.inputs(dtype, affine)
        layer = CORRECT[case.norm][style](**case.check_kwargs)
        report = verify.check(*layer, norm=case.norm, **case.check_inputs(inputs), **case.check_kwargs)
        assert report.passed, f"{affine}\n{report}"


@pytest.mark.parametrize("case", case_params(CASES))
def test_project_kernels_pass(case, dtype):
    report = _check(case, case.layer(), dtype)
    assert report.passed, str(report)


def test_each_norm_gets_the_rows_its_registry_entry_lists():
    """A row per tensor the norm has (the mixing weights' gradients for switchable norm), and only the
    identities that hold for it: RMSNorm's sum(dx * xhat) = eps term, but not sum(dx) = 0; neither per-row one
    for switchable norm, whose dx sums to 0 over the whole tensor only."""
    checks = {}
    for case in (RMS, SWITCHABLE, BN):
        checks[case.norm] = {r.check for r in _check(case, case.layer()).rows}
    assert {"dmean_weight vs staged graph", "dvar_weight vs finite differences"} <= checks["switchable_norm"]
    assert [c for c in checks["switchable_norm"] if c.startswith("sum(")] == ["sum(dx) = 0 over the whole tensor"]
    assert "sum(dx * xhat) = eps term per group" in checks["rms_norm"]
    assert "sum(dx) = 0 per group" not in checks["rms_norm"] and "dbeta vs staged graph" not in checks["rms_norm"]
    assert {"sum(dx) = 0 per group", "sum(dx * xhat) = eps term per group"} <= checks["batch_norm"]


@pytest.mark.parametrize("bug", ["no_layer_path", "no_batch_path", "no_instance_path"])
def test_a_switchable_dx_missing_a_path_breaks_its_sum_over_the_tensor(bug):
    """Moving all of x moves every mean with it and no variance: the exact dx sums to 0. Without the path through
    one kind of statistics it does not, whatever the reference says."""
    row = _check(SWITCHABLE, switchable_layer(bug)).row("sum(dx) = 0 over the whole tensor")
    assert row is not None and not row.passed, str(row)


def test_rms_norm_takes_no_beta_and_switchable_norm_needs_its_weights():
    x, gamma, _, _ = RMS.inputs()
    beta = np.zeros_like(gamma)
    with pytest.raises(ValueError, match="rms_norm has no beta: its forward is forward\\(x, gamma\\)"):
        verify.check(*rms_layer(), norm="rms_norm", x=x, gamma=gamma, beta=beta, normalized_shape=7)
    inputs = SWITCHABLE.inputs()
    with pytest.raises(ValueError, match="switchable_norm needs mean_weight"):
        verify.check(*switchable_layer(), norm="switchable_norm", x=inputs.x, gamma=inputs.gamma, beta=inputs.beta)
    with pytest.raises(ValueError, match="var_weight of shape \\(2,\\)"):
        verify.check(
            *switchable_layer(), norm="switchable_norm", x=inputs.x, mean_weight=np.zeros(3), var_weight=np.zeros(2)
        )


def test_rms_norm_eps_none_is_the_machine_epsilon_of_x():
    """eps=None checks against the eps F.rms_norm (and the kernel) use: finfo(x.dtype).eps. The rows are small,
    so eps = 1.2e-7 against 2.2e-16 is a visible difference; a layer using the other fails. Such a layer is
    another function at float64 input, so a float32 check takes its finite differences in float32."""
    x = 1e-3 * np.random.default_rng(2).standard_normal((3, 8))
    gamma = np.linspace(0.5, 1.5, 8)

    def kernel(eps):
        def forward(x, gamma):
            y, rstd = nk.rms_norm_forward(x, 8, gamma, eps=eps)
            return y, (x, gamma, rstd)

        return forward, lambda dy, cache: nk.rms_norm_backward(dy, *cache)

    for dtype in (np.float32, np.float64):
        args = dict(norm="rms_norm", x=x.astype(dtype), gamma=gamma.astype(dtype), normalized_shape=8)
        report = verify.check(*kernel(None), **args)
        assert report.passed, str(report)
        assert (dtype == np.float32) == any("machine epsilon" in n for n in report.notes), str(report)
        other = float(np.finfo(np.float64 if dtype == np.float32 else np.float32).eps)
        assert not verify.check(*kernel(other), **args, explain=False).passed


def test_equal_mixing_logits_are_replaced_and_said():
    """The paper initializes the logits to zeros: equal weights hide a swap of the mean's and the variance's."""
    inputs = SWITCHABLE.inputs()
    params = dict(inputs.params, mean_weight=np.zeros(3), var_weight=np.ones(3))
    report = verify.check(*switchable_layer(), norm="switchable_norm", x=inputs.x, **params)
    assert report.passed and sum("equal logits" in n for n in report.notes) == 2, str(report)


def test_switchable_norm_eval_mode_is_checked_against_the_running_statistics():
    """training=False: the kernels in eval mode pass (the batch statistics replaced by the running ones, held
    constant in the backward); a layer normalizing with the batch's statistics gets that named."""
    inputs = SWITCHABLE.inputs()
    rm, rv = np.linspace(-1, 1, 4), np.linspace(0.5, 2, 4)

    def forward(x, gamma, beta, mw, vw):
        y, stats = nk.switchable_norm_forward(x, gamma, beta, mw, vw, training=False, running_mean=rm, running_var=rv)
        return y, (x, gamma, mw, vw, stats)

    def backward(dy, cache):
        return nk.switchable_norm_backward(dy, *cache, training=False)

    kwargs = dict(norm="switchable_norm", **SWITCHABLE.check_inputs(inputs), training=False)
    report = verify.check(forward, backward, **kwargs, running_mean=rm, running_var=rv)
    assert report.passed, str(report)
    batch = verify.check(*SWITCHABLE.layer(), **kwargs, running_mean=rm, running_var=rv)
    assert batch.row("y vs staged graph").hypothesis == "batch_statistics", str(batch)


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


@pytest.mark.parametrize(
    "case_id, make, bug",
    [
        ("rms_norm-3x5000-last1", rms_layer, "no_ms_path"),
        ("rms_norm-3x5000-last1", rms_layer, "mean_subtracted"),
        ("rms_norm-3x5000-last1", rms_layer, "dgamma_no_xhat"),
        ("switchable_norm-8x16x20x20", switchable_layer, "no_softmax_backward"),
        ("switchable_norm-8x16x20x20", switchable_layer, "no_layer_path"),
        ("switchable_norm-8x16x20x20", switchable_layer, "gamma_ignored"),
    ],
)
def test_large_rms_and_switchable_inputs_in_float32_still_catch_real_mistakes(case_id, make, bug):
    """Rows of 5000 and statistics over up to 6400 values in float32, with directional differences: the
    correct layer passes and each mistake fails."""
    case = next(c for c in CASES if c.id == case_id)
    assert _check(case, make(**case.check_kwargs), np.float32, explain=False).passed
    assert not _check(case, make(bug, **case.check_kwargs), np.float32, explain=False).passed


def test_a_mistake_of_1_over_s_in_400_values_shows_in_float64():
    """The unbiased instance variance over S = 400 values moves var_in by 1/399, y by about 1e-3 of its size:
    within the float32 bounds of statistics over 6400 values (s(M) u kappa ~ 4e-4 relative, times SAFETY and
    the reference's), so a float32 check cannot tell; far outside float64's."""
    case = next(c for c in CASES if c.id == "switchable_norm-8x16x20x20")
    report = _check(case, switchable_layer("unbiased_var_in"), np.float64, explain=False)
    assert not report.row("y vs staged graph").passed, str(report)


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
