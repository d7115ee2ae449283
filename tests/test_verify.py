"""The verifier has teeth: planted bugs are flagged (most with their cause named); correct layers pass."""

import numpy as np
import pytest
from conftest import case_params
from implementations import BACKWARD_BUGS, FORWARD_BUGS, compact_layer, student_layer

import verify
from verify.cases import CASES, Case
from verify.mistakes import MISTAKES

BN = Case("batch_norm", (6, 3, 2, 2))
NORM_FOR_BUG = {
    "group_mod": Case("group_norm", (2, 6, 2, 2), num_groups=3),
    "instance_as_layer": Case("instance_norm", (2, 3, 4)),
}
CAUSES = {m.knob: m.cause for m in MISTAKES}


def _check(case, layer, dtype=np.float64, seed=0):
    x, gamma, beta, _ = case.inputs(dtype, seed=seed)
    return verify.check(*layer, norm=case.norm, x=x, gamma=gamma, beta=beta, **case.layout_kwargs)


@pytest.mark.parametrize("bug", FORWARD_BUGS + BACKWARD_BUGS)
def test_planted_bug_is_flagged(bug):
    case = NORM_FOR_BUG.get(bug, BN)
    report = _check(case, student_layer(case.norm, bug, **case.layout_kwargs))
    assert not report.passed, f"{bug} went unnoticed:\n{report}"
    if bug in CAUSES:  # the cause is named where the verifier knows the mistake
        causes = " ".join(r.cause for r in report.failures)
        assert CAUSES[bug] in causes, f"{bug}: expected cause {CAUSES[bug]!r}\n{report}"


@pytest.mark.parametrize("bug", ["modifies_input", "mutates_cache", "float32_path", "dgamma_no_xhat"])
def test_bugs_outside_the_mistake_catalogue_fail_the_right_row(bug):
    row = {
        "modifies_input": "inputs unchanged by forward",
        "mutates_cache": "backward repeatable",
        "float32_path": "y vs staged graph",
        "dgamma_no_xhat": "dgamma vs staged graph",
    }[bug]
    report = _check(BN, student_layer("batch_norm", bug))
    assert row in [r.check for r in report.failures], str(report)
    if bug == "float32_path":
        assert "float32 precision" in next(r.cause for r in report.failures if r.check == row)


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
    with pytest.raises(verify.GradcheckError, match="dx vs staged graph"):
        report.raise_if_failed()


def test_constant_gamma_is_replaced_and_said():
    x, _, beta, _ = BN.inputs()
    report = verify.check(*compact_layer("batch_norm"), norm="batch_norm", x=x, gamma=np.ones(3), beta=beta)
    assert report.passed and any("random gamma" in n for n in report.notes)


def test_a_forward_that_raises_is_a_failed_row():
    def forward(x, gamma, beta):
        raise RuntimeError("boom")

    report = verify.check(forward, None, norm="layer_norm", x=np.ones((2, 3)), normalized_shape=3)
    assert not report.passed and "boom" in report.failures[0].detail


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
