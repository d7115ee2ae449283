"""PyTorch front end: autograd Functions over the kernels, torch.nn.functional-style ops, nn.Module drop-ins.

    import normkernels.torch as nkt
    y = nkt.batch_norm(x, running_mean, running_var, weight, bias, training=True)   # as F.batch_norm
    model = nkt.convert(model)   # every torch.nn norm layer of the model now runs our kernels
    sn = nkt.SwitchableNorm2d(64)  # Switchable Normalization, which torch.nn lacks: a torch.nn.Module

Tensors reach the kernels without a copy: a CPU tensor as a NumPy view of its storage (``t.numpy()``), a CUDA
tensor through ``__cuda_array_interface__``, launched on PyTorch's current stream of the tensor's device. The
kernels' results come back the same way (``torch.from_numpy``, ``torch.as_tensor``). Copied are only
non-contiguous inputs (once, to contiguous tensors) and, for instance norm with running statistics, the (C,)
vectors it repeats N times as PyTorch does. The running statistics are updated in place, through views of the
buffers themselves.

Each Function's backward calls the op's backward kernel and is once differentiable: the kernels compute
gradients, not graphs, so a double backward raises. float32 and float64 run; other dtypes raise TypeError.
An input of a shape, size or count PyTorch's op refuses with RuntimeError raises ShapeError, which is both a
RuntimeError and a ValueError.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

try:
    import torch
except ImportError as exc:  # an optional dependency: the rest of normkernels works without it
    raise ImportError("normkernels.torch needs PyTorch: pip install torch") from exc

from torch.autograd.function import once_differentiable

import normkernels as nk

from . import _checks

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchNormFunction",
    "GroupNorm",
    "GroupNormFunction",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "InstanceNormFunction",
    "LayerNorm",
    "LayerNormFunction",
    "RMSNorm",
    "RMSNormFunction",
    "ShapeError",
    "SwitchableNorm1d",
    "SwitchableNorm2d",
    "SwitchableNorm3d",
    "SwitchableNormFunction",
    "batch_norm",
    "convert",
    "group_norm",
    "instance_norm",
    "layer_norm",
    "rms_norm",
    "switchable_norm",
]

DTYPES = (torch.float32, torch.float64)


class ShapeError(ValueError, RuntimeError):
    """An input whose shape, size or count does not fit the call (or a tensor the call needs is missing).

    A RuntimeError because PyTorch's own ops raise RuntimeError for these, and code written around torch's
    layers catches that; a ValueError because that is what normkernels raises for a wrong shape everywhere
    else. Where PyTorch raises ValueError (one value per channel, eps, a module's input dimensions), so do we.
    """


# Handing tensors to the kernels


def _check_tensors(op: str, input, **companions) -> None:
    """input a strided float32/float64 CPU or CUDA tensor; each companion (weight, bias, running statistics)
    None or a strided tensor of input's dtype on input's device."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: expected input to be a torch.Tensor, got {type(input).__name__}")
    _check_strided(op, "input", input)
    if input.dtype not in DTYPES:
        raise TypeError(
            f"{op}: input has dtype {input.dtype}; normkernels runs torch.float32 and torch.float64 only "
            f"(convert with .float() or .double())"
        )
    if input.device.type not in ("cpu", "cuda"):
        raise TypeError(f"{op}: input is on device {input.device}; normkernels runs CPU and CUDA tensors only")
    for name, t in companions.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: expected {name} to be a torch.Tensor or None, got {type(t).__name__}")
        _check_strided(op, name, t)
        if t.dtype != input.dtype:
            raise TypeError(f"{op}: expected {name} to have input's dtype {input.dtype}, got {t.dtype}")
        if t.device != input.device:
            raise ValueError(f"{op}: expected {name} on input's device {input.device}, got {t.device}")


def _check_strided(op: str, name: str, t: torch.Tensor) -> None:
    """The kernels read memory through strides: a sparse (or other non-strided) tensor has none to hand over."""
    if t.layout != torch.strided:
        raise TypeError(
            f"{op}: expected {name} to be a strided (dense) tensor, got layout {t.layout}; normkernels runs "
            f"strided tensors only (convert with .to_dense())"
        )


def _check_ndim(op: str, input: torch.Tensor, min_ndim: int) -> None:
    if input.dim() < min_ndim:
        raise ShapeError(f"{op}: expected input with at least {min_ndim} dimensions, got shape {tuple(input.shape)}")


def _check_shapes(op: str, shape: tuple, **companions) -> None:
    """Each companion None or of the given shape. Checked here, by the caller's names, rather than left to the
    kernels, which name their own arguments (gamma, beta) and, for instance norm, see the repeated statistics."""
    shape = tuple(shape)
    for name, t in companions.items():
        if t is not None and tuple(t.shape) != shape:
            raise ShapeError(f"{op}: expected {name} of shape {shape}, got {tuple(t.shape)}")


