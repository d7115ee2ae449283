"""The norm registry: one entry per normalization, read by the staged graph, the verifier, its CLI, the shape
catalogue and the benchmarks instead of branching on names.

An entry says how the norm sees x (its statistics view and affine shape, a `staged.Layout`), how to call the
project's public forward and backward for a case, its PyTorch twin, which identities of the gradient hold for
it (checked by `verify.check`), which families of mistakes the diagnosis tries (`verify.diagnose`), and how
an element is named in a report. Adding a norm is adding an entry here, its stages in `verify.staged`, and its
kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import normkernels as nk

from . import staged

# Identities of the exact gradient, per statistics group, that verify.check tests in training mode.
SUM_DX = "sum(dx) = 0"  # the mean is subtracted: moving a whole group moves nothing
SUM_DX_XHAT = "sum(dx * xhat) = eps term"  # the scale is divided out: only eps keeps it from 0

# Families of mistakes verify.diagnose builds hypotheses from (see its module docstring).
VIEW = "statistics view"  # mean and variance over other axes of x, or of a view students build
STAGES = "stage replaced"  # divisors, eps, a missing path, a sign, gamma in or out of a sum
FLOAT32 = "float32 arithmetic"
DY_LAYOUT = "layout of dy"  # the backward reshaping dy without moving C last


@dataclass(frozen=True)
class Norm:
    name: str
    title: str  # in words: "batch norm"
    min_ndim: int  # of x
    shape_words: str  # the shapes of x it takes, for messages
    make_layout: Callable[..., staged.Layout]  # (x_shape, num_groups, normalized_shape) -> Layout
    call_forward: Callable  # (case, x, gamma, beta, backend, **kwargs) -> the public forward's outputs
    backward: Callable  # the public backward: (dy, x, gamma, *statistics, backend) -> gradients
    torch_twin: str  # the function of torch.nn.functional that computes the same
    call_torch: Callable  # (case, x, gamma, beta, eps) on torch tensors -> y
    describe: Callable[[staged.Layout, str, tuple], str]  # what an element of x, stats or affine means
    identities: tuple = (SUM_DX, SUM_DX_XHAT)
    mistakes: tuple = (VIEW, STAGES, FLOAT32, DY_LAYOUT)

    def layout(self, x_shape: tuple, *, num_groups=None, normalized_shape=None) -> staged.Layout:
        x_shape = tuple(int(d) for d in x_shape)
        if len(x_shape) < self.min_ndim:
            raise ValueError(f"{self.name} takes x of shape {self.shape_words}, got {x_shape}")
        return self.make_layout(x_shape, num_groups=num_groups, normalized_shape=normalized_shape)


def _channel_axes(x_shape: tuple) -> tuple:
    """(C,) affine broadcast as (1, C, 1, ...) against x."""
    return (1, x_shape[1]) + (1,) * (len(x_shape) - 2)


def _normalized_shape(normalized_shape, x_shape: tuple, name: str) -> tuple:
    if normalized_shape is None:
        raise ValueError(f"{name} needs normalized_shape: the trailing dims of x that are normalized")
    if isinstance(normalized_shape, int) or hasattr(normalized_shape, "__index__"):
        ns = (int(normalized_shape),)
    else:
        try:
            ns = tuple(int(d) for d in normalized_shape)
        except TypeError:
            raise TypeError(f"normalized_shape must be an int or a tuple of ints, got {normalized_shape!r}") from None
    nd = len(x_shape)
    if not ns or nd < len(ns) or x_shape[nd - len(ns) :] != ns:
        raise ValueError(f"normalized_shape={ns} must be the trailing dims of x, whose shape is {x_shape}")
    return ns


# --- layouts -------------------------------------------------------------------------------------------------


def _batch_norm_layout(x_shape, **_) -> staged.Layout:
    nd = len(x_shape)
    c = x_shape[1]
    return staged.Layout("batch_norm", x_shape, x_shape, (0, *range(2, nd)), (c,), _channel_axes(x_shape), (c,))


def _layer_norm_layout(x_shape, *, normalized_shape, **_) -> staged.Layout:
    ns = _normalized_shape(normalized_shape, x_shape, "layer_norm")
    nd = len(x_shape)
    lead = x_shape[: nd - len(ns)]
    return staged.Layout("layer_norm", x_shape, x_shape, tuple(range(nd - len(ns), nd)), ns, ns, lead)


def _instance_norm_layout(x_shape, **_) -> staged.Layout:
    n, c = x_shape[:2]
    return staged.Layout(
        "instance_norm", x_shape, x_shape, tuple(range(2, len(x_shape))), (c,), _channel_axes(x_shape), (n, c)
    )


def _group_norm_layout(x_shape, *, num_groups, **_) -> staged.Layout:
    if num_groups is None:
        raise ValueError("group_norm needs num_groups (cs231n's G)")
    n, c = x_shape[:2]
    g = int(num_groups)
    if g <= 0 or c % g:
        raise ValueError(f"num_groups={num_groups} must be a positive divisor of the {c} channels of x")
    view = (n, g, (c // g) * math.prod(x_shape[2:]))
    return staged.Layout("group_norm", x_shape, view, (2,), (c,), _channel_axes(x_shape), (n, g))


# --- words for an element ------------------------------------------------------------------------------------


def _nc(index: tuple) -> tuple:
    return (tuple(index) + (0, 0))[:2]


def _describe_batch_norm(lay, kind, index) -> str:
    if kind == "affine":
        return f"channel {index[0]}"
    n, c = _nc(index)
    return f"channel {index[0]}" if kind == "stats" else f"n={n}, channel {c}"


def _describe_layer_norm(lay, kind, index) -> str:
    lead = len(lay.stats_shape)
    if kind == "x":
        return f"row {index[:lead]}, element {index[lead:]}"
    return f"row {index}" if kind == "stats" else f"element {index}"


def _describe_instance_norm(lay, kind, index) -> str:
    if kind == "affine":
        return f"channel {index[0]}"
    n, c = _nc(index)
    return f"row (n={n}, channel {c})"


def _describe_group_norm(lay, kind, index) -> str:
    if kind == "affine":
        return f"channel {index[0]}"
    n, c = _nc(index)
    if kind == "stats":
        return f"row (n={n}, group {c})"
    return f"row (n={n}, group {c // (lay.x_shape[1] // lay.view_shape[1])}), channel {c}"


# --- the public ops and their PyTorch twins ------------------------------------------------------------------


def _torch_functional():
    import torch.nn.functional as F

    return F


NORMS: dict[str, Norm] = {
    norm.name: norm
    for norm in (
        Norm(
            "batch_norm",
            "batch norm",
            2,
            "(N, C, *spatial) or (N, D)",
            _batch_norm_layout,
            lambda case, x, gamma, beta, backend, **kw: nk.batch_norm_forward(x, gamma, beta, backend=backend, **kw),
            nk.batch_norm_backward,
            "batch_norm",
            lambda case, x, gamma, beta, eps: _torch_functional().batch_norm(
                x, None, None, gamma, beta, training=True, eps=eps
            ),
            _describe_batch_norm,
        ),
        Norm(
            "layer_norm",
            "layer norm",
            1,
            "(*, *normalized_shape)",
            _layer_norm_layout,
            lambda case, x, gamma, beta, backend, **kw: nk.layer_norm_forward(
                x, case.normalized_shape, gamma, beta, backend=backend, **kw
            ),
            nk.layer_norm_backward,
            "layer_norm",
            lambda case, x, gamma, beta, eps: _torch_functional().layer_norm(
                x, case.normalized_shape, gamma, beta, eps=eps
            ),
            _describe_layer_norm,
        ),
        Norm(
            "instance_norm",
            "instance norm",
            3,
            "(N, C, *spatial)",
            _instance_norm_layout,
            lambda case, x, gamma, beta, backend, **kw: nk.instance_norm_forward(x, gamma, beta, backend=backend, **kw),
            nk.instance_norm_backward,
            "instance_norm",
            lambda case, x, gamma, beta, eps: _torch_functional().instance_norm(x, weight=gamma, bias=beta, eps=eps),
            _describe_instance_norm,
        ),
        Norm(
            "group_norm",
            "group norm",
            2,
            "(N, C, *spatial) or (N, D)",
            _group_norm_layout,
            lambda case, x, gamma, beta, backend, **kw: nk.group_norm_forward(
                x, case.num_groups, gamma, beta, backend=backend, **kw
            ),
            nk.group_norm_backward,
            "group_norm",
            lambda case, x, gamma, beta, eps: _torch_functional().group_norm(x, case.num_groups, gamma, beta, eps=eps),
            _describe_group_norm,
        ),
    )
}


def get(name: str) -> Norm:
    """The registry entry of a norm; ValueError naming the known ones otherwise."""
    try:
        return NORMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"norm must be one of {tuple(NORMS)}, got {name!r}") from None
