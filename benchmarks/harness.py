"""What the benchmark CLI and the pytest-benchmark suite share: backends, the bytes model, timing, copy bandwidth.

Method: time kernels, not transfers. Every backend gets its inputs already on its
device; a warm-up call comes first, so JIT compilation is never timed; a GPU call (and every JAX call, which
returns before its work is done) synchronizes inside the timed region. Bandwidth comes from a minimum-bytes
model (forward reads x and writes y, backward reads x and dy and writes dx; the small per-channel and per-row
arrays are left out) and is set against a copy of the same number of bytes measured on the same device in the
same run. The backends of a cell are timed side by side in rounds, each giving every backend a burst of calls;
a speedup over a peer comes with a 95% bootstrap interval over the paired bursts (`speedup`).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from normkernels import _backends
from verify import staged

SIMULATOR = _backends.simulator()  # benchmarks never run in the CUDA simulator

DIRECTIONS = ("forward", "backward")
BACKENDS = ("numpy", "cpu", "cpu-out", "cuda", "cuda-out", "torch-cpu", "torch-cuda", "jax-cpu")
# "cpu-out", "cuda-out": the same kernels writing y and dx into arrays made once (out=), as a training loop that
# reuses its buffers calls them; "cpu" and "cuda" get new arrays on every call, as PyTorch and JAX do.
OWN = {"cpu": "cpu", "cpu-out": "cpu", "cuda": "cuda", "cuda-out": "cuda"}  # normkernels' backends: their backend=
LABELS = {
    "numpy": "staged NumPy",
    "cpu": "normkernels cpu",
    "cpu-out": "normkernels cpu out=",
    "cuda": "normkernels cuda",
    "cuda-out": "normkernels cuda out=",
    "torch-cpu": "PyTorch CPU",
    "torch-cuda": "PyTorch CUDA",
    "jax-cpu": "JAX CPU",
}
DEVICE = {"numpy": "cpu", "torch-cpu": "cpu", "jax-cpu": "cpu", "torch-cuda": "gpu"}
DEVICE.update({b: "cpu" if own == "cpu" else "gpu" for b, own in OWN.items()})
# the PyTorch backend each is compared with (x PyTorch)
PEER = {"numpy": "torch-cpu", "jax-cpu": "torch-cpu"}
PEER.update({b: f"torch-{own}" for b, own in OWN.items()})
# the other libraries on each device: every backend's speedup is also taken over the fastest of them in each cell
PEERS = {"cpu": ("torch-cpu", "jax-cpu"), "gpu": ("torch-cuda",)}

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


def _jax():
    """jax with float64 enabled (x64: float64 arrays stay float64; float32 ones stay float32), or None when it is
    not installed or fails to import (a jaxlib that does not match jax raises RuntimeError)."""
    try:
        import jax
    except Exception:
        return None
    jax.config.update("jax_enable_x64", True)
    return jax


def _gpu() -> bool:
    return _backends.cuda_mode() == "gpu"


def unavailable(backend: str) -> str | None:
    """Why a backend cannot be benchmarked here, or None when it can."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend.startswith("torch") and _torch() is None:
        return "PyTorch is not installed"
    if backend == "jax-cpu" and _jax() is None:
        return 'JAX is not installed or fails to import (pip install -e ".[jax]")'
    if DEVICE[backend] == "gpu":
        if backend == "torch-cuda" and not _torch().cuda.is_available():
            return "PyTorch sees no CUDA device"
        if OWN.get(backend) == "cuda" and not _gpu():
            return "no usable GPU here (the CUDA simulator is never benchmarked)"
    return None


def synchronize(backend: str) -> None:
    if OWN.get(backend) == "cuda":
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
    if OWN.get(backend) != "cuda":
        return arrays
    from numba import cuda

    return tuple(None if a is None else cuda.to_device(a) for a in arrays)


def _device_inputs(case, inputs, backend: str):
    """The case's inputs (x, every parameter, dy) on the backend's device."""
    x, dy, *params = _on_device(backend, (inputs.x, inputs.dy, *inputs.values()))
    return type(inputs)(x, dict(zip(inputs.params, params, strict=True)), dy)


