"""python -m benchmarks.roofline: what bounds each CPU kernel, measured on this machine.

For each case and pass, the kernel writing into arrays made once (out=, as the cpu-out backend) is set against
two floors, each measured in the same run:

- memory: the passes over memory the kernel's algorithm makes, in x-sized arrays read and written (`PASSES`).
  Row norms read each row once into cache and write their output once (forward: 1 read + 1 write, backward: x
  and dy read, dx written); batch norm and Switchable Normalization need statistics over the whole batch before
  they can write anything, so they read x once more (forward 2 + 1) and, in the backward, x and dy once more
  (4 + 1). Timed as copies of an x-sized buffer into another (one read and one write each) plus read-only
  passes for the reads left over. `ceiling` is the most of the copy bandwidth such an algorithm can show under
  the minimum-bytes model (python -m benchmarks' `% copy`, which prices every array moved at half a copy): the
  model's time over the floor's. A row norm's forward moves exactly the model's arrays (100%); its backward
  does too, but reads cost less than half a copy where writes cost more, so its ceiling can pass 100%.
- compute: the same kernel on one thread, on a slice of the case that stays in cache (the same rows, fewer of
  them; or whole samples, at least one; about 4 MB of x), called over and over, less the time of the same call
  on a slice of one row or two samples of one value (the call's fixed costs: checking the arguments, making
  the small arrays): its time per element, times the case's elements, over the thread count, is the time the
  loops take when the data is in cache and the threads share the work evenly. An estimate: the fixed-cost call
  of an (N, C, H, W) norm has two spatial values and may take a kernel's other branch, and costs that grow with
  the number of blocks (the backward's per-block partials of dgamma) are counted as per-element ones.

The reference sizes are not past the last-level cache (16 MB of x against 32 MB of L3 here), so their memory
floors are partly L3's; the large size (256 MB) is what the bandwidth targets are about.

`bound` names the larger floor; `of bound` is that floor over the kernel's time (100%: the kernel runs at
its floor). Medians of side-by-side rounds (benchmarks.harness.measure_side_by_side), float32.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

import numba
import numpy as np

from verify.cases import SIZES

from . import harness as h

# x-sized arrays (reads, writes) each pass of the algorithm moves through memory, by (norm, direction)
_ROWS = {"forward": (1, 1), "backward": (2, 1)}
_BATCH = {"forward": (2, 1), "backward": (4, 1)}
PASSES = {
    "layer_norm": _ROWS,
    "instance_norm": _ROWS,
    "group_norm": _ROWS,
    "rms_norm": _ROWS,
    "batch_norm": _BATCH,
    "switchable_norm": _BATCH,
}
CACHED_ELEMENTS = 1 << 20  # 4 MB of float32 x: the slice's arrays (up to three) stay in a 32 MB L3


def _group_dims(case) -> tuple:
    """The trailing dims one statistics group spans whole: the normalized dims of layer and RMS norm, else all but
    the batch dim (a sample of an (N, C, H, W) norm, a row of batch norm on (N, D))."""
    return case.shape[len(case.shape) - (case.normalized_ndim or len(case.shape) - 1) :]


def cached_slice(case, elements: int = CACHED_ELEMENTS):
    """The case cut to about `elements` values, in whole rows or samples (at least one)."""
    dims = _group_dims(case)
    return dataclasses.replace(case, shape=(max(1, elements // math.prod(dims)), *dims))


def fixed_slice(case):
    """The smallest call of the case's kind: one row of layer and RMS norm, else two samples of two values per
    channel (instance norm in training needs more than one spatial value, batch norm more than one value)."""
    if case.normalized_ndim:
        return dataclasses.replace(case, shape=(1, *_group_dims(case)))
    spatial = (2, *(1 for _ in case.shape[3:])) if len(case.shape) > 2 else ()
    return dataclasses.replace(case, shape=(2, case.shape[1], *spatial))


def floors(case, repeat: int, budget: float) -> dict:
    """{direction: row} for one case: the kernel (out=), its memory floor and its compute floor."""
    n = math.prod(case.shape)
    src = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    dst = np.empty_like(src)
    small = cached_slice(case)
    threads = numba.get_num_threads()
    big_calls = h.calls(case, "cpu-out")
    small_calls = h.calls(small, "cpu-out")
    fixed_calls = h.calls(fixed_slice(case), "cpu-out")
    rows = {}
    for direction in h.DIRECTIONS:
        t = h.measure_side_by_side(
            {
                "kernel": big_calls[direction],
                "copy": lambda: h._parallel_copy(src, dst),
                "read": lambda: h.parallel_read(src),
            },
            repeat=repeat,
            budget=budget,
            burst=h.burst_size(repeat),
        )
        reads, writes = PASSES[case.norm][direction]
        memory = writes * t["copy"].median + (reads - writes) * t["read"].median
        numba.set_num_threads(1)
        try:
            one = h.measure_side_by_side(
                {"slice": small_calls[direction], "fixed": fixed_calls[direction]},
                repeat=max(repeat, 30),
                budget=budget,
            )
        finally:
            numba.set_num_threads(threads)
        per_element = max(0.0, one["slice"].median - one["fixed"].median) / math.prod(small.shape)
        compute = per_element * n / threads
        model = h.model_bytes(case, direction, np.float32) / (2 * src.nbytes) * t["copy"].median
        bound = max(memory, compute)
        rows[direction] = dict(
            op=case.norm,
            shape=list(case.shape),
            direction=direction,
            kernel_ms=t["kernel"].median * 1e3,
            pct_copy=100 * model / t["kernel"].median,
            passes=f"{reads}R+{writes}W",
            memory_ms=memory * 1e3,
            ceiling_pct=100 * model / memory,
            compute_ms=compute * 1e3,
            bound="memory" if memory >= compute else "compute",
            pct_of_bound=100 * bound / t["kernel"].median,
        )
    return rows


def table(rows: list[dict]) -> str:
    header = (
        f"{'op':<15} {'shape':<16} {'pass':<8} {'kernel ms':>9} {'% copy':>6} {'passes':>6} {'memory ms':>9} "
        f"{'ceiling':>7} {'compute ms':>10} {'bound':>7} {'of bound':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['op']:<15} {'x'.join(map(str, r['shape'])):<16} {r['direction']:<8} {r['kernel_ms']:>9.3f} "
            f"{r['pct_copy']:>5.0f}% {r['passes']:>6} {r['memory_ms']:>9.3f} {r['ceiling_pct']:>6.0f}% "
            f"{r['compute_ms']:>10.3f} {r['bound']:>7} {r['pct_of_bound']:>7.0f}%"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.roofline", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["reference", "large"])
    parser.add_argument("--ops", nargs="+", choices=list(PASSES), default=list(PASSES))
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per cell (default 20)")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed calls per cell at most")
    args = parser.parse_args(argv)
    cases = [c for size in args.sizes for c in SIZES[size] if c.norm in args.ops]
    print(f"normkernels cpu (out=), float32, numba threads {numba.get_num_threads()}; medians of side-by-side rounds")
    print(table([]), flush=True)
    for case in cases:  # each case as it is done
        print("\n".join(table(list(floors(case, args.repeat, args.budget).values())).splitlines()[2:]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
