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
        mu = np.mean(x, axis=0)
        xmu = x - mu
        var = np.mean(xmu**2, axis=0)
        sqrtvar = np.sqrt(var + eps)
        ivar = 1.0 / sqrtvar
        xhat = xmu * ivar
        out = gamma * xhat + beta
        cache = (xmu, ivar, sqrtvar, var, xhat, gamma, eps)

        running_mean = momentum * running_mean + (1 - momentum) * mu
        running_var = momentum * running_var + (1 - momentum) * var
    elif mode == "test":
        xhat = (x - running_mean) / np.sqrt(running_var + eps)
        out = gamma * xhat + beta
    else:
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')

    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var

    return out, cache


def batchnorm_backward(dout, cache):
    xmu, ivar, sqrtvar, var, xhat, gamma, eps = cache
    N, D = dout.shape

    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * xhat, axis=0)
    dxhat = dout * gamma

    divar = np.sum(dxhat * xmu, axis=0)
    dxmu1 = dxhat * ivar
    dsqrtvar = -1.0 / sqrtvar**2 * divar
    dvar = 0.5 / np.sqrt(var + eps) * dsqrtvar
    dsq = np.ones((N, D)) * dvar / N
    dxmu2 = xmu * dsq  # d(xmu^2)
    dmu = -np.sum(dxmu1 + dxmu2, axis=0)
    dx = dxmu1 + dxmu2 + np.ones((N, D)) * dmu / N

    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    _, ivar, _, _, xhat, gamma, _ = cache
    N = dout.shape[0]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * xhat, axis=0)
    dx = gamma * ivar / N * (N * dout - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    eps = ln_param.get("eps", 1e-5)
    mu = np.mean(x, axis=1, keepdims=True)
    xmu = x - mu
    var = np.mean(xmu**2, axis=1, keepdims=True)
    sqrtvar = np.sqrt(var + eps)
    ivar = 1.0 / sqrtvar
    xhat = xmu * ivar
    out = gamma * xhat + beta
    cache = (xmu, ivar, sqrtvar, var, xhat, gamma, eps)
    return out, cache


def layernorm_backward(dout, cache):
    # copied from batchnorm_backward, divide by D instead of N
    xmu, ivar, sqrtvar, var, xhat, gamma, eps = cache
    N, D = dout.shape

    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * xhat, axis=0)
    dxhat = dout * gamma

    divar = np.sum(dxhat * xmu, axis=0)
    dxmu1 = dxhat * ivar
    dsqrtvar = -1.0 / sqrtvar**2 * divar
    dvar = 0.5 / np.sqrt(var + eps) * dsqrtvar
    dsq = np.ones((N, D)) * dvar / D
    dxmu2 = 2 * xmu * dsq
    dmu = -np.sum(dxmu1 + dxmu2, axis=0)
    dx = dxmu1 + dxmu2 + np.ones((N, D)) * dmu / D

    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    N, C, H, W = x.shape
    out, cache = batchnorm_forward(np.moveaxis(x, 1, -1).reshape(-1, C), gamma, beta, bn_param)
    out = np.moveaxis(out.reshape(N, H, W, C), -1, 1)
    return out, cache


def spatial_batchnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    dx, dgamma, dbeta = batchnorm_backward_alt(np.moveaxis(dout, 1, -1).reshape(-1, C), cache)
    dx = np.moveaxis(dx.reshape(N, H, W, C), -1, 1)
    return dx, dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape

    # split the channels into G groups
    x_g = x.reshape(N, C // G, G, H, W)
    mu = np.mean(x_g, axis=(1, 3, 4), keepdims=True)
    xmu = x_g - mu
    var = np.mean(xmu**2, axis=(1, 3, 4), keepdims=True)
    ivar = 1.0 / np.sqrt(var + eps)
    xhat = (xmu * ivar).reshape(N, C, H, W)

    out = gamma.reshape(1, C, 1, 1) * xhat + beta.reshape(1, C, 1, 1)
    cache = (xhat, ivar, gamma, G)
    return out, cache


def spatial_groupnorm_backward(dout, cache):
    xhat, ivar, gamma, G = cache
    N, C, H, W = dout.shape
    M = C // G * H * W

    dbeta = np.sum(dout, axis=(0, 2, 3))
    dgamma = np.sum(dout * xhat, axis=(0, 2, 3))

    dxhat = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, C // G, G, H, W)
    xhat_g = xhat.reshape(N, C // G, G, H, W)
    dx = (
        ivar
        / M
        * (
            M * dxhat
            - np.sum(dxhat, axis=(1, 3, 4), keepdims=True)
            - xhat_g * np.sum(dxhat * xhat_g, axis=(1, 3, 4), keepdims=True)
        )
    )
    return dx.reshape(N, C, H, W), dgamma, dbeta
