"""The norm registry: one entry per normalization, read by the staged graph, the verifier, its CLI, the shape
catalogue and the benchmarks instead of branching on names.

An entry says how the norm sees x (its statistics view and affine shape, a `staged.Layout`), its staged graph
(a class of `verify.staged`), its parameters after x and what kind each is, how to run the project's public
forward and backward for a case and which statistics the forward returns, its default eps, its PyTorch twin,
the error bounds and finite-difference steps its checks use (`verify.bounds`, `verify.finite_differences`),
which identities of the gradient hold for it (checked by `verify.check`), which families of mistakes the
diagnosis tries (`verify.diagnose`), and how an element is named in a report. Adding a norm is adding an entry
here, its stages in `verify.staged`, its bounds, and its kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import normkernels as nk

from . import bounds, finite_differences, staged

# Identities of the exact gradient that verify.check tests in training mode: per statistics group, or over all of x.
SUM_DX = "sum(dx) = 0"  # the mean is subtracted: moving a whole group moves nothing
SUM_DX_XHAT = "sum(dx * xhat) = eps term"  # the scale is divided out: only eps keeps it from 0
# every mean shifts with x and every variance stays (Switchable Norm: the weights sum to 1): moving all of x by
# one constant moves nothing
SUM_DX_ALL = "sum(dx) = 0 over x"

# Families of mistakes verify.diagnose builds hypotheses from (see its module docstring).
VIEW = "statistics view"  # mean and variance over other axes of x, or of a view students build
STAGES = "stage replaced"  # divisors, eps, a missing path, a sign, gamma in or out of a sum
FLOAT32 = "float32 arithmetic"
DY_LAYOUT = "layout of dy"  # the backward reshaping dy without moving C last
RMS_STAGES = "RMSNorm stage replaced"  # the mean subtracted, eps outside the root, the path through ms, M - 1
SWITCHABLE_STAGES = "switchable stage replaced"  # the softmax and its gradient, the kinds of statistics and paths

# Kinds of parameters: how each is shaped, drawn, stepped for finite differences and named in a report.
AFFINE = "affine"  # gamma, beta: the layout's affine shape, None allowed (no affine)
MIXING = "mixing"  # mean_weight, var_weight: (3,) logits of softmaxed mixing weights, always given
MIXING_SHAPE = (3,)


@dataclass(frozen=True)
class Norm:
    name: str
    title: str  # in words: "batch norm"
    min_ndim: int  # of x
    shape_words: str  # the shapes of x it takes, for messages
    make_layout: Callable[..., staged.Layout]  # (x_shape, num_groups, normalized_shape) -> Layout
    stages: type  # its staged graph: a class of verify.staged
    params: tuple  # (name, kind) of each parameter after x, in the order forward takes them
    run_forward: Callable  # (case, x, params: dict, backend, **kwargs) -> (y, saved): the public forward
    run_backward: Callable  # (case, dy, x, params: dict, saved, backend, **kwargs) -> (dx, *gradients of params)
    statistics: tuple  # the statistics the public forward returns, by their names in the staged cache["statistics"]
    flatten: Callable  # saved -> those statistics, in that order
    torch_twin: str | None  # the function of torch.nn.functional that computes the same (None: there is none)
    call_torch: Callable  # (case, x, params: dict, eps) on torch tensors -> y: that function, or torch ops
    describe: Callable[[staged.Layout, str, tuple], str]  # what an element of x, stats, affine or mixing means
    error_bounds: Callable  # (cache, dy, dtype) -> per-tensor bounds in one dtype (verify.bounds)
    fd_elements: Callable  # (cache, y_bound, dy) -> per element of x, the radius of analyticity and the rounding
    #                        of the outputs moving it changes (verify.finite_differences)
    quadratic: Callable  # (cache, v) -> per statistics group, the t**2 coefficient of var(x + t v)
    identities: tuple = (SUM_DX, SUM_DX_XHAT)
    mistakes: tuple = (VIEW, STAGES, FLOAT32)
    default_eps: float | None = 1e-5  # None: the machine epsilon of x's dtype
    statistics_words: str = ""  # what its statistics are, in a report, where the layout alone does not say
    centred: bool = True  # a mean is subtracted: constant x gives xhat = 0, y = beta

    def layout(self, x_shape: tuple, *, num_groups=None, normalized_shape=None) -> staged.Layout:
        x_shape = tuple(int(d) for d in x_shape)
        if len(x_shape) < self.min_ndim:
            raise ValueError(f"{self.name} takes x of shape {self.shape_words}, got {x_shape}")
        return self.make_layout(x_shape, num_groups=num_groups, normalized_shape=normalized_shape)

    @property
    def param_names(self) -> tuple:
        return tuple(name for name, _ in self.params)

    @property
    def gradients(self) -> tuple:
        """The gradients its backward returns, in order: dx, then one per parameter."""
        return ("dx",) + tuple(f"d{name}" for name in self.param_names)

    @property
    def tensors(self) -> tuple:
        """Every tensor a check compares: y and the gradients."""
        return ("y",) + self.gradients

    def kind(self, tensor: str) -> str:
        """How an element of a tensor is named (Layout.describe): "x" for y and dx, else its parameter's kind."""
        name = tensor[1:] if tensor.startswith("d") else tensor
        return dict(self.params).get(name, "x")

    def param_shape(self, name: str, lay: staged.Layout) -> tuple:
        return tuple(lay.affine_shape) if dict(self.params)[name] == AFFINE else MIXING_SHAPE

    @property
    def affine_variants(self) -> tuple:
        """How the affine is given in the catalogue's runs (verify.cases.AFFINE): gamma and beta, neither, or
        gamma alone; a norm without beta has only the last two."""
        names = self.param_names
        return ("gamma_beta", "none", "gamma") if "beta" in names else ("gamma", "none")

    def resolve_eps(self, eps, dtype) -> float:
        """eps as the kernels use it: given, or the norm's default for x's dtype."""
        if eps is not None:
            return float(eps)
        if self.default_eps is not None:
            return self.default_eps
        dtype = np.dtype(dtype)
        return float(np.finfo(dtype if dtype.kind == "f" else np.float64).eps)


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


