"""python -m benchmarks: a first look at CPU speed at the reference shapes (float32).

For each op, forward and backward: median and min wall time of the normkernels CPU kernel, of the staged
NumPy graph (verify.staged) and of PyTorch on the CPU when it is installed, all in this process, with the
same thread count. Warm-up calls come first, so JIT compilation is not timed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numba
import numpy as np

from verify import staged
from verify.cases import REFERENCE

try:
    import torch
except ImportError:  # PyTorch is an optional peer
    torch = None


def _time(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def _ours(case, x, gamma, beta, dy) -> dict:
    _, mean, rstd = case.forward(x, gamma, beta)
    return {
        "forward": lambda: case.forward(x, gamma, beta),
        "backward": lambda: case.backward(dy, x, gamma, mean, rstd),
    }


def _staged(case, x, gamma, beta, dy) -> dict:
    _, cache = case.staged_forward(x, gamma, beta)
    return {
        "forward": lambda: case.staged_forward(x, gamma, beta),
        "backward": lambda: staged.backward(dy, cache),
    }


def _torch_calls(case, x, gamma, beta, dy) -> dict:
    tx, tg, tb = (torch.from_numpy(a).requires_grad_() for a in (x, gamma, beta))
    tdy = torch.from_numpy(dy)
    ty = case.torch_forward(tx, tg, tb)

    def backward():
        return torch.autograd.grad(ty, (tx, tg, tb), tdy, retain_graph=True)

    def forward_no_grad():
        with torch.no_grad():
            return case.torch_forward(tx, tg, tb)

    return {"forward": forward_no_grad, "backward": backward}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per measurement (default 20)")
    parser.add_argument("--quick", action="store_true", help="3 timed calls, no staged NumPy graph")
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else args.repeat

    threads = f"numba threads {numba.get_num_threads()}"
    if torch is not None:
        threads += f", torch {torch.__version__} threads {torch.get_num_threads()}"
    print(f"float32, median (min) of {repeat} calls in ms; {threads}")
    header = f"{'op':<14} {'shape':<16} {'pass':<8} {'normkernels':>18} {'staged NumPy':>18} {'PyTorch CPU':>18}"
    print(header)
    print("-" * len(header))
    for case in REFERENCE:
        x, gamma, beta, dy = case.inputs(np.float32)
        columns = [
            _ours(case, x, gamma, beta, dy),
            {} if args.quick else _staged(case, x, gamma, beta, dy),
            {} if torch is None else _torch_calls(case, x, gamma, beta, dy),
        ]
        for direction in ("forward", "backward"):
            cells = []
            for table in columns:
                if direction in table:
                    med, best = _time(table[direction], repeat)
                    cells.append(f"{med * 1e3:8.3f} ({best * 1e3:7.3f})")
                else:
                    cells.append("-")
            shape = "x".join(map(str, case.shape))
            print(f"{case.norm:<14} {shape:<16} {direction:<8} {cells[0]:>18} {cells[1]:>18} {cells[2]:>18}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
