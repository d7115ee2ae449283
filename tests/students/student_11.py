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
        sample_mean = np.mean(x, axis=0)
        xmu = x - sample_mean
        sample_var = np.mean(xmu**2, axis=0)
        sqrtvar = np.sqrt(sample_var + eps)
        ivar = 1.0 / sqrtvar
        xhat = xmu * ivar
        out = gamma * xhat + beta
        cache = (xhat, gamma, xmu, ivar, sqrtvar, sample_var, eps)

        running_mean = momentum * running_mean + (1 - momentum) * sample_mean
        running_var = momentum * running_var + (1 - momentum) * sample_var
    elif mode == "test":
        sample_mean = np.mean(x, axis=0)
        sample_var = np.var(x, axis=0)
        xhat = (x - sample_mean) / np.sqrt(sample_var + eps)
        out = gamma * xhat + beta
    else:
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')

    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var

    return out, cache


def batchnorm_backward(dout, cache):
    xhat, gamma, xmu, ivar, sqrtvar, var, eps = cache
    N, D = dout.shape

    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * xhat, axis=0)
    dxhat = dout * gamma

    divar = np.sum(dxhat * xmu, axis=0)
    dxmu1 = dxhat * ivar
    dsqrtvar = 1.0 / (sqrtvar**2) * divar
    dvar = 0.5 / np.sqrt(var + eps) * dsqrtvar
    dsq = 1.0 / N * np.ones((N, D)) * dvar
    dxmu2 = 2 * xmu * dsq
    dx1 = dxmu1 + dxmu2
    dmu = -1 * np.sum(dxmu1 + dxmu2, axis=0)
    dx2 = 1.0 / N * np.ones((N, D)) * dmu
    dx = dx1 + dx2

    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    xhat, gamma, _, ivar, _, _, _ = cache
    N = dout.shape[0]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * xhat, axis=0)
    dx = (1.0 / N) * gamma * ivar * (N * dout - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    eps = ln_param.get("eps", 1e-5)
    sample_mean = np.mean(x, axis=1, keepdims=True)
    xmu = x - sample_mean
    sample_var = np.mean(xmu**2, axis=1, keepdims=True)
    ivar = 1.0 / np.sqrt(sample_var + eps)
    xhat = xmu * ivar
    out = gamma * xhat + beta
    cache = (xhat, gamma, ivar)
    return out, cache


def layernorm_backward(dout, cache):
    xhat, gamma, ivar = cache
    D = dout.shape[1]
    # the statistics are over axis 1 now, so every sum is over axis 1
    dbeta = np.sum(dout, axis=1)
    dgamma = np.sum(dout * xhat, axis=1)
    dxhat = dout * gamma
    dx = (
        (1.0 / D)
        * ivar
        * (D * dxhat - np.sum(dxhat, axis=1, keepdims=True) - xhat * np.sum(dxhat * xhat, axis=1, keepdims=True))
    )
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    N, C, H, W = x.shape
    x_flat = x.transpose(0, 2, 3, 1).reshape(-1, C)
    out_flat, cache = batchnorm_forward(x_flat, gamma, beta, bn_param)
    return out_flat.reshape(N, H, W, C).transpose(0, 3, 1, 2), cache


def spatial_batchnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    dout_flat = dout.transpose(0, 2, 3, 1).reshape(-1, C)
    dx_flat, dgamma, dbeta = batchnorm_backward(dout_flat, cache)
    return dx_flat.reshape(N, H, W, C).transpose(0, 3, 1, 2), dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    # gamma, beta: (C,). Loop over samples and groups to keep it readable.
    eps = gn_param.get("eps", 1e-5)
    N, C, H, W = x.shape
    cg = C // G

    out = np.zeros((N, C, H, W), dtype=np.float32)
    xhat = np.zeros_like(x)
    ivar = np.zeros((N, G))
    for n in range(N):
        for g in range(G):
            lo, hi = g * cg, (g + 1) * cg
            chunk = x[n, lo:hi]
            m = chunk.mean()
            v = chunk.var()
            ivar[n, g] = 1.0 / np.sqrt(v + eps)
            xhat[n, lo:hi] = (chunk - m) * ivar[n, g]
            out[n, lo:hi] = xhat[n, lo:hi]

    # scale and shift all channels at once
    out = gamma[None, :, None, None] * out + beta[None, :, None, None]
    cache = (xhat, ivar, gamma, G)
    return out, cache


def spatial_groupnorm_backward(dout, cache):
    xhat, ivar, gamma, G = cache
    N, C, H, W = dout.shape
    cg = C // G
    M = cg * H * W

    dbeta = np.sum(dout, axis=(0, 2, 3))
    dgamma = np.sum(dout * xhat, axis=(0, 2, 3))

    dx = np.zeros_like(dout)
    for n in range(N):
        for g in range(G):
            lo, hi = g * cg, (g + 1) * cg
            dxh = dout[n, lo:hi] * gamma[lo:hi, None, None]
            xh = xhat[n, lo:hi]
            dx[n, lo:hi] = ivar[n, g] / M * (M * dxh - dxh.sum() - xh * (dxh * xh).sum())

    return dx, dgamma, dbeta