def _rows_layout(norm: str, x_shape, normalized_shape) -> staged.Layout:
    """Layer norm's rows (and RMSNorm's): statistics per leading index over the trailing normalized dims."""
    ns = _normalized_shape(normalized_shape, x_shape, norm)
    nd = len(x_shape)
    lead = x_shape[: nd - len(ns)]
    return staged.Layout(norm, x_shape, x_shape, tuple(range(nd - len(ns), nd)), ns, ns, lead)


def _layer_norm_layout(x_shape, *, normalized_shape, **_) -> staged.Layout:
    return _rows_layout("layer_norm", x_shape, normalized_shape)


def _rms_norm_layout(x_shape, *, normalized_shape, **_) -> staged.Layout:
    return _rows_layout("rms_norm", x_shape, normalized_shape)


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


def _switchable_norm_layout(x_shape, **_) -> staged.Layout:
    """Rows (n, c) of the (N, C, S) view: the mixed mean and rstd are per row, as instance norm's."""
    n, c = x_shape[:2]
    view = (n, c, math.prod(x_shape[2:]))
    return staged.Layout("switchable_norm", x_shape, view, (2,), (c,), _channel_axes(x_shape), (n, c))


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


SWITCHABLE_KINDS = ("instance", "layer", "batch")  # the order of the mixing weights


def _describe_switchable_norm(lay, kind, index) -> str:
    if kind == MIXING:
        return f"weight {index[0]} ({SWITCHABLE_KINDS[index[0]]} statistics)"
    return _describe_instance_norm(lay, kind, index)


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


def _family(name, title, min_ndim, shape_words, make_layout, forward, backward, call_torch, describe, **more) -> Norm:
    """An entry of the four norms of the family: (gamma, beta), forward -> (y, mean, rstd), backward(dy, x,
    gamma, mean, rstd) -> (dx, dgamma, dbeta), torch.nn.functional's op of the same name."""
    return Norm(
        name,
        title,
        min_ndim,
        shape_words,
        make_layout,
        staged.Stages,
        (("gamma", AFFINE), ("beta", AFFINE)),
        lambda case, x, p, backend, **kw: _split(forward(case, x, p.get("gamma"), p.get("beta"), backend, **kw)),
        lambda case, dy, x, p, saved, backend, **kw: backward(dy, x, p.get("gamma"), *saved, backend=backend, **kw),
        ("mean", "rstd"),
        tuple,
        name,
        call_torch,
        describe,
        bounds.centred_bounds,
        finite_differences.centred_elements,
        finite_differences.centred_quadratic,
        **more,
    )


def _switchable_in_torch(case, x, p: dict, eps: float):
    """Switchable Normalization as a composition of torch ops (torch.nn.functional has none): biased variances,
    softmaxed weights, the formula of verify.staged.SwitchableNormStages."""
    import torch

    xv = x.reshape(x.shape[0], x.shape[1], -1)
    axes = [axes for axes, _ in staged.SWITCHABLE_KINDS.values()]
    stats = [(xv.mean(dim=a, keepdim=True), xv.var(dim=a, unbiased=False, keepdim=True)) for a in axes]
    w, v = torch.softmax(p["mean_weight"], 0), torch.softmax(p["var_weight"], 0)
    mean = w[0] * stats[0][0] + w[1] * stats[1][0] + w[2] * stats[2][0]
    var = v[0] * stats[0][1] + v[1] * stats[1][1] + v[2] * stats[2][1]
    y = (xv - mean) / torch.sqrt(var + eps)
    if p.get("gamma") is not None:
        y = y * p["gamma"].reshape(1, -1, 1)
    if p.get("beta") is not None:
        y = y + p["beta"].reshape(1, -1, 1)
    return y.reshape(x.shape)


def _split(outputs) -> tuple:
    """(y, *statistics) as the public forward returns them -> (y, the statistics its backward takes)."""
    return outputs[0], tuple(outputs[1:])


