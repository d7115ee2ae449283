import numpy as np


def batchnorm_forward(x, gamma, beta, bn_param):
    """
    Forward pass for batch normalization, written as the computational graph
    from the lecture (9 nodes) so the backward pass can walk it in reverse.
    """
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)

    N, D = x.shape
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))

    out, cache = None, None
    if mode == "train":
        # node 1: sample mean
        sample_mean = 1.0 / N * np.sum(x, axis=0)
        # node 2: x minus mean
        x_minus_mean = x - sample_mean
        # node 3: square
        x_minus_mean_sq = x_minus_mean**2
        # node 4: sample variance
        sample_var = 1.0 / N * np.sum(x_minus_mean_sq, axis=0)
        # node 5: sqrt(var + eps)
        sqrt_var = np.sqrt(sample_var + eps)
        # node 6: invert
        inv_sqrt_var = 1.0 / sqrt_var
        # node 7: normalized
        x_normalized = x_minus_mean * inv_sqrt_var
        # node 8: gamma * x_normalized
        gamma_x = gamma * x_normalized
        # node 9: + beta
        out = gamma_x + beta

        cache = (x_normalized, gamma, x_minus_mean, inv_sqrt_var, sqrt_var, sample_var, eps)

        running_mean = momentum * running_mean + (1 - momentum) * sample_mean
        running_var = momentum * running_var + (1 - momentum) * sample_var
    elif mode == "test":
        x_normalized = (x - running_mean) / np.sqrt(running_var + eps)
        out = gamma * x_normalized + beta
    else:
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')

    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var

    return out, cache


def batchnorm_backward(dout, cache):
    """
    Backward pass for batch normalization: reverse the 9 nodes.
    """
    x_normalized, gamma, x_minus_mean, inv_sqrt_var, sqrt_var, sample_var, eps = cache
    N, D = dout.shape

    # node 9
    dbeta = np.sum(dout, axis=0)
    dgamma_x = dout
    # node 8
    dgamma = np.sum(dgamma_x * x_normalized, axis=0)
    dx_normalized = dgamma_x * gamma
    # node 7
    dinv_sqrt_var = np.sum(dx_normalized * x_minus_mean, axis=0)
    dx_minus_mean_1 = dx_normalized * inv_sqrt_var
    # node 6
    dsqrt_var = -1.0 / (sqrt_var**2) * dinv_sqrt_var
    # node 5
    dsample_var = 0.5 / np.sqrt(sample_var + eps) * dsqrt_var
    # node 4
    dx_minus_mean_sq = 1.0 / N * np.ones((N, D)) * dsample_var
    # node 3
    dx_minus_mean_2 = 2 * x_minus_mean * dx_minus_mean_sq
    # node 2 (both branches meet here)
    dx = dx_minus_mean_1 + dx_minus_mean_2

    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    x_normalized, gamma, _, inv_sqrt_var, _, _, _ = cache
    N = dout.shape[0]

    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * x_normalized, axis=0)
    dx = (1.0 / N) * gamma * inv_sqrt_var * (N * dout - dbeta - x_normalized * dgamma)

    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    """
    Layer norm: same graph as batch norm (copied from batchnorm_forward), no running averages.
    """
    eps = ln_param.get("eps", 1e-5)
    N = x.shape[0]

    # node 1
    sample_mean = 1.0 / N * np.sum(x, axis=0, keepdims=True)
    # node 2
    x_minus_mean = x - sample_mean
    # node 3
    x_minus_mean_sq = x_minus_mean**2
    # node 4
    sample_var = 1.0 / N * np.sum(x_minus_mean_sq, axis=0, keepdims=True)
    # node 5
    sqrt_var = np.sqrt(sample_var + eps)
    # node 6
    inv_sqrt_var = 1.0 / sqrt_var
    # node 7
    x_normalized = x_minus_mean * inv_sqrt_var
    # node 8, 9
    out = gamma * x_normalized + beta

    cache = (x_normalized, gamma, inv_sqrt_var)
    return out, cache


def layernorm_backward(dout, cache):
    x_normalized, gamma, inv_sqrt_var = cache
    N = dout.shape[0]

    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * x_normalized, axis=0)

    dx_normalized = dout * gamma
    sum_dxn = np.sum(dx_normalized, axis=0, keepdims=True)
    sum_dxn_xn = np.sum(dx_normalized * x_normalized, axis=0, keepdims=True)
    dx = (1.0 / N) * inv_sqrt_var * (N * dx_normalized - sum_dxn - x_normalized * sum_dxn_xn)

    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    N, C, H, W = x.shape
    # (N, C, H, W) -> (N, H, W, C) -> (N*H*W, C)
    x_transposed = np.transpose(x, (0, 2, 3, 1))
    x_reshaped = np.reshape(x_transposed, (-1, C))
    out_reshaped, cache = batchnorm_forward(x_reshaped, gamma, beta, bn_param)
    out_transposed = np.reshape(out_reshaped, (N, H, W, C))
    out = np.transpose(out_transposed, (0, 3, 1, 2))
    return out, cache


def spatial_batchnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    dout_transposed = np.transpose(dout, (0, 2, 3, 1))
    dout_reshaped = np.reshape(dout_transposed, (-1, C))
    dx_reshaped, dgamma, dbeta = batchnorm_backward(dout_reshaped, cache)
    dx_transposed = np.reshape(dx_reshaped, (N, H, W, C))
    dx = np.transpose(dx_transposed, (0, 3, 1, 2))
    return dx, dgamma, dbeta
