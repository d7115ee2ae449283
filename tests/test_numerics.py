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
