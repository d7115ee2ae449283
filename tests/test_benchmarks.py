"""Smoke tests of the benchmarks: the bytes model and the timer of benchmarks.harness, one quick run of
python -m benchmarks (table, JSON, plot), and the pytest-benchmark suite on one small case; neither runs
under the CUDA simulator."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import harness as h
from verify.cases import SMALL, Case

ROOT = Path(__file__).resolve().parent.parent
IN_SIMULATOR = h.SIMULATOR
SIM = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")


def _run(*args, env=None):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_model_bytes_counts_each_full_size_array_once():
    case = Case("batch_norm", (4, 3, 5))
    assert h.model_bytes(case, "forward", np.float32) == 8 * 60  # read x, write y
    assert h.model_bytes(case, "backward", np.float32) == 12 * 60  # read x and dy, write dx
    assert h.model_bytes(case, "forward", np.float64) == 16 * 60
    assert h.model_bytes(case, "backward", np.float64) == 24 * 60


def _counter(seconds: float):
    count = [0]

    def fn():
        count[0] += 1
        time.sleep(seconds)

    return fn, count


def test_measure_times_repeat_calls_after_the_warmup():
    fn, count = _counter(0.001)
    t = h.measure(fn, repeat=7, budget=60.0, warmup=2)
    assert (t.calls, count[0]) == (7, 9)
    assert t.median >= t.min >= 0.001


def test_measure_stops_at_the_budget_after_at_least_three_calls():
    fn, count = _counter(0.005)
    t = h.measure(fn, repeat=100, budget=0.0, warmup=1)
    assert (t.calls, count[0]) == (3, 4)
    fn, count = _counter(0.005)
    t = h.measure(fn, repeat=100, budget=0.025, warmup=0)
    assert 3 <= t.calls <= 5 and count[0] == t.calls  # 5 calls of >= 5 ms fill 25 ms
    assert t.median >= t.min >= 0.005


_PLOT = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """One quick run of python -m benchmarks: (completed process, its JSON, the plot path or None)."""
    if IN_SIMULATOR:
        pytest.skip("benchmarks do not run under the CUDA simulator")
    tmp = tmp_path_factory.mktemp("bench")
    args = ["--sizes", "small", "--ops", "layer_norm", "--backends", "numpy", "cpu", "--quick"]
    args += ["--json", str(tmp / "bench.json")] + (["--plot", str(tmp / "bench.png")] if _PLOT else [])
    out = _run("-m", "benchmarks", *args)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out, json.loads((tmp / "bench.json").read_text()), (tmp / "bench.png" if _PLOT else None)


def test_cli_json_is_consistent(cli):
    _, report, _ = cli
    assert {"machine", "results", "copies"} <= set(report)
    assert report["machine"]["numba"] and report["machine"]["cores"] >= 1
    (case,) = (c for c in SMALL if c.norm == "layer_norm")
    results = report["results"]
    rows = {(r["direction"], r["backend"]): r for r in results}
    assert len(rows) == len(results) == 4 and set(rows) == {(d, b) for d in h.DIRECTIONS for b in ("numpy", "cpu")}
    copies = {(c["device"], c["bytes"]): c["gbps"] for c in report["copies"]}
    nbytes = math.prod(case.shape) * 4
    assert set(copies) == {("cpu", nbytes)} and copies["cpu", nbytes] > 0
    for r in results:
        assert (r["case"], r["shape"], r["dtype"]) == (case.id, list(case.shape), "float32")
        assert r["median_ms"] >= r["min_ms"] > 0
        assert r["model_bytes"] == h.model_bytes(case, r["direction"], np.float32)
        assert r["gbps"] == pytest.approx(r["model_bytes"] / (r["median_ms"] / 1e3) / 1e9)
        assert r["copy_gbps"] == copies["cpu", nbytes]
        assert r["pct_copy"] == pytest.approx(100 * r["gbps"] / r["copy_gbps"])
        assert r["speedup_vs_torch"] is None  # PyTorch was not asked for
    for d in h.DIRECTIONS:
        assert rows[d, "numpy"]["speedup_vs_numpy"] == pytest.approx(1)
        numpy_ms, cpu_ms = rows[d, "numpy"]["median_ms"], rows[d, "cpu"]["median_ms"]
        assert rows[d, "cpu"]["speedup_vs_numpy"] == pytest.approx(numpy_ms / cpu_ms)


def test_cli_prints_the_table(cli):
    out, _, _ = cli
    header = next(line for line in out.stdout.splitlines() if line.startswith("op "))
    for column in ("shape", "pass", "backend", "median ms", "min ms", "GB/s", "% copy", "x NumPy", "x PyTorch"):
        assert column in header
    assert "staged NumPy" in out.stdout and "normkernels cpu" in out.stdout
    assert "copy bandwidth" in out.stdout


def test_cli_writes_the_plot(cli):
    pytest.importorskip("matplotlib")
    _, _, png = cli
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_refuses_the_simulator():
    out = _run("-m", "benchmarks", "--quick", env=SIM)
    assert out.returncode != 0 and "simulator" in out.stderr
    assert "median ms" not in out.stdout  # refused before timing anything


def test_pytest_benchmark_suite_runs_one_small_case():
    if IN_SIMULATOR:
        pytest.skip("the suite skips itself under the CUDA simulator")
    k = "layer_norm and 1024x256 and cpu"  # normkernels cpu, and PyTorch CPU when installed
    out = _run("-m", "pytest", "benchmarks", "-q", "--benchmark-disable", "-k", k, "-p", "no:cacheprovider")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    summary = out.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and "failed" not in summary and "error" not in summary, summary
    assert int(passed[1]) >= 2  # forward and backward of normkernels cpu at least


def test_pytest_benchmark_suite_skips_itself_in_the_simulator():
    out = _run("-m", "pytest", "benchmarks", "-q", "-rs", "-k", "layer_norm", "-p", "no:cacheprovider", env=SIM)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]  # every test skipped: a pass
    summary = out.stdout.strip().splitlines()[-1]
    assert " skipped" in summary and "passed" not in summary and "failed" not in summary
    assert "CUDA simulator" in out.stdout
