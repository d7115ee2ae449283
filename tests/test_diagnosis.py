"""Diagnosis fits real mistakes: every mistake in the student corpus (tests/students, written independently of the
verifier, each planted mistake recorded in tests/students/manifest.py) and every bug planted in
tests/implementations.py is named by the right hypothesis, and correct functions get no cause at all.

`python tests/test_diagnosis.py` prints the diagnosis table: each mistake, the cause named, whether it is the
right one, and the time per file.
"""

import sys
import time
from pathlib import Path

import pytest
from implementations import BACKWARD_BUGS, FORWARD_BUGS, student_layer
from test_verify import BN, HYPOTHESIS, NORM_FOR_BUG, ROW, _check

from verify import cs231n

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "students"))
from manifest import EXAMPLE, STUDENTS  # noqa: E402

FILES = {**{f"tests/students/{name}": entry for name, entry in STUDENTS.items()}, **EXAMPLE}

# manifest category -> what names it: hypothesis keys (prefixes) on a row, or words in a row's cause, or the
# report's verdict of a consistent other layer
EVIDENCE = {
    "stats_axes": ("axes=", "view=", "groups=", "backward_axes=", "dy_unmoved", "consistent"),
    "groups_layout": ("groups=", "consistent"),
    "mean_divisor": ("mean_divisor=",),
    "var_divisor": ("var_divisor=",),
    "backward_divisor": ("backward_divisor=", "mean_path_divisor=", "var_path_divisor="),
    "eps_outside_sqrt": ("eps_outside",),
    "eps_missing": ("eps_missing",),
    "no_mean_path": ("no_mean_path",),
    "no_var_path": ("no_var_path",),
    "unfinished_backward": ("no_stats_paths", "dx_is_dxhat", "dgamma: None"),
    "gamma_missing": ("gamma_missing_backward", "gamma_missing_forward"),
    "gamma_misplaced": ("dgamma_times_gamma", "affine_swapped", "gamma_outside_sum"),
    "gamma_outside_sum": ("gamma_outside_sum",),
    "dgamma_axes": ("dgamma sums over",),
    "dbeta_axes": ("dbeta sums over",),
    "affine_keepdims": ("keepdims",),
    "float32": ("float32",),
    "sign": ("dmu_sign", "dsqrtvar_sign"),
    "factor": ("no_factor_2", "no_half"),
    "exponent": ("dvar_exponent", "dsqrtvar_power"),
    "consistent_other_norm": ("consistent",),
    "running_momentum": ("momentum_flipped", "torch"),
    "running_unbiased": ("unbiased", "torch"),
    "running_not_stored": ("not_stored",),
    "test_mode_batch_stats": ("test_mode_batch_stats",),
    "other": ("keepdims",),
}


def _pair(function: str) -> str:
    """The report a function is judged in: a forward with its first backward, a backward with its forward."""
    if function.endswith("_forward"):
        return f"{function} + {function[: -len('_forward')]}_backward"
    forward = function.replace("_backward_alt", "_forward").replace("_backward", "_forward")
    return f"{forward} + {function}"


def _named(report, function: str) -> list[str]:
    """Everything the report says about the function's own tensors: hypothesis keys, causes, the verdict."""
    forward = function.endswith("_forward")
    said = [report.diagnosis] if report.diagnosis else []
    for row in report.rows:
        if row.passed and not row.warn:
            continue
        tensor = row.check.split(" ")[0]
        running = row.check.startswith(("running", "test mode"))
        mine = running or (tensor == "y" if forward else tensor in ("dx", "dgamma", "dbeta", "shapes"))
        mine = mine or (not forward and row.check in ("shapes", "backward runs"))
        if mine:
            said += [row.hypothesis, row.cause, row.where]
    return [s for s in said if s]


def diagnosis_rows():
    """(file, function, category, what was named, right?) for every mistake of the corpus, and the seconds
    each file took (check_file: every check and every diagnosis of the file)."""
    rows, seconds = [], {}
    for path, functions in FILES.items():
        start = time.perf_counter()
        entries = {e.name: e for e in cs231n.check_file(ROOT / path)}
        seconds[path] = time.perf_counter() - start
        for function, entry in functions.items():
            pair = entries.get(_pair(function))
            report = pair.report if pair else None
            for mistake in entry["mistakes"]:
                if mistake["words"].startswith("Inherited"):
                    continue
                said = _named(report, function) if report else []
                want = EVIDENCE[mistake["category"]]
                right = any(w in s for w in want for s in said)
                rows.append((path, function, mistake["category"], said, right))
    return rows, seconds


