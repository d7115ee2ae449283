"""Compile options shared by every CPU kernel, and the guard the front ends call them under.

``cache=True`` writes the machine code next to the module so a second process loads it instead of
compiling; ``error_model="numpy"`` makes 1/0 give inf (as IEEE and PyTorch do) instead of raising, and keeps
the division checks out of the vectorized loops.
"""

import contextlib
import threading

import numba

SERIAL = dict(cache=True, error_model="numpy")
PARALLEL = dict(SERIAL, parallel=True)
REDUCE = dict(SERIAL, fastmath={"reassoc"})

_TURNS = threading.Lock()


def launch_guard():
    """The context every call of a parallel kernel runs in.

    Numba's workqueue threading layer (its fallback where neither OpenMP nor TBB loads) aborts the process
    when two Python threads run parallel kernels at once, so under it calls take turns. Under OpenMP and
    TBB they run concurrently. The layer is picked at the first parallel launch; until then calls take turns.
    """
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet in this process
        return _TURNS
    return _TURNS if layer == "workqueue" else contextlib.nullcontext()
