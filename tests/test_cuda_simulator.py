"""Without a GPU, the CUDA kernels run in Numba's simulator: test_cuda.py, the cuda halves of the files in
SIMULATED_TESTS, and the verifier's cuda backend, each in a second process (NUMBA_ENABLE_CUDASIM must be set
before numba is imported), started early to run beside the rest of the suite."""

import re

import background
import pytest

from normkernels import _backends

pytest.importorskip("numba_cuda", reason="the cuda extra (numba-cuda) is not installed")
if _backends.simulator():
    pytest.skip("already in the simulator", allow_module_level=True)

if _backends.cuda_mode() == "gpu":
    pytest.skip("a real GPU is present: test_cuda.py runs on it directly", allow_module_level=True)

SIM = {"NUMBA_ENABLE_CUDASIM": "1"}


SIMULATED_TESTS = (
    "tests/test_cuda.py",
    "tests/test_errors.py",
    "tests/test_hard_inputs.py",
    "tests/test_nn.py",
    "tests/test_switchable_norm.py",
    "tests/test_rms_norm.py",
    "tests/test_batch_norm_split.py",
    "tests/test_out.py",
)
# started by conftest when collection finishes, so they run beside the rest of the suite (tests/background.py)
BACKGROUND = {
    "simulated tests": (
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", *SIMULATED_TESTS],
        SIM,
        ("test_cuda_tests_pass_in_the_simulator",),
    ),
    "simulated verify": (
        ["-m", "verify", "--backends", "cuda", "--ops", "instance_norm", "--dtypes", "float32"],
        SIM,
        ("test_verify_runs_the_cuda_backend_in_the_simulator_and_says_so",),
    ),
}


def _run(key: str):
    argv, env, _ = BACKGROUND[key]
    return background.result(key, argv, env)


def test_cuda_tests_pass_in_the_simulator():
    out = _run("simulated tests")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and not re.search(r"\b\d+ failed", out.stdout)  # "2 xfailed" is fine


def test_verify_runs_the_cuda_backend_in_the_simulator_and_says_so():
    out = _run("simulated verify")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "cuda (simulator)" in out.stdout and "0 failed" in out.stdout
