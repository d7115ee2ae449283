"""Smoke tests of the benchmarks: the bytes model, the timer and the bootstrap verdicts of benchmarks.harness,
the JAX backend against the staged graph, quick runs of python -m benchmarks (table, JSON, plot; with JAX and
without it), and the pytest-benchmark suite on one small case; neither runs under the CUDA simulator."""

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
from verify import compare, staged
from verify.cases import CUDA_TINY, SMALL, Case
from verify.norms import NORMS

_TINY = {c.norm: c for c in reversed(CUDA_TINY)}  # one tiny case per norm

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


def test_measure_stops_at_the_budget_after_at_least_min_rounds_calls():
    fn, count = _counter(0.005)
    t = h.measure(fn, repeat=100, budget=0.0, warmup=1)
    assert (t.calls, count[0]) == (h.MIN_ROUNDS, h.MIN_ROUNDS + 1)
    fn, count = _counter(0.005)
    t = h.measure(fn, repeat=100, budget=0.04, warmup=0)
    assert h.MIN_ROUNDS <= t.calls <= 8 and count[0] == t.calls  # 8 calls of >= 5 ms fill 40 ms
    assert t.median >= t.min >= 0.005


def test_side_by_side_rounds_pair_the_callables():
    fns = {name: _counter(0.001)[0] for name in ("a", "b")}
    timings = h.measure_side_by_side(fns, repeat=7, budget=60.0, warmup=0, burst=3)
    for t in timings.values():
        assert [len(b) for b in t.bursts] == [3, 3, 1] and t.calls == 7
        assert t.median == pytest.approx(np.median([s for b in t.bursts for s in b]))


def test_side_by_side_runs_min_rounds_and_single_calls_past_the_budget():
    """Every cell gets the MIN_ROUNDS rounds an interval needs, even when its budget is spent at once."""
    fns = {name: _counter(0.002)[0] for name in ("a", "b")}
    timings = h.measure_side_by_side(fns, repeat=100, budget=0.0, warmup=0, burst=5)
    for t in timings.values():
        assert [len(b) for b in t.bursts] == [1] * h.MIN_ROUNDS  # the budget was spent before the first round
        assert h.speedup(t, timings["a"]).low is not None


def test_burst_size_leaves_several_rounds():
    assert [h.burst_size(r) for r in (1, 5, 10, 30, 100)] == [1, 1, 2, 3, 3]


# --- speedups and verdicts -------------------------------------------------------------------------------


def test_verdict_reads_the_interval():
    assert h.verdict(1.01, 1.5) == "faster"
    assert h.verdict(0.5, 0.99) == "slower"
    assert h.verdict(0.9, 1.1) == h.verdict(1.0, 1.2) == h.verdict(None, None) == "tie"


def _timing(seconds, rounds: int = 10, burst: int = 3, noise: float = 0.05, slow=None, seed: int = 0):
    """A synthetic Timing: calls of `seconds` with relative noise, each round scaled by slow[i] (a slow spell
    of the machine, shared by everything timed in that round)."""
    rng = np.random.default_rng(seed)
    slow = np.ones(rounds) if slow is None else slow
    bursts = tuple(tuple(seconds * slow[i] * (1 + noise * rng.standard_normal(burst))) for i in range(rounds))
    calls = [s for b in bursts for s in b]
    return h.Timing(float(np.median(calls)), min(calls), len(calls), bursts)


def test_speedup_clearly_faster():
    own, other = _timing(1e-3, seed=1), _timing(2e-3, seed=2)
    s = h.speedup(own, other)
    assert s.ratio == pytest.approx(other.median / own.median) and s.ratio == pytest.approx(2, rel=0.1)
    assert 1 < s.low <= s.ratio <= s.high and s.verdict == "faster"


def test_speedup_clearly_slower():
    s = h.speedup(_timing(2e-3, seed=1), _timing(1e-3, seed=2))
    assert s.low <= s.ratio <= s.high < 1 and s.verdict == "slower"