@pytest.fixture(scope="module")
def table():
    return diagnosis_rows()


# Beyond the space searched: the backward's own mistake (gamma outside the sums) is fed the cache of a forward
# with another mistake (the batch axis in the statistics), and sums over other groups with another divisor than
# that forward: three changes on top of the forward's, where the search stops at two. The report says that
# nothing reproduces dx and names the closest hypothesis with its residual.
BEYOND = {("tests/students/student_10.py", "spatial_groupnorm_backward", "gamma_outside_sum")}


def _own_mistakes():
    return [
        pytest.param(
            path,
            function,
            m["category"],
            id=f"{Path(path).stem}-{function}-{m['category']}",
            marks=[pytest.mark.xfail(strict=True, reason="three changes deep")]
            if (path, function, m["category"]) in BEYOND
            else [],
        )
        for path, functions in FILES.items()
        for function, entry in functions.items()
        for m in entry["mistakes"]
        if not m["words"].startswith("Inherited")
    ]


@pytest.mark.parametrize("path, function, category", _own_mistakes())
def test_the_students_mistake_is_named(table, path, function, category):
    rows, _ = table
    row = next(r for r in rows if r[:3] == (path, function, category))
    assert row[4], f"{path} {function}: {category} not named; the report says {row[3]}"


@pytest.mark.parametrize("path", FILES)
def test_correct_functions_pass_and_get_no_cause(path):
    entries = {e.name: e for e in cs231n.check_file(ROOT / path)}
    for function, entry in FILES[path].items():
        pair = entries.get(_pair(function))
        if entry["correct"] and pair is not None and pair.report is not None:
            partner = pair.name.split(" + ")[1 if function.endswith("_forward") else 0]
            if FILES[path].get(partner, {}).get("correct", False):
                assert pair.report.passed, str(pair.report)


def test_a_student_file_is_checked_in_well_under_a_second_per_function(table):
    _, seconds = table
    assert max(seconds.values()) < 10, seconds  # generous: the table prints the real numbers


def planted_rows():
    """(bug, hypothesis wanted, hypotheses named, right?) for the bugs of tests/implementations.py."""
    out = []
    for bug in FORWARD_BUGS + BACKWARD_BUGS:
        case = NORM_FOR_BUG.get(bug, BN)
        start = time.perf_counter()
        report = _check(case, student_layer(case.norm, bug, **case.layout_kwargs))
        took = time.perf_counter() - start
        if bug in ROW:
            named = [r.check for r in report.failures]
            out.append((bug, ROW[bug], named, ROW[bug] in named, took))
        else:
            named = sorted({r.hypothesis for r in report.failures if r.hypothesis})
            out.append((bug, HYPOTHESIS[bug], named, HYPOTHESIS[bug] in named, took))
    return out


def main() -> None:
    rows, seconds = diagnosis_rows()
    print(f"{'file':<28} {'function':<30} {'mistake (manifest)':<22} {'right':<5}  named")
    for path, function, category, said, right in rows:
        keys = [s for s in said if "=" in s or "_" in s and " " not in s] or said[:1]
        print(
            f"{Path(path).name:<28} {function:<30} {category:<22} {'yes' if right else 'NO':<5}  {', '.join(keys)[:90]}"
        )
    good = sum(r[4] for r in rows)
    print(f"\n{good} of {len(rows)} mistakes named rightly; seconds per file (every check and diagnosis):")
    print("  " + ", ".join(f"{Path(p).stem} {s:.2f}" for p, s in seconds.items()))
    print(f"\n{'planted bug':<20} {'wanted':<24} {'right':<5} {'seconds':>7}  named")
    planted = planted_rows()
    for bug, want, named, right, took in planted:
        print(f"{bug:<20} {want:<24} {'yes' if right else 'NO':<5} {took:7.3f}  {', '.join(named)}")
    print(f"\n{sum(p[3] for p in planted)} of {len(planted)} planted bugs named rightly")


if __name__ == "__main__":
    main()