def _check_counts(op: str, c: int, **companions) -> None:
    """Batch norm's weight and bias: each None or of c elements, in any shape, as PyTorch checks them (only
    their count: (C, 1), (1, C) and, for C = 1, a 0-d tensor all pass); the Function reshapes them to (C,)."""
    for name, t in companions.items():
        if t is not None and t.numel() != c:
            raise ShapeError(f"{op}: expected {name} with {c} elements (one per channel), got shape {tuple(t.shape)}")


def _check_vectors(op: str, c: int, **companions) -> None:
    """Instance norm's weight, bias and running statistics: each None, (C,) or, for C = 1, 0-d. PyTorch repeats
    them N times with ``Tensor.repeat(N)``, which takes no more than one dimension."""
    for name, t in companions.items():
        if t is not None and not (tuple(t.shape) == (c,) or (c == 1 and t.dim() == 0)):
            allowed = "(1,) or ()" if c == 1 else f"({c},)"
            raise ShapeError(f"{op}: expected {name} of shape {allowed}, got {tuple(t.shape)}")


@contextmanager
def _shape_errors() -> Iterator[None]:
    """The ValueErrors of normkernels' shared checks of normalized_shape and num_groups, raised as ShapeError:
    PyTorch refuses each of those with RuntimeError. Message and traceback stay the check's."""
    try:
        yield
    except ShapeError:
        raise
    except ValueError as exc:
        raise ShapeError(*exc.args).with_traceback(exc.__traceback__) from None


def _check_running_pair(op: str, running_mean, running_var) -> None:
    """Both or neither, refused as PyTorch does, with ValueError."""
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: expected running_mean and running_var both given or both None")


def _number(op: str, name: str, value, *, non_negative: bool = False) -> float:
    """eps or momentum, checked here by the kernels' own rule (a finite real number, eps non-negative) so that a
    refusal names the caller, not the kernel. A bool passes, as it does in PyTorch."""
    value = float(value) if isinstance(value, bool) else value
    return _checks.real(name, value, op=op, low=0.0 if non_negative else -math.inf)


def _as_channels(t: torch.Tensor | None, c: int) -> torch.Tensor | None:
    """A weight or bias of c elements in any shape the checks let through, as the kernels' (C,): a view where
    the memory allows."""
    return t if t is None or tuple(t.shape) == (c,) else t.reshape(c)


def _shape_of(t: torch.Tensor | None):
    return None if t is None else t.shape


def _as_shaped(grad: torch.Tensor | None, shape) -> torch.Tensor | None:
    """A (C,) gradient in the shape of the argument it belongs to, which autograd requires."""
    return grad if grad is None or shape is None else grad.reshape(shape)


def _check_not_differentiable(op: str, **running) -> None:
    """Refuse, as PyTorch does, running statistics that require grad while grad mode is on: they are updated in
    place and get no gradient, a mistake that would otherwise pass silently. Checked by the functionals, before
    Function.apply: inside forward grad mode is always off, and ctx.needs_input_grad ignores it."""
    if not torch.is_grad_enabled():
        return
    for name, t in running.items():
        if isinstance(t, torch.Tensor) and t.requires_grad:
            raise RuntimeError(
                f"The function '{op}' is not differentiable with respect to argument '{name}'. "
                f"This input cannot have requires_grad True."
            )


class _KernelCall:
    """One call of the kernels on like's device: backend, tensors in and results out, each without a copy."""

    def __init__(self, like: torch.Tensor):
        self.device = like.device
        self.backend = "cuda" if like.is_cuda else "cpu"

    def arg(self, t: torch.Tensor | None):
        """A NumPy view of a CPU tensor, or the CUDA tensor itself (read through __cuda_array_interface__)."""
        if t is None:
            return None
        t = t.detach().contiguous()  # a no-op on the contiguous tensors the Functions pass
        return t.numpy() if self.backend == "cpu" else t

    def result(self, a) -> torch.Tensor | None:
        """A kernel's output as a tensor sharing its memory: NumPy array or Numba device array."""
        if a is None:
            return None
        return torch.from_numpy(a) if self.backend == "cpu" else torch.as_tensor(a, device=self.device)

    @contextmanager
    def launch(self) -> Iterator[None]:
        """On CUDA: the tensor's device, and PyTorch's current stream there, so that our kernels run after the
        work that produced the inputs and before the work that reads the outputs, as PyTorch's own ops do."""
        if self.backend == "cpu":
            yield
            return
        from numba import cuda

        from .cuda import ops

        with cuda.gpus[self.device.index]:
            stream = cuda.external_stream(torch.cuda.current_stream(self.device).cuda_stream)
            with ops.on_stream(stream):
                yield


def _for_update(t: torch.Tensor | None) -> torch.Tensor | None:
    """A running-statistics buffer the kernel can update in place: itself, or a contiguous copy to write back."""
    return t if t is None or t.is_contiguous() else t.contiguous()


def _write_back(updated: torch.Tensor | None, buffer: torch.Tensor | None) -> None:
    """Finish an in-place update made through a view autograd does not see: copy a contiguous stand-in back,
    and bump the buffer's version as PyTorch's own in-place update does (a stale saved copy then raises)."""
    if buffer is None:
        return
    if updated is not buffer:
        buffer.copy_(updated)
    torch.autograd.graph.increment_version(buffer)


