"""Reductions over one contiguous 1-D slice, accumulated in float64.

Each helper runs on a single thread over a single slice, so its summation order is fixed by the compiled
code alone: the same input gives the same bits on every run and at every thread count. ``reassoc`` lets LLVM
split each sum into vector lanes (several times faster than a serial chain); it does not assume finite
values, so NaN and inf propagate as usual.
"""

from numba import njit

from ._jit import REDUCE


@njit(**REDUCE)
def sum_(a):
    """sum(a) for a 1-D array, in float64."""
    acc = 0.0
    for i in range(a.size):
        acc += a[i]
    return acc


@njit(**REDUCE)
def sum_sq_dev(a, m):
    """sum((a - m)**2) for a 1-D array and a float64 centre m: the second pass of a two-pass variance."""
    acc = 0.0
    for i in range(a.size):
        d = a[i] - m
        acc += d * d
    return acc


@njit(**REDUCE)
def sum_dy_dyxmu(dy, x, m):
    """(sum(dy), sum(dy * (x - m))) for 1-D arrays of equal length: the two sums every backward needs."""
    sdy = 0.0
    sdyxmu = 0.0
    for i in range(x.size):
        d = dy[i]
        sdy += d
        sdyxmu += d * (x[i] - m)
    return sdy, sdyxmu
