"""Formulas shared by both backends, one spelling each.

Plain Python (``math``, scalars, and indexing of the arrays a kernel passes in), compiled for each backend from
this one definition by ``compile_for``: ``normkernels.cpu.formulas`` with ``njit`` and
``normkernels.cuda.formulas`` with ``cuda.jit(device=True)``. A formula may call another: each backend's copy
calls that backend's copy. A formula changed here changes on the CPU and the GPU at once; a kernel is left with
its own parallel loop (``prange`` or the CUDA grid) around a call of the per-index formula.
"""

import math
import types


def chan_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """(mean, M2) of two sets of n_a and n_b values, each given by its mean and M2 = sum((x - mean)**2):

        delta = mean_b - mean_a,   n = n_a + n_b
        mean  = mean_a + delta * n_b / n
        M2    = M2_a + M2_b + delta**2 * n_a * n_b / n

    (Chan, Golub and LeVeque, 1979), exact where E[x^2] - E[x]^2 cancels. An empty set changes nothing."""
    n = n_a + n_b
    if n_b == 0:
        return mean_a, m2_a
    if n_a == 0:
        return mean_b, m2_b
    delta = mean_b - mean_a
    return mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * (n_a * n_b / n)


def running_update(running, batch_stat, momentum):
    """PyTorch's running statistic: (1 - momentum) * running + momentum * batch_stat."""
    return (1.0 - momentum) * running + momentum * batch_stat


def unbiased_var(m2, count):
    """The variance a running_var keeps: M2 / (count - 1)."""
    return m2 / (count - 1)


def rstd_of(var, eps):
    """1 / sqrt(var + eps): eps inside the square root. inf for 0 and NaN for a negative or NaN argument, as IEEE
    arithmetic gives them (spelled out: Numba's CUDA simulator would raise there)."""
    s = var + eps
    if s > 0:
        return 1.0 / math.sqrt(s)
    if s == 0:
        return math.inf
    return math.nan


def channel_backward(sdy, sdyxmu, rstd, gamma, count, training):
    """Batch norm's per-channel backward from its two sums, sdy = sum(dy) and sdyxmu = sum(dy * (x - mean)):
    (dgamma, p, q, r) with dx = p * dy + q * (x - mean) + r, i.e.

        dgamma = sdyxmu * rstd
        p = rstd * gamma,  q = -p * rstd * dgamma / count,  r = -p * sdy / count      (training)
        q = r = 0                                                                     (eval: constant statistics)
    """
    dgamma = sdyxmu * rstd
    p = rstd * gamma
    if training:
        return dgamma, p, -p * rstd * dgamma / count, -p * sdy / count
    return dgamma, p, 0.0, 0.0


def row_backward(sg, sgxmu, rstd, length, centered):
    """A row's backward from sg = sum(g) and sgxmu = sum(g * (x - mean)) with g = dy * gamma: (q, r) with
    dx = rstd * g + q * (x - mean) + r, i.e. with c1 = mean(g) and c2 = mean(g * xhat)

        dx = rstd * (g - c1 - xhat * c2):   q = -rstd**2 * c2,  r = -rstd * c1

    Uncentered rows (RMSNorm: mean = 0, nothing subtracted) have no mean path: r = 0."""
    c2 = sgxmu * rstd / length
    q = -rstd * rstd * c2
    if centered:
        return q, -rstd * (sg / length)
    return q, 0.0


def softmax3(a0, a1, a2):
    """softmax of three logits: w_k = exp(a_k - top) / sum_j exp(a_j - top), top = max(a), so exp never
    overflows and a logit far below the others gives a weight of exactly 0."""
    top = max(max(a0, a1), a2)
    e0 = math.exp(a0 - top)
    e1 = math.exp(a1 - top)
    e2 = math.exp(a2 - top)
    s = e0 + e1 + e2
    return e0 / s, e1 / s, e2 / s


def softmax3_backward(w0, w1, w2, d0, d1, d2):
    """The gradient w.r.t. the logits of w = softmax3(a), given d_k = dL/dw_k:

    da_j = w_j * (d_j - sum_k w_k d_k)"""
    s = w0 * d0 + w1 * d1 + w2 * d2
    return w0 * (d0 - s), w1 * (d1 - s), w2 * (d2 - s)


def switchable_dx(dmean_in, dvar_in, dmean_ln, dvar_ln, dmean_bn, dvar_bn, mean_in, mean_ln, mean_bn, m_in, m_ln, m_bn):
    """Switchable Normalization's backward for one (n, c) row: (q, r) with dx = rstd * gamma * dy + q * (x -
    mean_in) + r, from the gradients of its three statistics (k = in, ln, bn over m_k values each; biased
    variances, so d mean_k / dx = 1 / m_k and d var_k / dx = 2 (x - mean_k) / m_k):

        dx = rstd * g + sum_k (dmean_k + 2 dvar_k (x - mean_k)) / m_k
        q  = 2 sum_k dvar_k / m_k
        r  = sum_k dmean_k / m_k + 2 sum_k dvar_k (mean_in - mean_k) / m_k

    Centred on the row's own mean, so a large common offset of x never cancels (the k = in term of r is 0).
    Constant statistics (eval mode's running ones) pass dmean_k = dvar_k = 0."""
    q = 2.0 * (dvar_in / m_in + dvar_ln / m_ln + dvar_bn / m_bn)
    r = dmean_in / m_in + dmean_ln / m_ln + dmean_bn / m_bn
    r += 2.0 * (dvar_ln * (mean_in - mean_ln) / m_ln + dvar_bn * (mean_in - mean_bn) / m_bn)
    return q, r


