"""Launch sizes and the reduction path, fixed when the CUDA kernels are first imported.

On hardware, reductions use warp shuffles and teams of at least one warp. Numba's simulator runs each CUDA
thread as a Python thread and has no warp shuffles, so there the kernels take the shared-memory reduction
path and small sizes, which still exercise every structure (rows longer than a team, several blocks per
channel, cached and re-read elements) on tiny shapes.
"""

from .._backends import simulator

SIMULATOR = simulator()
USE_SHUFFLE = not SIMULATOR  # read as a compile-time constant by the kernels
WARP = 32
FULL_MASK = 0xFFFFFFFF

MAX_BLOCK = 1024  # threads per block at most; sizes the shared scratch of the reductions
if SIMULATOR:
    ITEMS = 2  # row elements each thread keeps in registers between passes
    MIN_TEAM = 2  # threads per row, at least and at most
    MAX_TEAM = 8
    BLOCK = 8  # threads per block of the other kernels; a spatial batch-norm chunk is BLOCK * ITEMS values
    CHUNK_ROWS = 4  # samples per statistics block ((N, D) batch norm)
else:
    ITEMS = 8
    MIN_TEAM = WARP
    # rows_backward needs ~110 registers a thread in float64 (ptxas, sm_90): a 1024-thread block allows 64
    MAX_TEAM = 512
    BLOCK = 256
    CHUNK_ROWS = 64
MAX_TEAMS = 4096 if not SIMULATOR else 8  # row teams in a grid (the grid strides over further rows)
# layer-norm backward keeps a (teams, K) float64 partial for dgamma and one for dbeta: at most this many
# elements each (teams shrink for long rows)
MAX_PARTIAL = 1 << 21 if not SIMULATOR else 64
