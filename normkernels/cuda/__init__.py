"""The CUDA backend: @cuda.jit kernels (rows.py, channels.py, switchable.py, reduce.py, and the device functions
of formulas.py) and their host side (ops.py).

Imported only when an op is called with backend="cuda", so the CPU backend never needs numba-cuda.
"""

from __future__ import annotations

from .. import _backends


def available() -> bool:
    """True on a machine with a usable NVIDIA GPU, or under Numba's CUDA simulator."""
    return bool(_backends.cuda_mode())
