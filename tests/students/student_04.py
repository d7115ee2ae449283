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
        mean = np.mean(x, axis=0)
        std = np.std(x, axis=0) + eps  # eps so we never divide by 0
        x_hat = (x - mean) / std
        out = gamma * x_hat + beta

        running_mean = momentum * running_mean + (1 - momentum) * mean
        running_var = momentum * running_var + (1 - momentum) * np.var(x, axis=0)
        cache = (x, mean, std, x_hat, gamma)
    elif mode == "test":
        out = gamma * (x - running_mean) / (np.sqrt(running_var) + eps) + beta
    else:
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')

    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var

    return out, cache


def batchnorm_backward(dout, cache):
    x, mean, std, x_hat, gamma = cache
    N = x.shape[0]

    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)

    dx_hat = dout * gamma
    dstd = -np.sum(dx_hat * (x - mean), axis=0) / std**2
    dvar = dstd * 0.5 / std  # d sqrt(v) / dv = 1 / (2 sqrt(v))
    dmean = -np.sum(dx_hat / std, axis=0) + dvar * np.mean(-2 * (x - mean), axis=0)
    dx = dx_hat / std + dvar * 2 * (x - mean) / N + dmean / N

    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    _, _, std, x_hat, gamma = cache
    N = dout.shape[0]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)
    dx = gamma / (N * std) * (N * dout - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    eps = ln_param.get("eps", 1e-5)
    mean = x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True) + eps
    x_hat = (x - mean) / std
    out = gamma * x_hat + beta
    return out, (std, x_hat, gamma)


def layernorm_backward(dout, cache):
    std, x_hat, gamma = cache
    D = dout.shape[1]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    dx_hat = dout * gamma
    dx = (D * dx_hat - dx_hat.sum(axis=1, keepdims=True) - x_hat * (dx_hat * x_hat).sum(axis=1, keepdims=True)) / (
        D * std
    )
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    N, C, H, W = x.shape
    out, cache = batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, C), gamma, beta, bn_param)
    out = out.reshape(N, H, W, C).transpose(0, 3, 1, 2)
    return out, cache


def spatial_batchnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    dx, dgamma, dbeta = batchnorm_backward_alt(dout.transpose(0, 2, 3, 1).reshape(-1, C), cache)
    dx = dx.reshape(N, H, W, C).transpose(0, 3, 1, 2)
    return dx, dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    xg = x.reshape(N, G, C // G, H, W)
    mean = xg.mean(axis=(2, 3, 4), keepdims=True)
    std = xg.std(axis=(2, 3, 4), ddof=1, keepdims=True) + eps  # sample std of each group
    x_hat = ((xg - mean) / std).reshape(N, C, H, W)
    out = gamma.reshape(1, C, 1, 1) * x_hat + beta.reshape(1, C, 1, 1)
    return out, (G, std, x_hat, gamma)


def spatial_groupnorm_backward(dout, cache):
    G, std, x_hat, gamma = cache
    N, C, H, W = dout.shape
    dbeta = dout.sum(axis=(0, 2, 3))
    dgamma = (dout * x_hat).sum(axis=(0, 2, 3))

    M = C // G * H * W
    dxh = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, G, C // G, H, W)
    xh = x_hat.reshape(N, G, C // G, H, W)
    dx = (M * dxh - dxh.sum(axis=(2, 3, 4), keepdims=True) - xh * (dxh * xh).sum(axis=(2, 3, 4), keepdims=True)) / (
        M * std
    )
    return dx.reshape(N, C, H, W), dgamma, dbeta
