"""Row kernels on the GPU: LayerNorm, InstanceNorm, GroupNorm and RMSNorm (centered=False).

The math and the (R, K) row view with ``groups`` and ``inner`` are those of ``normkernels.cpu.rows``.
Each row is handled by a team of ``ts`` threads (a warp for short rows, up to a whole block for long ones;
several teams share a block when rows are short), with coalesced loads: thread ``lane`` of the team takes
elements ``lane, lane + ts, lane + 2 ts, ...``. The first ITEMS of them stay in registers between the
statistics passes and the normalize pass, so rows up to ``ts * ITEMS`` are read from memory once.

Backward is one fused kernel per row for dx, plus per-team (layer norm) or per-row (instance and group
norm) partial sums for dgamma and dbeta, which ``sum_rows`` adds in a second pass in a fixed order.
"""

from numba import cuda, float64

from . import formulas
from ._config import ITEMS, MAX_BLOCK
from .reduce import team_sum


@cuda.jit(device=True, inline=True)
def _row_of(round_, ts):
    """The row a thread's team handles in a given round of the grid-stride loop (may be past the end)."""
    teams = cuda.blockDim.x // ts
    return round_ * cuda.gridDim.x * teams + cuda.blockIdx.x * teams + cuda.threadIdx.x // ts


