"""Compile options shared by every CPU kernel.

``cache=True`` writes the machine code next to the module so a second process loads it instead of
compiling; ``error_model="numpy"`` makes 1/0 give inf (as IEEE and PyTorch do) instead of raising, and keeps
the division checks out of the vectorized loops.
"""

SERIAL = dict(cache=True, error_model="numpy")
PARALLEL = dict(SERIAL, parallel=True)
REDUCE = dict(SERIAL, fastmath={"reassoc"})
