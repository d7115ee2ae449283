"""Without a GPU, the CUDA kernels run in Numba's simulator: test_cuda.py, the cuda halves of test_errors.py and
test_hard_inputs.py and test_nn.py, and the verifier's cuda backend,
each in a second process (NUMBA_ENABLE_CUDASIM must be set before numba is imported)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from normkernels import _backends

pytest.importorskip("numba_cuda", reason="the cuda extra (numba-cuda) is not installed")
if _backends.simulator():
    pytest.skip("already in the simulator", allow_module_level=True)

if _backends.cuda_mode() == "gpu":
    pytest.skip("a real GPU is present: test_cuda.py runs on it directly", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
SIM = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=SIM, capture_output=True, text=True, timeout=1200)


def test_cuda_tests_pass_in_the_simulator():
    out = _run(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_cuda.py",
        "tests/test_errors.py",
        "tests/test_hard_inputs.py",
        "tests/test_nn.py",
        "tests/test_switchable_norm.py",
        "tests/test_rms_norm.py",
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and not re.search(r"\b\d+ failed", out.stdout)  # "2 xfailed" is fine


def test_verify_runs_the_cuda_backend_in_the_simulator_and_says_so():
    out = _run("-m", "verify", "--backends", "cuda", "--ops", "instance_norm", "--dtypes", "float32")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "cuda (simulator)" in out.stdout and "0 failed" in out.stdout
