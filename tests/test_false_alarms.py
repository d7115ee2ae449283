"""No false alarms: independently written correct layers pass every row of verify.check on inputs chosen to be
hard for finite differences and fixed tolerances (verify.cases.HARD), and on inputs drawn by hypothesis.

`python tests/test_false_alarms.py` prints the table: per hard case and implementation the worst error over
allowed of any row, and for dx the finite-difference error estimate beside its tolerance.
NK_FALSE_ALARM_EXAMPLES sets how many inputs hypothesis draws (150 by default).
"""

import os
import sys

import correct_layers
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from implementations import compact_layer, rms_compact_layer, rms_layer, student_layer, switchable_layer

import verify
from verify.cases import HARD, Case, Inputs, flatten_first_group
from verify.norms import NORMS

# the independent collection, the project's kernels, and the layers the planted bugs are made from (for RMSNorm
# and Switchable Norm, their own: a staged one each, and RMSNorm's closed form)
PLANTED = {
    "rms_norm": {"planted_staged": rms_layer, "planted_compact": rms_compact_layer},
    "switchable_norm": {"planted_staged": switchable_layer},
}
FAMILY = {
    "planted_staged": lambda norm, **kw: student_layer(norm, **kw),
    "planted_compact": lambda norm, **kw: compact_layer(norm, **kw),
}


def _planted(name: str, norm: str):
    """(forward, backward) factory taking the case's check_kwargs, or None where that layer has no such norm."""
    if norm in PLANTED:
        return PLANTED[norm].get(name)
    return lambda **kw: FAMILY[name](norm, **kw)


NAMES = [*correct_layers.IMPLEMENTATIONS, "normkernels", *FAMILY]
SLOW = {"jax_vjp": dict(full_fd_limit=0, directions=2, sampled=4)}  # un-jitted JAX: ms a call


def supports(name: str, norm: str) -> bool:
    if name == "normkernels":
        return True
    if name in FAMILY:
        return _planted(name, norm) is not None
    return correct_layers.supports(name, norm)


def layer(name: str, case: Case):
    if name == "normkernels":
        return case.layer()
    if name in FAMILY:
        return _planted(name, case.norm)(**case.check_kwargs)
    if not correct_layers.available(name):
        pytest.skip(f"{name} needs a package that is not installed")
    return correct_layers.make(name, case.norm, **case.check_kwargs)


def run(name: str, case: Case, inputs: Inputs):
    return verify.check(
        *layer(name, case), norm=case.norm, **case.check_inputs(inputs), explain=False, **case.check_kwargs,
        **SLOW.get(name, {}),
    )  # fmt: skip


@pytest.mark.parametrize(
    "case, name",
    [pytest.param(c, n, id=f"{c.id}-{n}") for c in HARD for n in NAMES if supports(n, c.norm)],
)
def test_correct_layers_pass_every_row_on_hard_inputs(case, name, dtype):
    report = run(name, case, case.inputs(dtype))
    assert report.passed, str(report)


@st.composite
def drawn_cases(draw):
    """A norm, a shape with at least two values per group, and x with a drawn offset, spread and flat group."""
    norm = draw(st.sampled_from(list(NORMS)))
    ndim = draw(st.integers(NORMS[norm].min_ndim if NORMS[norm].min_ndim > 2 else 2, 5))
    shape = [draw(st.integers(1, 4)) for _ in range(ndim)]
    num_groups = normalized_ndim = None
    if norm == "group_norm":
        num_groups = draw(st.integers(1, 3))
        shape[1] = num_groups * draw(st.integers(1 if ndim > 2 else 2, 3))
    if norm in ("layer_norm", "rms_norm"):
        normalized_ndim = draw(st.integers(1, ndim - 1))
    # one value per group has no variance to normalize by: make the first reduced axis at least 2 (switchable
    # norm takes no row of one value either)
    first = {"batch_norm": 0, "group_norm": 1}.get(norm, ndim - 1)
    if Case(norm, tuple(shape), num_groups=num_groups, normalized_ndim=normalized_ndim).layout.count < 2:
        shape[first] = 2 * (num_groups if norm == "group_norm" else 1)
    eps = draw(st.sampled_from([0.0, 1e-5, 0.1]))
    return Case(norm, tuple(shape), num_groups=num_groups, normalized_ndim=normalized_ndim, eps=eps)


