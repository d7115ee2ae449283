"""The shared scalar formulas of ``normkernels._formulas``, compiled as CUDA device functions."""

from numba import cuda

from .. import _formulas

_compile = cuda.jit(device=True, inline=True)

chan_merge = _compile(_formulas.chan_merge)
running_update = _compile(_formulas.running_update)
unbiased_var = _compile(_formulas.unbiased_var)
rstd_of = _compile(_formulas.rstd_of)
channel_backward = _compile(_formulas.channel_backward)
row_backward = _compile(_formulas.row_backward)
softmax3 = _compile(_formulas.softmax3)
softmax3_backward = _compile(_formulas.softmax3_backward)
switchable_dx = _compile(_formulas.switchable_dx)
