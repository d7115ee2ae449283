"""Every kernel launch of the CUDA backend, as JSON: run in Numba's simulator (NUMBA_ENABLE_CUDASIM=1) by
tests/test_cuda_ptx.py, which compiles exactly what this prints to PTX. So the list of kernels and of their
argument types is derived from what the host side really launches, never written by hand.

Every op runs over the tiny catalogue in both dtypes (the first case of each norm with every affine variant, the
others with gamma and beta), batch norm also in eval mode and with running statistics of either dtype, and each
op once on an input with no elements. Each distinct
(kernel, argument types) is printed once: {"module", "name", "args"}, args as [dtype, ndim, layout] for an
array and [dtype] for a scalar.
"""

import json
import sys

import numba
import numpy as np
from numba.np.numpy_support import as_dtype

import normkernels as nk
from normkernels.cuda import ops
from verify.cases import AFFINE, CUDA_TINY

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
        affines = AFFINE if case.norm not in norms_seen else ("gamma_beta",)
        norms_seen.add(case.norm)
        for dtype in DTYPES:
            for affine in affines:
                x, gamma, beta, dy = case.inputs(dtype, affine)
                y, mean, rstd = case.forward(x, gamma, beta, backend="cuda")
                case.backward(dy, x, gamma, mean, rstd, backend="cuda")
            if case.norm == "batch_norm":
                c = case.shape[1]
                x, gamma, beta, dy = case.inputs(dtype)
                for running_dtype in DTYPES:
                    rm, rv = np.zeros(c, running_dtype), np.ones(c, running_dtype)
                    for training in (True, False):
                        _, mean, rstd = nk.batch_norm_forward(
                            x, gamma, beta, training=training, running_mean=rm, running_var=rv, backend="cuda"
                        )
                        nk.batch_norm_backward(dy, x, gamma, mean, rstd, training=training, backend="cuda")
    _drive_switchable_norm()
    for dtype in DTYPES:  # no elements: empty rows and empty channels
        for shape in ((3, 0), (0, 4)):
            x = np.zeros(shape, dtype)
            nk.layer_norm_forward(x, shape[1:], backend="cuda")
        nk.instance_norm_forward(np.zeros((2, 0, 3), dtype), backend="cuda")


def _drive_switchable_norm() -> None:
    """Training and eval, with and without the affine, running statistics of either dtype, and no elements."""
    rng = np.random.default_rng(0)
    for dtype in DTYPES:
        x = rng.standard_normal((2, 3, 5)).astype(dtype)
        weights = rng.standard_normal(3).astype(dtype)
        for running_dtype in DTYPES:
            rm, rv = np.zeros(3, running_dtype), np.ones(3, running_dtype)
            for training in (True, False):
                for affine in (np.ones(3, dtype), None):
                    _, stats = nk.switchable_norm_forward(
                        x,
                        affine,
                        affine,
                        weights,
                        weights,
                        training=training,
                        running_mean=rm,
                        running_var=rv,
                        backend="cuda",
                    )
                    nk.switchable_norm_backward(
                        x, x, affine, weights, weights, stats, training=training, backend="cuda"
                    )
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