def test_speedup_overlapping_is_a_tie():
    s = h.speedup(_timing(1e-3, seed=1), _timing(1e-3, seed=2))
    assert s.low < 1 < s.high and s.verdict == "tie"


def test_speedup_pairs_the_rounds():
    """10% faster in every round, while slow spells triple whole rounds: pairing sees through the spells."""
    slow = np.where(np.arange(10) % 2, 3.0, 1.0)
    own, other = _timing(1e-3, noise=0.01, slow=slow, seed=1), _timing(1.1e-3, noise=0.01, slow=slow, seed=2)
    s = h.speedup(own, other)
    assert 1 < s.low and s.high < 1.2 and s.verdict == "faster"


def test_speedup_without_rounds_to_resample_is_a_tie():
    s = h.speedup(_timing(1e-3, rounds=1), _timing(3e-3, rounds=1))
    assert s.ratio == pytest.approx(3, rel=0.2) and (s.low, s.high, s.verdict) == (None, None, "tie")
    with pytest.raises(ValueError, match="paired"):
        h.speedup(_timing(1e-3, rounds=3), _timing(1e-3, rounds=4))


@pytest.mark.parametrize("rounds", [2, 3, 4])
def test_speedup_of_too_few_rounds_is_a_tie(rounds):
    """Even clearly different timings: with fewer than MIN_ROUNDS rounds the bootstrap's interval would claim
    far more than it covers, so there is none and the verdict is a tie."""
    s = h.speedup(_timing(1e-3, rounds=rounds, burst=1), _timing(1.2e-3, rounds=rounds, burst=1, seed=1))
    assert (s.low, s.high, s.verdict) == (None, None, "tie") and s.ratio > 1


def test_equal_backends_are_rarely_called_faster_or_slower_at_min_rounds():
    """Why MIN_ROUNDS: between two equally fast backends (log-normal noise per call and a slow spell per round
    shared by both), the share of "faster"/"slower" verdicts at MIN_ROUNDS rounds of one call stays near the 5%
    a 95% interval promises (8.5% over these 200 seeded trials; the same trials at 3 rounds: 24.5%)."""
    rng = np.random.default_rng(42)

    def timing(slow, burst=1):
        bursts = tuple(tuple(1e-3 * slow[i] * np.exp(rng.normal(0, 0.1, burst))) for i in range(len(slow)))
        calls = [t for b in bursts for t in b]
        return h.Timing(float(np.median(calls)), min(calls), len(calls), bursts)

    wrong = 0
    for _ in range(200):
        slow = np.exp(rng.normal(0, 0.2, h.MIN_ROUNDS))
        wrong += h.speedup(timing(slow), timing(slow), resamples=1999).verdict != "tie"
    assert wrong / 200 <= 0.10, wrong


def test_speedup_of_identical_timings_is_a_point_tie():
    t = _timing(1e-3, noise=0.0)
    s = h.speedup(t, t)
    assert (s.ratio, s.low, s.high, s.verdict) == (1.0, 1.0, 1.0, "tie")


def test_speedup_interval_is_repeatable():
    own, other = _timing(1e-3, seed=1), _timing(1.02e-3, seed=2)
    assert h.speedup(own, other) == h.speedup(own, other)


# --- normkernels with out= -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(_TINY.values()), ids=lambda c: c.id)
def test_out_backend_writes_the_same_bits_into_one_array(case):
    """cpu-out times the same kernels as cpu, writing y and dx into arrays made once: every call returns that
    same array, holding the bits a call without out= returns."""
    fresh = h.calls(case, "cpu")
    reused = h.calls(case, "cpu-out")
    for direction in h.DIRECTIONS:
        first, second = (reused[direction]()[0] for _ in range(2))
        assert first is second, f"{direction}: out= was not the array written"
        np.testing.assert_array_equal(second, fresh[direction]()[0])


def test_out_backends_are_normkernels_own():
    assert h.OWN["cpu-out"] == "cpu" and h.DEVICE["cpu-out"] == "cpu" and h.PEER["cpu-out"] == "torch-cpu"
    assert h.DEVICE["cuda-out"] == "gpu" and h.PEER["cuda-out"] == "torch-cuda"
    assert h.unavailable("cpu-out") is None


