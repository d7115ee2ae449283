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
        sample_mean = x.mean(axis=0)
        sample_var = x.var(axis=0)
        x_hat = (x - sample_mean) / np.sqrt(sample_var + eps)
        out = gamma * x_hat + beta
        cache = (x, x_hat, sample_mean, sample_var, gamma, eps)

        running_mean = momentum * running_mean + (1 - momentum) * sample_mean
        # the paper (Algorithm 2) uses the unbiased variance estimate for inference: m / (m - 1) * Var
        running_var = momentum * running_var + (1 - momentum) * sample_var * N / (N - 1)
    elif mode == "test":
        x_hat = (x - running_mean) / np.sqrt(running_var + eps)
        out = gamma * x_hat + beta
    else:
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')

    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var

    return out, cache


def batchnorm_backward(dout, cache):
    x, x_hat, sample_mean, sample_var, gamma, eps = cache
    N = x.shape[0]

    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)

    # graph: a = x - mu, b = a^2, v = mean(b), s = sqrt(v + eps), t = 1 / s, x_hat = a * t
    a = x - sample_mean
    s = np.sqrt(sample_var + eps)
    t = 1.0 / s
    dx_hat = dout * gamma
    dt = np.sum(dx_hat * a, axis=0)
    da = dx_hat * t
    ds = -dt / s**2
    dv = ds / (2 * s)
    db = dv * np.ones_like(x) / N
    da += 2 * a * db
    dmu = -np.sum(da, axis=0)
    dx = da + dmu * np.ones_like(x) / N

    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    _, x_hat, _, sample_var, _, eps = cache
    N = dout.shape[0]

    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)
    dx = (N * dout - dbeta - x_hat * dgamma) / (N * np.sqrt(sample_var + eps))

    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    eps = ln_param.get("eps", 1e-5)
    mean = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    std = np.sqrt(var + eps)
    x_hat = (x - mean) / std
    out = gamma * x_hat + beta
    cache = (x_hat, std, gamma)
    return out, cache


def layernorm_backward(dout, cache):
    x_hat, std, gamma = cache
    D = dout.shape[1]

    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)

    dx_hat = dout * gamma
    dx = (D * dx_hat - np.sum(dx_hat, axis=1, keepdims=True)) / (D * std)
    dx -= x_hat * np.sum(dx_hat * x_hat, axis=1, keepdims=True) / (D * std)
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    N, C, H, W = x.shape
    x2d = x.transpose(0, 2, 3, 1).reshape(N * H * W, C)
    out2d, cache = batchnorm_forward(x2d, gamma, beta, bn_param)
    out = out2d.reshape(N, H, W, C).transpose(0, 3, 1, 2)
    return out, cache


def spatial_batchnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    dout2d = dout.transpose(0, 2, 3, 1).reshape(N * H * W, C)
    dx2d, dgamma, dbeta = batchnorm_backward_alt(dout2d, cache)
    dx = dx2d.reshape(N, H, W, C).transpose(0, 3, 1, 2)
    return dx, dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """gamma, beta: (1, C, 1, 1). Every group is handled like a layer norm over its channels."""
    N, C, H, W = x.shape
    c_per_group = C // G

    out = np.zeros_like(x)
    caches = []
    for g in range(G):
        chans = slice(g * c_per_group, (g + 1) * c_per_group)
        # (N, C_g, H, W) -> (N, H, W, C_g) -> (N*H*W, C_g)
        x_g = x[:, chans].transpose(0, 2, 3, 1).reshape(-1, c_per_group)
        out_g, cache_g = layernorm_forward(x_g, gamma[0, chans, 0, 0], beta[0, chans, 0, 0], gn_param)
        out[:, chans] = out_g.reshape(N, H, W, c_per_group).transpose(0, 3, 1, 2)
        caches.append(cache_g)

    cache = (G, caches)
    return out, cache


def spatial_groupnorm_backward(dout, cache):
    G, caches = cache
    N, C, H, W = dout.shape
    c_per_group = C // G

    dx = np.zeros_like(dout)
    dgamma = np.zeros((1, C, 1, 1))
    dbeta = np.zeros((1, C, 1, 1))
    for g in range(G):
        chans = slice(g * c_per_group, (g + 1) * c_per_group)
        dout_g = dout[:, chans].transpose(0, 2, 3, 1).reshape(-1, c_per_group)
        dx_g, dgamma_g, dbeta_g = layernorm_backward(dout_g, caches[g])
        dx[:, chans] = dx_g.reshape(N, H, W, c_per_group).transpose(0, 3, 1, 2)
        dgamma[0, chans, 0, 0] = dgamma_g
        dbeta[0, chans, 0, 0] = dbeta_g

    return dx, dgamma, dbeta
