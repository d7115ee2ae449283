"""cs231n assignment 2, cs231n/layers.py -- normalization part.

Staged computational graph everywhere; group norm with the older (1, C, 1, 1) gamma/beta.
"""

import numpy as np


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch norm forward. x: (N, D), gamma/beta: (D,). Returns (out, cache)."""
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)

    N, D = x.shape
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))

    out, cache = None, None
    if mode == "train":
        # *****START OF YOUR CODE (DO NOT DELETE/MODIFY THIS LINE)*****
        # 1. mean of every feature
        mean = np.sum(x, axis=0) / N
        # 2. center
        centered = x - mean
        # 3. square
        centered_sq = centered**2
        # 4. (biased) variance
        var = np.sum(centered_sq, axis=0) / N
        # 5. std with eps
        std = np.sqrt(var + eps)
        # 6. inverse std
        inv_std = 1.0 / std
        # 7. normalized x
        x_hat = centered * inv_std
        # 8. scale
        scaled = gamma * x_hat
        # 9. shift
        out = scaled + beta

        cache = (x_hat, gamma, centered, inv_std, std, var, eps)

        running_mean = momentum * running_mean + (1 - momentum) * mean
        running_var = momentum * running_var + (1 - momentum) * var
        # *****END OF YOUR CODE (DO NOT DELETE/MODIFY THIS LINE)*****
    elif mode == "test":
        # *****START OF YOUR CODE (DO NOT DELETE/MODIFY THIS LINE)*****
        x_hat = (x - running_mean) / np.sqrt(running_var + eps)
        out = gamma * x_hat + beta
        # *****END OF YOUR CODE (DO NOT DELETE/MODIFY THIS LINE)*****
    else:
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')

    # Store the updated running means back into bn_param
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var

    return out, cache


def batchnorm_backward(dout, cache):
    """Batch norm backward, one node of the graph at a time."""
    x_hat, gamma, centered, inv_std, std, var, eps = cache
    N, D = dout.shape

    # 9. out = scaled + beta
    dbeta = np.sum(dout, axis=0)
    dscaled = dout
    # 8. scaled = gamma * x_hat
    dgamma = np.sum(dscaled * x_hat, axis=0)
    dx_hat = dscaled * gamma
    # 7. x_hat = centered * inv_std
    dinv_std = np.sum(dx_hat * centered, axis=0)
    dcentered_1 = dx_hat * inv_std
    # 6. inv_std = 1 / std
    dstd = -1.0 / std**2 * dinv_std
    # 5. std = sqrt(var + eps)
    dvar = 0.5 / np.sqrt(var + eps) * dstd
    # 4. var = sum(centered_sq) / N
    dcentered_sq = np.ones((N, D)) * dvar / N
    # 3. centered_sq = centered ** 2
    dcentered_2 = 2 * centered * dcentered_sq
    # 2. centered = x - mean
    dx_1 = dcentered_1 + dcentered_2
    dmean = -np.sum(dcentered_1 + dcentered_2, axis=0)
    # 1. mean = sum(x) / N
    dx_2 = np.ones((N, D)) * dmean / N

    dx = dx_1 + dx_2
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    """Batch norm backward, simplified on paper."""
    x_hat, gamma, _, inv_std, _, _, _ = cache
    N = dout.shape[0]

    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)
    dx = (gamma * inv_std / N) * (N * dout - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer norm forward: statistics of every row over its D features."""
    eps = ln_param.get("eps", 1e-5)
    D = x.shape[1]

    mean = np.sum(x, axis=1, keepdims=True) / D
    centered = x - mean
    centered_sq = centered**2
    var = np.sum(centered_sq, axis=1, keepdims=True) / D
    std = np.sqrt(var + eps)
    inv_std = 1.0 / std
    x_hat = centered * inv_std
    out = gamma * x_hat + beta

    cache = (x_hat, gamma, centered, inv_std, std, var, eps)
    return out, cache


def layernorm_backward(dout, cache):
    """Layer norm backward: same graph as batch norm, reductions along axis 1."""
    x_hat, gamma, centered, inv_std, std, var, eps = cache
    N, D = dout.shape

    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)
    dx_hat = dout * gamma

    dinv_std = np.sum(dx_hat * centered, axis=1, keepdims=True)
    dcentered_1 = dx_hat * inv_std
    dstd = -1.0 / std**2 * dinv_std
    dvar = 0.5 / np.sqrt(var + eps) * dstd
    dcentered_sq = np.ones((N, D)) * dvar / D
    dcentered_2 = 2 * centered * dcentered_sq
    dmean = -np.sum(dcentered_1 + dcentered_2, axis=1, keepdims=True)

    dx = dcentered_1 + dcentered_2 + np.ones((N, D)) * dmean / D
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Spatial batch norm: move C last, flatten, reuse batchnorm_forward."""
    N, C, H, W = x.shape
    x_flat = x.transpose(0, 2, 3, 1).reshape(-1, C)
    out_flat, cache = batchnorm_forward(x_flat, gamma, beta, bn_param)
    out = out_flat.reshape(N, H, W, C).transpose(0, 3, 1, 2)
    return out, cache


def spatial_batchnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    dout_flat = dout.transpose(0, 2, 3, 1).reshape(-1, C)
    dx_flat, dgamma, dbeta = batchnorm_backward(dout_flat, cache)
    dx = dx_flat.reshape(N, H, W, C).transpose(0, 3, 1, 2)
    return dx, dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Group norm. x: (N, C, H, W), gamma/beta: (1, C, 1, 1), G groups of consecutive channels."""
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape

    x_group = x.reshape(N, G, C // G, H, W)
    mean = np.mean(x_group, axis=(2, 3, 4), keepdims=True)
    centered = x_group - mean
    var = np.mean(centered**2, axis=(2, 3, 4), keepdims=True)
    std = np.sqrt(var + eps)
    x_hat_group = centered / std
    x_hat = x_hat_group.reshape(N, C, H, W)
    out = gamma * x_hat + beta

    cache = (x_hat, x_hat_group, std, gamma, G)
    return out, cache


def spatial_groupnorm_backward(dout, cache):
    x_hat, x_hat_group, std, gamma, G = cache
    N, C, H, W = dout.shape

    dbeta = np.sum(dout, axis=(0, 2, 3), keepdims=True)
    dgamma = np.sum(dout * x_hat, axis=(0, 2, 3), keepdims=True)

    dx_hat = (dout * gamma).reshape(N, G, C // G, H, W)
    M = C // G * H * W
    sum_dx_hat = np.sum(dx_hat, axis=(2, 3, 4), keepdims=True)
    sum_dx_hat_x_hat = np.sum(dx_hat * x_hat_group, axis=(2, 3, 4), keepdims=True)
    dx_group = (M * dx_hat - sum_dx_hat - x_hat_group * sum_dx_hat_x_hat) / (M * std)

    dx = dx_group.reshape(N, C, H, W)
    return dx, dgamma, dbeta
