"""Scalar formulas shared by both backends, one spelling each.

Plain Python on scalars (``math`` only), compiled for each backend from this one definition:
``normkernels.cpu.formulas`` with ``njit`` and ``normkernels.cuda.formulas`` with ``cuda.jit(device=True)``.
A formula changed here changes on the CPU and the GPU at once.
"""

import math


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
