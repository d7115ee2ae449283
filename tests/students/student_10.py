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
        mu = np.sum(x, axis=0) / N
        var = np.sum((x - mu) ** 2, axis=0) / N
        std = np.sqrt(var + eps)
        xhat = (x - mu) / std
        out = gamma * xhat + beta
        cache = (x, mu, var, std, xhat, gamma, eps)

        # update the running averages
        running_mean = momentum * running_mean + (1 - momentum) * mu
        running_var = momentum * running_var + (1 - momentum) * var
    elif mode == "test":
        out = gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta
    else:
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')

    return out, cache


def batchnorm_backward(dout, cache):
    x, mu, var, std, xhat, gamma, eps = cache
    N, D = x.shape

    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(xhat * dout, axis=0)

    dxhat = dout * gamma
    xmu = x - mu
    ivar = 1.0 / std
    divar = np.sum(dxhat * xmu, axis=0)
    dxmu1 = dxhat * ivar
    dsqrtvar = -divar / std**2
    dvar = 0.5 * dsqrtvar / np.sqrt(var + eps)
    dsq = dvar * np.ones((N, D)) / N
    dxmu2 = 2.0 * xmu * dsq
    dx1 = dxmu1 + dxmu2
    dmu = -np.sum(dx1, axis=0)
    dx2 = dmu * np.ones((N, D)) / N
    dx = dx1 + dx2

    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    _, _, _, std, xhat, gamma, _ = cache
    N = dout.shape[0]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(xhat * dout, axis=0)
    dx = gamma / std * (dout - dbeta / N - xhat * dgamma / N)
    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    eps = ln_param.get("eps", 1e-5)
    N, D = x.shape
    mu = np.sum(x, axis=1, keepdims=True) / N
    var = np.sum((x - mu) ** 2, axis=1, keepdims=True) / D
    std = np.sqrt(var + eps)
    xhat = (x - mu) / std
    out = gamma * xhat + beta
    cache = (std, xhat, gamma)
    return out, cache


def layernorm_backward(dout, cache):
    std, xhat, gamma = cache
    D = dout.shape[1]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(xhat * dout, axis=0)
    dxhat = dout * gamma
    mean_dxhat = np.sum(dxhat, axis=1, keepdims=True) / D
    mean_dxhat_xhat = np.sum(dxhat * xhat, axis=1, keepdims=True) / D
    dx = (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) / std
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)

    N, C, H, W = x.shape
    running_mean = bn_param.get("running_mean", np.zeros(C, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(C, dtype=x.dtype))

    cache = None
    if mode == "train":
        # same as batchnorm_forward: statistics over the batch
        mu = np.sum(x, axis=0) / N  # (C, H, W)
        var = np.sum((x - mu) ** 2, axis=0) / N  # (C, H, W)
        std = np.sqrt(var + eps)
        xhat = (x - mu) / std
        out = gamma[:, None, None] * xhat + beta[:, None, None]
        cache = (std, xhat, gamma)

        # running averages must be (C,)
        running_mean = momentum * running_mean + (1 - momentum) * mu.mean(axis=(1, 2))
        running_var = momentum * running_var + (1 - momentum) * var.mean(axis=(1, 2))
    elif mode == "test":
        xhat = (x - running_mean[:, None, None]) / np.sqrt(running_var[:, None, None] + eps)
        out = gamma[:, None, None] * xhat + beta[:, None, None]
    else:
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')

    return out, cache


def spatial_batchnorm_backward(dout, cache):
    std, xhat, gamma = cache
    N = dout.shape[0]

    dbeta = np.sum(dout, axis=(0, 2, 3))
    dgamma = np.sum(xhat * dout, axis=(0, 2, 3))

    dxhat = dout * gamma[:, None, None]
    mean_dxhat = np.sum(dxhat, axis=0) / N
    mean_dxhat_xhat = np.sum(dxhat * xhat, axis=0) / N
    dx = (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) / std
    return dx, dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    xg = x.reshape(N, G, C // G, H, W)
    mu = np.mean(xg, axis=(0, 2, 3, 4), keepdims=True)
    var = np.mean((xg - mu) ** 2, axis=(0, 2, 3, 4), keepdims=True)
    std = np.sqrt(var + eps)
    xhat = ((xg - mu) / std).reshape(N, C, H, W)
    out = gamma.reshape(1, C, 1, 1) * xhat + beta.reshape(1, C, 1, 1)
    cache = (std, xhat, gamma, G)
    return out, cache


def spatial_groupnorm_backward(dout, cache):
    std, xhat, gamma, G = cache
    N, C, H, W = dout.shape
    M = C // G * H * W

    dbeta = np.sum(dout, axis=(0, 2, 3))
    dgamma = np.sum(xhat * dout, axis=(0, 2, 3))

    # layer norm backward on every group, gamma multiplied at the end
    d = dout.reshape(N, G, C // G, H, W)
    xh = xhat.reshape(N, G, C // G, H, W)
    mean_d = np.sum(d, axis=(2, 3, 4), keepdims=True) / M
    mean_d_xh = np.sum(d * xh, axis=(2, 3, 4), keepdims=True) / M
    dxg = (d - mean_d - xh * mean_d_xh) / std
    dx = gamma.reshape(1, C, 1, 1) * dxg.reshape(N, C, H, W)
    return dx, dgamma, dbeta
