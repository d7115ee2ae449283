"""The two command-line entry points run and say what they found."""

import json

from benchmarks.__main__ import main as benchmarks_main
from verify.__main__ import main as verify_main
from verify.norms import NORMS


def test_verify_cli_passes_and_writes_json(tmp_path, capsys):
    path = tmp_path / "reports.json"
    assert verify_main(["--quick", "--ops", "group_norm", "--dtypes", "float32", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "group_norm" in out
    reports = json.loads(path.read_text())
    assert reports and all(r["passed"] and r["dtype"] == "float32" for r in reports)


def test_verify_cli_checks_the_new_norms_and_tabulates_their_tensors(capsys):
    """RMSNorm without beta (gamma, then none), Switchable Norm with its mixing weights: the table has a row for
    every tensor each one has, dmean_weight and dvar_weight among them, and none for RMSNorm's missing dbeta."""
    assert verify_main(["--quick", "--ops", "rms_norm", "switchable_norm", "--dtypes", "float64"]) == 0
    out = capsys.readouterr().out
    rows = {tuple(line.split()[:4]) for line in out.splitlines() if line.endswith("PASS")}
    assert {("rms_norm", "cpu", "float64", t) for t in ("y", "dx", "dgamma")} <= rows, out
    assert not any(r[0] == "rms_norm" and r[3] == "dbeta" for r in rows), out
    tensors = ("y", "dx", "dgamma", "dbeta", "dmean_weight", "dvar_weight")
    assert {("switchable_norm", "cpu", "float64", t) for t in tensors} <= rows, out
    assert "0 failed" in out


def test_benchmarks_cli_prints_both_passes_of_every_op(capsys):
    assert benchmarks_main(["--quick", "--repeat", "1", "--sizes", "small", "--backends", "cpu"]) == 0
    rows = {tuple(line.split()[::2][:2]) for line in capsys.readouterr().out.splitlines() if "normkernels cpu" in line}
    ops = tuple(NORMS)  # every norm of the registry has benchmark sizes (verify.cases.SIZES)
    assert rows == {(op, direction) for op in ops for direction in ("forward", "backward")}


def test_verify_cli_says_when_the_gpu_half_did_not_run(capsys):
    """Without a GPU the default run is the CPU's alone, and the last line says so and how to check the CUDA
    kernels anyway (the simulator, or the prepared GPU run)."""
    from normkernels import _backends

    assert verify_main(["--quick", "--ops", "layer_norm", "--dtypes", "float32"]) == 0
    out = capsys.readouterr().out
    if _backends.cuda_mode() == "gpu":
        assert "no GPU here" not in out
    else:
        assert out.rstrip().endswith("runs the GPU half (tests, verify, benchmarks)."), out[-400:]
        assert "python -m verify --backends cuda" in out and "benchmarks/gpu_run.sh" in out


def test_the_gpu_run_script_fails_fast_and_says_why_without_a_gpu(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    from normkernels import _backends

    if _backends.cuda_mode() == "gpu":
        pytest.skip("a GPU is here: the script would run for minutes")
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_run.sh"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    done = subprocess.run(
        ["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 2, done
    assert "gpu_run: nothing run:" in done.stderr and "python -m verify --backends cuda" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_benchmarks_cli_says_when_the_gpu_half_did_not_run(capsys):
    from benchmarks import harness

    assert benchmarks_main(["--quick", "--repeat", "1", "--sizes", "small", "--ops", "layer_norm"]) == 0
    out = capsys.readouterr().out
    if harness.unavailable("cuda"):
        assert out.rstrip().endswith("`bash benchmarks/gpu_run.sh` times them."), out[-400:]
    else:
        assert "no GPU here" not in out
