"""python -m verify: every CPU kernel against the staged graph over the shape catalogue.

Prints one row per op x dtype x tensor (the worst case over the catalogue and every affine variant) and
exits with status 1 if any comparison is outside its tolerance.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import compare
from .cases import AFFINE, CASES
from .staged import NORMS

TENSORS = ("y", "mean", "rstd", "dx", "dgamma", "dbeta")


def _compare_case(case, dtype, affine):
    """{tensor: (max abs error, rel_error, max abs error / max |reference|, passed)} for one case."""
    tol = compare.kernel_tolerance(dtype)
    rows = {}
    for name, (got, want) in case.against_staged(dtype, affine).items():
        if want is None:  # no gamma: the contract says None
            rows[name] = (0.0, 0.0, 0.0, got is None)
            continue
        rows[name] = (
            compare.max_abs_error(got, want),
            compare.rel_error(got, want),
            compare.norm_rel_error(got, want),
            compare.within(got, want, tol) and got.dtype == dtype,
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verify", description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", choices=NORMS, default=list(NORMS))
    parser.add_argument("--dtypes", nargs="+", choices=("float32", "float64"), default=["float32", "float64"])
    args = parser.parse_args(argv)

    start = time.perf_counter()
    worst: dict[tuple, list] = {}  # (op, dtype, tensor) -> [abs, rel, norm rel, ok, cases]
    for case in (c for c in CASES if c.norm in args.ops):
        for dtype in args.dtypes:
            for affine in AFFINE:
                for name, (err, rel, nrel, ok) in _compare_case(case, np.dtype(dtype), affine).items():
                    row = worst.setdefault((case.norm, dtype, name), [0.0, 0.0, 0.0, True, 0])
                    row[:3] = max(row[0], err), max(row[1], rel), max(row[2], nrel)
                    row[3] = row[3] and ok
                    row[4] += 1

    header = (
        f"{'op':<14} {'dtype':<8} {'tensor':<7} {'checks':>6} {'max abs err':>12} {'rel_error':>10} "
        f"{'err/max|ref|':>12} {'rtol':>7} {'atol':>7}  result"
    )
    print(header)
    print("-" * len(header))
    for (op, dtype, name), (err, rel, nrel, ok, n) in worst.items():
        tol = compare.kernel_tolerance(dtype)
        print(
            f"{op:<14} {dtype:<8} {name:<7} {n:>6} {err:>12.2e} {rel:>10.2e} {nrel:>12.2e} {tol.rtol:>7.0e} "
            f"{tol.atol:>7.0e}  {'PASS' if ok else 'FAIL'}"
        )
    failed = sum(not row[3] for row in worst.values())
    total = sum(row[4] for row in worst.values())
    print(f"\n{total} comparisons, {failed} rows failing, {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
