"""layers.py (assignment 2) -- batch norm, layer norm, spatial batch norm.

Group norm: not done yet.
"""

import numpy as np


def batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)

    N, D = x.shape
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))

    out, cache = None, None
    if mode == "train":
        mu = np.mean(x, axis=0, keepdims=True)  # (1, D)
        xc = x - mu  # (N, D)
        var = np.mean(xc**2, axis=0, keepdims=True)  # (1, D)
        std = np.sqrt(var + eps)  # (1, D)
        xn = xc / std  # (N, D)
        out = gamma * xn + beta  # (N, D)
        cache = (xc, var, std, xn, gamma, eps)

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
    xc, var, std, xn, gamma, eps = cache
    N = xc.shape[0]

    dbeta = np.sum(dout, axis=0, keepdims=True)  # (1, D)
    dgamma = np.sum(dout * xn, axis=0, keepdims=True)  # (1, D)
    dxn = dout * gamma  # (N, D)
    dinvstd = np.sum(dxn * xc, axis=0, keepdims=True)  # (1, D)
    dxc = dxn / std  # (N, D)
    dstd = -dinvstd / std**2  # (1, D)
    dvar = 0.5 * dstd / np.sqrt(var + eps)  # (1, D)
    dxc += 2.0 * xc * dvar / N  # (N, D)
    dmu = -np.sum(dxc, axis=0, keepdims=True)  # (1, D)
    dx = dxc + dmu / N  # (N, D)

    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    _, _, std, xn, gamma, _ = cache
    N = dout.shape[0]
    dbeta = np.sum(dout, axis=0, keepdims=True)
    dgamma = np.sum(dout * xn, axis=0, keepdims=True)
    dx = gamma / (N * std) * (N * dout - dbeta - xn * dgamma)
    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    eps = ln_param.get("eps", 1e-5)
    mu = np.mean(x, axis=1, keepdims=True)  # (N, 1)
    xc = x - mu
    var = np.mean(xc**2, axis=1, keepdims=True)  # (N, 1)
    std = np.sqrt(var + eps)
    xn = xc / std
    out = gamma * xn + beta
    cache = (xc, var, std, xn, gamma, eps)
    return out, cache


def layernorm_backward(dout, cache):
    _, _, std, xn, gamma, _ = cache
    D = dout.shape[1]
    dbeta = np.sum(dout, axis=0, keepdims=True)
    dgamma = np.sum(dout * xn, axis=0, keepdims=True)
    # same formula as batchnorm_backward_alt, just along the rows
    dout_sum = np.sum(dout, axis=1, keepdims=True)  # (N, 1)
    dout_xn_sum = np.sum(dout * xn, axis=1, keepdims=True)  # (N, 1)
    dx = gamma / (D * std) * (D * dout - dout_sum - xn * dout_xn_sum)
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    N, C, H, W = x.shape
    x_flat = x.reshape(-1, C)  # (N*H*W, C)
    out_flat, cache = batchnorm_forward(x_flat, gamma, beta, bn_param)
    out = out_flat.reshape(N, C, H, W)
    return out, cache


def spatial_batchnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    dx_flat, dgamma, dbeta = batchnorm_backward(dout.reshape(-1, C), cache)
    dx = dx_flat.reshape(N, C, H, W)
    return dx, dgamma, dbeta
