"""python -m benchmarks: every op, forward and backward, on every backend available here, in one table.

Backends: the staged NumPy graph (verify.staged), normkernels cpu, normkernels cuda (with a GPU), PyTorch CPU
and CUDA (when installed), JAX CPU (when installed: the jitted closed-form forward, and its jax.vjp pullback
jitted as the backward). For each: median and min time, GB/s from the minimum-bytes model (median time),
that bandwidth as a percentage of a copy of the same size measured on the same device in this run, the
speedup over the staged NumPy graph, over PyTorch on the same device, and over the fastest peer library on
the same device in that cell (PyTorch CPU or JAX CPU; PyTorch CUDA), the last with a 95% bootstrap interval
and a verdict: faster (the interval above 1), slower (below 1) or tie. The backends of one case are timed
side by side, a burst of calls of each per round, so a slow spell of the machine falls on all of them, and
the interval resamples the rounds, each backend's burst paired with the peer's of the same round. Inputs are
float32 unless --dtype says otherwise, and already on their device. Compile time is excluded from the table
and reported on its own: the first call in a fresh process with an empty Numba cache (compile) and with the
cache filled (cached load).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numba
import numpy as np

from verify.cases import SIZES
from verify.norms import NORMS
from verify.report import Progress

from . import harness as h

_ROOT = Path(__file__).resolve().parent.parent
GPU_SKIPPED = (
    "no GPU here: the cuda backend (and PyTorch CUDA) were not timed. Check the CUDA kernels in Numba's simulator "
    "with `python -m verify --backends cuda`; on a machine with an NVIDIA GPU, `bash benchmarks/gpu_run.sh` times "
    "them."
)

# A fresh process: import normkernels, then the first forward + backward of each small case.
_FIRST_CALLS = r"""
import json, sys, time
t0 = time.perf_counter()
import normkernels
times = {"import normkernels": time.perf_counter() - t0}
from benchmarks.harness import first_calls
from verify.cases import SMALL
times.update(first_calls(SMALL, sys.argv[1]))
print(json.dumps(times))
"""


def first_call_times(backend: str) -> dict:
    """{what: (compile seconds, cached-load seconds)} from two fresh processes sharing one empty cache."""
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=str(_ROOT))
        runs = []
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", _FIRST_CALLS, backend], env=env, capture_output=True, text=True, check=True
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {what: (runs[0][what], runs[1][what]) for what in runs[0]}


def machine(backends) -> dict:
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba threads": numba.get_num_threads(),
    }
    torch = h._torch()
    if torch is not None:
        info.update({"torch": torch.__version__, "torch threads": torch.get_num_threads()})
    if "jax-cpu" in backends:
        info.update({"jax": h._jax().__version__, "jax threads": h.jax_threads()})
    if any(h.DEVICE[b] == "gpu" for b in backends):
        from numba import cuda

        name = cuda.get_current_device().name
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(cases, backends, dtype, repeat: int, budget: float) -> tuple[list[dict], list[dict]]:
    """Time every (case, direction, backend); returns (results, copies)."""
    copies: dict[tuple, tuple] = {}  # (device, bytes) -> (GB/s, how)
    results = []
    progress = Progress(len(cases) * len(backends))
    burst = h.burst_size(repeat)
    for case in cases:
        nbytes = int(np.prod(case.shape)) * np.dtype(dtype).itemsize
        rows = {}
        fns = {}
        for backend in backends:
            progress.step(f"{case.id} {backend}")
            device = h.DEVICE[backend]
            if (device, nbytes) not in copies:
                copies[device, nbytes] = h.copy_bandwidth(device, nbytes)
            for direction, fn in h.calls(case, backend, dtype).items():
                fns[direction, backend] = fn
        for direction in h.DIRECTIONS:  # the backends side by side
            timings = h.measure_side_by_side(
                {b: fns[direction, b] for b in backends}, repeat=repeat, budget=budget, burst=burst
            )
            moved = h.model_bytes(case, direction, dtype)
            for backend, t in timings.items():
                device = h.DEVICE[backend]
                gbps = moved / t.median / 1e9
                rows[direction, backend] = dict(
                    op=case.norm,
                    case=case.id,
                    shape=list(case.shape),
                    direction=direction,
                    backend=backend,
                    device=device,
                    dtype=np.dtype(dtype).name,
                    median_ms=t.median * 1e3,
                    min_ms=t.min * 1e3,
                    calls=t.calls,
                    model_bytes=moved,
                    gbps=gbps,
                    copy_gbps=copies[device, nbytes][0],
                    pct_copy=100 * gbps / copies[device, nbytes][0],
                    **against_best_peer(backend, timings),
                    bursts_ms=[[s * 1e3 for s in b] for b in t.bursts],
                )
        del fns  # the staged graph's float64 caches can be GBs: free them before the next case's inputs
        for (direction, backend), row in rows.items():
            numpy_row = rows.get((direction, "numpy"))
            peer_row = rows.get((direction, h.PEER.get(backend, backend)))
            row["speedup_vs_numpy"] = numpy_row["median_ms"] / row["median_ms"] if numpy_row else None
            row["speedup_vs_torch"] = peer_row["median_ms"] / row["median_ms"] if peer_row else None
        results += rows.values()  # by direction, then backend: the order they were timed in
    progress.close()
    copy_rows = [dict(device=d, bytes=b, gbps=g, how=how) for (d, b), (g, how) in copies.items()]
    return results, copy_rows


def against_best_peer(backend: str, timings: dict) -> dict:
    """The row's fields against the fastest peer library timed in the same cell on the backend's device
    (h.PEERS): which one, the speedup over it (its median over this backend's), the 95% interval of that
    speedup from the paired bursts and the verdict. The fastest peer's own row has the ratio 1 and neither
    interval nor verdict; a device with no peer timed has none of them."""
    peers = [b for b in h.PEERS.get(h.DEVICE[backend], ()) if b in timings]
    if not peers:
        return dict(best_peer=None, speedup_vs_best_peer=None, ci95_vs_best_peer=None, verdict=None)
    best = min(peers, key=lambda b: timings[b].median)
    if best == backend:
        return dict(best_peer=best, speedup_vs_best_peer=1.0, ci95_vs_best_peer=None, verdict=None)
    s = h.speedup(timings[backend], timings[best])
    ci = [s.low, s.high] if s.low is not None else None
    return dict(best_peer=best, speedup_vs_best_peer=s.ratio, ci95_vs_best_peer=ci, verdict=s.verdict)


def _ratio(v) -> str:
    return f"{v:.2f}x" if v is not None else "-"


def _interval(r: dict) -> str:
    ci = r.get("ci95_vs_best_peer")
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-"


def _verdict(r: dict) -> str:
    if r.get("best_peer") == r["backend"]:
        return "best peer"
    return r.get("verdict") or "-"


_LABEL = max(len(label) for label in h.LABELS.values())  # the backend column's width


def table(results: list[dict]) -> str:
    header = (
        f"{'op':<15} {'shape':<16} {'pass':<8} {'backend':<{_LABEL}} {'median ms':>10} {'min ms':>9} {'GB/s':>7} "
        f"{'% copy':>7} {'x NumPy':>8} {'x PyTorch':>9} {'x best peer':>11} {'95% CI':>14} verdict"
    )
    lines = [header, "-" * len(header)]
    previous = None
    for r in results:
        key = (r["case"], r["direction"])
        if previous is not None and key != previous:
            lines.append("")
        previous = key
        lines.append(
            f"{r['op']:<15} {'x'.join(map(str, r['shape'])):<16} {r['direction']:<8} "
            f"{h.LABELS[r['backend']]:<{_LABEL}} "
            f"{r['median_ms']:>10.3f} {r['min_ms']:>9.3f} {r['gbps']:>7.1f} {r['pct_copy']:>6.0f}% "
            f"{_ratio(r['speedup_vs_numpy']):>8} {_ratio(r['speedup_vs_torch']):>9} "
            f"{_ratio(r.get('speedup_vs_best_peer')):>11} {_interval(r):>14} {_verdict(r)}"
        )
    return "\n".join(lines)


def copy_table(copies: list[dict]) -> str:
    lines = [f"{'device':<7} {'MB':>8} {'copy GB/s':>10}  measured with"]
    for c in sorted(copies, key=lambda c: (c["device"], c["bytes"])):
        lines.append(f"{c['device']:<7} {c['bytes'] / 2**20:>8.1f} {c['gbps']:>10.1f}  {c['how']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", choices=list(NORMS), default=list(NORMS))
    parser.add_argument("--backends", nargs="+", choices=h.BACKENDS, help="default: every backend that can run here")
    parser.add_argument(
        "--sizes", nargs="+", choices=list(SIZES), default=["reference"], help="shape sets (default: reference)"
    )
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeat", type=int, help="timed calls per cell (default 30, or 5 with --quick)")
    parser.add_argument(
        "--budget", type=float, default=2.0, help="seconds of timed calls per cell at most (>= 5 rounds)"
    )
    parser.add_argument("--threads", type=int, help="CPU threads for Numba, PyTorch and XLA alike (default: Numba's)")
    parser.add_argument("--quick", action="store_true", help="5 timed calls per cell, no first-call timing")
    parser.add_argument("--no-first-call", action="store_true", help="skip the compile and cached-load timing")
    parser.add_argument("--json", metavar="PATH", help="write the machine, every cell and the copies as JSON")
    parser.add_argument("--plot", metavar="PATH.png", help="bar chart and GB/s-against-size curve (needs matplotlib)")
    args = parser.parse_args(argv)

    if h.SIMULATOR:
        parser.error("benchmarks do not run under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")
    requested = args.backends or list(h.BACKENDS)
    skipped = {b: h.unavailable(b) for b in requested}
    backends = [b for b in requested if skipped[b] is None]
    if args.backends:
        for b in args.backends:
            if skipped[b]:
                print(f"note: {h.LABELS[b]} skipped: {skipped[b]}", file=sys.stderr)
    if args.plot:
        from . import plot  # fail now, not after the measurements, when matplotlib is missing

    if args.threads:
        numba.set_num_threads(args.threads)
    h.same_threads()
    repeat = args.repeat or (5 if args.quick else 30)
    cases = [c for size in args.sizes for c in SIZES[size] if c.norm in args.ops]

    info = machine(backends)
    print(", ".join(f"{k} {v}" for k, v in info.items()))
    print(
        f"{args.dtype}; median and min of up to {repeat} calls (at most {args.budget:g} s of calls per cell); "
        "GB/s from the median; x NumPy, x PyTorch and x best peer are speedups (median over median, same "
        "device; best peer: the fastest peer library timed in the cell, PyTorch or JAX), the last with its 95% "
        "bootstrap interval over the paired bursts and a verdict (faster or slower: the whole interval above or "
        "below 1)\n"
    )
    results, copies = run(cases, backends, np.dtype(args.dtype), repeat, args.budget)
    print(table(results))
    print("\ncopy bandwidth (read + write of an x-sized buffer), the 100% of the % copy column:")
    print(copy_table(copies))

    first_calls = {}
    if not (args.quick or args.no_first_call):
        for backend in (b for b in ("cpu", "cuda") if b in backends):
            first_calls[backend] = first_call_times(backend)
        for backend, times in first_calls.items():
            print(f"\nfirst call in a fresh process, {backend} backend, float32 (seconds): compile | cached load")
            for what, (cold, warm) in times.items():
                print(f"  {what:<32} {cold:8.2f} {warm:8.2f}")

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(machine=info, results=results, copies=copies, first_calls=first_calls), fh, indent=1)
    if args.plot:
        plot.save(results, copies, args.plot, title=info.get("cpu", ""))
        print(f"\nplot written to {args.plot}")
    if any(skipped.get(b) for b in ("cuda", "cuda-out")):  # the half of "CPU against GPU" that did not run
        print(f"\n{GPU_SKIPPED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