# --- the roofline ----------------------------------------------------------------------------------------


def test_roofline_slices_keep_what_a_statistics_group_spans():
    from benchmarks import roofline

    ln = Case("layer_norm", (4096, 1024), normalized_ndim=1)
    assert roofline.cached_slice(ln, 1 << 16).shape == (64, 1024) and roofline.fixed_slice(ln).shape == (1, 1024)
    tokens = Case("rms_norm", (8, 2048, 4096), normalized_ndim=1)
    assert roofline.cached_slice(tokens, 1 << 16).shape == (16, 4096)
    bn = Case("batch_norm", (32, 64, 56, 56))
    assert roofline.cached_slice(bn, 1 << 20).shape == (5, 64, 56, 56)  # whole samples
    assert roofline.cached_slice(bn, 1 << 10).shape == (1, 64, 56, 56)  # at least one
    assert roofline.fixed_slice(bn).shape == (2, 64, 2, 1)
    assert roofline.fixed_slice(Case("batch_norm", (4096, 1024))).shape == (2, 1024)
    assert set(roofline.PASSES) == set(NORMS)


@pytest.mark.parametrize("case", [c for c in SMALL if c.norm != "layer_norm"], ids=lambda c: c.id)
def test_roofline_fixed_slice_is_a_valid_call_of_every_kind(case):
    """The fixed-cost call runs for every norm (instance norm refuses one spatial value, batch norm one value)."""
    from benchmarks import roofline

    fns = h.calls(roofline.fixed_slice(case), "cpu-out")
    for direction in h.DIRECTIONS:
        fns[direction]()


# medians (ms) the fake timer gives each callable of roofline.floors: the kernel, the copy and the read of x, the
# cached slice and the fixed-cost call
_FAKE_MS = {"kernel": 10.0, "copy": 4.0, "read": 1.5, "slice": 3.0, "fixed": 1.0}


@pytest.mark.parametrize(
    ("norm", "want"),
    [
        # forward: memory = 1 copy (+ 1 read for batch norm); model = 1 copy = 4 ms. Backward: memory = 1 copy +
        # 1 read (+ 2 more for batch norm); model = 1.5 copies = 6 ms.
        ("layer_norm", {"forward": (4.0, 100.0, 40.0), "backward": (5.5, 600 / 5.5, 60.0)}),
        ("batch_norm", {"forward": (5.5, 400 / 5.5, 40.0), "backward": (8.5, 600 / 8.5, 60.0)}),
    ],
)
def test_roofline_floors_from_given_timings(monkeypatch, norm, want):
    """roofline.floors' arithmetic against numbers worked out by hand from fixed timings: the memory floor from
    PASSES, the ceiling, % copy, the compute floor ((slice - fixed) per element, times the case's elements, over
    the threads), the bound and its share."""
    import numba

    from benchmarks import roofline

    def fake(fns, **_):
        return {name: h.Timing(_FAKE_MS[name] / 1e3, _FAKE_MS[name] / 1e3, 5) for name in fns}

    monkeypatch.setattr(h, "measure_side_by_side", fake)
    (case,) = (c for c in SMALL if c.norm == norm and len(c.shape) == 2)  # (1024, 256)
    threads = numba.get_num_threads()
    rows = roofline.floors(case, repeat=5, budget=0.01)
    n, cached = 1024 * 256, 4096 * 256  # the slice: CACHED_ELEMENTS values in whole rows of 256
    compute = (3.0 - 1.0) / cached * n / threads
    for direction, (memory, ceiling, pct_copy) in want.items():
        r = rows[direction]
        assert r["memory_ms"] == pytest.approx(memory)
        assert r["ceiling_pct"] == pytest.approx(ceiling)
        assert r["pct_copy"] == pytest.approx(pct_copy)
        assert r["compute_ms"] == pytest.approx(compute)
        assert r["bound"] == "memory" and r["pct_of_bound"] == pytest.approx(10 * memory)
    assert numba.get_num_threads() == threads  # restored after the one-thread timing


