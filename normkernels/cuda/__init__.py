"""The CUDA backend: @cuda.jit kernels (rows.py, channels.py, reduce.py) and their host side (ops.py).

Imported only when an op is called with backend="cuda", so the CPU backend never needs numba-cuda.
"""

from __future__ import annotations

from numba import types

from . import channels, rows
from ._config import SIMULATOR


def available() -> bool:
    """True on a machine with a usable NVIDIA GPU, or under Numba's CUDA simulator."""
    from numba import cuda

    return SIMULATOR or cuda.is_available()


def kernel_signatures(dtype) -> list[tuple[str, object, tuple]]:
    """(name, kernel, argument types) of every kernel as the host side launches it for x of this dtype."""
    t = types.float32 if str(dtype) == "float32" else types.float64
    f8, i8, b1 = types.float64, types.int64, types.boolean

    def arr(dt, nd):
        return types.Array(dt, nd, "C")

    t1, t2, t3 = arr(t, 1), arr(t, 2), arr(t, 3)
    f1, f2 = arr(f8, 1), arr(f8, 2)
    return [
        ("rows_forward", rows.rows_forward, (t2, t1, t1, f8, i8, i8, i8, t2, t1, t1)),
        ("rows_backward", rows.rows_backward, (t2, t2, t1, t1, t1, i8, i8, i8, t2, f2, f2)),
        ("sum_rows", rows.sum_rows, (f2, t1)),
        ("stats_wide", channels.stats_wide, (t2, i8, f2, f2)),
        ("stats_spatial", channels.stats_spatial, (t3, i8, f2, f2)),
        ("channels_merge", channels.channels_merge, (f2, f2, i8, i8, f8, t1, t1, f8, t1, t1, t1, t1, f1, f1, f1)),
        ("channels_eval", channels.channels_eval, (t1, t1, f8, t1, t1, t1, t1, f1, f1, f1)),
        ("channels_normalize", channels.channels_normalize, (t1, f1, f1, f1, i8, i8, t1)),
        ("backward_sums_wide", channels.backward_sums_wide, (t2, t2, t1, i8, f2, f2)),
        ("backward_sums_spatial", channels.backward_sums_spatial, (t3, t3, t1, i8, f2, f2)),
        ("backward_coefficients", channels.backward_coefficients, (f2, f2, t1, t1, b1, f8, t1, t1, f1, f1, f1)),
        ("backward_dx", channels.backward_dx, (t1, t1, t1, f1, f1, f1, i8, i8, t1)),
    ]
