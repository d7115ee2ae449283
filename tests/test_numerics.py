"""Determinism: the same bits across runs, thread counts and concurrent Python threads."""

import os
import subprocess
import sys
import threading

import numba
import numpy as np
import pytest
from conftest import case_params

from verify.cases import CASES

# the cases big enough for several parallel blocks
PARALLEL = [c for c in CASES if "small" not in c.tags]


def _run(case, dtype):
    """y, every statistic the forward returns, dx and every parameter's gradient."""
    inputs = case.inputs(dtype)
    y, saved = case.run_forward(inputs)
    return (y, *case.norm_entry.flatten(saved), *case.run_backward(inputs.dy, inputs, saved))


@pytest.mark.parametrize("case", case_params(PARALLEL))
def test_bit_identical_across_runs_and_thread_counts(case, dtype):
    first = _run(case, dtype)
    again = _run(case, dtype)
    default = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        serial = _run(case, dtype)
    finally:
        numba.set_num_threads(default)
    for a, b, c in zip(first, again, serial, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize(
    ("shape", "groups", "inner", "centered"),
    [((37, 64), 1, 1, True), ((37, 64), 1, 1, False), ((24, 2 * 9), 4, 9, True), ((5, 7), 1, 1, True)],
    ids=["layer", "rms", "group", "short"],
)
def test_row_forward_is_the_same_whatever_the_rows_per_task(shape, groups, inner, centered, dtype):
    """The row forward takes a row's sum in the loop writing the row before it, and a task's first row in a loop
    writing itself: every row's statistics and y come out the same whichever row starts a task (the rows per
    task follow the thread count)."""
    from normkernels.cpu import rows

    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 3 + 1e4).astype(dtype)  # an offset, so a mean's last bits matter
    a = groups * (shape[1] // inner)
    gamma = (1 + rng.standard_normal(a)).astype(dtype)
    beta = rng.standard_normal(a).astype(dtype)
    outs = []
    for per in (1, 2, 3, 16, shape[0]):
        y, mean, rstd = np.empty_like(x), np.empty(shape[0]), np.empty(shape[0])
        rows.rows_forward(x, gamma, beta, 1e-5, groups, inner, centered, per, y, mean, rstd)
        outs.append((y, mean, rstd))
    for other in outs[1:]:
        for want, got in zip(outs[0], other, strict=True):
            np.testing.assert_array_equal(got, want)


def test_calls_from_several_python_threads_match_serial_calls():
    """Eight threads, each running every parallel case's forward and backward: the same bits as one thread."""
    serial = {case.id: _run(case, np.float32) for case in PARALLEL}
    results = {}

    def work(i):
        for case in PARALLEL[i % len(PARALLEL) :] + PARALLEL[: i % len(PARALLEL)]:
            results[(i, case.id)] = _run(case, np.float32)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 * len(PARALLEL)
    for (_, case_id), got in results.items():
        for a, b in zip(got, serial[case_id], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=case_id)


_WORKQUEUE_SCRIPT = """
import threading
import numpy as np
import numba
import normkernels as nk

xs = [np.random.default_rng(i).standard_normal((64, 4096)) for i in range(6)]
want = [nk.layer_norm_forward(x, 4096)[0] for x in xs]
assert numba.threading_layer() == "workqueue", numba.threading_layer()
same = []
def work(i):
    for _ in range(10):
        same.append(np.array_equal(nk.layer_norm_forward(xs[i], 4096)[0], want[i]))
threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
[t.start() for t in threads]
[t.join() for t in threads]
print(len(same), all(same))
"""


def test_threads_take_turns_under_the_workqueue_layer():
    """Numba's workqueue layer aborts the process on concurrent parallel launches; the kernels take turns."""
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    out = subprocess.run(
        [sys.executable, "-c", _WORKQUEUE_SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["60", "True"]