def _gamma_for_grads(weight: torch.Tensor | None, bias_needs_grad: bool, shape, like: torch.Tensor):
    """The kernels return dbeta only with gamma; without weight, gamma = 1 gives the same dx and the dbeta."""
    if weight is not None or not bias_needs_grad:
        return weight
    return torch.ones(shape, dtype=like.dtype, device=like.device)


def _needed(ctx, grads: dict) -> tuple:
    """One gradient per input of forward: grads[i] where autograd asks for input i, None everywhere else."""
    return tuple(grads.get(i) if need else None for i, need in enumerate(ctx.needs_input_grad))


# autograd Functions


class BatchNormFunction(torch.autograd.Function):
    """BatchNorm as an autograd op over ``normkernels.batch_norm_forward`` / ``batch_norm_backward``.

    apply(input (N, C, *spatial) or (N, C), weight (C elements) | None, bias (C elements) | None,
    running_mean (C,) | None, running_var (C,) | None, training: bool, momentum: float, eps: float)
    -> y (input.shape). As in PyTorch, weight and bias may have any shape of C elements (their gradients come
    in that shape); the running statistics are (C,). With training, the batch statistics normalize and the
    running statistics, when given, are updated in place; without, the running statistics normalize.
    Backward is once differentiable.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, training, momentum, eps):
        op = "batch_norm"
        _check_tensors(op, input, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
        _check_ndim(op, input, 2)
        c = input.shape[1]
        _check_counts(op, c, weight=weight, bias=bias)
        _check_running_pair(op, running_mean, running_var)
        _check_shapes(op, (c,), running_mean=running_mean, running_var=running_var)
        if not training and running_mean is None:
            raise ShapeError(f"{op}: running_mean must be defined in evaluation mode")
        momentum, eps = _number(op, "momentum", momentum), _number(op, "eps", eps, non_negative=True)
        ctx.shapes = _shape_of(weight), _shape_of(bias)
        weight, bias = _as_channels(weight, c), _as_channels(bias, c)
        x = input.contiguous()
        call = _KernelCall(x)
        rm, rv = _for_update(running_mean), _for_update(running_var)
        with call.launch():
            y, mean, rstd = nk.batch_norm_forward(
                call.arg(x),
                call.arg(weight),
                call.arg(bias),
                eps=eps,
                training=training,
                running_mean=call.arg(rm),
                running_var=call.arg(rv),
                momentum=momentum,
                backend=call.backend,
            )
        if training:
            _write_back(rm, running_mean)
            _write_back(rv, running_var)
        ctx.training = training
        ctx.save_for_backward(x, weight, call.result(mean), call.result(rstd))
        return call.result(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        call = _KernelCall(x)
        gamma = _gamma_for_grads(weight, ctx.needs_input_grad[2], x.shape[1], x)
        with call.launch():
            grads = nk.batch_norm_backward(
                call.arg(dy),
                call.arg(x),
                call.arg(gamma),
                call.arg(mean),
                call.arg(rstd),
                training=ctx.training,
                backend=call.backend,
            )
        dx, dweight, dbias = map(call.result, grads)
        return _needed(ctx, {0: dx, 1: _as_shaped(dweight, ctx.shapes[0]), 2: _as_shaped(dbias, ctx.shapes[1])})


class LayerNormFunction(torch.autograd.Function):
    """LayerNorm as an autograd op over ``normkernels.layer_norm_forward`` / ``layer_norm_backward``.

    apply(input (*lead, *normalized_shape), normalized_shape, weight (normalized_shape) | None,
    bias (normalized_shape) | None, eps: float) -> y (input.shape). Backward is once differentiable.
    """

    @staticmethod
    def forward(ctx, input, normalized_shape, weight, bias, eps):
        op = "layer_norm"
        _check_tensors(op, input, weight=weight, bias=bias)
        with _shape_errors():
            normalized = _checks.normalized_shape(normalized_shape, tuple(input.shape), op=op)
        _check_shapes(op, normalized, weight=weight, bias=bias)
        eps = _number(op, "eps", eps, non_negative=True)
        return _row_norm_forward(ctx, nk.layer_norm_forward, input, normalized, weight, bias, eps, normalized)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        return _row_norm_backward(ctx, nk.layer_norm_backward, dy)


class GroupNormFunction(torch.autograd.Function):
    """GroupNorm as an autograd op over ``normkernels.group_norm_forward`` / ``group_norm_backward``.

    apply(input (N, C, *spatial), num_groups: int, weight (C,) | None, bias (C,) | None, eps: float)
    -> y (input.shape). Backward is once differentiable.
    """

    @staticmethod
    def forward(ctx, input, num_groups, weight, bias, eps):
        op = "group_norm"
        _check_tensors(op, input, weight=weight, bias=bias)
        _check_ndim(op, input, 2)
        with _shape_errors():
            _checks.num_groups(num_groups, tuple(input.shape), op=op)
        _check_shapes(op, input.shape[1:2], weight=weight, bias=bias)
        eps = _number(op, "eps", eps, non_negative=True)
        return _row_norm_forward(ctx, nk.group_norm_forward, input, num_groups, weight, bias, eps, input.shape[1:2])

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        return _row_norm_backward(ctx, nk.group_norm_backward, dy)


def _row_norm_forward(ctx, kernel, input, how, weight, bias, eps, affine_shape):
    """Layer norm's and group norm's forward, which differ only in the kernel, its second argument (how:
    normalized_shape or num_groups) and the shape of weight and bias (kept for backward's ones of gamma)."""
    x = input.contiguous()
    call = _KernelCall(x)
    with call.launch():
        y, mean, rstd = kernel(call.arg(x), how, call.arg(weight), call.arg(bias), eps=eps, backend=call.backend)
    ctx.affine_shape = tuple(affine_shape)
    ctx.save_for_backward(x, weight, call.result(mean), call.result(rstd))
    return call.result(y)


def _row_norm_backward(ctx, kernel, dy):
    """The backward of _row_norm_forward: gradients of input (0), weight (2) and bias (3)."""
    x, weight, mean, rstd = ctx.saved_tensors
    call = _KernelCall(x)
    gamma = _gamma_for_grads(weight, ctx.needs_input_grad[3], ctx.affine_shape, x)
    with call.launch():
        dx, dgamma, dbeta = kernel(
            call.arg(dy), call.arg(x), call.arg(gamma), call.arg(mean), call.arg(rstd), backend=call.backend
        )
    return _needed(ctx, {0: call.result(dx), 2: call.result(dgamma), 3: call.result(dbeta)})


class RMSNormFunction(torch.autograd.Function):
    """RMSNorm as an autograd op over ``normkernels.rms_norm_forward`` / ``rms_norm_backward``.

    apply(input (*lead, *normalized_shape), normalized_shape, weight (normalized_shape) | None,
    eps: float | None) -> y (input.shape). eps None is the machine epsilon of input's dtype, as in PyTorch.
    Backward is once differentiable.
    """

    @staticmethod
    def forward(ctx, input, normalized_shape, weight, eps):
        op = "rms_norm"
        _check_tensors(op, input, weight=weight)
        with _shape_errors():
            normalized = _checks.normalized_shape(normalized_shape, tuple(input.shape), op=op)
        _check_shapes(op, normalized, weight=weight)
        eps = None if eps is None else _number(op, "eps", eps, non_negative=True)
        x = input.contiguous()
        call = _KernelCall(x)
        with call.launch():
            y, rstd = nk.rms_norm_forward(call.arg(x), normalized, call.arg(weight), eps=eps, backend=call.backend)
        ctx.save_for_backward(x, weight, call.result(rstd))
        return call.result(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        call = _KernelCall(x)
        with call.launch():
            dx, dweight = nk.rms_norm_backward(
                call.arg(dy), call.arg(x), call.arg(weight), call.arg(rstd), backend=call.backend
            )
        return _needed(ctx, {0: call.result(dx), 2: call.result(dweight)})


class InstanceNormFunction(torch.autograd.Function):
    """InstanceNorm as an autograd op, with PyTorch's running statistics.

    apply(input (N, C, *spatial), running_mean (C,) | None, running_var (C,) | None, weight (C,) | None,
    bias (C,) | None, use_input_stats: bool, momentum: float, eps: float) -> y (input.shape). As in PyTorch,
    with C = 1 weight and bias may be 0-d, and so may the running statistics when only read
    (use_input_stats False).

    - input statistics, no running statistics: ``normkernels.instance_norm_forward``;
    - input statistics and running statistics: as PyTorch, batch norm of the (1, N * C, *spatial) view with
      the running statistics repeated N times (``batch_norm_forward`` updates the repeats), then their mean
      over N written back; the per-(n, c) statistics are instance norm's, so ``instance_norm_backward``;
    - running statistics only (use_input_stats False): ``batch_norm_forward`` in eval mode, and its backward.
    Backward is once differentiable.
    """

    @staticmethod
    def forward(ctx, input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps):
        op = "instance_norm"
        companions = {"running_mean": running_mean, "running_var": running_var, "weight": weight, "bias": bias}
        _check_tensors(op, input, **companions)
        _check_running_pair(op, running_mean, running_var)
        if not use_input_stats and running_mean is None:
            raise ShapeError(f"{op}: Expected running_mean and running_var to be defined when use_input_stats is false")
        _check_ndim(op, input, 2)
        c = input.shape[1]
        # each checked before it is repeated N times for the kernel, where a wrong size would read as N * C
        _check_vectors(op, c, **companions)
        if use_input_stats:  # updated in place from (C,) means over n: PyTorch cannot write those into a 0-d
            _check_shapes(op, (c,), running_mean=running_mean, running_var=running_var)
        momentum, eps = _number(op, "momentum", momentum), _number(op, "eps", eps, non_negative=True)
        ctx.shapes = _shape_of(weight), _shape_of(bias)
        weight, bias = _as_channels(weight, c), _as_channels(bias, c)
        # read only, in eval: a 0-d pair (C = 1) is viewed as (1,); tracked, they are (C,) already
        running_mean, running_var = _as_channels(running_mean, c), _as_channels(running_var, c)
        x = input.contiguous()
        call = _KernelCall(x)
        with call.launch():
            if not use_input_stats:
                y, mean, rstd = nk.batch_norm_forward(
                    call.arg(x),
                    call.arg(weight),
                    call.arg(bias),
                    eps=eps,
                    training=False,
                    running_mean=call.arg(running_mean),
                    running_var=call.arg(running_var),
                    backend=call.backend,
                )
            elif running_mean is None:
                y, mean, rstd = nk.instance_norm_forward(
                    call.arg(x), call.arg(weight), call.arg(bias), eps=eps, backend=call.backend
                )
            else:
                y, mean, rstd = _instance_norm_tracking(call, x, running_mean, running_var, weight, bias, momentum, eps)
        ctx.use_input_stats = use_input_stats
        ctx.save_for_backward(x, weight, call.result(mean), call.result(rstd))
        # y as the kernels return it, in x's shape: not a view made here, which autograd would refuse to let the
        # caller modify in place (ReLU(inplace=True) after the norm)
        return call.result(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        call = _KernelCall(x)
        gamma = _gamma_for_grads(weight, ctx.needs_input_grad[4], x.shape[1], x)
        with call.launch():
            args = (call.arg(dy), call.arg(x), call.arg(gamma), call.arg(mean), call.arg(rstd))
            if ctx.use_input_stats:
                dx, dgamma, dbeta = nk.instance_norm_backward(*args, backend=call.backend)
            else:  # the running statistics are constants: dx = dy * gamma * rstd
                dx, dgamma, dbeta = nk.batch_norm_backward(*args, training=False, backend=call.backend)
        dweight, dbias = _as_shaped(call.result(dgamma), ctx.shapes[0]), _as_shaped(call.result(dbeta), ctx.shapes[1])
        return _needed(ctx, {0: call.result(dx), 3: dweight, 4: dbias})


class SwitchableNormFunction(torch.autograd.Function):
    """Switchable Normalization (Luo et al., 2018) as an autograd op over ``normkernels.switchable_norm_forward``
    / ``switchable_norm_backward``.

    apply(input (N, C, *spatial), running_mean (C,) | None, running_var (C,) | None, weight (C,) | None,
    bias (C,) | None, mean_weight (3,), var_weight (3,), training: bool, momentum: float, eps: float)
    -> y (input.shape). mean_weight and var_weight are the logits of the instance, layer and batch statistics'
    weights. With training the batch statistics are the batch's and the running statistics, when given, are
    updated in place as batch norm's are; without, the running statistics are the batch statistics, constants
    for the backward. Gradients reach input, weight, bias, mean_weight and var_weight. Backward is once
    differentiable.
    """

    @staticmethod
    def forward(ctx, input, running_mean, running_var, weight, bias, mean_weight, var_weight, training, momentum, eps):
        op = "switchable_norm"
        mixing = {"mean_weight": mean_weight, "var_weight": var_weight}
        running = {"running_mean": running_mean, "running_var": running_var}
        _check_tensors(op, input, **running, weight=weight, bias=bias, **mixing)
        for name, t in mixing.items():
            if t is None:
                raise TypeError(f"{op}: expected {name} to be a torch.Tensor of shape (3,), got None")
        _check_ndim(op, input, 3)
        c = input.shape[1]
        _check_shapes(op, (c,), weight=weight, bias=bias, **running)
        _check_shapes(op, (3,), **mixing)
        _check_running_pair(op, running_mean, running_var)
        if not training and running_mean is None:
            raise ShapeError(f"{op}: running_mean must be defined in evaluation mode")
        momentum, eps = _number(op, "momentum", momentum), _number(op, "eps", eps, non_negative=True)
        x = input.contiguous()
        call = _KernelCall(x)
        rm, rv = _for_update(running_mean), _for_update(running_var)
        with call.launch():
            y, stats = nk.switchable_norm_forward(
                call.arg(x),
                call.arg(weight),
                call.arg(bias),
                call.arg(mean_weight),
                call.arg(var_weight),
                eps=eps,
                training=training,
                running_mean=call.arg(rm),
                running_var=call.arg(rv),
                momentum=momentum,
                backend=call.backend,
            )
        if training:
            _write_back(rm, running_mean)
            _write_back(rv, running_var)
        ctx.training = training
        ctx.save_for_backward(x, weight, mean_weight, var_weight, *map(call.result, stats))
        return call.result(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, mean_weight, var_weight, *stats = ctx.saved_tensors
        call = _KernelCall(x)
        gamma = _gamma_for_grads(weight, ctx.needs_input_grad[4], x.shape[1], x)
        with call.launch():
            grads = nk.switchable_norm_backward(
                call.arg(dy),
                call.arg(x),
                call.arg(gamma),
                call.arg(mean_weight),
                call.arg(var_weight),
                nk.SwitchableStats(*map(call.arg, stats)),
                training=ctx.training,
                backend=call.backend,
            )
        dx, dweight, dbias, dmean_weight, dvar_weight = map(call.result, grads)
        return _needed(ctx, {0: dx, 3: dweight, 4: dbias, 5: dmean_weight, 6: dvar_weight})


def _instance_norm_tracking(call, x, running_mean, running_var, weight, bias, momentum, eps):
    """Instance norm with running statistics as PyTorch computes it: batch norm of x viewed as
    (1, N * C, *spatial), with weight, bias and the running statistics repeated N times; the kernel updates the
    repeats and their mean over n becomes the running statistics.

    x: (N, C, *spatial). Returns y (x's shape), mean and rstd (N, C): the kernel's arrays, reshaped before they
    become tensors, so that the Function returns a tensor of its own rather than a view.
    """
    n, c = x.shape[:2]
    repeated = [None if t is None else t.detach().repeat(n) for t in (weight, bias, running_mean, running_var)]
    gamma, beta, rm, rv = map(call.arg, repeated)
    y, mean, rstd = nk.batch_norm_forward(
        call.arg(x.view(1, n * c, *x.shape[2:])),
        gamma,
        beta,
        eps=eps,
        training=True,
        running_mean=rm,
        running_var=rv,
        momentum=momentum,
        backend=call.backend,
    )
    for buffer, repeats in zip((running_mean, running_var), repeated[2:], strict=True):
        buffer.copy_(repeats.view(n, c).mean(0))  # on CUDA, on the current stream: after the kernel's update
    return y.reshape(tuple(x.shape)), mean.reshape(n, c), rstd.reshape(n, c)


# torch.nn.functional's signatures


def batch_norm(
    input: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """torch.nn.functional.batch_norm on our kernels. input: (N, C, *spatial) or (N, C); running_mean,
    running_var: (C,) or None; weight, bias: C elements (any shape, as in PyTorch) or None.
    Returns y (input.shape); in training, running_mean and running_var (when given) are updated in place."""
    if training and isinstance(input, torch.Tensor) and input.dim() >= 1:
        # PyTorch's check, first and with its message, where the kernel would name itself
        if input.shape[0] * input.shape[2:].numel() == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    _check_not_differentiable("batch_norm", running_mean=running_mean, running_var=running_var)
    return BatchNormFunction.apply(input, weight, bias, running_mean, running_var, training, momentum, eps)


def layer_norm(
    input: torch.Tensor,
    normalized_shape: int | Sequence[int],
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """torch.nn.functional.layer_norm on our kernels. input: (*lead, *normalized_shape); weight, bias:
    normalized_shape or None. Returns y (input.shape)."""
    return LayerNormFunction.apply(input, normalized_shape, weight, bias, eps)


def instance_norm(
    input: torch.Tensor,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """torch.nn.functional.instance_norm on our kernels. input: (N, C, *spatial); the rest (C,) or None (0-d
    passes for C = 1, as in PyTorch). Returns y (input.shape). With use_input_stats each (n, c) is normalized
    by its own statistics and the running statistics (when given) are updated in place by their mean over n;
    without, by the running ones."""
    if use_input_stats and isinstance(input, torch.Tensor) and input.shape[2:].numel() == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size {input.size()}")
    _check_not_differentiable("instance_norm", running_mean=running_mean, running_var=running_var)
    return InstanceNormFunction.apply(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


def group_norm(
    input: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """torch.nn.functional.group_norm on our kernels. input: (N, C, *spatial), C divisible by num_groups;
    weight, bias: (C,) or None. Returns y (input.shape)."""
    if isinstance(input, torch.Tensor) and input.dim() >= 2 and isinstance(num_groups, int) and num_groups > 0:
        # PyTorch's check, on the (N * C / G, G, *spatial) view: the values of all n are taken together
        size = [input.shape[0] * input.shape[1] // num_groups, num_groups, *input.shape[2:]]
        if size[0] * input.shape[2:].numel() == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")
    return GroupNormFunction.apply(input, num_groups, weight, bias, eps)


def rms_norm(
    input: torch.Tensor,
    normalized_shape: int | Sequence[int],
    weight: torch.Tensor | None = None,
    eps: float | None = None,
) -> torch.Tensor:
    """torch.nn.functional.rms_norm on our kernels. input: (*lead, *normalized_shape); weight: normalized_shape
    or None; eps None is the machine epsilon of input's dtype. Returns y (input.shape)."""
    return RMSNormFunction.apply(input, normalized_shape, weight, eps)


def switchable_norm(
    input: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean_weight: torch.Tensor,
    var_weight: torch.Tensor,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Switchable Normalization, with F.batch_norm's arguments (and defaults) plus the mixing logits.

    input: (N, C, *spatial) with more than one spatial element; running_mean, running_var, weight, bias: (C,)
    or None; mean_weight, var_weight: (3,), logits of the instance, layer and batch statistics. Returns y
    (input.shape). In training the batch statistics are the batch's and running_mean and running_var (when
    given) are updated in place as by F.batch_norm; in eval they are used instead (and then needed). There is
    no default for the parameters: there is no torch twin whose defaults to follow, and a forgotten mixing
    weight should not silently become an equal mix.
    """
    op = "switchable_norm"
    if isinstance(input, torch.Tensor) and input.dim() >= 3 and input.shape[2:].numel() == 1:
        # the kernel refuses it in either mode, with a message about training; this one says why
        raise ValueError(
            f"{op}: expected more than 1 spatial element (the instance statistics are taken over them), "
            f"got input size {list(input.shape)}"
        )
    _check_not_differentiable(op, running_mean=running_mean, running_var=running_var)
    return SwitchableNormFunction.apply(
        input, running_mean, running_var, weight, bias, mean_weight, var_weight, training, momentum, eps
    )


# nn.Module drop-ins: torch's classes (constructor, parameters, buffers, state dict, input checks) with a
# forward that mirrors theirs and calls the functions above. They add no state of their own, no __init__:
# convert turns a torch layer into one of them by setting its class.


class _BatchNormForward:
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """torch.nn.modules.batchnorm._BatchNorm.forward, on our batch_norm."""
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            # momentum None: the cumulative average of every batch so far
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        # batch statistics in training, and in eval when there are no running statistics to use
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        # running statistics only where they are used: updated in training when tracked, read in eval
        use_running = not self.training or self.track_running_stats
        return batch_norm(
            input,
            self.running_mean if use_running else None,
            self.running_var if use_running else None,
            self.weight,
            self.bias,
            bn_training,
            factor,
            self.eps,
        )


class BatchNorm1d(_BatchNormForward, torch.nn.BatchNorm1d):
    """torch.nn.BatchNorm1d on normkernels' kernels. Input (N, C) or (N, C, L)."""


class BatchNorm2d(_BatchNormForward, torch.nn.BatchNorm2d):
    """torch.nn.BatchNorm2d on normkernels' kernels. Input (N, C, H, W)."""


class BatchNorm3d(_BatchNormForward, torch.nn.BatchNorm3d):
    """torch.nn.BatchNorm3d on normkernels' kernels. Input (N, C, D, H, W)."""


class _InstanceNormForward:
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """torch.nn.modules.instancenorm._InstanceNorm.forward, on our instance_norm."""
        self._check_input_dim(input)
        feature_dim = input.dim() - self._get_no_batch_dim()
        if input.size(feature_dim) != self.num_features:
            # torch raises only with affine; with running statistics it warns that num_features is unused, then
            # fails on the statistics repeated N times. They are (num_features,) too: its affine error says so.
            if self.affine or self.track_running_stats:
                raise ValueError(
                    f"expected input's size at dim={feature_dim} to match num_features"
                    f" ({self.num_features}), but got: {input.size(feature_dim)}."
                )
            warnings.warn(
                f"input's size at dim={feature_dim} does not match num_features. "
                "You can silence this warning by not passing in num_features, "
                "which is not used because affine=False",
                stacklevel=2,
            )
        if input.dim() == self._get_no_batch_dim():  # unbatched: a batch of one
            return self._instance_norm(input.unsqueeze(0)).squeeze(0)
        return self._instance_norm(input)

    def _instance_norm(self, input: torch.Tensor) -> torch.Tensor:
        return instance_norm(
            input,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )


class InstanceNorm1d(_InstanceNormForward, torch.nn.InstanceNorm1d):
    """torch.nn.InstanceNorm1d on normkernels' kernels. Input (N, C, L) or (C, L)."""


class InstanceNorm2d(_InstanceNormForward, torch.nn.InstanceNorm2d):
    """torch.nn.InstanceNorm2d on normkernels' kernels. Input (N, C, H, W) or (C, H, W)."""


class InstanceNorm3d(_InstanceNormForward, torch.nn.InstanceNorm3d):
    """torch.nn.InstanceNorm3d on normkernels' kernels. Input (N, C, D, H, W) or (C, D, H, W)."""


class LayerNorm(torch.nn.LayerNorm):
    """torch.nn.LayerNorm on normkernels' kernels. Input (*lead, *normalized_shape)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class GroupNorm(torch.nn.GroupNorm):
    """torch.nn.GroupNorm on normkernels' kernels. Input (N, C, *spatial)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)


class RMSNorm(torch.nn.RMSNorm):
    """torch.nn.RMSNorm on normkernels' kernels. Input (*lead, *normalized_shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)


class _SwitchableNorm(torch.nn.Module):
    """Switchable Normalization (Luo et al., 2018) as a torch.nn.Module; torch.nn has no twin to subclass.

    The constructor, parameters, buffers, state dict keys (in order: weight, bias, mean_weight, var_weight,
    running_mean, running_var, num_batches_tracked) and repr are normkernels.nn's SwitchableNorm1d/2d/3d,
    state dicts loading either way; BatchNorm's constructor arguments and running statistics (momentum None is
    a cumulative average; eval normalizes with the running statistics where they exist). mean_weight and
    var_weight start at ones, an equal mix, as in the authors' code. As in normkernels.nn, a refused batch is
    not counted in num_batches_tracked (torch's BatchNorm counts it before it checks).
    """

    _ndim: int

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        op = type(self).__name__
        if not _checks.is_int(num_features):
            raise TypeError(f"{op}: expected num_features to be an int, got {type(num_features).__name__}")
        if num_features < 1:
            raise ValueError(f"{op}: expected num_features to be a positive int, got {num_features!r}")
        self.num_features = int(num_features)
        self.eps = _checks.eps(eps, op=op)
        self.momentum = None if momentum is None else _checks.real("momentum", momentum, op=op)
        self.affine = _checks.flag("affine", affine, op=op)
        self.track_running_stats = _checks.flag("track_running_stats", track_running_stats, op=op)
        factory = {"device": device, "dtype": dtype}
        if self.affine:
            self.weight = torch.nn.Parameter(torch.empty(self.num_features, **factory))
            self.bias = torch.nn.Parameter(torch.empty(self.num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.mean_weight = torch.nn.Parameter(torch.empty(3, **factory))
        self.var_weight = torch.nn.Parameter(torch.empty(3, **factory))
        if self.track_running_stats:
            self.register_buffer("running_mean", torch.zeros(self.num_features, **factory))
            self.register_buffer("running_var", torch.ones(self.num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        with torch.no_grad():
            if self.affine:
                self.weight.fill_(1)
                self.bias.zero_()
            self.mean_weight.fill_(1)
            self.var_weight.fill_(1)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        op = type(self).__name__
        if input.dim() != self._ndim:
            raise ValueError(f"{op}: expected {self._ndim}D input (got {input.dim()}D input)")
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"{op}: expected input's size at dim=1 to match num_features ({self.num_features}), "
                f"but got: {input.shape[1]}."
            )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """torch's _BatchNorm.forward around our switchable_norm."""
        self._check_input_dim(input)
        count = self.training and self.track_running_stats and self.num_batches_tracked is not None
        factor = 0.0 if self.momentum is None else self.momentum
        if count and self.momentum is None:  # the cumulative average of every batch so far, this one included
            factor = 1.0 / float(self.num_batches_tracked + 1)
        # batch statistics in training, and in eval when there are no running statistics to use
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        # running statistics only where they are used: updated in training when tracked, read in eval
        use_running = not self.training or self.track_running_stats
        y = switchable_norm(
            input,
            self.running_mean if use_running else None,
            self.running_var if use_running else None,
            self.weight,
            self.bias,
            self.mean_weight,
            self.var_weight,
            bn_training,
            factor,
            self.eps,
        )
        if count:  # after the call, so that a refused batch is not counted
            self.num_batches_tracked.add_(1)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class SwitchableNorm1d(_SwitchableNorm):
    """Switchable Normalization over (N, C, L), L > 1."""

    _ndim = 3


class SwitchableNorm2d(_SwitchableNorm):
    """Switchable Normalization over (N, C, H, W), H * W > 1."""

    _ndim = 4


class SwitchableNorm3d(_SwitchableNorm):
    """Switchable Normalization over (N, C, D, H, W), D * H * W > 1."""

    _ndim = 5


# convert

_OURS = {
    torch.nn.BatchNorm1d: BatchNorm1d,
    torch.nn.BatchNorm2d: BatchNorm2d,
    torch.nn.BatchNorm3d: BatchNorm3d,
    torch.nn.LayerNorm: LayerNorm,
    torch.nn.InstanceNorm1d: InstanceNorm1d,
    torch.nn.InstanceNorm2d: InstanceNorm2d,
    torch.nn.InstanceNorm3d: InstanceNorm3d,
    torch.nn.GroupNorm: GroupNorm,
    torch.nn.RMSNorm: RMSNorm,
}


def convert(module: torch.nn.Module) -> torch.nn.Module:
    """Make every torch.nn norm layer in module, recursively, one of ours, in place; returns module.

    Converted are the exact classes BatchNorm1d/2d/3d, LayerNorm, InstanceNorm1d/2d/3d, GroupNorm and RMSNorm:
    not their subclasses (ours among them), nor SyncBatchNorm, whose forward is collective. convert works in place, as
    torch.nn.SyncBatchNorm.convert_sync_batchnorm does, but on the norm layers themselves rather than on the
    containers holding them: each layer stays the same object, its class set to ours (which adds no state and
    overrides only ``forward``). So it keeps its parameters and buffers (an optimizer built before still
    updates them), attributes, training flag, hooks and the handles that remove them; the containers are left
    as they are; and a layer that another model holds as well is converted for that model too. The root, when
    it is a norm layer itself, is converted and returned. To keep the original model, convert a copy:
    ``convert(copy.deepcopy(model))``.

    A layer compiled with ``module.compile()`` comes back uncompiled, since its compiled call was traced
    through torch's forward: call ``compile()`` again if wanted. A compiled container recompiles by itself,
    its guards seeing the layers' new class.
    """
    for layer in module.modules():  # each shared layer once
        ours = _OURS.get(type(layer))
        if ours is not None:
            layer.__class__ = ours
            # module.compile() stores torch.compile(module._call_impl), traced through torch's forward: without
            # it, Module's class default (None) applies, the plain call, and so our forward
            layer.__dict__.pop("_compiled_call_impl", None)
    return module
