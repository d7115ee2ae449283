"""python -m verify: every kernel through verify.check, over the shape catalogue; or, given files, the cs231n
functions in each (python -m verify path/to/layers.py).

Each (op, backend, dtype, case, affine variant) is one verify.check run, for every norm of the registry
(verify.norms): batch, layer, instance and group norm, RMSNorm and Switchable Normalization; batch norm also
split over uneven parts as SyncBatchNorm computes it ("batch_norm split": verify.cases.Case.split_layer).
Prints the report of every failing run (or every run with -v), then a table of the worst error against the
staged graph per op x backend x dtype x tensor (y, dx and the gradient of every parameter: dgamma, dbeta, and
Switchable Norm's dmean_weight and dvar_weight), and exits with status 1 if any check failed.

Given paths, each is a student's cs231n layers.py: every pair of the assignment's normalization functions
it defines is checked as written (verify.cs231n), one report per pair, then a summary; functions it does not
define are listed. The exit status is 1 if any check failed.

The cuda backend runs on a GPU when there is one. Without one, ``--backends cuda`` runs it in Numba's CUDA
simulator (a second process with NUMBA_ENABLE_CUDASIM=1) on the tiny shapes of CUDA_TINY, with fewer
finite differences, and labels it "cuda (simulator)".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

import normkernels as nk
from normkernels import _backends

from . import check, cs231n
from .cases import CASES, CUDA_TINY
from .norms import NORMS
from .report import Progress

DTYPES = ("float32", "float64")
GPU_SKIPPED = (
    "no GPU here: the cuda backend was not run. Check the CUDA kernels in Numba's simulator (tiny shapes) with "
    "`python -m verify --backends cuda`; on a machine with an NVIDIA GPU, `bash benchmarks/gpu_run.sh` runs the GPU "
    "half (tests, verify, benchmarks)."
)
# every tensor a check compares, in the order the registry's norms name them
TENSORS = tuple(dict.fromkeys(t for norm in NORMS.values() for t in norm.tensors))


def _runs(args, simulated: bool):
    for backend in args.backends:
        tiny = backend == "cuda" and simulated
        catalogue = CUDA_TINY if tiny else CASES
        cases = [c for c in catalogue if c.norm in args.ops and (tiny or not args.quick or "small" in c.tags)]
        for case in cases:
            affines = case.norm_entry.affine_variants[:1] if args.quick or tiny else case.norm_entry.affine_variants
            # batch norm also as SyncBatchNorm computes it: the split ops over uneven parts (Case.split_layer)
            ways = ("", " split") if case.norm == "batch_norm" else ("",)
            for dtype in args.dtypes:
                for affine in affines:
                    for way in ways:
                        yield case, backend, dtype, affine, way


def _in_simulator(args) -> int:
    """Run the cuda backend in a second process under the simulator; its output is ours."""
    cmd = [sys.executable, "-m", "verify", "--backends", "cuda", "--ops", *args.ops, "--dtypes", *args.dtypes]
    if args.json:
        cmd += ["--json", args.json + ".cuda-simulator.json"]
    if args.verbose:
        cmd.append("-v")
    sys.stdout.flush()
    return subprocess.call(cmd, env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1"))


def check_files(paths, verbose: bool) -> int:
    """The cs231n functions of each file: a report per pair (every one with -v, else the failing ones in full),
    then a summary. 1 if anything failed or a file is missing."""
    status = 0
    for path in paths:
        if not os.path.isfile(path):
            print(f"{path}: no such file")
            status = 1
            continue
        entries = cs231n.check_file(path)
        print(f"# {path}\n")
        for entry in entries:
            if entry.report is None:
                continue
            if verbose or not entry.report.passed:
                print(entry.report, end="\n\n")
        print(cs231n.summary(entries), end="\n\n")
        found = [e for e in entries if e.report is not None]
        if not found:
            print(f"{path}: none of the assignment's normalization functions is defined here\n")
        if not found or not all(e.passed for e in found):
            status = 1
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verify", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", metavar="layers.py", help="check the cs231n functions in these files")
    parser.add_argument("--ops", nargs="+", choices=list(NORMS), default=list(NORMS))
    parser.add_argument(
        "--backends", nargs="+", choices=nk.BACKENDS, help="default: cpu, and cuda where a GPU is present"
    )
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--quick", action="store_true", help="small shapes only, gamma and beta given")
    parser.add_argument("--json", metavar="PATH", help="write every report to PATH as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every report, not only failing ones")
    args = parser.parse_args(argv)
    if args.paths:
        return check_files(args.paths, args.verbose)

    state = _backends.cuda_mode()  # "gpu", "simulator", or "" when the cuda backend cannot run in this process
    if "cuda" in (args.backends or ()) and not state and _backends.simulator():
        parser.error("the cuda backend cannot run: numba-cuda (the cuda extra) is not installed")
    if args.backends is None:
        args.backends = ["cpu", "cuda"] if state == "gpu" else ["cpu"]
    simulate_elsewhere = "cuda" in args.backends and not state
    if simulate_elsewhere:
        args.backends = [b for b in args.backends if b != "cuda"]
    simulated = state == "simulator"
    # the simulator runs a Python thread per CUDA thread: few finite differences there
    budget = dict(full_fd_limit=0, directions=1, sampled=1) if simulated else {}

    start = time.perf_counter()
    runs = list(_runs(args, simulated))
    progress = Progress(len(runs))
    worst: dict[tuple, list] = {}  # (op, backend, dtype, tensor) -> [max abs, max rel, all passed]
    results, failed = [], 0
    for case, backend, dtype, affine, way in runs:
        shown = "cuda (simulator)" if backend == "cuda" and simulated else backend
        label = f"{case.id}{way} {shown} {dtype} {affine}"
        progress.step(label)
        inputs = case.inputs(np.dtype(dtype), affine)
        report = check(
            *(case.split_layer(backend) if way else case.layer(backend)),
            norm=case.norm,
            **case.check_inputs(inputs),
            name=label,
            **case.check_kwargs,
            **budget,
        )
        results.append(dict(case=case.id, backend=shown, dtype=dtype, affine=affine, **report.to_dict()))
        for row in report.rows:
            tensor = row.check.split(" vs staged graph")[0]
            if tensor in TENSORS and row.max_abs is not None:
                cell = worst.setdefault((case.norm + way, shown, dtype, tensor), [0.0, 0.0, True])
                cell[0] = max(cell[0], row.max_abs)
                cell[1] = max(cell[1], row.rel)
                cell[2] = cell[2] and row.passed
        if not report.passed:
            failed += 1
        if args.verbose or not report.passed:
            progress.close()
            print(report, end="\n\n")
    progress.close()

    if runs:  # nothing ran here when the simulator's process runs the only backend asked for
        bw = max([len(k[1]) for k in worst] + [7])
        header = (
            f"{'op':<16} {'backend':<{bw}} {'dtype':<8} {'tensor':<12} {'max abs err':>12} {'max rel err':>12}  "
            "vs staged graph"
        )
        print(header)
        print("-" * len(header))
        for (op, backend, dtype, tensor), (err, rel, ok) in worst.items():
            verdict = "PASS" if ok else "FAIL"
            print(f"{op:<16} {backend:<{bw}} {dtype:<8} {tensor:<12} {err:>12.2e} {rel:>12.2e}  {verdict}")
        checks = sum(len(r["rows"]) for r in results)
        bad_checks = sum(not row["passed"] for r in results for row in r["rows"])
        print(
            f"\n{len(results)} runs of verify.check ({checks} checks): {len(results) - failed} passed, {failed} failed"
            f" ({bad_checks} failing checks) in {time.perf_counter() - start:.1f} s"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    status = 1 if failed else 0
    if state != "gpu" and "cuda" not in (args.backends or []) and not simulate_elsewhere and not simulated:
        print(f"\n{GPU_SKIPPED}")
    if simulate_elsewhere:
        print("\nno GPU here: the cuda backend runs in the CUDA simulator, on tiny shapes\n")
        status = max(status, 1 if _in_simulator(args) else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
