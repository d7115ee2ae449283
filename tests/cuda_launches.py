"""Every kernel launch of the CUDA backend, as JSON: run in Numba's simulator (NUMBA_ENABLE_CUDASIM=1) by
tests/test_cuda_ptx.py, which compiles exactly what this prints to PTX. So the list of kernels and of their
argument types is derived from what the host side really launches, never written by hand.

Every norm of the tiny catalogue runs in both dtypes (the first case of each norm with every affine variant,
the others with the first), the ones that keep running statistics also in eval mode and with running
statistics of either dtype, and the ops once on an input with no elements; split batch norm's entries are
called on the ops directly. Each distinct (kernel, argument types) is printed once: {"module", "name",
"args"}, args as [dtype, ndim, layout] for an array and [dtype] for a scalar.
"""

import inspect
import json
import sys

import numba
import numpy as np
from numba.np.numpy_support import as_dtype

import normkernels as nk
from normkernels.cuda import ops
from verify.cases import CUDA_TINY

DTYPES = (np.float32, np.float64)


def _type_of(arg) -> list:
    t = numba.typeof(getattr(arg, "_ary", arg))  # the simulator's device arrays wrap a NumPy array
    if isinstance(t, numba.types.Array):
        return [as_dtype(t.dtype).name, t.ndim, t.layout]
    return [as_dtype(t).name]


def _drive() -> None:
    """Run every op and variant on the cuda backend."""
    norms_seen = set()
    for case in CUDA_TINY:
        entry = case.norm_entry
        affines = entry.affine_variants if case.norm not in norms_seen else entry.affine_variants[:1]
        norms_seen.add(case.norm)
        keeps_running = "running_mean" in inspect.signature(getattr(nk, f"{case.norm}_forward")).parameters
        for dtype in DTYPES:
            for affine in affines:
                inputs = case.inputs(dtype, affine)
                _, saved = case.run_forward(inputs, "cuda")
                case.run_backward(inputs.dy, inputs, saved, "cuda")
            if keeps_running:  # training and eval with running statistics of either dtype
                inputs = case.inputs(dtype)
                c = case.shape[1]
                for running_dtype in DTYPES:
                    rm, rv = np.zeros(c, running_dtype), np.ones(c, running_dtype)
                    for training in (True, False):
                        kwargs = dict(training=training, running_mean=rm, running_var=rv)
                        _, saved = case.run_forward(inputs, "cuda", **kwargs)
                        case.run_backward(inputs.dy, inputs, saved, "cuda", training=training)
    for dtype in DTYPES:  # no elements: empty rows and empty channels
        for shape in ((3, 0), (0, 4)):
            nk.layer_norm_forward(np.zeros(shape, dtype), shape[1:], backend="cuda")
        nk.instance_norm_forward(np.zeros((2, 0, 3), dtype), backend="cuda")
        weights = np.zeros(3, dtype)
        nk.switchable_norm_forward(np.zeros((2, 3, 0, 4), dtype), None, None, weights, weights, backend="cuda")
    _drive_split()


def _drive_split() -> None:
    """Split batch norm's entries of the cuda ops, called directly: wide and spatial, both dtypes, with and
    without gamma, running statistics of either dtype and none, and an empty batch."""
    rng = np.random.default_rng(0)
    for dtype in DTYPES:
        for shape in ((3, 4, 1), (2, 3, 5), (0, 3, 4)):
            c = shape[1]
            x = rng.standard_normal(shape).astype(dtype)
            dy = rng.standard_normal(shape).astype(dtype)
            mean, m2 = ops.channels_stats(x)
            counts = np.array([x.shape[0] * x.shape[2], 0.0])  # a second, empty rank
            means, m2s = np.stack([mean, np.zeros(c)]), np.stack([m2, np.zeros(c)])
            for running_dtype in (None, *DTYPES):
                rm = rv = None
                if running_dtype is not None:
                    rm, rv = np.zeros(c, running_dtype), np.ones(c, running_dtype)
                mean, rstd = ops.channels_gather(counts, means, m2s, 1e-5, rm, rv, 0.1)
            sum_dy, sum_dy_xmu = ops.channels_backward_reduce(dy, x, mean)
            for gamma in (np.empty(0, dtype), np.ones(c, dtype)):
                ops.channels_elemt(x, mean, rstd, gamma, gamma)
                ops.channels_backward_elemt(dy, x, mean, rstd, gamma, sum_dy, sum_dy_xmu, float(counts.sum()))


def main() -> int:
    with ops.recording() as launches:
        _drive()
    seen = {}
    for kernel, args in launches:
        entry = dict(module=kernel.py_func.__module__, name=kernel.py_func.__name__, args=[_type_of(a) for a in args])
        seen.setdefault(json.dumps(entry, sort_keys=True), entry)
    json.dump(sorted(seen.values(), key=lambda e: (e["module"], e["name"], str(e["args"]))), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
