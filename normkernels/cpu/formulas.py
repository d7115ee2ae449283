"""The shared formulas of ``normkernels._formulas``, compiled for the CPU kernels (one ``njit`` function each,
inlined where it is called)."""

from numba import njit

from .. import _formulas

# no cache=True here: these are inlined into the kernels, which are cached
globals().update(_formulas.compile_for(njit(inline="always", error_model="numpy"), __name__))
