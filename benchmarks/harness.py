"""What the benchmark CLI and the pytest-benchmark suite share: backends, the bytes model, timing, copy bandwidth.

Method: time kernels, not transfers. Every backend gets its inputs already on its
device; a warm-up call comes first, so JIT compilation is never timed; a GPU call synchronizes inside the
timed region. Bandwidth comes from a minimum-bytes model (forward reads x and writes y, backward reads x and
dy and writes dx; the small per-channel and per-row arrays are left out) and is set against a copy of the
same number of bytes measured on the same device in the same run.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from normkernels import _backends
from verify import staged

SIMULATOR = _backends.simulator()  # benchmarks never run in the CUDA simulator

DIRECTIONS = ("forward", "backward")
BACKENDS = ("numpy", "cpu", "cuda", "torch-cpu", "torch-cuda")
LABELS = {
    "numpy": "staged NumPy",
    "cpu": "normkernels cpu",
    "cuda": "normkernels cuda",
    "torch-cpu": "PyTorch CPU",
    "torch-cuda": "PyTorch CUDA",
}
DEVICE = {"numpy": "cpu", "cpu": "cpu", "torch-cpu": "cpu", "cuda": "gpu", "torch-cuda": "gpu"}
PEER = {"numpy": "torch-cpu", "cpu": "torch-cpu", "cuda": "torch-cuda"}  # the PyTorch backend each is compared with

_ARRAYS_MOVED = {"forward": 2, "backward": 3}  # x -> y; x, dy -> dx


def model_bytes(case, direction: str, dtype) -> int:
    """The fewest bytes a kernel must move: each full-size array read or written once."""
    return _ARRAYS_MOVED[direction] * math.prod(case.shape) * np.dtype(dtype).itemsize


# --- what can run here ------------------------------------------------------------------------------------


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _gpu() -> bool:
    return _backends.cuda_mode() == "gpu"


def unavailable(backend: str) -> str | None:
    """Why a backend cannot be benchmarked here, or None when it can."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend.startswith("torch") and _torch() is None:
        return "PyTorch is not installed"
    if DEVICE[backend] == "gpu":
        if backend == "torch-cuda" and not _torch().cuda.is_available():
            return "PyTorch sees no CUDA device"
        if backend == "cuda" and not _gpu():
            return "no usable GPU here (the CUDA simulator is never benchmarked)"
    return None


def synchronize(backend: str) -> None:
    if backend == "cuda":
        from numba import cuda

        cuda.synchronize()
    elif backend == "torch-cuda":
        _torch().cuda.synchronize()


# --- the timed calls --------------------------------------------------------------------------------------


def _synced(backend: str, fn):
    """fn, returning only when the backend's device is done."""

    def call():
        out = fn()
        synchronize(backend)
        return out

    return call


def _on_device(backend: str, arrays):
    if backend != "cuda":
        return arrays
    from numba import cuda

    return tuple(None if a is None else cuda.to_device(a) for a in arrays)


def _device_inputs(case, inputs, backend: str):
    """The case's inputs (x, every parameter, dy) on the backend's device."""
    x, dy, *params = _on_device(backend, (inputs.x, inputs.dy, *inputs.values()))
    return type(inputs)(x, dict(zip(inputs.params, params, strict=True)), dy)


def calls(case, backend: str, dtype=np.float32) -> dict:
    """{direction: zero-argument callable} for one case on one backend, inputs already on the device.

    Each call runs the whole op (forward: y and the statistics; backward: dx and the gradient of every
    parameter) and returns only when the device is done.
    """
    inputs = case.inputs(np.dtype(dtype))
    if backend == "numpy":  # the float64 graph: its timed calls include casting the float32 inputs
        params = inputs.values()
        _, cache = case.staged_forward(inputs.x, *params)
        return {
            "forward": lambda: case.staged_forward(inputs.x, *params),
            "backward": lambda: staged.backward(inputs.dy, cache),
        }
    if backend in ("cpu", "cuda"):
        inputs = _device_inputs(case, inputs, backend)
        _, saved = case.run_forward(inputs, backend)
        return {
            "forward": _synced(backend, lambda: case.run_forward(inputs, backend)),
            "backward": _synced(backend, lambda: case.run_backward(inputs.dy, inputs, saved, backend)),
        }

    torch = _torch()
    device = "cuda" if backend == "torch-cuda" else "cpu"

    def tensor(a):
        return None if a is None else torch.from_numpy(a).to(device).requires_grad_()

    tx = tensor(inputs.x)
    tparams = {name: tensor(a) for name, a in inputs.params.items()}
    tdy = torch.from_numpy(inputs.dy).to(device)
    ty = case.torch_forward(tx, **tparams)
    wrt = (tx, *(t for t in tparams.values() if t is not None))

    def torch_forward():
        with torch.no_grad():
            return case.torch_forward(tx, **tparams)

    return {
        "forward": _synced(backend, torch_forward),
        "backward": _synced(backend, lambda: torch.autograd.grad(ty, wrt, tdy, retain_graph=True)),
    }


