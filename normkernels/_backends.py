"""The backends: which host-side ops module runs an op, and where CUDA can run.

Each backend is one ops module with the same entry points (``normkernels.cpu.ops``, ``normkernels.cuda.ops``):
the front ends validate their arguments, view x for a kernel family, and call ``select(backend).<entry>``. Whether
the cuda backend runs on a GPU, in Numba's simulator or not at all is answered here alone, from ``numba.config``
(which read NUMBA_ENABLE_CUDASIM when numba was imported) and Numba's own GPU probe.
"""

from __future__ import annotations

import functools
from types import ModuleType

BACKENDS = ("cpu", "cuda")


@functools.cache
def cuda_mode() -> str:
    """ "gpu" with a usable NVIDIA GPU, "simulator" under Numba's CUDA simulator, "" where the cuda backend cannot
    run (numba-cuda not installed, or no GPU and no simulator)."""
    from numba import config

    try:
        from numba import cuda
    except ImportError:
        return ""
    if config.ENABLE_CUDASIM:
        return "simulator"
    try:
        import numba_cuda  # noqa: F401 - the cuda extra; numba without it has no working CUDA target
    except ImportError:
        return ""
    return "gpu" if cuda.is_available() else ""


def simulator() -> bool:
    """True in a process running Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1 before numba was imported)."""
    from numba import config

    return bool(config.ENABLE_CUDASIM)


def cuda_unavailable() -> str:
    """Why backend="cuda" cannot run here, or "" when it can."""
    if cuda_mode():
        return ""
    try:
        import numba_cuda  # noqa: F401
    except ImportError:
        return 'backend="cuda" needs numba-cuda: pip install "normkernels[cuda]"'
    return (
        'backend="cuda" needs an NVIDIA GPU with a working driver (numba.cuda.is_available() is False); '
        "to run the kernels in Numba's CUDA simulator instead, set NUMBA_ENABLE_CUDASIM=1 before numba is imported"
    )


def check(backend, *, op: str) -> str:
    """backend as given, once it names a backend that can run here (ValueError or RuntimeError otherwise)."""
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cuda":
        why = cuda_unavailable()
        if why:
            raise RuntimeError(why)
    return backend


def select(backend, *, op: str) -> ModuleType:
    """The ops module of a backend that can run here; the error names op when it cannot."""
    if check(backend, op=op) == "cuda":
        from .cuda import ops
    else:
        from .cpu import ops
    return ops
