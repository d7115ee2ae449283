"""Deterministic team reductions: a row's threads sum a float64 value in a fixed order, no atomics.

A team is ``ts`` consecutive threads of a block (``ts`` a power of two dividing the block size); every
thread of the block must call ``team_sum`` together, since it synchronizes the block. On hardware the sum
is a warp-shuffle tree, then a second shuffle tree over the team's warp partials (read from shared memory by
every warp of the team, so each gets the total without another broadcast). In the simulator, which has no
shuffles, it is a shared-memory tree. Either way the order depends only on ``ts``: reruns are bit-identical.
"""

from numba import cuda

from ._config import FULL_MASK, USE_SHUFFLE, WARP


@cuda.jit(device=True, inline=True)
def _warp_sum(val):
    """Sum over a warp, returned to every lane (lane 0's tree result, broadcast)."""
    for off in (16, 8, 4, 2, 1):
        val += cuda.shfl_down_sync(FULL_MASK, val, off)
    return cuda.shfl_sync(FULL_MASK, val, 0)


@cuda.jit(device=True, inline=True)
def team_sum(val, shared, ts):
    """Sum of val over the calling thread's team of ts threads; shared: float64 scratch of the block size."""
    tid = cuda.threadIdx.x
    lane = tid % ts
    base = tid - lane
    if USE_SHUFFLE:
        val = _warp_sum(val)
        if ts > WARP:
            if tid % WARP == 0:
                shared[tid // WARP] = val
            cuda.syncthreads()
            w = lane % WARP
            val = shared[base // WARP + w] if w < ts // WARP else 0.0
            val = _warp_sum(val)
            cuda.syncthreads()  # every warp has read its partials before the scratch is reused
        return val
    shared[tid] = val
    cuda.syncthreads()
    step = ts // 2
    while step > 0:
        if lane < step:
            shared[tid] += shared[tid + step]
        cuda.syncthreads()
        step //= 2
    total = shared[base]
    cuda.syncthreads()
    return total
