"""python -m verify: every kernel through verify.check, over the shape catalogue.

Each (op, backend, dtype, case, affine variant) is one verify.check run. Prints a line per failing run (or
every run with -v), then a table of the worst error against the staged graph per op x backend x dtype x
tensor, and exits with status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import normkernels as nk

from . import check
from .cases import AFFINE, CASES
from .staged import NORMS

DTYPES = ("float32", "float64")
TENSORS = ("y", "dx", "dgamma", "dbeta")


class _Progress:
    """A one-line progress bar on a terminal; silent when stderr is a file or a pipe."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.live = sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        if self.live:
            filled = int(30 * self.done / self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {label:<48.48}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\r" + " " * 90 + "\r")


def _runs(args):
    cases = [c for c in CASES if c.norm in args.ops and (not args.quick or "small" in c.tags)]
    affines = ("gamma_beta",) if args.quick else AFFINE
    for case in cases:
        for backend in args.backends:
            for dtype in args.dtypes:
                for affine in affines:
                    yield case, backend, dtype, affine


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verify", description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", choices=NORMS, default=list(NORMS))
    parser.add_argument("--backends", nargs="+", choices=nk.BACKENDS, default=list(nk.BACKENDS))
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--quick", action="store_true", help="small shapes only, gamma and beta given")
    parser.add_argument("--json", metavar="PATH", help="write every report to PATH as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every report, not only failing ones")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    runs = list(_runs(args))
    progress = _Progress(len(runs))
    worst: dict[tuple, list] = {}  # (op, backend, dtype, tensor) -> [max abs, max rel, all passed]
    results, failed = [], 0
    for case, backend, dtype, affine in runs:
        label = f"{case.id} {backend} {dtype} {affine}"
        progress.step(label)
        x, gamma, beta, _ = case.inputs(np.dtype(dtype), affine)
        report = check(
            *case.layer(backend), norm=case.norm, x=x, gamma=gamma, beta=beta, name=label, **case.layout_kwargs
        )
        results.append(dict(case=case.id, backend=backend, dtype=dtype, affine=affine, **report.to_dict()))
        for row in report.rows:
            tensor = row.check.split(" vs staged graph")[0]
            if tensor in TENSORS and row.max_abs is not None:
                cell = worst.setdefault((case.norm, backend, dtype, tensor), [0.0, 0.0, True])
                cell[0] = max(cell[0], row.max_abs)
                cell[1] = max(cell[1], row.rel)
                cell[2] = cell[2] and row.passed
        if not report.passed:
            failed += 1
        if args.verbose or not report.passed:
            progress.close()
            print(report, end="\n\n")
    progress.close()

    header = (
        f"{'op':<14} {'backend':<8} {'dtype':<8} {'tensor':<7} {'max abs err':>12} {'max rel err':>12}  vs staged graph"
    )
    print(header)
    print("-" * len(header))
    for (op, backend, dtype, tensor), (err, rel, ok) in worst.items():
        print(f"{op:<14} {backend:<8} {dtype:<8} {tensor:<7} {err:>12.2e} {rel:>12.2e}  {'PASS' if ok else 'FAIL'}")
    checks = sum(len(r["rows"]) for r in results)
    bad_checks = sum(not row["passed"] for r in results for row in r["rows"])
    print(
        f"\n{len(results)} runs of verify.check ({checks} checks): {len(results) - failed} passed, {failed} failed"
        f" ({bad_checks} failing checks) in {time.perf_counter() - start:.1f} s"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
