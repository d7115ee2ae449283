"""The shared formulas of ``normkernels._formulas``, compiled as CUDA device functions."""

from numba import cuda

from .. import _formulas

globals().update(_formulas.compile_for(cuda.jit(device=True, inline=True), __name__))