@cuda.jit(cache=True)
def rows_forward(x, gamma, beta, eps, groups, inner, centered, ts, y, mean, rstd):
    """x, y: (R, K); gamma, beta: (A,) or (0,); mean, rstd: (R,). One team of ts threads per row. centered
    False (RMSNorm): mean = 0, rstd = 1 / sqrt(mean(x**2) + eps)."""
    shared = cuda.shared.array(MAX_BLOCK, float64)
    cache = cuda.local.array(ITEMS, float64)
    R, K = x.shape
    cg = K // inner
    lane = cuda.threadIdx.x % ts
    has_gamma = gamma.size > 0
    has_beta = beta.size > 0
    per_thread = (K + ts - 1) // ts
    teams = cuda.gridDim.x * (cuda.blockDim.x // ts)
    for round_ in range((R + teams - 1) // teams):  # the same count for every thread: syncs stay uniform
        r = _row_of(round_, ts)
        valid = r < R
        s = 0.0
        if valid:
            for j in range(per_thread):
                k = lane + j * ts
                if k < K:
                    v = float64(x[r, k])
                    if j < ITEMS:
                        cache[j] = v
                    s += v
        m = team_sum(s, shared, ts) / K if centered else 0.0  # every thread sums: team_sum syncs the block
        q = 0.0
        if valid:
            for j in range(per_thread):
                k = lane + j * ts
                if k < K:
                    d = (cache[j] if j < ITEMS else float64(x[r, k])) - m
                    q += d * d
        rs = formulas.rstd_of(team_sum(q, shared, ts) / K, eps)
        if valid:
            if lane == 0:
                mean[r] = m
                rstd[r] = rs
            a0 = (r % groups) * cg
            for j in range(per_thread):
                k = lane + j * ts
                if k < K:
                    v = ((cache[j] if j < ITEMS else float64(x[r, k])) - m) * rs
                    a = a0 + k // inner
                    if has_gamma:
                        v *= gamma[a]
                    if has_beta:
                        v += beta[a]
                    y[r, k] = v


@cuda.jit(cache=True)
def rows_backward(dy, x, gamma, mean, rstd, groups, inner, centered, ts, dx, pgamma, pbeta):
    """dy, x, dx: (R, K); gamma: (A,) or (0,); mean, rstd: (R,) (mean unread when not centered: it is 0).

    pgamma, pbeta (float64) receive the partial sums of dy * xhat and dy: for layer norm (groups == 1 and
    inner == 1: gamma per element), one row per team of the grid, (teams, K), each team adding over the rows
    it visits; otherwise one row per x row, (R, K // inner), a team sum per channel segment. Without gamma
    they are (.., 0) and untouched.
    """
    shared = cuda.shared.array(MAX_BLOCK, float64)
    xc = cuda.local.array(ITEMS, float64)
    dyc = cuda.local.array(ITEMS, float64)
    acc_g = cuda.local.array(ITEMS, float64)
    acc_b = cuda.local.array(ITEMS, float64)
    R, K = x.shape
    cg = K // inner
    per_element = inner == 1 and groups == 1
    lane = cuda.threadIdx.x % ts
    has_gamma = gamma.size > 0
    per_thread = (K + ts - 1) // ts
    teams = cuda.gridDim.x * (cuda.blockDim.x // ts)
    team = cuda.blockIdx.x * (cuda.blockDim.x // ts) + cuda.threadIdx.x // ts
    for j in range(ITEMS):
        acc_g[j] = 0.0
        acc_b[j] = 0.0
    for round_ in range((R + teams - 1) // teams):
        r = _row_of(round_, ts)
        valid = r < R
        m = float64(mean[r]) if valid and centered else 0.0
        rs = float64(rstd[r]) if valid else 0.0
        a0 = (r % groups) * cg
        sg = 0.0  # sum(g), g = dy * gamma
        sgxmu = 0.0  # sum(g * (x - mean))
        if per_element:
            for j in range(per_thread):
                k = lane + j * ts
                if valid and k < K:
                    xv = float64(x[r, k])
                    d = float64(dy[r, k])
                    if j < ITEMS:
                        xc[j] = xv
                        dyc[j] = d
                    ga = float64(gamma[a0 + k]) if has_gamma else 1.0
                    sg += d * ga
                    sgxmu += d * ga * (xv - m)
                    if has_gamma:
                        if j < ITEMS:
                            acc_g[j] += d * (xv - m) * rs
                            acc_b[j] += d
                        elif round_ == 0:
                            pgamma[team, k] = d * (xv - m) * rs
                            pbeta[team, k] = d
                        else:
                            pgamma[team, k] += d * (xv - m) * rs
                            pbeta[team, k] += d
                elif has_gamma and k < K and j >= ITEMS and round_ == 0:
                    pgamma[team, k] = 0.0  # a team past the last row still owns its partial row
                    pbeta[team, k] = 0.0
        else:
            for seg in range(cg):  # every thread loops over every segment: the team sums stay uniform
                sdy = 0.0
                sdyxmu = 0.0
                if valid:
                    for i in range((inner + ts - 1) // ts):
                        k = seg * inner + lane + i * ts
                        if k < (seg + 1) * inner:
                            d = float64(dy[r, k])
                            sdy += d
                            sdyxmu += d * (float64(x[r, k]) - m)
                sdy = team_sum(sdy, shared, ts)
                sdyxmu = team_sum(sdyxmu, shared, ts)
                ga = float64(gamma[a0 + seg]) if has_gamma else 1.0
                if has_gamma and valid and lane == 0:
                    pbeta[r, seg] = sdy
                    pgamma[r, seg] = sdyxmu * rs
                sg += ga * sdy
                sgxmu += ga * sdyxmu
        if per_element:
            sg = team_sum(sg, shared, ts)
            sgxmu = team_sum(sgxmu, shared, ts)
        q, shift = formulas.row_backward(sg, sgxmu, rs, K, centered)  # dx = rs * g + q * (x - mean) + shift
        if valid:
            for j in range(per_thread):
                k = lane + j * ts
                if k < K:
                    if per_element and j < ITEMS:
                        xv = xc[j]
                        d = dyc[j]
                    else:
                        xv = float64(x[r, k])
                        d = float64(dy[r, k])
                    ga = float64(gamma[a0 + k // inner]) if has_gamma else 1.0
                    dx[r, k] = rs * ga * d + q * (xv - m) + shift
    if per_element and has_gamma:
        for j in range(min(per_thread, ITEMS)):
            k = lane + j * ts
            if k < K:
                pgamma[team, k] = acc_g[j]
                pbeta[team, k] = acc_b[j]


@cuda.jit(cache=True)
def fill(a, value):
    """a[:] = value (device arrays are not zeroed when allocated)."""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[i] = value


@cuda.jit(cache=True)
def sum_rows(part, out):
    """out[a] = sum over b of part[b, a], added in order of b; one thread per column a (coalesced)."""
    B, A = part.shape
    for a in range(cuda.grid(1), A, cuda.gridsize(1)):
        s = 0.0
        for b in range(B):
            s += part[b, a]
        out[a] = s
