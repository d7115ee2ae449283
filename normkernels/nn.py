"""NumPy layers named and shaped like torch.nn's, on the project's kernels.

``BatchNorm1d/2d/3d``, ``InstanceNorm1d/2d/3d``, ``LayerNorm``, ``GroupNorm`` and ``RMSNorm`` take PyTorch's
constructor arguments and defaults, keep PyTorch's attribute names (``weight``, ``bias``, ``running_mean``,
``running_var``, ``num_batches_tracked``) and ``state_dict`` keys, and follow its train/eval semantics.
``SyncBatchNorm`` is BatchNorm with the statistics of a batch split across MPI processes
(``normkernels.distributed``). ``SwitchableNorm1d/2d/3d`` (Luo et al., 2018; PyTorch has no such layer) add the
two mixing parameters ``mean_weight`` and ``var_weight`` to BatchNorm's parameters and buffers, and are
state-dict compatible with ``normkernels.torch``'s modules of the same names. A layer is a forward and a
backward, as in cs231n: ``forward`` keeps what the backward needs, ``backward`` returns dx and sets
``<parameter>_grad`` for each parameter (``weight_grad`` and ``bias_grad``; RMSNorm only ``weight_grad``, as it
has no bias; the Switchable layers also ``mean_weight_grad`` and ``var_weight_grad``)::

    import numpy as np
    from normkernels import nn

    bn = nn.BatchNorm2d(16)                                  # weight, bias, running stats: (16,) float32
    x = np.random.default_rng(0).standard_normal((8, 16, 32, 32), dtype=np.float32)
    y = bn(x)                                                # (8, 16, 32, 32); running stats updated
    dx = bn.backward(np.ones_like(y))                        # (8, 16, 32, 32)
    bn.weight -= 0.1 * bn.weight_grad                        # weight_grad, bias_grad: (16,)
    bn.eval()                                                # normalize with the running statistics
    state = bn.state_dict()                                  # the keys torch.nn.BatchNorm2d has

Conventions:

- Gradients are overwritten, not accumulated: each ``backward`` sets the ``<parameter>_grad`` attributes
  (parameter dtype) from the latest forward; ``zero_grad()`` sets them to None. They are None for a
  parameter the layer was built without (``affine=False``, ``bias=False``). ``backward`` may be called again
  on the same forward; after a forward that raised there is nothing to differentiate until the next one.
- ``forward`` keeps a private copy of x (and of the parameters), so changing x or a parameter in place before
  the backward does not change the gradients. In eval mode with running statistics the backward treats them as
  constants (``dx = dy * weight * rstd``), as autograd does.
- Parameters default to float32 (``dtype=np.float64`` for double); x may be float32 or float64 either way
  and y and dx have x's dtype.
- The layers take NumPy arrays only. ``backend="cuda"`` runs the CUDA kernels with copies to the device
  and back; for arrays already on the GPU call the kernels (``normkernels.batch_norm_forward(x,
  backend="cuda")`` ...) directly.
- Where PyTorch does not check the channel count (no affine parameters, no running statistics), BatchNorm
  and GroupNorm still insist on ``num_features`` / ``num_channels``; InstanceNorm warns as PyTorch does.
- A batch a layer refuses (e.g. one value per channel when training) leaves every buffer as it was, so
  ``num_batches_tracked`` counts only the batches that were normalized. PyTorch's BatchNorm differs here: it
  increments ``num_batches_tracked`` before its check raises.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from . import _backends, _checks, _device
from ._batch_norm import batch_norm_backward, batch_norm_forward
from ._row_norms import (
    group_norm_backward,
    group_norm_forward,
    instance_norm_backward,
    instance_norm_forward,
    layer_norm_backward,
    layer_norm_forward,
    rms_norm_backward,
    rms_norm_forward,
)
from ._switchable_norm import switchable_norm_backward, switchable_norm_forward

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "RMSNorm",
    "SwitchableNorm1d",
    "SwitchableNorm2d",
    "SwitchableNorm3d",
    "SyncBatchNorm",
]

_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class _Saved(NamedTuple):
    """What a forward leaves for its backward."""

    x: np.ndarray  # the input as the kernels saw it (a batch dim added to unbatched input); a private copy
    params: dict  # name -> a copy of each parameter as the forward used it (None where the layer has none)
    stats: tuple  # what the forward kernel returned beside y, as its backward takes it: (mean, rstd), ...
    batch_stats: bool  # False: normalized with the running statistics, so those are constants
    out_shape: tuple  # y's shape, hence dy's


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns, as torch.nn.Module's does."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _flag(op: str, name: str, value) -> bool:
    return _checks.flag(name, value, op=op)


def _positive_int(op: str, name: str, value) -> int:
    if not _checks.is_int(value):
        raise TypeError(f"{op}: expected {name} to be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{op}: expected {name} to be a positive int, got {value!r}")
    return int(value)


def _parameter_dtype(op: str, dtype) -> np.dtype:
    try:
        dt = np.dtype(np.float32 if dtype is None else dtype)  # None: PyTorch's default dtype, not NumPy's
    except TypeError:
        dt = np.dtype(object)  # not a dtype at all: refused below with the same message
    if dt not in _checks.DTYPES:
        raise TypeError(f"{op}: expected dtype float32 or float64, got {dtype!r}")
    return dt


def _quoted(keys) -> str:
    return ", ".join(f'"{k}"' for k in keys)


def _ndims_message(allowed: tuple[int, ...], got: int) -> str:
    return f"expected {' or '.join(f'{d}D' for d in allowed)} input (got {got}D input)"


def _host_value(value):
    """A state_dict value as np.asarray can read it. Duck-typed, so that torch stays optional: a tensor that
    requires grad refuses .numpy() until detached, and one on a GPU must come to the host first."""
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "cpu"):
        value = value.cpu()
    return value


class _Norm:
    """Parameters, buffers, train/eval, the forward/backward protocol and the state dict of every layer.

    A subclass names its parameters in ``_parameter_names`` (state-dict order), sets its configuration and
    calls ``_make_state`` (or ``_start`` and sets its parameters itself), and supplies ``_batched`` (checks x,
    adds the batch dim of unbatched input), ``_normalize`` (the forward kernels) and ``_gradients`` (the
    backward kernels).
    """

    _parameter_names: tuple[str, ...] = ("weight", "bias")
    weight: np.ndarray | None
    bias: np.ndarray | None
    eps: float
    backend: str

    def _make_state(self, affine_shape: tuple, affine: bool, bias: bool, eps, dtype: DTypeLike, backend: str) -> None:
        """eps, backend and the parameters (PyTorch's initialization: weight ones, bias zeros)."""
        op = type(self).__name__
        self.eps = _checks.eps(eps, op=op)
        self._start(dtype, backend)
        bias = _flag(op, "bias", bias)
        self.weight = np.ones(affine_shape, self._dtype) if affine else None
        self.bias = np.zeros(affine_shape, self._dtype) if affine and bias else None

    def _start(self, dtype: DTypeLike, backend: str) -> None:
        """backend, the parameters' dtype, training mode, no gradients and nothing saved yet."""
        op = type(self).__name__
        self.backend = _backends.check(backend, op=op)
        self._dtype = _parameter_dtype(op, dtype)
        self.training = True
        self.zero_grad()
        self._saved: _Saved | None = None

    def train(self, mode: bool = True) -> _Norm:
        self.training = _flag(type(self).__name__, "mode", mode)
        return self

    def eval(self) -> _Norm:
        return self.train(False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """y (x.shape, x's dtype); keeps x, the statistics and the mode for ``backward``."""
        op = type(self).__name__
        self._saved = None  # a forward that fails leaves nothing for a backward to differentiate
        if not isinstance(x, np.ndarray):
            if _device.is_device_array(x):
                raise TypeError(
                    f"{op}: the layers take NumPy arrays, got a GPU array ({type(x).__name__}); "
                    'backend="cuda" copies NumPy input to the GPU and back. For arrays already on the GPU call '
                    'the kernels (e.g. normkernels.batch_norm_forward(x, backend="cuda")) directly'
                )
            raise TypeError(f"{op}: expected x to be a numpy.ndarray, got {type(x).__name__}")
        if x.dtype not in _checks.DTYPES:
            raise TypeError(f"{op}: expected x to have dtype float32 or float64, got {x.dtype}")
        xb = np.array(self._batched(x), order="C")  # a copy: x may change before the backward
        # copies too: an optimizer step between forward and backward must not change the gradients
        params = {n: None if getattr(self, n) is None else getattr(self, n).copy() for n in self._parameter_names}
        y, stats, batch_stats = self._normalize(xb)
        self._saved = _Saved(xb, params, stats, batch_stats, x.shape)
        return y.reshape(x.shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dx (dy.shape, x's dtype) for the latest forward; sets (overwrites) <parameter>_grad of each parameter."""
        op = type(self).__name__
        saved = self._saved
        if saved is None:
            raise RuntimeError(f"{op}: call forward before backward (nothing saved to differentiate)")
        if not isinstance(dy, np.ndarray):
            raise TypeError(f"{op}: expected dy to be a numpy.ndarray, got {type(dy).__name__}")
        if dy.dtype.kind != "f":
            raise TypeError(f"{op}: expected dy to have a floating-point dtype, got {dy.dtype}")
        if dy.shape != saved.out_shape:
            raise ValueError(
                f"{op}: expected dy of shape {saved.out_shape} (the last forward's output), got {dy.shape}"
            )
        dx, *grads = self._gradients(dy.reshape(saved.x.shape), saved)
        for name, grad in zip(self._parameter_names, grads, strict=True):
            param = getattr(self, name)
            setattr(self, f"{name}_grad", None if param is None else grad.astype(param.dtype))
        return dx.reshape(saved.out_shape)

    def zero_grad(self) -> None:
        for name in self._parameter_names:
            setattr(self, f"{name}_grad", None)

    def _batched(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _normalize(self, x: np.ndarray) -> tuple[np.ndarray, tuple, bool]:
        """(y, stats, batch_stats) of batched x: stats as the backward kernel takes them, e.g. (mean, rstd)."""
        raise NotImplementedError

    def _gradients(self, dy: np.ndarray, saved: _Saved) -> tuple:
        """(dx, one gradient per name in _parameter_names) of dy in the batched shape of saved.x."""
        raise NotImplementedError

    def _check_channels(self, x: np.ndarray, dim: int, name: str, expected: int) -> None:
        if x.shape[dim] != expected:
            raise ValueError(
                f"{type(self).__name__}: expected input's size at dim={dim} to match {name} ({expected}), "
                f"but got: {x.shape[dim]}."
            )

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        return [(n, getattr(self, n)) for n in self._parameter_names if getattr(self, n) is not None]

    def parameters(self) -> list[np.ndarray]:
        return [a for _, a in self.named_parameters()]

    def named_buffers(self) -> list[tuple[str, np.ndarray]]:
        return [(n, getattr(self, n)) for n in _BUFFERS if getattr(self, n, None) is not None]

    def buffers(self) -> list[np.ndarray]:
        return [a for _, a in self.named_buffers()]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters and buffers under PyTorch's keys, parameters first, as PyTorch orders them."""
        return {n: a.copy() for n, a in self.named_parameters() + self.named_buffers()}

    def load_state_dict(self, state_dict: Mapping, strict: bool = True) -> IncompatibleKeys:
        """Copy values (NumPy arrays, PyTorch tensors, anything np.asarray takes) into the existing arrays.

        The arrays keep their identity and dtype. Tensors are read detached and on the CPU, so a module's live
        parameters (``dict(module.named_parameters())``) and GPU tensors load as they do into PyTorch. As in
        PyTorch a 1-element (1,) value loads into a 0-d array (``num_batches_tracked``; checkpoints from before
        PyTorch 0.4 saved it so). Missing or unexpected keys (with ``strict``) and shape mismatches raise one
        RuntimeError listing every problem, as PyTorch's does; nothing is loaded then.
        """
        op = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{op}: expected state_dict to be a mapping, got {type(state_dict).__name__}")
        strict = _flag(op, "strict", strict)
        state_dict = self._upgrade(state_dict)
        own = dict(self.named_parameters() + self.named_buffers())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []  # in PyTorch's order: missing, unexpected, then each size mismatch
        if strict and missing:
            errors.append(f"Missing key(s) in state_dict: {_quoted(missing)}.")
        if strict and unexpected:
            errors.append(f"Unexpected key(s) in state_dict: {_quoted(unexpected)}.")
        values = {}
        for key, target in own.items():
            if key not in state_dict:
                continue
            try:
                value = np.asarray(_host_value(state_dict[key]))
            except Exception as exc:  # e.g. a meta tensor, or a dtype NumPy lacks (bfloat16)
                raise TypeError(
                    f"{op}: state_dict[{key!r}] ({type(state_dict[key]).__name__}) cannot be read as a NumPy array: "
                    f"{exc}"
                ) from exc
            if target.ndim == 0 and value.shape == (1,):  # PyTorch's rule for 0-d targets, and only that shape
                value = value.reshape(())
            if value.dtype.kind not in "biuf":
                errors.append(f"expected numbers for {key}, got dtype {value.dtype}.")
            elif value.shape != target.shape:
                errors.append(
                    f"size mismatch for {key}: copying a param with shape {value.shape} from checkpoint, "
                    f"the shape in current model is {target.shape}."
                )
            values[key] = value
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {op}:\n\t" + "\n\t".join(errors))
        for key, value in values.items():
            own[key][...] = value
        return IncompatibleKeys(missing, unexpected)

    def _upgrade(self, state_dict: Mapping) -> Mapping:
        """The state dict as the current version of the layer reads it."""
        return state_dict

    def _extra_repr(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        backend = "" if self.backend == "cpu" else f", backend={self.backend!r}"
        return f"{type(self).__name__}({self._extra_repr()}{backend})"


class _RunningNorm(_Norm):
    """BatchNorm's and InstanceNorm's shared constructor (PyTorch's _NormBase).

    weight, bias, running_mean, running_var: (num_features,); num_batches_tracked: 0-d int64.
    """

    running_mean: np.ndarray | None
    running_var: np.ndarray | None
    num_batches_tracked: np.ndarray | None

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
        backend: str = "cpu",
    ) -> None:
        op = type(self).__name__
        self.num_features = _positive_int(op, "num_features", num_features)
        self.momentum = None if momentum is None else _checks.real("momentum", momentum, op=op)
        self.affine = _flag(op, "affine", affine)
        self.track_running_stats = _flag(op, "track_running_stats", track_running_stats)
        self._make_state((self.num_features,), self.affine, bias, eps, dtype, backend)
        tracked = self.track_running_stats
        self.running_mean = np.zeros(self.num_features, self._dtype) if tracked else None
        self.running_var = np.ones(self.num_features, self._dtype) if tracked else None
        self.num_batches_tracked = np.array(0, np.int64) if tracked else None

    def _upgrade(self, state_dict: Mapping) -> Mapping:
        """As PyTorch: a state dict not marked version 2 or later (a plain dict, or one saved before PyTorch
        had num_batches_tracked) may lack num_batches_tracked, which then keeps its value."""
        version = (getattr(state_dict, "_metadata", None) or {}).get("", {}).get("version")
        if self.num_batches_tracked is None or "num_batches_tracked" in state_dict or (version or 0) >= 2:
            return state_dict
        return {**state_dict, "num_batches_tracked": self.num_batches_tracked.copy()}

    def _extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


class _BatchStatistics(_RunningNorm):
    """BatchNorm's use of the running statistics (PyTorch's _BatchNorm.forward), which the Switchable layers
    share: their batch statistics are batch norm's, kept and used the same way."""

    def _uses_batch_stats(self) -> bool:
        # PyTorch's bn_training: eval uses the running statistics whenever they exist, tracked or not
        return self.training or (self.running_mean is None and self.running_var is None)

    def _running_arguments(self) -> dict:
        """training, running_mean, running_var and momentum for the forward kernel.

        As PyTorch's _BatchNorm.forward, the buffers reach the kernel only to be updated (training and
        tracking) or used (eval). Training with tracking turned off after construction must leave them alone:
        given them with momentum 0, the kernel would still write 1 * stat + 0 * inf = NaN into them.
        """
        update = self.training and self.track_running_stats
        given = update or not self.training
        return dict(
            training=self._uses_batch_stats(),
            running_mean=self.running_mean if given else None,
            running_var=self.running_var if given else None,
            momentum=self._average_factor() if update else 0.0,
        )

    def _count_batch(self) -> None:
        """Called after the kernel, so that a refused batch is not counted; nothing to count when the layer
        was built untracked (None) or tracking is off."""
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked += 1

    def _average_factor(self) -> float:
        """PyTorch's exponential_average_factor: momentum, or 1/num_batches_tracked (a cumulative average);
        0 for momentum=None without a count, which PyTorch leaves at its initial 0."""
        if self.momentum is None:
            return 0.0 if self.num_batches_tracked is None else 1.0 / float(self.num_batches_tracked + 1)
        return self.momentum


class _BatchNorm(_BatchStatistics):
    """Statistics per channel over the batch and the spatial dims: x (N, C, *spatial) or (N, C)."""

    _ndims: tuple[int, ...]

    def _batched(self, x: np.ndarray) -> np.ndarray:
        op = type(self).__name__
        if x.ndim not in self._ndims:
            raise ValueError(f"{op}: {_ndims_message(self._ndims, x.ndim)}")
        self._check_channels(x, 1, "num_features", self.num_features)
        count = x.shape[0] * math.prod(x.shape[2:])
        _checks.values_per_channel(count, x.shape, self._uses_batch_stats(), op=op)
        return x

    def _normalize(self, x):
        running = self._running_arguments()
        y, mean, rstd = batch_norm_forward(x, self.weight, self.bias, eps=self.eps, **running, backend=self.backend)
        self._count_batch()
        return y, (mean, rstd), running["training"]

    def _gradients(self, dy, saved):
        return batch_norm_backward(
            dy, saved.x, saved.params["weight"], *saved.stats, training=saved.batch_stats, backend=self.backend
        )


class BatchNorm1d(_BatchNorm):
    """BatchNorm over (N, C) or (N, C, L), per channel."""

    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """BatchNorm over (N, C, H, W), per channel."""

    _ndims = (4,)


class BatchNorm3d(_BatchNorm):
    """BatchNorm over (N, C, D, H, W), per channel."""

    _ndims = (5,)


class SyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are the whole batch's, across the ranks of an MPI communicator (as
    torch.nn.SyncBatchNorm across a process group): x (N, C, *spatial) or (N, C), this rank's part of the batch.

    ``comm``: an mpi4py communicator (default ``MPI.COMM_WORLD``, imported at the first training forward); every
    rank must call forward and backward together. A rank's part may be empty or hold a single value per channel;
    only the whole batch needs more than one. ``weight_grad`` and ``bias_grad`` are this rank's share of the
    gradient: reduce them across ranks as any other parameter's. Eval mode never communicates: it normalizes with
    the running statistics, or, built with ``track_running_stats=False``, with this rank's own batch statistics
    (as torch.nn.SyncBatchNorm). Input one rank refuses in training (the wrong C, dtype or ndim; a dy of the wrong
    shape) is refused on every rank. See ``normkernels.distributed``.
    """

    _ndims = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        comm=None,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
        backend: str = "cpu",
    ) -> None:
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, bias=bias, dtype=dtype, backend=backend
        )
        self.comm = comm

    # Communicating: set by the latest forward (it trained, so its backward syncs too), and, within a forward or a
    # backward, once the call reached the collective (from then on a refusal reaches every rank through it).
    _synced = False
    _in_collective = False

    def forward(self, x: np.ndarray) -> np.ndarray:
        """As BatchNorm's; in training, input this rank refuses (wrong C, dtype, ndim) is refused on every rank."""
        self._in_collective = False
        self._synced = False
        try:
            return super().forward(x)
        except Exception as exc:
            if self.training and not self._in_collective:  # the others are in the allgather: tell them
                from .distributed import _communicator, refuse_forward

                refuse_forward(_communicator(self.comm, op=type(self).__name__), exc)
            raise

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """As BatchNorm's; after a training forward, a dy this rank refuses is refused on every rank."""
        self._in_collective = False
        try:
            return super().backward(dy)
        except Exception:
            if self._saved is not None and self._synced and not self._in_collective:
                from .distributed import _communicator, refuse_backward

                refuse_backward(_communicator(self.comm, op=type(self).__name__), self.num_features)
            raise

    def _batched(self, x: np.ndarray) -> np.ndarray:
        op = type(self).__name__
        if x.ndim < 2:
            raise ValueError(f"{op}: expected at least 2D input (got {x.ndim}D input)")
        self._check_channels(x, 1, "num_features", self.num_features)
        if not self.training:  # eval is this rank's alone (batch statistics when untracked): checked here
            count = x.shape[0] * math.prod(x.shape[2:])
            _checks.values_per_channel(count, x.shape, self._uses_batch_stats(), op=op)
        return x  # in training a part may hold one value per channel, or none: the whole batch is checked merged

    def _normalize(self, x):
        from .distributed import sync_batch_norm_forward

        running = self._running_arguments()
        if self.training:  # as torch.nn.SyncBatchNorm: only training syncs
            self._in_collective = True
            y, mean, rstd = sync_batch_norm_forward(
                x, self.weight, self.bias, eps=self.eps, **running, comm=self.comm, backend=self.backend
            )
        else:  # eval: the running statistics, or this rank's batch statistics when there are none; no communication
            y, mean, rstd = batch_norm_forward(x, self.weight, self.bias, eps=self.eps, **running, backend=self.backend)
        self._synced = self.training
        self._count_batch()
        return y, (mean, rstd), running["training"]

    def _gradients(self, dy, saved):
        from .distributed import sync_batch_norm_backward

        weight = saved.params["weight"]
        if not self._synced:
            return batch_norm_backward(
                dy, saved.x, weight, *saved.stats, training=saved.batch_stats, backend=self.backend
            )
        self._in_collective = True
        return sync_batch_norm_backward(dy, saved.x, weight, *saved.stats, comm=self.comm, backend=self.backend)


class _InstanceNorm(_RunningNorm):
    """Statistics per (sample, channel) over the spatial dims: x (N, C, *spatial) or unbatched (C, *spatial).

    With track_running_stats the running statistics follow PyTorch's F.instance_norm: batch norm on x viewed
    as (1, N*C, *spatial) (which is exactly instance norm) with the running statistics repeated N times, then
    averaged over the N copies; in eval each channel is normalized with its running statistics. momentum=None
    leaves them unchanged (PyTorch passes 0), and num_batches_tracked stays 0 (PyTorch never counts here).

    Unlike BatchNorm, PyTorch's InstanceNorm passes the buffers whenever they exist: with track_running_stats
    turned off after construction it normalizes with the batch's statistics, in training and in eval, and still
    averages them into the buffers (an inf in x reaches them). The layers here do the same, to stay its twin.
    """

    _unbatched_ndim: int

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        *,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
        backend: str = "cpu",
    ) -> None:
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, bias=bias, dtype=dtype, backend=backend
        )

    def _batched(self, x: np.ndarray) -> np.ndarray:
        op = type(self).__name__
        ndims = (self._unbatched_ndim, self._unbatched_ndim + 1)
        if x.ndim not in ndims:
            raise ValueError(f"{op}: {_ndims_message(ndims, x.ndim)}")
        xb = x if x.ndim == ndims[1] else x[np.newaxis]
        if xb.shape[1] != self.num_features and not (self.affine or self.track_running_stats):
            warnings.warn(
                f"{op}: input's size at dim={x.ndim - self._unbatched_ndim} does not match num_features. "
                "num_features is not used because affine=False and track_running_stats=False",
                stacklevel=3,
            )
        else:
            self._check_channels(x, x.ndim - self._unbatched_ndim, "num_features", self.num_features)
        return xb

    def _uses_batch_stats(self) -> bool:
        return self.training or not self.track_running_stats  # PyTorch's use_input_stats

    def _normalize(self, x):
        op = type(self).__name__
        batch_stats = self._uses_batch_stats()
        if batch_stats:
            _checks.spatial_elements(x.shape, op=op)
        if self.running_mean is None:
            y, mean, rstd = instance_norm_forward(x, self.weight, self.bias, eps=self.eps, backend=self.backend)
            return y, (mean, rstd), True
        if not batch_stats:  # each channel normalized with its running statistics: batch norm's eval mode
            y, mean, rstd = batch_norm_forward(
                x,
                self.weight,
                self.bias,
                eps=self.eps,
                training=False,
                running_mean=self.running_mean,
                running_var=self.running_var,
                backend=self.backend,
            )
            return y, (mean, rstd), False
        n, c = x.shape[:2]
        running_mean, running_var = np.tile(self.running_mean, n), np.tile(self.running_var, n)
        y, mean, rstd = batch_norm_forward(
            _as_one_batch(x),
            *(None if a is None else np.tile(a, n) for a in (self.weight, self.bias)),
            eps=self.eps,
            training=True,
            running_mean=running_mean,
            running_var=running_var,
            momentum=0.0 if self.momentum is None else self.momentum,
            backend=self.backend,
        )
        self.running_mean[...] = running_mean.reshape(n, c).mean(axis=0, dtype=np.float64)
        self.running_var[...] = running_var.reshape(n, c).mean(axis=0, dtype=np.float64)
        # the (N * C,) statistics of the one-batch view are instance norm's (N, C) ones
        return y.reshape(x.shape), (mean.reshape(n, c), rstd.reshape(n, c)), True

    def _gradients(self, dy, saved):
        weight = saved.params["weight"]
        if saved.batch_stats:
            return instance_norm_backward(dy, saved.x, weight, *saved.stats, backend=self.backend)
        return batch_norm_backward(dy, saved.x, weight, *saved.stats, training=False, backend=self.backend)


def _as_one_batch(x: np.ndarray) -> np.ndarray:
    """(N, C, *spatial) viewed as (1, N*C, *spatial): batch norm over it is instance norm."""
    return x.reshape(1, x.shape[0] * x.shape[1], *x.shape[2:])


class InstanceNorm1d(_InstanceNorm):
    """InstanceNorm over (N, C, L) or unbatched (C, L)."""

    _unbatched_ndim = 2


class InstanceNorm2d(_InstanceNorm):
    """InstanceNorm over (N, C, H, W) or unbatched (C, H, W)."""

    _unbatched_ndim = 3


class InstanceNorm3d(_InstanceNorm):
    """InstanceNorm over (N, C, D, H, W) or unbatched (C, D, H, W)."""

    _unbatched_ndim = 4


class LayerNorm(_Norm):
    """LayerNorm over the trailing ``normalized_shape`` dims: x (*, *normalized_shape), any leading dims.

    weight, bias: normalized_shape (bias only with elementwise_affine, and only when ``bias``).
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...] | list[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype: DTypeLike = np.float32,
        backend: str = "cpu",
    ) -> None:
        op = type(self).__name__
        dims = _checks.shape_tuple(normalized_shape, op=op)
        self.normalized_shape = tuple(_positive_int(op, "each dim of normalized_shape", d) for d in dims)
        self.elementwise_affine = _flag(op, "elementwise_affine", elementwise_affine)
        self._make_state(self.normalized_shape, self.elementwise_affine, bias, eps, dtype, backend)

    def _batched(self, x: np.ndarray) -> np.ndarray:
        _checks.normalized_shape(self.normalized_shape, x.shape, op=type(self).__name__)
        return x

    def _normalize(self, x):
        y, mean, rstd = layer_norm_forward(
            x, self.normalized_shape, self.weight, self.bias, eps=self.eps, backend=self.backend
        )
        return y, (mean, rstd), True

    def _gradients(self, dy, saved):
        return layer_norm_backward(dy, saved.x, saved.params["weight"], *saved.stats, backend=self.backend)

    def _extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )


class GroupNorm(_Norm):
    """GroupNorm: x (N, num_channels, *spatial), channels split into num_groups consecutive groups.

    weight, bias: (num_channels,).
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
        backend: str = "cpu",
    ) -> None:
        op = type(self).__name__
        self.num_groups = _positive_int(op, "num_groups", num_groups)
        self.num_channels = _positive_int(op, "num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ValueError(
                f"{op}: num_channels ({self.num_channels}) must be divisible by num_groups ({self.num_groups})"
            )
        self.affine = _flag(op, "affine", affine)
        self._make_state((self.num_channels,), self.affine, bias, eps, dtype, backend)

    def _batched(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 2:
            raise ValueError(f"{type(self).__name__}: expected at least 2D input (got {x.ndim}D input)")
        self._check_channels(x, 1, "num_channels", self.num_channels)
        # PyTorch's F.group_norm check, in every mode (GroupNorm has none): _verify_batch_size of x viewed as
        # (N * C // G, G, *spatial), so its message names that size, not x's
        size = [x.shape[0] * x.shape[1] // self.num_groups, self.num_groups, *x.shape[2:]]
        _checks.values_per_channel(size[0] * math.prod(size[2:]), size, True, op=type(self).__name__)
        return x

    def _normalize(self, x):
        y, mean, rstd = group_norm_forward(
            x, self.num_groups, self.weight, self.bias, eps=self.eps, backend=self.backend
        )
        return y, (mean, rstd), True

    def _gradients(self, dy, saved):
        return group_norm_backward(dy, saved.x, saved.params["weight"], *saved.stats, backend=self.backend)

    def _extra_repr(self) -> str:
        bias = self.bias is not None
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, bias={bias}"


class RMSNorm(_Norm):
    """RMSNorm (Zhang and Sennrich, 2019) over the trailing ``normalized_shape`` dims, as torch.nn.RMSNorm:
    ``y = x / sqrt(mean(x**2) + eps) * weight``, x (*, *normalized_shape), any leading dims.

    weight: normalized_shape (only with elementwise_affine). As torch's RMSNorm, there is no bias: the layer
    has no ``bias`` nor ``bias_grad`` attribute, and its state dict holds ``weight`` alone. eps None (the
    default, and what the attribute then keeps) is the machine epsilon of x's dtype, as PyTorch takes it.
    """

    _parameter_names = ("weight",)

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...] | list[int],
        eps: float | None = None,
        elementwise_affine: bool = True,
        *,
        dtype: DTypeLike = np.float32,
        backend: str = "cpu",
    ) -> None:
        op = type(self).__name__
        dims = _checks.shape_tuple(normalized_shape, op=op)
        self.normalized_shape = tuple(_positive_int(op, "each dim of normalized_shape", d) for d in dims)
        self.eps = None if eps is None else _checks.eps(eps, op=op)
        self.elementwise_affine = _flag(op, "elementwise_affine", elementwise_affine)
        self._start(dtype, backend)
        self.weight = np.ones(self.normalized_shape, self._dtype) if self.elementwise_affine else None

    def _batched(self, x: np.ndarray) -> np.ndarray:
        _checks.normalized_shape(self.normalized_shape, x.shape, op=type(self).__name__)
        return x

    def _normalize(self, x):
        y, rstd = rms_norm_forward(x, self.normalized_shape, self.weight, eps=self.eps, backend=self.backend)
        return y, (rstd,), True

    def _gradients(self, dy, saved):
        return rms_norm_backward(dy, saved.x, saved.params["weight"], *saved.stats, backend=self.backend)

    def _extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class _SwitchableNorm(_BatchStatistics):
    """Switchable Normalization (Luo et al., 2018): x (N, C, *spatial), more than one spatial element.

    Each (n, c) is normalized with a mix of three statistics, instance (per (n, c)), layer (per n) and batch
    (per c), weighted by softmax(mean_weight) for the means and softmax(var_weight) for the (biased) variances;
    then scaled and shifted per channel. Parameters: weight, bias (C,) (with affine; ones and zeros), and
    mean_weight, var_weight (3,) (always; logits in the order instance, layer, batch, initialized to ones, an
    equal mix, as the authors' code does). The batch statistics are kept as BatchNorm keeps them
    (running_mean, running_var with the unbiased variance, num_batches_tracked; momentum None is a
    cumulative average) and replace the batch's in eval mode, as in PyTorch's BatchNorm. backward sets
    weight_grad, bias_grad, mean_weight_grad and var_weight_grad.
    """

    _parameter_names = ("weight", "bias", "mean_weight", "var_weight")
    _ndim: int

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        dtype: DTypeLike = np.float32,
        backend: str = "cpu",
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype=dtype, backend=backend)
        self.mean_weight = np.ones(3, self._dtype)
        self.var_weight = np.ones(3, self._dtype)

    def _batched(self, x: np.ndarray) -> np.ndarray:
        op = type(self).__name__
        if x.ndim != self._ndim:
            raise ValueError(f"{op}: {_ndims_message((self._ndim,), x.ndim)}")
        self._check_channels(x, 1, "num_features", self.num_features)
        if math.prod(x.shape[2:]) == 1:  # in eval too: the instance statistics are always the input's
            raise ValueError(
                f"{op}: expected more than 1 spatial element (the instance statistics are taken over them), "
                f"got input size {list(x.shape)}"
            )
        return x

    def _normalize(self, x):
        running = self._running_arguments()
        y, stats = switchable_norm_forward(
            x, self.weight, self.bias, self.mean_weight, self.var_weight, eps=self.eps, **running, backend=self.backend
        )
        self._count_batch()
        return y, (stats,), running["training"]

    def _gradients(self, dy, saved):
        p = saved.params
        return switchable_norm_backward(
            dy,
            saved.x,
            p["weight"],
            p["mean_weight"],
            p["var_weight"],
            *saved.stats,
            training=saved.batch_stats,
            backend=self.backend,
        )

    def _upgrade(self, state_dict: Mapping) -> Mapping:
        """No checkpoint predates num_batches_tracked here: a state dict without it is refused (strict), as
        normkernels.torch's modules refuse it."""
        return state_dict

    def _extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class SwitchableNorm1d(_SwitchableNorm):
    """Switchable Normalization over (N, C, L), L > 1. (BatchNorm1d's (N, C) has no instance statistics.)"""

    _ndim = 3


class SwitchableNorm2d(_SwitchableNorm):
    """Switchable Normalization over (N, C, H, W), H * W > 1."""

    _ndim = 4


class SwitchableNorm3d(_SwitchableNorm):
    """Switchable Normalization over (N, C, D, H, W), D * H * W > 1."""

    _ndim = 5