# --- the JAX backend -------------------------------------------------------------------------------------

_NO_JAX = h.unavailable("jax-cpu")
needs_jax = pytest.mark.skipif(_NO_JAX is not None, reason=_NO_JAX or "")
# every affine variant in float64, gamma and beta in float32
_JAX_RUNS = [
    pytest.param(_TINY[norm], np.float64, affine, id=f"{_TINY[norm].id}-float64-{affine}")
    for norm in NORMS
    for affine in NORMS[norm].affine_variants
] + [pytest.param(_TINY[norm], np.float32, "gamma_beta", id=f"{_TINY[norm].id}-float32") for norm in NORMS]


@needs_jax
@pytest.mark.parametrize(("case", "dtype", "affine"), _JAX_RUNS)
def test_jax_backend_matches_the_staged_graph(case, dtype, affine):
    """The jax-cpu backend's forward and backward (what the benchmarks time) against the float64 staged graph,
    within the kernel tolerance; x's dtype kept (float32 stays float32 with x64 enabled)."""
    inputs = case.inputs(dtype, affine)
    fns = h.calls(case, "jax-cpu", dtype, affine)
    y = fns["forward"]()
    dx, dparams = fns["backward"]()
    as64 = [None if a is None else np.asarray(a, dtype=np.float64) for a in inputs.values()]
    ref_y, cache = case.staged_forward(inputs.x.astype(np.float64), *as64)
    ref = staged.backward(inputs.dy.astype(np.float64), cache)
    tol = compare.kernel_tolerance(dtype)
    got = {"y": y, "dx": dx, **{f"d{name}": g for name, g in dparams.items()}}
    assert set(got) == {"y", *NORMS[case.norm].gradients}
    for name, value in got.items():
        if name[1:] in inputs.params and inputs.params[name[1:]] is None:
            assert value is None, f"{name}: JAX differentiates only the parameters given, as PyTorch's backward"
            continue
        want = ref_y if name == "y" else ref[name]
        assert value.dtype == dtype and value.shape == np.shape(want), f"{name}: {value.dtype} {value.shape}"
        compare.assert_close(np.asarray(value), want, tol, what=f"{case.id} jax-cpu {name}")


def test_jax_backend_unavailable_says_why(monkeypatch):
    monkeypatch.setattr(h, "_jax", lambda: None)
    assert "JAX is not installed" in h.unavailable("jax-cpu")
    assert h.unavailable("cpu") is None