NORMS: dict[str, Norm] = {
    norm.name: norm
    for norm in (
        _family(
            "batch_norm",
            "batch norm",
            2,
            "(N, C, *spatial) or (N, D)",
            _batch_norm_layout,
            lambda case, x, gamma, beta, backend, **kw: nk.batch_norm_forward(x, gamma, beta, backend=backend, **kw),
            nk.batch_norm_backward,
            lambda case, x, p, eps: _torch_functional().batch_norm(
                x, None, None, p.get("gamma"), p.get("beta"), training=True, eps=eps
            ),
            _describe_batch_norm,
            mistakes=(VIEW, STAGES, FLOAT32, DY_LAYOUT),
        ),
        _family(
            "layer_norm",
            "layer norm",
            1,
            "(*, *normalized_shape)",
            _layer_norm_layout,
            lambda case, x, gamma, beta, backend, **kw: nk.layer_norm_forward(
                x, case.normalized_shape, gamma, beta, backend=backend, **kw
            ),
            nk.layer_norm_backward,
            lambda case, x, p, eps: _torch_functional().layer_norm(
                x, case.normalized_shape, p.get("gamma"), p.get("beta"), eps=eps
            ),
            _describe_layer_norm,
        ),
        _family(
            "instance_norm",
            "instance norm",
            3,
            "(N, C, *spatial)",
            _instance_norm_layout,
            lambda case, x, gamma, beta, backend, **kw: nk.instance_norm_forward(x, gamma, beta, backend=backend, **kw),
            nk.instance_norm_backward,
            lambda case, x, p, eps: _torch_functional().instance_norm(
                x, weight=p.get("gamma"), bias=p.get("beta"), eps=eps
            ),
            _describe_instance_norm,
        ),
        _family(
            "group_norm",
            "group norm",
            2,
            "(N, C, *spatial) or (N, D)",
            _group_norm_layout,
            lambda case, x, gamma, beta, backend, **kw: nk.group_norm_forward(
                x, case.num_groups, gamma, beta, backend=backend, **kw
            ),
            nk.group_norm_backward,
            lambda case, x, p, eps: _torch_functional().group_norm(
                x, case.num_groups, p.get("gamma"), p.get("beta"), eps=eps
            ),
            _describe_group_norm,
        ),
        Norm(
            "rms_norm",
            "RMS norm",
            1,
            "(*, *normalized_shape)",
            _rms_norm_layout,
            staged.RMSNormStages,
            (("gamma", AFFINE),),
            # forward -> (y, rstd); backward(dy, x, gamma, rstd) -> (dx, dgamma)
            lambda case, x, p, backend, **kw: _split(
                nk.rms_norm_forward(x, case.normalized_shape, p.get("gamma"), backend=backend, **kw)
            ),
            lambda case, dy, x, p, saved, backend, **kw: nk.rms_norm_backward(
                dy, x, p.get("gamma"), *saved, backend=backend, **kw
            ),
            ("rstd",),
            tuple,
            "rms_norm",
            lambda case, x, p, eps: _torch_functional().rms_norm(x, case.normalized_shape, p.get("gamma"), eps=eps),
            _describe_layer_norm,
            bounds.rms_bounds,
            finite_differences.rms_elements,
            finite_differences.rms_quadratic,
            identities=(SUM_DX_XHAT,),  # no mean is subtracted: sum(dx) is not 0
            mistakes=(RMS_STAGES, FLOAT32),
            default_eps=None,  # torch.finfo(dtype).eps, as F.rms_norm
            centred=False,
        ),
        Norm(
            "switchable_norm",
            "switchable norm",
            3,
            "(N, C, *spatial)",
            _switchable_norm_layout,
            staged.SwitchableNormStages,
            (("gamma", AFFINE), ("beta", AFFINE), ("mean_weight", MIXING), ("var_weight", MIXING)),
            # forward -> (y, SwitchableStats); backward(dy, x, gamma, mean_weight, var_weight, stats) -> 5 gradients
            lambda case, x, p, backend, **kw: _split(
                nk.switchable_norm_forward(
                    x, p.get("gamma"), p.get("beta"), p["mean_weight"], p["var_weight"], backend=backend, **kw
                )
            ),
            lambda case, dy, x, p, saved, backend, **kw: nk.switchable_norm_backward(
                dy, x, p.get("gamma"), p["mean_weight"], p["var_weight"], *saved, backend=backend, **kw
            ),
            tuple(nk.SwitchableStats._fields),
            lambda saved: tuple(saved[0]),
            None,  # no op of torch.nn.functional computes it: a composition of torch ops does
            _switchable_in_torch,
            _describe_switchable_norm,
            bounds.switchable_bounds,
            finite_differences.switchable_elements,
            finite_differences.switchable_quadratic,
            # the mixed statistics are not centred or scaled per row: neither per-row identity holds
            identities=(SUM_DX_ALL,),
            mistakes=(SWITCHABLE_STAGES, FLOAT32),
            statistics_words="instance, layer and batch statistics (per (sample, channel), per sample, per "
            "channel) mixed by softmaxed weights",
        ),
    )
}


def get(name: str) -> Norm:
    """The registry entry of a norm; ValueError naming the known ones otherwise."""
    try:
        return NORMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"norm must be one of {tuple(NORMS)}, got {name!r}") from None