@st.composite
def drawn_layers(draw):
    """A drawn case and an implementation of its norm."""
    case = draw(drawn_cases())
    return case, draw(st.sampled_from([n for n in NAMES if n not in SLOW and supports(n, case.norm)]))


EXAMPLES = int(os.environ.get("NK_FALSE_ALARM_EXAMPLES", "150"))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    drawn=drawn_layers(),
    offset=st.sampled_from([0.0, 1.0, 1e2, 1e4]),
    spread=st.sampled_from([1.0, 1e-1, 1e-3, 10.0]),
    flat=st.sampled_from([1.0, 1.0, 0.01]),
    dtype=st.sampled_from([np.float32, np.float64]),
    affine=st.sampled_from(["gamma_beta", "gamma", "none"]),
    seed=st.integers(0, 2**16),
)
def test_no_false_alarm_on_drawn_inputs(drawn, offset, spread, flat, dtype, affine, seed):
    case, name = drawn
    if name.startswith("torch") and not correct_layers.available(name):
        return
    if name.startswith("planted") and case.norm_entry.centred:  # the four's planted layers take gamma and beta
        affine = "gamma_beta"
    rng = np.random.default_rng(seed)
    x = offset + spread * rng.standard_normal(case.shape)
    flatten_first_group(x, case.layout, flat)
    x = x.astype(dtype)
    inputs = case.inputs(dtype, affine, seed=seed)
    inputs = Inputs(x, inputs.params, inputs.dy)
    # var + eps = 0 in some group (eps = 0 and the group's values equal in this dtype): y is 0/0, undefined,
    # and an implementation may as well raise
    assume(np.all(np.isfinite(case.staged_forward(x, *inputs.values())[1]["rstd"])))
    report = run(name, case, inputs)
    assert report.passed, f"{name} offset {offset} spread {spread} flat {flat}\n{report}"


def _table() -> None:
    """The hard cases against every implementation available here: the worst error/allowed over every row,
    and the finite-difference rows' own error estimate next to their tolerance."""
    names = [n for n in NAMES if n in ("normkernels", *FAMILY) or correct_layers.available(n)]
    print("worst err/allowed of any row (float64 | float32), per hard case and implementation")
    print(f"{'case':<40} " + " ".join(f"{n[:9]:>9}" for n in names))
    fd = []
    for case in HARD:
        cells = []
        for name in names:
            if not supports(name, case.norm):
                cells.append(f"{'-':>9}")
                continue
            worst = []
            for dtype in (np.float64, np.float32):
                report = run(name, case, case.inputs(dtype))
                assert report.passed, str(report)
                worst.append(max((r.ratio for r in report.rows if r.ratio is not None), default=0.0))
                row = report.row("dx vs finite differences")
                if row is not None:
                    fd.append((case.id, name, np.dtype(dtype).name, row.estimate, row.tol, row.ratio))
            cells.append(f"{max(worst):9.1e}")
        print(f"{case.id:<40} " + " ".join(cells))
    print("\ndx vs finite differences: the row whose FD error estimate is largest against its tolerance")
    print(f"{'case':<40} {'dtype':<8} {'implementation':<20} {'estimate':>9} {'tolerance':>9} {'err/tol':>8}")
    for key in sorted({(c, d) for c, _, d, _, _, _ in fd}):
        rows = [f for f in fd if (f[0], f[2]) == key]
        c, name, d, est, tol, ratio = max(rows, key=lambda f: f[3] / f[4] if f[4] else 0.0)
        print(f"{c:<40} {d:<8} {name:<20} {est:9.1e} {tol:9.1e} {ratio:8.1e}")
    runs = sum(supports(n, c.norm) for c in HARD for n in names)
    print(f"\n{len(HARD)} hard cases x the implementations of each norm x 2 dtypes = {2 * runs} PASS")


if __name__ == "__main__":
    sys.exit(_table())