def first_calls(cases, backend: str) -> dict:
    """{case id: seconds} of the first forward + backward of each case (float32) in this process: compile
    time with an empty Numba cache, load time with a filled one. Later cases reuse what earlier ones built."""
    times = {}
    for case in cases:
        inputs = _device_inputs(case, case.inputs(np.float32), backend)
        t0 = time.perf_counter()
        _, saved = case.run_forward(inputs, backend)
        case.run_backward(inputs.dy, inputs, saved, backend)
        synchronize(backend)
        times[case.id] = time.perf_counter() - t0
    return times


def same_threads() -> None:
    """Give PyTorch Numba's CPU thread count, so the two are compared on the same cores."""
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(numba.get_num_threads())


@dataclass
class Timing:
    median: float  # seconds
    min: float
    calls: int


def measure(fn, repeat: int = 20, budget: float = 2.0, warmup: int = 2) -> Timing:
    """Median and min of `repeat` timed calls after `warmup` untimed ones; stops early (after at least 3
    timed calls) once `budget` seconds have been spent timing."""
    return measure_side_by_side({"fn": fn}, repeat, budget, warmup, burst=1)["fn"]


# Seconds before each burst. Not tuned: without a pause, cells on this 2-core machine read 4-32 ms in 4 ms
# steps (threads waiting for a core); with this one they did not.
_PAUSE = 0.05


def measure_side_by_side(fns: dict, repeat: int = 20, budget: float = 2.0, warmup: int = 2, burst: int = 5) -> dict:
    """{name: Timing} for several callables timed in turns, so that a slow spell of a noisy machine lands on
    all of them alike: each round gives each callable `burst` timed calls. With several callables each burst
    starts after a pause and one untimed call: NumPy/Numba and PyTorch bring OpenMP runtimes of their own,
    whose threads spin for a while after a parallel region and would otherwise take the cores from the
    next library's threads. Stops after `repeat` timed calls each, or earlier (after at least 3) once
    `budget` seconds per callable have been spent."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {name: [] for name in fns}
    spent = 0.0
    done = 0
    while done < repeat and (done < 3 or spent < budget * len(fns)):
        n = min(burst, repeat - done)
        for name, fn in fns.items():
            if len(fns) > 1:
                time.sleep(_PAUSE)
                fn()
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
                spent += times[name][-1]
        done += n
    return {name: Timing(statistics.median(t), min(t), len(t)) for name, t in times.items()}


# --- copy bandwidth ---------------------------------------------------------------------------------------


@njit(cache=True)
def _copy(src, dst):
    for i in range(src.size):
        dst[i] = src[i]


@njit(parallel=True, cache=True)
def _parallel_copy(src, dst):
    chunk = 1 << 16
    for c in prange((src.size + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(src.size, lo + chunk)
        _copy(src[lo:hi], dst[lo:hi])


def copy_calls(device: str, nbytes: int) -> dict:
    """{name: callable} copying an nbytes buffer into another on `device`, each a way to reach its copy
    bandwidth; the fastest one is the reference."""
    n = max(1, nbytes // 4)
    if device == "cpu":
        src = np.random.default_rng(0).standard_normal(n).astype(np.float32)
        dst = np.empty_like(src)
        return {"numpy.copyto": lambda: np.copyto(dst, src), "numba parallel copy": lambda: _parallel_copy(src, dst)}
    from numba import cuda

    src = cuda.to_device(np.ones(n, np.float32))
    dst = cuda.device_array_like(src)

    def device_copy():
        dst.copy_to_device(src)
        cuda.synchronize()

    return {"cudaMemcpy device to device": device_copy}


def copy_bandwidth(device: str, nbytes: int, repeat: int = 20) -> tuple[float, str]:
    """(GB/s, how): the best median bandwidth of copying nbytes (counted twice: read and write)."""
    best = (0.0, "")
    for name, fn in copy_calls(device, nbytes).items():
        t = measure(fn, repeat=repeat, budget=1.0)
        best = max(best, (2 * nbytes / t.median / 1e9, name))
    return best