def calls(case, backend: str, dtype=np.float32, affine: str = "gamma_beta") -> dict:
    """{direction: zero-argument callable} for one case on one backend, inputs already on the device.

    Each call runs the whole op (forward: y and the statistics; backward: dx and the gradient of every
    parameter) and returns only when the device is done. `affine` says which of gamma and beta are given
    (verify.cases.AFFINE).
    """
    inputs = case.inputs(np.dtype(dtype), affine)
    if backend == "numpy":  # the float64 graph: its timed calls include casting the float32 inputs
        params = inputs.values()
        _, cache = case.staged_forward(inputs.x, *params)
        return {
            "forward": lambda: case.staged_forward(inputs.x, *params),
            "backward": lambda: staged.backward(inputs.dy, cache),
        }
    if backend == "jax-cpu":
        return _jax_calls(case, inputs)
    if backend in OWN:
        own = OWN[backend]
        inputs = _device_inputs(case, inputs, own)
        y, saved = case.run_forward(inputs, own)
        dx = case.run_backward(inputs.dy, inputs, saved, own)[0]
        # out=: y and dx written into the arrays just returned, every call (first touched before timing)
        fwd = dict(out=y) if backend.endswith("-out") else {}
        bwd = dict(out=dx) if backend.endswith("-out") else {}
        return {
            "forward": _synced(backend, lambda: case.run_forward(inputs, own, **fwd)),
            "backward": _synced(backend, lambda: case.run_backward(inputs.dy, inputs, saved, own, **bwd)),
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


def jax_forward(case):
    """The case's norm in closed form in jax.numpy, as a function (x, params: dict) -> y: the statistics over
    the norm's view of x (verify.staged.Layout), biased variances taken about the mean (two passes, as the
    staged graph and the PyTorch twins), rsqrt, then the affine; parameters that are None are left out.
    Switchable Normalization mixes the instance, layer and batch statistics of the (N, C, S) view by softmaxed
    weights, as verify.norms' PyTorch composition does."""
    jax = _jax()
    jnp = jax.numpy
    lay = case.layout
    eps = case.eps
    axes = lay.reduce_axes

    def moments(xv, axes):
        mean = jnp.mean(xv, axis=axes, keepdims=True)
        return mean, jnp.mean(jnp.square(xv - mean), axis=axes, keepdims=True)

    def forward(x, params):
        xv = x.reshape(lay.view_shape)
        if case.norm == "rms_norm":
            xhat = xv * jax.lax.rsqrt(jnp.mean(jnp.square(xv), axis=axes, keepdims=True) + eps)
        elif case.norm == "switchable_norm":
            stats = [moments(xv, kind_axes) for kind_axes, _ in staged.SWITCHABLE_KINDS.values()]
            w = jax.nn.softmax(params["mean_weight"])
            v = jax.nn.softmax(params["var_weight"])
            mean = sum(w[i] * m for i, (m, _) in enumerate(stats))
            var = sum(v[i] * s for i, (_, s) in enumerate(stats))
            xhat = (xv - mean) * jax.lax.rsqrt(var + eps)
        else:
            mean, var = moments(xv, axes)
            xhat = (xv - mean) * jax.lax.rsqrt(var + eps)
        y = xhat.reshape(lay.x_shape)
        if params.get("gamma") is not None:
            y = y * params["gamma"].reshape(lay.affine_broadcast)
        if params.get("beta") is not None:
            y = y + params["beta"].reshape(lay.affine_broadcast)
        return y

    return forward


def _jax_calls(case, inputs) -> dict:
    """The jitted forward on (x, params), and the jitted backward: the pullback of one forward (jax.vjp) applied
    to dy, giving (dx, {name: gradient}) for x and every parameter given. JAX's default: the pullback reads the
    residuals the forward saved (three to five x-sized intermediates, where PyTorch and our kernels read x, dy
    and small statistics). Recomputing them instead (jax.checkpoint, nothing saveable) measured 1.7-3x slower at
    the reference sizes, so the faster form is timed. Inputs are put on JAX's CPU device first; each call blocks
    until its outputs are ready (JAX dispatches asynchronously) and returns them."""
    jax = _jax()
    cpu = jax.devices("cpu")[0]
    x, dy = jax.device_put(inputs.x, cpu), jax.device_put(inputs.dy, cpu)
    params = {name: None if a is None else jax.device_put(a, cpu) for name, a in inputs.params.items()}
    forward = jax.jit(jax_forward(case))
    _, pullback = jax.vjp(forward, x, params)
    backward = jax.jit(lambda pullback, dy: pullback(dy))
    return {
        "forward": lambda: jax.block_until_ready(forward(x, params)),
        "backward": lambda: jax.block_until_ready(backward(pullback, dy)),
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


def _xla_started() -> bool:
    """Whether JAX has created its backends (XLA's CPU client sizes its thread pool then, once per process)."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    if bridge is None:
        return False
    started = getattr(bridge, "backends_are_initialized", None)
    return True if started is None else bool(started())


def same_threads() -> None:
    """Give PyTorch and XLA Numba's CPU thread count, so the libraries are compared on the same cores.

    XLA has no call to set its thread count: its CPU client sizes its compute pool once, when JAX first
    starts its backends, from PJRT_NPROC or else the cores this process may run on. So PJRT_NPROC is set here,
    which takes effect only before that (`jax_threads` says whether it did). Other threads of the XLA runtime
    (compilation, dispatch) are not pinned: they do no work in the timed calls."""
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(numba.get_num_threads())
    if not _xla_started():
        os.environ["PJRT_NPROC"] = str(numba.get_num_threads())


def jax_threads():
    """The size of XLA's CPU compute pool as this process has it (or will have it, if JAX has not started):
    PJRT_NPROC, or else the cores this process may run on; None where jax started before same_threads set it
    from another value (unknown)."""
    nproc = os.environ.get("PJRT_NPROC")
    if nproc is not None and nproc.isdigit():
        return int(nproc)
    if _xla_started():
        return None
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@dataclass
class Timing:
    median: float  # seconds, of every timed call
    min: float
    calls: int
    bursts: tuple = ()  # the timed calls (seconds), one tuple per round: burst i of each backend ran in round i


def measure(fn, repeat: int = 20, budget: float = 2.0, warmup: int = 2) -> Timing:
    """Median and min of `repeat` timed calls after `warmup` untimed ones; stops early (after at least MIN_ROUNDS
    timed calls) once `budget` seconds have been spent timing."""
    return measure_side_by_side({"fn": fn}, repeat, budget, warmup, burst=1)["fn"]


def burst_size(repeat: int) -> int:
    """Calls per burst for `repeat` timed calls: 3 at most, and at least 5 rounds where repeat allows (the
    bootstrap pairs rounds, so it needs several)."""
    return max(1, min(3, repeat // 5))


# Seconds before each burst. Not tuned: without a pause, cells on this 2-core machine read 4-32 ms in 4 ms
# steps (threads waiting for a core); with this one they did not.
_PAUSE = 0.05


def measure_side_by_side(fns: dict, repeat: int = 20, budget: float = 2.0, warmup: int = 2, burst: int = 5) -> dict:
    """{name: Timing} for several callables timed in turns, so that a slow spell of a noisy machine lands on
    all of them alike: each round gives each callable a burst of `burst` timed calls. With several callables
    each burst starts after a pause and one untimed call: NumPy/Numba, PyTorch and XLA bring thread pools of
    their own, whose threads spin for a while after a parallel region and would otherwise take the cores from
    the next library's threads. Stops after `repeat` timed calls each, or earlier, once `budget` seconds per
    callable have been spent and at least MIN_ROUNDS rounds have run (enough for an interval, `speedup`);
    rounds after the budget is spent are of one call. Every callable gets the same calls in each round
    (Timing.bursts), so round i pairs them."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    bursts: dict = {name: [] for name in fns}
    spent = 0.0
    done = 0
    rounds = 0
    while done < repeat and (rounds < MIN_ROUNDS or spent < budget * len(fns)):
        n = min(burst if spent < budget * len(fns) else 1, repeat - done)
        for name, fn in fns.items():
            if len(fns) > 1:
                time.sleep(_PAUSE)
                fn()
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            spent += sum(times)
            bursts[name].append(tuple(times))
        done += n
        rounds += 1
    timings = {}
    for name, rounds_of in bursts.items():
        t = [s for b in rounds_of for s in b]
        timings[name] = Timing(statistics.median(t), min(t), len(t), tuple(rounds_of))
    return timings


# --- speedups with a confidence interval -----------------------------------------------------------------

CONFIDENCE = 0.95
# Rounds a speedup needs for an interval: with fewer, a percentile bootstrap's interval covers far less than it
# claims. Simulated on two equally fast backends (shared slow spells per round, 200 trials each, 1,999 resamples;
# tests/test_benchmarks.py repeats it at MIN_ROUNDS): "faster" or "slower" in 54% of trials with 2 rounds of one
# call, 28% with 3, 6.5% with 5, 0.5% with 10 rounds of 3. Below MIN_ROUNDS the verdict is "tie".
MIN_ROUNDS = 5


@dataclass(frozen=True)
class Speedup:
    ratio: float  # the other's median / this one's: above 1, this one is faster
    low: float | None  # the CONFIDENCE bootstrap interval of the ratio; None with fewer than MIN_ROUNDS rounds
    high: float | None
    verdict: str  # "faster", "slower" or "tie" (verdict)


def verdict(low: float | None, high: float | None) -> str:
    """The verdict on a speedup's interval: "faster" when all of it is above 1, "slower" when all of it is below
    1, else "tie" (the interval holds 1, or there is none: the timings cannot tell the two apart)."""
    if low is None or high is None:
        return "tie"
    if low > 1:
        return "faster"
    if high < 1:
        return "slower"
    return "tie"


def _padded(bursts) -> np.ndarray:
    """(rounds, longest burst) seconds, NaN after the end of a shorter burst."""
    out = np.full((len(bursts), max(len(b) for b in bursts)), np.nan)
    for i, b in enumerate(bursts):
        out[i, : len(b)] = b
    return out


def _median(a: np.ndarray) -> np.ndarray:
    """np.nanmedian over the last axis, faster (np.sort puts NaN last; count the others)."""
    a = np.sort(a, axis=-1)
    n = np.count_nonzero(~np.isnan(a), axis=-1)[..., None]
    lo = np.take_along_axis(a, (n - 1) // 2, axis=-1)
    hi = np.take_along_axis(a, n // 2, axis=-1)
    return ((lo + hi) / 2)[..., 0]


def speedup(own: Timing, other: Timing, *, resamples: int = 9999, seed: int = 0) -> Speedup:
    """How much faster `own` ran than `other` (median over median), timed side by side, with a CONFIDENCE
    interval: scipy.stats.bootstrap resamples the rounds, each round carrying both bursts (burst i of one paired
    with burst i of the other, so a slow spell of the machine moves both), and recomputes the ratio of the
    medians of every call in the resampled rounds (the percentile interval; the seed makes it repeatable)."""
    ratio = other.median / own.median
    if len(own.bursts) != len(other.bursts):
        raise ValueError(f"paired bursts needed: {len(own.bursts)} rounds against {len(other.bursts)}")
    if len(own.bursts) < MIN_ROUNDS:  # too few rounds for an interval that covers what it claims
        return Speedup(ratio, None, None, verdict(None, None))
    from scipy import stats

    a, b = _padded(own.bursts), _padded(other.bursts)

    def statistic(rounds, axis=-1):  # rounds: (..., n) indices of resampled rounds
        pooled = (*rounds.shape[:-1], -1)
        return _median(b[rounds].reshape(pooled)) / _median(a[rounds].reshape(pooled))

    kwargs = dict(vectorized=True, n_resamples=resamples, batch=1000, confidence_level=CONFIDENCE)
    degenerate = getattr(stats, "DegenerateDataWarning", RuntimeWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", degenerate)  # identical rounds: the interval is a point, and says so
        try:  # scipy >= 1.15 takes rng=; older ones random_state=
            res = stats.bootstrap(
                (np.arange(len(a)),), statistic, method="percentile", rng=np.random.default_rng(seed), **kwargs
            )
        except TypeError:
            res = stats.bootstrap(
                (np.arange(len(a)),), statistic, method="percentile", random_state=np.random.default_rng(seed), **kwargs
            )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Speedup(ratio, low, high, verdict(low, high))


# --- copy bandwidth ---------------------------------------------------------------------------------------


@njit(cache=True)
def _copy(src, dst):
    for i in range(src.size):
        dst[i] = src[i]


_CHUNK = 1 << 16  # elements per task of the parallel copy and read


@njit(parallel=True, cache=True)
def _parallel_copy(src, dst):
    for c in prange((src.size + _CHUNK - 1) // _CHUNK):
        lo = c * _CHUNK
        hi = min(src.size, lo + _CHUNK)
        _copy(src[lo:hi], dst[lo:hi])


@njit(cache=True, fastmath={"reassoc"})
def _sum(a):
    acc = np.float32(0.0)
    for i in range(a.size):
        acc += a[i]
    return acc


@njit(parallel=True, cache=True)
def parallel_read(src):
    """A read-only pass over src (a float32 sum per chunk, cheap beside the loads): the cost of reading an array,
    as _parallel_copy's is of reading one and writing another."""
    n = (src.size + _CHUNK - 1) // _CHUNK
    part = np.empty(n, np.float32)
    for c in prange(n):
        lo = c * _CHUNK
        part[c] = _sum(src[lo : min(src.size, lo + _CHUNK)])
    return part.sum()


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