# --- Switchable Normalization's per-index steps (see normkernels.cpu.switchable for the math) -------------------


def merge_rows(mean_in, m2_in, start, stride, rows, size):
    """(mean, M2) of the rows start, start + stride, ... (rows of them, size values each), merged in that order
    with chan_merge; NaN for no rows."""
    if rows == 0:
        return math.nan, math.nan
    m = mean_in[start]
    m2 = m2_in[start]
    count = float(size)
    for i in range(1, rows):
        j = start + i * stride
        m, m2 = chan_merge(count, m, m2, float(size), mean_in[j], m2_in[j])
        count += size
    return m, m2


def dot(a, b):
    """sum(a * b) in order, float64."""
    s = 0.0
    for i in range(a.size):
        s += a[i] * float(b[i])
    return s


def switchable_layer_backward_at(n, C, dmean, dvar, mean_in, var_in, sum_c_dmean, sum_c_dvar, dw_in, dv_in):
    """Sample n, over c in order: sum_c dmean, sum_c dvar, and the instance terms of the weight gradients
    sum_c dmean * mean_in, sum_c dvar * var_in, written at index n."""
    a = 0.0
    b = 0.0
    pw = 0.0
    pv = 0.0
    for r in range(n * C, (n + 1) * C):
        a += dmean[r]
        b += dvar[r]
        pw += dmean[r] * float(mean_in[r])
        pv += dvar[r] * float(var_in[r])
    sum_c_dmean[n] = a
    sum_c_dvar[n] = b
    dw_in[n] = pw
    dv_in[n] = pv


def switchable_batch_backward_at(c, N, dmean, dvar, sdy, sdyxmu, rstd, sum_n_dmean, sum_n_dvar, dgamma, dbeta):
    """Channel c, over n in order: sum_n dmean, sum_n dvar and, when dgamma and dbeta are (C,) (not (0,)),
    dgamma = sum_n rstd * sdyxmu and dbeta = sum_n sdy, written at index c."""
    C = sum_n_dmean.size
    a = 0.0
    b = 0.0
    dg = 0.0
    db = 0.0
    for n in range(N):
        r = n * C + c
        a += dmean[r]
        b += dvar[r]
        dg += float(rstd[r]) * sdyxmu[r]
        db += sdy[r]
    sum_n_dmean[c] = a
    sum_n_dvar[c] = b
    if dgamma.size > 0:
        dgamma[c] = dg
        dbeta[c] = db


def switchable_weights_backward(
    wv, dw_in, dv_in, sum_c_dmean, sum_c_dvar, mean_ln, var_ln, sum_n_dmean, sum_n_dvar, mean_bn, var_bn, dmw, dvw
):
    """dw_k = sum_{n,c} dmean * mean_k (likewise dv_k), through the softmax: dmw, dvw (3,)."""
    dw0 = 0.0
    dv0 = 0.0
    for n in range(dw_in.size):
        dw0 += dw_in[n]
        dv0 += dv_in[n]
    dw1 = dot(sum_c_dmean, mean_ln)
    dv1 = dot(sum_c_dvar, var_ln)
    dw2 = dot(sum_n_dmean, mean_bn)
    dv2 = dot(sum_n_dvar, var_bn)
    dmw[0], dmw[1], dmw[2] = softmax3_backward(wv[0, 0], wv[0, 1], wv[0, 2], dw0, dw1, dw2)
    dvw[0], dvw[1], dvw[2] = softmax3_backward(wv[1, 0], wv[1, 1], wv[1, 2], dv0, dv1, dv2)


def switchable_dx_at(
    i,
    S,
    rstd,
    gamma,
    mean_in,
    mean_ln,
    mean_bn,
    dmean,
    dvar,
    sum_c_dmean,
    sum_c_dvar,
    sum_n_dmean,
    sum_n_dvar,
    wv,
    training,
):
    """Row i = (n, c): (p, q, r) of dx = p * dy + q * (x - mean_in) + r, p = rstd * gamma. In eval the batch
    statistics are constants: no gradient reaches x through them."""
    C = mean_bn.size
    N = rstd.size // C
    n = i // C
    c = i % C
    dmean_bn = wv[0, 2] * sum_n_dmean[c] if training else 0.0
    dvar_bn = wv[1, 2] * sum_n_dvar[c] if training else 0.0
    q, r = switchable_dx(
        wv[0, 0] * dmean[i],
        wv[1, 0] * dvar[i],
        wv[0, 1] * sum_c_dmean[n],
        wv[1, 1] * sum_c_dvar[n],
        dmean_bn,
        dvar_bn,
        float(mean_in[i]),
        float(mean_ln[n]),
        float(mean_bn[c]),
        float(S),
        float(C * S),
        float(N * S),
    )
    p = float(rstd[i]) * (float(gamma[c]) if gamma.size > 0 else 1.0)
    return p, q, r


def compile_for(decorator, module: str) -> dict:
    """{name: decorator(formula)} for every formula of this module, as the backend module `module` holds them:
    each compiled from a copy of the formula whose globals are that namespace, so a formula calling another
    calls the same backend's compiled one (Numba resolves those names when it compiles, after all are in)."""
    namespace = {"__name__": module, "math": math}
    for name, fn in _FORMULAS.items():
        copy = types.FunctionType(fn.__code__, namespace, name, fn.__defaults__, fn.__closure__)
        copy.__doc__ = fn.__doc__
        namespace[name] = decorator(copy)
    return {name: namespace[name] for name in _FORMULAS}


_FORMULAS = {
    name: fn
    for name, fn in list(globals().items())
    if isinstance(fn, types.FunctionType) and fn.__module__ == __name__ and name != "compile_for"
}
