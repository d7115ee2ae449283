"""A sample student ``cs231n/layers.py`` (assignment 2, normalization layers) with three planted mistakes.

Try the gradient verifier on it::

    python -m verify examples/cs231n_layers.py

It defines all nine functions of the assignment: batchnorm_forward, batchnorm_backward, batchnorm_backward_alt,
layernorm_forward, layernorm_backward, spatial_batchnorm_forward, spatial_batchnorm_backward,
spatial_groupnorm_forward and spatial_groupnorm_backward (gamma and beta of shape (C,) everywhere). Six of them
are correct. Exactly three have one mistake each:

1. spatial_groupnorm_forward (a structural forward mistake): it reshapes x to (N, C // G, G, H, W) and takes
   the statistics over axes (1, 3, 4), so channel c lands in group c % G -- the groups are interleaved
   channels instead of G blocks of C // G consecutive channels. The fix is x.reshape(N, G, C // G, H, W) with
   the statistics over axes (2, 3, 4). (Its backward recomputes the statistics from x with the right groups,
   so spatial_groupnorm_backward itself is correct.)

2. layernorm_backward (a backward mistake): dx = gamma * inv_std * (dout - mean(dout) - x_hat * mean(dout *
   x_hat)) takes gamma out of the per-row means. In layer norm the means run over the D features and gamma
   varies along them, so it must be applied first: g = dout * gamma, then dx = inv_std * (g - mean(g) -
   x_hat * mean(g * x_hat)). (Moving gamma out is harmless in batch norm, where the sums run over N and gamma
   is constant along them -- that is where the habit comes from.) dgamma and dbeta are right.

3. spatial_batchnorm_forward (a running-average mistake): it hands batchnorm_forward a copy of bn_param, so
   the running_mean / running_var that batchnorm_forward updates are written into the copy and never reach
   the caller's bn_param; test-time spatial batch norm keeps using the initial running statistics. The
   train-mode output itself is right.
"""

import numpy as np


def batchnorm_forward(x, gamma, beta, bn_param):
    """x: (N, D); gamma, beta: (D,). Returns (out, cache); updates bn_param's running averages in train mode."""
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)

    N, D = x.shape
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))

    out, cache = None, None
    if mode == "train":
        mu = x.mean(axis=0)
        xmu = x - mu
        var = (xmu**2).mean(axis=0)
        sqrtvar = np.sqrt(var + eps)
        ivar = 1.0 / sqrtvar
        xhat = xmu * ivar
        out = gamma * xhat + beta
        cache = (xhat, gamma, xmu, ivar, sqrtvar, var, eps)

        running_mean = momentum * running_mean + (1 - momentum) * mu
        running_var = momentum * running_var + (1 - momentum) * var
    elif mode == "test":
        out = gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta
    else:
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')

    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out, cache


def batchnorm_backward(dout, cache):
    """Staged backward through mu, xmu, sq, var, sqrtvar, ivar, xhat, gammax, out."""
    xhat, gamma, xmu, ivar, sqrtvar, var, eps = cache
    N, D = dout.shape

    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    divar = (dxhat * xmu).sum(axis=0)
    dxmu1 = dxhat * ivar
    dsqrtvar = -divar / sqrtvar**2
    dvar = 0.5 / np.sqrt(var + eps) * dsqrtvar
    dsq = np.ones((N, D)) * dvar / N
    dxmu2 = 2 * xmu * dsq
    dx1 = dxmu1 + dxmu2
    dmu = -dx1.sum(axis=0)
    dx2 = np.ones((N, D)) * dmu / N
    dx = dx1 + dx2
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    """Closed-form backward."""
    xhat, gamma, _, ivar, _, _, _ = cache
    N = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dx = gamma * ivar / N * (N * dout - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    """x: (N, D); statistics of every row over its D features."""
    eps = ln_param.get("eps", 1e-5)
    mu = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    ivar = 1.0 / np.sqrt(var + eps)
    xhat = (x - mu) * ivar
    out = gamma * xhat + beta
    cache = (xhat, gamma, ivar)
    return out, cache


def layernorm_backward(dout, cache):
    xhat, gamma, ivar = cache
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    # same closed form as batch norm, along axis 1
    mean_dout = dout.mean(axis=1, keepdims=True)
    mean_dout_xhat = (dout * xhat).mean(axis=1, keepdims=True)
    dx = gamma * ivar * (dout - mean_dout - xhat * mean_dout_xhat)
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """x: (N, C, H, W); gamma, beta: (C,). Channel statistics over N, H, W via batchnorm_forward."""
    N, C, H, W = x.shape
    params = dict(bn_param)  # batchnorm_forward writes into the dict it gets
    out, cache = batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, C), gamma, beta, params)
    out = out.reshape(N, H, W, C).transpose(0, 3, 1, 2)
    return out, cache


def spatial_batchnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    dx, dgamma, dbeta = batchnorm_backward_alt(dout.transpose(0, 2, 3, 1).reshape(-1, C), cache)
    dx = dx.reshape(N, H, W, C).transpose(0, 3, 1, 2)
    return dx, dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """x: (N, C, H, W); gamma, beta: (C,); G groups."""
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    xg = x.reshape(N, C // G, G, H, W)
    mu = xg.mean(axis=(1, 3, 4), keepdims=True)
    var = xg.var(axis=(1, 3, 4), keepdims=True)
    xhat = ((xg - mu) / np.sqrt(var + eps)).reshape(N, C, H, W)
    out = gamma.reshape(1, C, 1, 1) * xhat + beta.reshape(1, C, 1, 1)
    cache = (x, gamma, G, eps)
    return out, cache


def spatial_groupnorm_backward(dout, cache):
    # recompute the group statistics from x instead of caching them
    x, gamma, G, eps = cache
    N, C, H, W = x.shape
    M = C // G * H * W

    xg = x.reshape(N, G, C // G, H, W)
    mu = xg.mean(axis=(2, 3, 4), keepdims=True)
    ivar = 1.0 / np.sqrt(xg.var(axis=(2, 3, 4), keepdims=True) + eps)
    xhat = (xg - mu) * ivar

    dbeta = dout.sum(axis=(0, 2, 3))
    dgamma = (dout * xhat.reshape(N, C, H, W)).sum(axis=(0, 2, 3))

    dxhat = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, G, C // G, H, W)
    sum_dxhat = dxhat.sum(axis=(2, 3, 4), keepdims=True)
    sum_dxhat_xhat = (dxhat * xhat).sum(axis=(2, 3, 4), keepdims=True)
    dx = ivar / M * (M * dxhat - sum_dxhat - xhat * sum_dxhat_xhat)
    return dx.reshape(N, C, H, W), dgamma, dbeta
