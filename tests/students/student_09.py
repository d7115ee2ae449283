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
        batch_mean = np.mean(x, axis=0)
        batch_var = np.var(x, axis=0)
        inv_std = 1 / np.sqrt(batch_var + eps)
        x_norm = (x - batch_mean) * inv_std
        out = gamma * x_norm + beta
        cache = {"x_norm": x_norm, "x_centered": x - batch_mean, "inv_std": inv_std, "gamma": gamma}

        running_mean = momentum * running_mean + (1 - momentum) * batch_mean
        running_var = momentum * running_var + (1 - momentum) * batch_var
    elif mode == "test":
        x_norm = (x - running_mean) / np.sqrt(running_var + eps)
        out = gamma * x_norm + beta
    else:
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')

    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var

    return out, cache


def batchnorm_backward(dout, cache):
    x_norm = cache["x_norm"]
    x_centered = cache["x_centered"]
    inv_std = cache["inv_std"]
    gamma = cache["gamma"]
    N = dout.shape[0]

    # out = gamma * x_norm + beta
    dbeta = np.sum(dout, axis=0)
    dx_norm = dout * gamma
    dgamma = np.sum(dx_norm * x_norm, axis=0)

    # x_norm = x_centered * inv_std
    dinv_std = np.sum(dx_norm * x_centered, axis=0)
    dx_centered = dx_norm * inv_std
    # inv_std = (var + eps) ** -0.5
    dvar = -0.5 * inv_std**3 * dinv_std
    # var = mean(x_centered ** 2)
    dx_centered += 2 * x_centered * dvar / N
    # x_centered = x - mean(x)
    dx = dx_centered - np.mean(dx_centered, axis=0)

    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    x_norm, inv_std, gamma = cache["x_norm"], cache["inv_std"], cache["gamma"]
    N, D = dout.shape
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * x_norm, axis=0)
    dx = gamma * inv_std / D * (D * dout - dbeta - x_norm * dgamma)
    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    mean = np.mean(x, axis=1, keepdims=True)
    var = np.var(x, axis=1, keepdims=True)
    std = np.sqrt(var)
    x_norm = (x - mean) / std
    out = gamma * x_norm + beta
    cache = {"x_norm": x_norm, "std": std, "gamma": gamma}
    return out, cache


def layernorm_backward(dout, cache):
    x_norm, std, gamma = cache["x_norm"], cache["std"], cache["gamma"]
    D = dout.shape[1]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * x_norm, axis=0)
    dx_norm = dout * gamma
    dx = (
        D * dx_norm - np.sum(dx_norm, axis=1, keepdims=True) - x_norm * np.sum(dx_norm * x_norm, axis=1, keepdims=True)
    ) / (D * std)
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    N, C, H, W = x.shape
    x_t = x.transpose(0, 2, 3, 1).reshape(-1, C)
    out_t, cache = batchnorm_forward(x_t, gamma, beta, bn_param)
    out = out_t.reshape(N, H, W, C).transpose(0, 3, 1, 2)
    return out, cache


def spatial_batchnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    dout_t = dout.transpose(0, 2, 3, 1).reshape(-1, C)
    dx_t, dgamma, dbeta = batchnorm_backward_alt(dout_t, cache)
    dx = dx_t.reshape(N, H, W, C).transpose(0, 3, 1, 2)
    return dx, dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    # gamma, beta have shape (1, C, 1, 1)
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    x_group = x.reshape(N, G, C // G, H, W)
    mean = np.mean(x_group, axis=(3, 4), keepdims=True)
    var = np.var(x_group, axis=(3, 4), keepdims=True)
    std = np.sqrt(var + eps)
    x_norm = ((x_group - mean) / std).reshape(N, C, H, W)
    out = gamma * x_norm + beta
    cache = {"x_norm": x_norm, "std": std, "gamma": gamma, "G": G}
    return out, cache


def spatial_groupnorm_backward(dout, cache):
    x_norm, std, gamma, G = cache["x_norm"], cache["std"], cache["gamma"], cache["G"]
    N, C, H, W = dout.shape
    M = H * W  # number of elements in each group

    dbeta = np.sum(dout, axis=(0, 2, 3), keepdims=True)
    dgamma = np.sum(dout * x_norm, axis=(0, 2, 3), keepdims=True)

    dx_norm = (dout * gamma).reshape(N, G, C // G, H, W)
    x_norm_g = x_norm.reshape(N, G, C // G, H, W)
    sum_dxn = np.sum(dx_norm, axis=(3, 4), keepdims=True)
    sum_dxn_xn = np.sum(dx_norm * x_norm_g, axis=(3, 4), keepdims=True)
    dx = (M * dx_norm - sum_dxn - x_norm_g * sum_dxn_xn) / (M * std)
    return dx.reshape(N, C, H, W), dgamma, dbeta
