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
        mu = x.mean(axis=0)
        var = x.var(axis=0)
        std = np.sqrt(var + eps)
        x_norm = (x - mu) / std
        out = gamma * x_norm + beta
        cache = {"x_norm": x_norm, "x_mu": x - mu, "std": std, "gamma": gamma}

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
    # the three equations from the paper: dL/dvar, dL/dmu, dL/dx
    x_norm, x_mu, std, gamma = cache["x_norm"], cache["x_mu"], cache["std"], cache["gamma"]
    N = dout.shape[0]

    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_norm).sum(axis=0)

    dx_norm = dout * gamma
    dvar = np.sum(dx_norm * x_mu, axis=0) * -0.5 * std**-3
    dmu = np.sum(-dx_norm / std, axis=0) + dvar * np.mean(-2.0 * x_mu, axis=0)
    dx = dx_norm / std + dvar * 2.0 * x_mu / N + dmu / N
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    x_norm, std, gamma = cache["x_norm"], cache["std"], cache["gamma"]
    N = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_norm).sum(axis=0)
    dx = gamma / (N * std) * (N * dout - dbeta - x_norm * dgamma)
    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    # layer norm == batch norm of x.T (every sample becomes a column); gamma/beta applied afterwards
    eps = ln_param.get("eps", 1e-5)
    x_norm_t, bn_cache = batchnorm_forward(x.T, 1.0, 0.0, {"mode": "train", "eps": eps})
    x_norm = x_norm_t.T
    out = gamma * x_norm + beta
    cache = {"bn": bn_cache, "x_norm": x_norm, "gamma": gamma}
    return out, cache


def layernorm_backward(dout, cache):
    dbeta = dout.sum(axis=0)
    dgamma = (dout * cache["x_norm"]).sum(axis=0)
    dx_t, _, _ = batchnorm_backward_alt((dout * cache["gamma"]).T, cache["bn"])
    return dx_t.T, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    N, C, H, W = x.shape
    out, cache = batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, C), gamma, beta, bn_param)
    return out.reshape(N, H, W, C).transpose(0, 3, 1, 2), cache


def spatial_batchnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    dx, dgamma, dbeta = batchnorm_backward_alt(dout.transpose(0, 2, 3, 1).reshape(-1, C), cache)
    return dx.reshape(N, H, W, C).transpose(0, 3, 1, 2), dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    # gamma, beta: (C,)
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    xg = x.reshape(N * G, -1)  # one row per (sample, group)
    mu = xg.mean(axis=1, keepdims=True)
    std = np.sqrt(xg.var(axis=1, keepdims=True) + eps)
    x_norm = ((xg - mu) / std).reshape(N, C, H, W)
    out = gamma[None, :, None, None] * x_norm + beta[None, :, None, None]
    cache = {"x_norm": x_norm, "std": std, "gamma": gamma, "G": G}
    return out, cache


def spatial_groupnorm_backward(dout, cache):
    x_norm, std, gamma, G = cache["x_norm"], cache["std"], cache["gamma"], cache["G"]
    N, C, H, W = dout.shape
    dbeta = dout.sum(axis=(0, 2, 3))
    dgamma = (dout * x_norm).sum(axis=(0, 2, 3))

    dxn = (dout * gamma[None, :, None, None]).reshape(N * G, -1)
    xn = x_norm.reshape(N * G, -1)
    M = xn.shape[1]
    dx = (M * dxn - dxn.sum(axis=1, keepdims=True) - xn * (dxn * xn).sum(axis=1, keepdims=True)) / (M * std)
    return dx.reshape(N, C, H, W), dgamma, dbeta
