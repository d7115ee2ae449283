"""Input validation shared by every op: each failure names the argument and what was expected."""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _device

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def input_array(x, *, min_ndim: int, op: str, backend: str = "cpu"):
    """x as a C-contiguous float32/float64 array: NumPy (a copy only when not contiguous already), or, for
    backend "cuda", a device array as it is (anything with __cuda_array_interface__, viewed without a copy)."""
    if _device.is_device_array(x):
        if backend != "cuda":
            raise TypeError(f'{op}: x is a GPU array ({type(x).__name__}): pass backend="cuda", or a numpy.ndarray')
        x = _device.as_device(x)
        _dtype_and_ndim(x, min_ndim, op)
        if not x.is_c_contiguous():
            raise ValueError(
                f"{op}: expected a C-contiguous device array for x, got strides {x.strides}; "
                "make a contiguous copy first (e.g. cupy.ascontiguousarray)"
            )
        return x
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"{op}: expected x to be a numpy.ndarray{' or a GPU array' if backend == 'cuda' else ''}, "
            f"got {type(x).__name__}"
        )
    _dtype_and_ndim(x, min_ndim, op)
    return np.ascontiguousarray(x)


def _dtype_and_ndim(x, min_ndim: int, op: str) -> None:
    if x.dtype not in DTYPES:
        raise TypeError(f"{op}: expected x to have dtype float32 or float64, got {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{op}: expected x with at least {min_ndim} dimensions, got shape {x.shape}")


