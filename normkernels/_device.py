"""Recognizing and adopting GPU arrays without importing numba.cuda until a GPU array is actually seen."""

from __future__ import annotations

import math


def is_device_array(a) -> bool:
    """Anything with __cuda_array_interface__ (Numba, CuPy, PyTorch CUDA), or a simulator device array."""
    return hasattr(a, "__cuda_array_interface__") or type(a).__name__ == "FakeCUDAArray"


def as_device(a):
    """A Numba device array viewing the same memory (no copy)."""
    if type(a).__name__ == "FakeCUDAArray":
        return a
    from numba import cuda

    return cuda.as_cuda_array(a)


def empty(shape, dtype, *, device: bool):
    import numpy as np

    if not device:
        return np.empty(shape, dtype=dtype)
    from numba import cuda

    return cuda.device_array(shape, dtype=dtype)


def full(n: int, value: float, dtype, *, device: bool):
    """A (n,) array of value: NumPy, or a device array copied from one."""
    import numpy as np

    a = np.full(n, value, dtype=dtype)
    if not device:
        return a
    from numba import cuda

    return cuda.to_device(a)


def host(a):
    """A NumPy array of a's values: a NumPy array as it is, a GPU array (Numba, CuPy, PyTorch CUDA) copied."""
    import numpy as np

    if isinstance(a, np.ndarray):
        return a
    return as_device(a).copy_to_host()


def _extent(a):
    """(first byte address, one past the last) of the memory a array spans, or None when unknown."""
    if type(a).__name__ == "FakeCUDAArray":  # the simulator's device arrays wrap a NumPy array
        a = a._ary
    import numpy as np

    if isinstance(a, np.ndarray):
        lo, hi = np.byte_bounds(a) if hasattr(np, "byte_bounds") else np.lib.array_utils.byte_bounds(a)
        return lo, hi
    iface = getattr(a, "__cuda_array_interface__", None)
    if iface is None:
        return None
    start = iface["data"][0]
    shape, strides = iface["shape"], iface.get("strides")
    itemsize = np.dtype(iface["typestr"]).itemsize
    if not all(shape):
        return start, start
    if strides is None:  # C-contiguous
        return start, start + itemsize * math.prod(shape)
    lo = start + sum(min(0, (d - 1) * s) for d, s in zip(shape, strides, strict=True))
    hi = start + sum(max(0, (d - 1) * s) for d, s in zip(shape, strides, strict=True)) + itemsize
    return lo, hi


def may_overlap(a, b) -> bool:
    """Whether the memory of arrays a and b (host, or device, alike) may overlap: their byte ranges intersect."""
    ea, eb = _extent(a), _extent(b)
    if ea is None or eb is None or ea[0] == ea[1] or eb[0] == eb[1]:
        return False
    return ea[0] < eb[1] and eb[0] < ea[1]
