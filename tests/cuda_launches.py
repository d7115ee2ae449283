"""Every kernel launch of the CUDA backend, as JSON: run in Numba's simulator (NUMBA_ENABLE_CUDASIM=1) by
tests/test_cuda_ptx.py, which compiles exactly what this prints to PTX. So the list of kernels and of their
argument types is derived from what the host side really launches, never written by hand.

Every norm of the tiny catalogue runs in both dtypes (the first case of each norm with every affine variant,
the others with the first), the ones that keep running statistics also in eval mode and with running
statistics of either dtype, and the ops once on an input with no elements. Each distinct
(kernel, argument types) is printed once: {"module", "name", "args"}, args as [dtype, ndim, layout] for an
array and [dtype] for a scalar.
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