def companion(name: str, a, like, *, op: str):
    """The rule for every array that comes with x (gamma, beta, dy, mean, rstd, running statistics): a
    floating-point numpy.ndarray with a NumPy x; a GPU array (adopted without a copy) with a GPU x."""
    if _device.is_device_array(like):
        if not _device.is_device_array(a):
            raise TypeError(f"{op}: x is a GPU array, so {name} must be one too, got {type(a).__name__}")
        a = _device.as_device(a)
    elif not isinstance(a, np.ndarray):
        raise TypeError(f"{op}: expected {name} to be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype.kind != "f":
        raise TypeError(f"{op}: expected {name} to have a floating-point dtype, got {a.dtype}")
    return a


def like_input(name: str, a, shape: tuple, like, *, op: str):
    """A companion array (gamma, beta, dy, mean, rstd) of x, flattened and checked for shape. On the host it
    is converted to x's dtype (any float dtype is accepted); with a GPU x it must have x's dtype already and
    be C-contiguous (a device array is used in place, never converted)."""
    a = companion(name, a, like, op=op)
    if a.shape != tuple(shape):
        raise ValueError(f"{op}: expected {name} of shape {tuple(shape)}, got {a.shape}")
    if isinstance(a, np.ndarray):
        return np.ascontiguousarray(a, dtype=like.dtype).reshape(-1)
    if a.dtype != like.dtype:
        raise TypeError(f"{op}: expected {name} to have x's dtype {like.dtype}, got {a.dtype}")
    if not a.is_c_contiguous():
        raise ValueError(f"{op}: expected a C-contiguous device array for {name}, got strides {a.strides}")
    return a.reshape(a.size)


def affine(gamma, beta, shape: tuple, like, *, op: str):
    """gamma and beta as kernel arguments: flat, checked and converted, or an empty array for None."""
    device = _device.is_device_array(like)
    g = _device.empty(0, like.dtype, device=device) if gamma is None else like_input("gamma", gamma, shape, like, op=op)
    b = _device.empty(0, like.dtype, device=device) if beta is None else like_input("beta", beta, shape, like, op=op)
    return g, b


def running(name: str, a, channels: int, like, *, op: str):
    """running_mean / running_var: a float32 or float64 array of shape (C,) that the forward updates in place,
    so it is used as given (never a converted copy), must be writable, and on the GPU C-contiguous. Its dtype
    may differ from x's: the kernels compile for either."""
    a = companion(name, a, like, op=op)
    if a.dtype not in DTYPES:
        raise TypeError(f"{op}: expected {name} to have dtype float32 or float64, got {a.dtype}")
    if a.shape != (channels,):
        raise ValueError(f"{op}: expected {name} of shape ({channels},), got {a.shape}")
    if not isinstance(a, np.ndarray) and not a.is_c_contiguous():
        raise ValueError(f"{op}: expected a C-contiguous device array for {name}, got strides {a.strides}")
    if isinstance(a, np.ndarray) and not a.flags.writeable:
        raise ValueError(f"{op}: expected {name} to be writable (it is updated in place), got a read-only array")
    return a


def stats_ndim(name: str, a, like, allowed, *, op: str) -> int:
    """The ndim of a backward's mean or rstd, from which the backward infers its layout."""
    a = companion(name, a, like, op=op)
    if a.ndim not in allowed:
        raise ValueError(f"{op}: expected {name} with ndim in {list(allowed)}, got shape {a.shape}")
    return a.ndim


def flag(name: str, value, *, op: str) -> bool:
    """A bool (Python or NumPy); anything else, a truthy string included, is refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: expected {name} to be a bool, got {type(value).__name__}")
    return bool(value)


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def real(name: str, value, *, op: str, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite real number in [low, high] (bools are not numbers here)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{op}: expected {name} to be a real number, got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:  # an int beyond float64
        v = math.inf
    if not (math.isfinite(v) and low <= v <= high):
        where = f" in [{low}, {high}]" if (low, high) != (-math.inf, math.inf) else ""
        raise ValueError(f"{op}: expected {name} to be a finite number{where}, got {value!r}")
    return v


def eps(value, *, op: str) -> float:
    return real("eps", value, op=op, low=0.0)


def normalized_shape(value, x_shape: tuple, *, op: str) -> tuple[int, ...]:
    """normalized_shape as a tuple, which must be x's trailing dims."""
    shape = shape_tuple(value, op=op)
    if len(shape) > len(x_shape) or tuple(x_shape[len(x_shape) - len(shape) :]) != shape:
        raise ValueError(
            f"{op}: Given normalized_shape={list(shape)}, expected input with shape [*, "
            f"{', '.join(map(str, shape))}], but got input of size {list(x_shape)}"
        )
    return shape


def shape_tuple(value, *, op: str) -> tuple[int, ...]:
    """normalized_shape (an int, or a non-empty tuple or list of ints) as a tuple of ints."""
    if is_int(value):
        shape = (value,)
    elif isinstance(value, (tuple, list)) and all(is_int(d) for d in value):
        shape = tuple(value)
    else:
        raise TypeError(f"{op}: expected normalized_shape to be an int or a tuple of ints, got {value!r}")
    if not shape:
        raise ValueError(f"{op}: expected normalized_shape to be at least 1-dimensional, got {value!r}")
    return tuple(int(d) for d in shape)


def num_groups(value, x_shape: tuple, *, op: str) -> int:
    """num_groups of group norm: a positive int dividing C = x_shape[1]."""
    if not is_int(value):
        raise TypeError(f"{op}: expected num_groups to be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{op}: expected num_groups to be a positive int, got {value!r}")
    if x_shape[1] % value or value > max(1, x_shape[1]):  # C = 0 takes one group, not any number
        raise ValueError(
            f"{op}: Expected number of channels in input to be divisible by num_groups, "
            f"but got input of shape {list(x_shape)} and num_groups={value}"
        )
    return int(value)


def groups_from_stats(mean_shape: tuple, x_shape: tuple, *, op: str) -> int:
    """group_norm_backward's group count, mean.shape[1] of an (N, G) mean: it must divide C."""
    groups = mean_shape[1]
    if groups < 1 or x_shape[1] % groups:
        raise ValueError(
            f"{op}: expected mean of shape (N, num_groups) with num_groups dividing the {x_shape[1]} channels of x, "
            f"got {mean_shape}"
        )
    return groups


def values_per_channel(count: int, x_shape: tuple, training: bool, *, op: str) -> None:
    """Batch norm: training needs more than one value per channel (none at all is an empty batch)."""
    if training and count == 1:
        raise ValueError(f"{op}: Expected more than 1 value per channel when training, got input size {list(x_shape)}")


def spatial_elements(x_shape: tuple, *, op: str) -> None:
    """Instance norm: one spatial element has variance 0 and y = beta, whatever x holds."""
    if math.prod(x_shape[2:]) == 1:
        raise ValueError(f"{op}: Expected more than 1 spatial element when training, got input size {list(x_shape)}")


def running_pair(running_mean, running_var, channels: int, like, training: bool, *, op: str):
    """running_mean and running_var: both or neither; both needed in eval mode."""
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: expected running_mean and running_var both given or both None")
    if running_mean is None:
        if not training:
            raise ValueError(f"{op}: expected running_mean and running_var when training=False")
        return None, None
    return running("running_mean", running_mean, channels, like, op=op), running(
        "running_var", running_var, channels, like, op=op
    )


def out_array(out, like, *, inputs: dict, view_shape: tuple, op: str):
    """out=: the preallocated x-shaped result (y or dx), written in place and returned. None, or an array of x's
    kind (NumPy with a NumPy x, a GPU array with a GPU x), x's shape and dtype, C-contiguous, writable, and sharing
    no memory with any input (inputs: name -> the array as the caller gave it, None for none). Returns out ready
    for the kernels: viewed as view_shape, the shape they index x by (a GPU array adopted without a copy), or
    None."""
    if out is None:
        return None
    if _device.is_device_array(like):
        if not _device.is_device_array(out):
            raise TypeError(f"{op}: x is a GPU array, so out must be one too, got {type(out).__name__}")
        adopted = _device.as_device(out)
    elif type(out) is not np.ndarray:  # a subclass (np.matrix ...) may not keep the shapes the kernels write
        raise TypeError(f"{op}: expected out to be a numpy.ndarray (not a subclass), got {type(out).__name__}")
    else:
        adopted = out
    if adopted.dtype != like.dtype:
        raise TypeError(f"{op}: expected out to have x's dtype {like.dtype}, got {adopted.dtype}")
    if tuple(adopted.shape) != tuple(like.shape):
        raise ValueError(f"{op}: expected out of x's shape {tuple(like.shape)}, got {tuple(adopted.shape)}")
    contiguous = adopted.flags.c_contiguous if isinstance(adopted, np.ndarray) else adopted.is_c_contiguous()
    if not contiguous:
        raise ValueError(f"{op}: expected a C-contiguous out, got strides {adopted.strides}")
    if isinstance(adopted, np.ndarray) and not adopted.flags.writeable:
        raise ValueError(f"{op}: expected out to be writable, got a read-only array")
    for name, a in inputs.items():
        if a is not None and hasattr(a, "shape") and _device.may_overlap(out, a):
            raise ValueError(
                f"{op}: out may share memory with {name} (their byte ranges overlap): pass a separate array (the "
                f"kernels read {name} while they write out)"
            )
    return adopted.reshape(view_shape)
