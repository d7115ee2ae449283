"""Recognizing and adopting GPU arrays without importing numba.cuda until a GPU array is actually seen."""

from __future__ import annotations


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
