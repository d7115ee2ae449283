import numpy as np


def batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    D = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))

    if mode == "train":
        mean, var = x.mean(0), x.var(0, ddof=1)  # sample variance
        xn = (x - mean) / np.sqrt(var + eps)
        out, cache = gamma * xn + beta, (xn, gamma, 1 / np.sqrt(var + eps))
        bn_param["running_mean"] = momentum * running_mean + (1 - momentum) * mean
        bn_param["running_var"] = momentum * running_var + (1 - momentum) * var
    elif mode == "test":
        out, cache = gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta, None
    else:
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')
    return out, cache


def batchnorm_backward(dout, cache):
    xn, gamma, istd = cache
    N = dout.shape[0]
    dbeta, dgamma = dout.sum(0), (dout * xn).sum(0)
    dxn = dout * gamma
    # x -> mean -> var -> istd -> xn, written with the cached pieces
    dvar = (dxn * xn).sum(0) * -0.5 * istd**2
    dmean = -(dxn * istd).sum(0)
    dx = dxn * istd + dvar * 2 * xn / (N * istd) + dmean / N
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    xn, gamma, istd = cache
    N = dout.shape[0]
    dbeta, dgamma = dout.sum(0), (dout * xn).sum(0)
    return gamma * istd / N * (N * dout - dbeta - xn * dgamma), dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    eps = ln_param.get("eps", 1e-5)
    std = np.sqrt(x.var(1, keepdims=True) + eps)
    xn = (x - x.mean(1, keepdims=True)) / std
    return gamma * xn + beta, (xn, gamma, std)


def layernorm_backward(dout, cache):
    xn, gamma, std = cache
    dbeta = dout.sum(0)
    dgamma = None  # TODO
    dx = dout * gamma / std  # TODO: the mean / var terms
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    C = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(C, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(C, dtype=x.dtype))
    g, b = gamma[None, :, None, None], beta[None, :, None, None]

    if mode == "train":
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), ddof=1)
        std = np.sqrt(var + eps)[None, :, None, None]
        xn = (x - mean[None, :, None, None]) / std
        out, cache = g * xn + b, (xn, gamma, std)
        bn_param["running_mean"] = momentum * running_mean + (1 - momentum) * mean
        bn_param["running_var"] = momentum * running_var + (1 - momentum) * var
    else:
        std = np.sqrt(running_var + eps)[None, :, None, None]
        out, cache = g * (x - running_mean[None, :, None, None]) / std + b, None
    return out, cache


def spatial_batchnorm_backward(dout, cache):
    xn, gamma, std = cache
    N, C, H, W = dout.shape
    M = N * H * W
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * xn, axis=(0, 2, 3))
    dxn = dout * gamma[None, :, None, None]
    dx = (M * dxn - dxn.sum((0, 2, 3), keepdims=True) - xn * (dxn * xn).sum((0, 2, 3), keepdims=True)) / (M * std)
    return dx, dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    # gamma, beta: (1, C, 1, 1)
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    xg = x.reshape(N * C // G, -1)  # one row per group
    std = np.sqrt(xg.var(1, keepdims=True) + eps)
    xn = ((xg - xg.mean(1, keepdims=True)) / std).reshape(x.shape)
    return gamma * xn + beta, (xn, gamma, std, G)


def spatial_groupnorm_backward(dout, cache):
    xn, gamma, std, G = cache
    N, C, H, W = dout.shape
    dbeta = dout.sum((0, 2, 3), keepdims=True)
    dgamma = (dout * xn).sum((0, 2, 3), keepdims=True)
    dxn = (dout * gamma).reshape(N * C // G, -1)
    xr = xn.reshape(N * C // G, -1)
    M = xr.shape[1]
    dx = (M * dxn - dxn.sum(1, keepdims=True) - xr * (dxn * xr).sum(1, keepdims=True)) / (M * std)
    return dx.reshape(N, C, H, W), dgamma, dbeta