@needs_jax
def test_same_threads_sizes_xla_s_pool_as_numba_s():
    """XLA's CPU compute pool gets Numba's thread count when same_threads runs before JAX starts."""
    code = (
        "import os, collections; from benchmarks import harness as h; h.same_threads(); jax = h._jax(); "
        "jax.block_until_ready(jax.numpy.ones((512, 512)) @ jax.numpy.ones((512, 512))); "
        "names = collections.Counter(open(f'/proc/self/task/{t}/comm').read().strip() "
        "for t in os.listdir('/proc/self/task')); "
        "print(h.jax_threads(), sum(n for name, n in names.items() if 'XLAEigen' in name))"
    )
    if not Path("/proc/self/task").is_dir():
        pytest.skip("no /proc to count threads in")
    out = _run("-c", code, env=dict(os.environ, NUMBA_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-4000:]
    reported, pool = map(int, out.stdout.split()[-2:])
    if pool == 0:
        pytest.skip("XLA's compute threads are not named as this test expects")
    assert reported == pool == 1


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
        assert r["best_peer"] is r["speedup_vs_best_peer"] is r["ci95_vs_best_peer"] is r["verdict"] is None
        calls = [s for b in r["bursts_ms"] for s in b]
        assert len(calls) == r["calls"] and r["median_ms"] == pytest.approx(np.median(calls))
    for d in h.DIRECTIONS:
        assert rows[d, "numpy"]["speedup_vs_numpy"] == pytest.approx(1)
        numpy_ms, cpu_ms = rows[d, "numpy"]["median_ms"], rows[d, "cpu"]["median_ms"]
        assert rows[d, "cpu"]["speedup_vs_numpy"] == pytest.approx(numpy_ms / cpu_ms)


def test_cli_prints_the_table(cli):
    out, _, _ = cli
    header = next(line for line in out.stdout.splitlines() if line.startswith("op "))
    columns = ("shape", "pass", "backend", "median ms", "min ms", "GB/s", "% copy", "x NumPy", "x PyTorch")
    for column in (*columns, "x best peer", "95% CI", "verdict"):
        assert column in header
    assert "staged NumPy" in out.stdout and "normkernels cpu" in out.stdout
    assert "copy bandwidth" in out.stdout


def test_cli_writes_the_plot(cli):
    pytest.importorskip("matplotlib")
    _, _, png = cli
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_jax
def test_cli_times_jax_quick(tmp_path):
    """--backends jax-cpu in --quick mode on a small case, beside normkernels cpu: JAX CPU is the cell's only
    peer, so cpu's rows carry the speedup over it with an interval and a verdict."""
    if IN_SIMULATOR:
        pytest.skip("benchmarks do not run under the CUDA simulator")
    args = ["--sizes", "small", "--ops", "layer_norm", "--backends", "jax-cpu", "cpu", "--quick"]
    out = _run("-m", "benchmarks", *args, "--json", str(tmp_path / "bench.json"))
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["machine"]["jax threads"] == report["machine"]["numba threads"]
    rows = {(r["direction"], r["backend"]): r for r in report["results"]}
    assert set(rows) == {(d, b) for d in h.DIRECTIONS for b in ("jax-cpu", "cpu")}
    for d in h.DIRECTIONS:
        jax_row, cpu_row = rows[d, "jax-cpu"], rows[d, "cpu"]
        assert jax_row["calls"] == cpu_row["calls"] == 5 and len(jax_row["bursts_ms"]) == len(cpu_row["bursts_ms"])
        assert (jax_row["best_peer"], jax_row["speedup_vs_best_peer"], jax_row["verdict"]) == ("jax-cpu", 1.0, None)
        assert cpu_row["best_peer"] == "jax-cpu"
        assert cpu_row["speedup_vs_best_peer"] == pytest.approx(jax_row["median_ms"] / cpu_row["median_ms"])
        low, high = cpu_row["ci95_vs_best_peer"]
        assert 0 < low <= cpu_row["speedup_vs_best_peer"] <= high and cpu_row["verdict"] == h.verdict(low, high)
    assert "JAX CPU" in out.stdout and "best peer" in out.stdout


def test_cli_skips_jax_where_it_is_missing(tmp_path):
    """Without JAX, --backends jax-cpu is left out with a note and the other backends still run."""
    if IN_SIMULATOR:
        pytest.skip("benchmarks do not run under the CUDA simulator")
    shadow = tmp_path / "jax"
    shadow.mkdir()
    (shadow / "__init__.py").write_text('raise ImportError("no jax here")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    args = ["--sizes", "small", "--ops", "layer_norm", "--backends", "cpu", "jax-cpu", "--quick"]
    out = _run("-m", "benchmarks", *args, env=env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "JAX CPU skipped: JAX is not installed" in out.stderr
    assert "normkernels cpu" in out.stdout and "JAX CPU" not in out.stdout


def test_cli_refuses_the_simulator():
    out = _run("-m", "benchmarks", "--quick", env=SIM)
    assert out.returncode != 0 and "simulator" in out.stderr
    assert "median ms" not in out.stdout  # refused before timing anything


def test_pytest_benchmark_suite_runs_one_small_case():
    if IN_SIMULATOR:
        pytest.skip("the suite skips itself under the CUDA simulator")
    k = "layer_norm and 1024x256 and cpu and not jax"  # normkernels cpu, and PyTorch CPU when installed
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
