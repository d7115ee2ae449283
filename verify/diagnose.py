"""Diagnosis: which mistake makes the staged graph produce the implementation's tensor?

When a tensor disagrees with the reference, the verifier searches a space of hypotheses, each the staged
graph of verify.staged with a few things changed (`Change`), and reports the simplest one that reproduces
the implementation's tensor within the error bounds of verify.bounds. A hypothesis is built from the
reference graph, never copied from it. Each norm's registry entry (verify.norms) lists the families of
mistakes tried for it (`FAMILIES`); the four norms of the family get these:

    the statistics view    mean and variance over other axes of x or of a view students build: any other
                           subset of the axes, channels grouped c % G, per (n, g, h, w), another G, the
                           batch axis included, a reshape to (N*H*W, C) without moving C last (`Change.layout`)
    a stage replaced       a divisor of the mean, of the variance or of the backward's 1/M terms (every
                           product of dims, and M - 1), eps outside the square root or missing, a missing
                           mean or variance path, a flipped sign, a lost factor, gamma missing or outside a
                           sum, dgamma and dbeta over the wrong terms (`Stages.replace`)
    the arithmetic         float32 for the whole graph, or for the backward alone
    the layout of dy       the backward reshaping dy without moving C last while the forward did move it
                           (batch norm)

RMSNorm gets its own stages replaced (`rms_changes`): the mean subtracted (layer norm without beta), eps
outside the square root or missing, the square root missing, a divisor of the mean square (M - 1 among
them), the path through the mean square missing from dx (the - xhat mean(g xhat) term), its factors and
signs, gamma missing or outside the row sums; and the arithmetic. Switchable Normalization gets its own
(`switchable_changes`): raw logits as weights or weights normalized by their sum instead of a softmax, the
mean's and the variance's weights swapped or shared, an unbiased variance (the authors' code uses the
unbiased instance variance), eps outside the root; the softmax's gradient missing from the weights' gradients,
a missing path to x through the instance, layer or batch statistics (or through every statistic, or every
variance), a wrong divisor on one of them, gamma missing, dgamma without xhat; and the arithmetic.

Single changes are tried first, then pairs (a view with a stage, or two stages); the first level that
reproduces a tensor names the cause. When nothing does, the report says so and names the closest
hypothesis with its residual, never as a cause. A forward explained by another layer whose backward passes
the finite-difference rows is a *consistent* other layer, and the report says which.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import bounds as error_bounds
from . import compare, norms, staged
from .report import Report
from .staged import Layout, Stages

# ---------------------------------------------------------------------------------------------------------------
# The pieces of a hypothesis


def partition(view: Layout) -> tuple[bytes, bytes]:
    """Which elements of x share statistics, and which share gamma, when x is reshaped (in memory order) to
    the view's x_shape and normalized there, as canonical labellings: views with equal keys compute the same
    layer."""
    return _canonical(view.stats_index()).tobytes(), _canonical(view.affine_index()).tobytes()


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered by first appearance, so equal partitions give equal arrays."""
    _, first, inverse = np.unique(labels.reshape(-1), return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse]


@dataclass(frozen=True)
class Change:
    """One thing done differently from the staged graph."""

    key: str  # short and unique, e.g. "var_divisor=23"
    stage: str  # the stage it changes, as the report names it, e.g. "var = mean(sq)"
    words: str  # what the implementation does, in a student's words
    part: str  # "forward" (changes y; the backward then runs the reference stages on its values) or "backward"
    layout: Layout | None = None  # x reshaped (in memory order) to this layout's x_shape and normalized there
    stages: dict = field(default_factory=dict)  # stage name -> fn(self, *inputs)
    float32: str = ""  # "all" or "backward": that part computed in float32
    dy_order: np.ndarray | None = None  # backward: dy's elements taken in this (flat) order, dx put back
    post: Callable | None = None  # backward: a change of the returned dgamma/dbeta
    prior: int = 50  # among equally simple hypotheses, lower is named first


@dataclass
class Context:
    """The inputs the implementation was checked on, and what it returned."""

    x: np.ndarray  # float64
    params: dict  # the norm's parameters, float64, by name (gamma ones and beta zeros when not given)
    dy: np.ndarray
    eps: float
    lay: Layout
    dtype: np.dtype  # of the implementation's input
    got: dict  # tensor -> float64 array in the reference's shape (y, dx, dgamma, ...)

    @property
    def gamma(self) -> np.ndarray:
        return self.params["gamma"]

    @property
    def beta(self) -> np.ndarray:
        return self.params["beta"]

    @property
    def entry(self) -> norms.Norm:
        return norms.get(self.lay.norm)


# ---------------------------------------------------------------------------------------------------------------
# Evaluating a hypothesis


@dataclass
class Outcome:
    """A hypothesis evaluated: its tensors (x's or gamma's shape, float64), and on demand the error bounds a
    correct implementation of that graph in the context's dtype would meet."""

    tensors: dict
    make_bounds: Callable[[], dict]
    _bounds: dict | None = None

    def bound(self, tensor: str) -> np.ndarray:
        if self._bounds is None:
            self._bounds = self.make_bounds()
        return self._bounds[tensor]


def _forward(ctx: Context, changes: tuple) -> tuple:
    """The forward part of a hypothesis: (view, y in x's shape, cache, dtype)."""
    view = next((c.layout for c in changes if c.layout is not None), ctx.lay)
    stages = ctx.entry.stages(view, ctx.eps)
    overrides = {name: fn for c in changes for name, fn in c.stages.items()}
    if overrides:
        stages = stages.replace(**overrides)
    dtype = np.float32 if any(c.float32 == "all" for c in changes) else np.float64
    with np.errstate(all="ignore"):
        y_v, cache = staged.forward(ctx.x.reshape(view.x_shape), *ctx.params.values(), stages=stages, dtype=dtype)
    return view, np.asarray(y_v, np.float64).reshape(ctx.lay.x_shape), cache, dtype


def evaluate(ctx: Context, changes: tuple, *, backward: bool = True, memo: dict | None = None) -> Outcome:
    """The staged graph with these changes on the context's inputs: y (and dx, dgamma, dbeta)."""
    memo = {} if memo is None else memo
    forward = tuple(c for c in changes if c.part == "forward")
    key = tuple(c.key for c in forward)
    if key not in memo:
        memo[key] = _forward(ctx, forward)
    view, y, cache, dtype = memo[key]
    x_shape = ctx.lay.x_shape
    dy = ctx.dy
    order = next((c.dy_order for c in changes if c.dy_order is not None), None)
    if order is not None:
        dy = dy.reshape(-1)[order].reshape(x_shape)
    dy_v = dy.reshape(view.x_shape)
    float32 = dtype == np.float32 or any(c.float32 for c in changes)
    bound_dtype = np.float32 if float32 else ctx.dtype
    back = None
    if order is not None:
        back = np.empty_like(order)
        back[order] = np.arange(order.size)

    def unview(a):
        a = np.asarray(a, np.float64).reshape(x_shape)
        return a if back is None else a.reshape(-1)[back].reshape(x_shape)

    def make_bounds():  # the same for every backward change on this forward and this dy
        bkey = ("bounds", key, order is None, float32)
        if bkey not in memo:
            with np.errstate(all="ignore"):
                b = error_bounds.bounds(_cast(cache, np.float64), dy_v, bound_dtype)
            memo[bkey] = {"y": b.y.reshape(x_shape), "dx": unview(b.dx)}
            memo[bkey].update((nm, b.of(nm)) for nm in ctx.entry.gradients[1:])
        return memo[bkey]

    tensors = {"y": y}
    if backward:
        overrides = {name: fn for c in changes if c.part == "backward" for name, fn in c.stages.items()}
        run = dict(cache, stages=cache["stages"].replace(**overrides)) if overrides else cache
        if any(c.float32 == "backward" for c in changes):
            run = _cast(run, np.float32)
        with np.errstate(all="ignore"):
            grads = staged.backward(dy_v, run)
        tensors["dx"] = unview(grads["dx"])
        for nm in ctx.entry.gradients[1:]:
            tensors[nm] = None if grads[nm] is None else np.asarray(grads[nm], np.float64)
        for c in changes:
            if c.post is not None:
                tensors = c.post(tensors)
    return Outcome(tensors, make_bounds)


def _cast(cache: dict, dtype) -> dict:
    """The staged graph's cache with every array in dtype."""
    return {k: v.astype(dtype, copy=False) if isinstance(v, np.ndarray) else v for k, v in cache.items()}


SCREEN = 1.0  # a hypothesis further from a tensor than the tensor's own scale is no match: its bounds are not needed


def residual(got, outcome: Outcome, tensor: str) -> tuple[float, float]:
    """(max error / bound, max error / max|want|) of a hypothesis against a tensor: the first at most 1 is a
    match; the second says how close a non-match came. The bounds are computed only for hypotheses within
    SCREEN of the tensor's scale."""
    want = outcome.tensors.get(tensor)
    if got is None or want is None or np.shape(got) != np.shape(want):
        return np.inf, np.inf
    err = compare.error(got, want)
    if np.isnan(err).any():
        return np.inf, np.inf
    rel = compare.norm_rel_error(got, want)
    if rel > SCREEN:
        return np.inf, rel
    return float(compare.over(err, outcome.bound(tensor)).max(initial=0.0)), rel


# ---------------------------------------------------------------------------------------------------------------
# The space of hypotheses


def _rows(lay: Layout) -> bool:
    """Is the affine over the trailing normalized dims (layer norm, RMSNorm) rather than over channels?"""
    return tuple(lay.affine_broadcast) == tuple(lay.affine_shape)


def axis_names(lay: Layout) -> tuple:
    """Names of x's axes in the report: (N, D), (N, C, L), (N, C, H, W), (N, C, D, H, W), else axis k."""
    names = {2: ("N", "D"), 3: ("N", "C", "L"), 4: ("N", "C", "H", "W"), 5: ("N", "C", "D", "H", "W")}
    nd = len(lay.x_shape)
    if _rows(lay) and nd > 2:
        return tuple(f"axis {i}" for i in range(nd))
    return names.get(nd, ("N", "C") + tuple(f"S{i}" for i in range(nd - 2)))


def _axes_words(lay: Layout, axes) -> str:
    names = axis_names(lay)
    return "(" + ", ".join(names[a] for a in axes) + ")"


WORDS = {"N": "sample", "C": "channel", "D": "feature"}


def _per(lay: Layout, kept) -> str:
    """'per channel', 'per sample', 'per (sample, channel)', 'per (sample, h, w)' for the axes kept."""
    kept = tuple(kept)
    if not kept:
        return "over the whole tensor"
    names = [WORDS.get(n, n.lower()) for n in axis_names(lay)]
    words = [names[a] for a in kept]
    return f"per {words[0]}" if len(words) == 1 else "per (" + ", ".join(words) + ")"


def describe_statistics(lay: Layout) -> str:
    """'statistics per channel over (N, H, W)' for the reference layouts."""
    nd = len(lay.x_shape)
    words = norms.get(lay.norm).statistics_words
    if words:
        return words
    if lay.norm == "group_norm":
        per_group = lay.x_shape[1] // lay.groups
        return f"statistics per (sample, group of {per_group} channels) over the group's channels and " + (
            _axes_words(lay, range(2, nd)) if nd > 2 else "nothing else"
        )
    kept = [a for a in range(nd) if a not in lay.reduce_axes]
    return f"statistics {_per(lay, kept)} over {_axes_words(lay, lay.reduce_axes)}"


def _norm_name(lay: Layout) -> str:
    title = norms.get(lay.norm).title
    if lay.groups:
        return f"{title} with G={lay.groups}"
    if _rows(lay):
        k = len(lay.affine_shape)
        return f"{title} over the last axis" if k == 1 else f"{title} over the last {k} axes"
    return title


def _known_norms(x_shape: tuple) -> dict:
    """The standard norms on an x of this shape, by the statistics partition they make: partition -> name."""
    nd = len(x_shape)
    candidates = []
    if nd >= 2:
        candidates.append(("batch norm", staged.layout("batch_norm", x_shape)))
        candidates.append(
            (f"layer norm over {x_shape[1:]}", staged.layout("layer_norm", x_shape, normalized_shape=x_shape[1:]))
        )
        c = x_shape[1]
        candidates += [
            (f"group norm with G={g}", staged.layout("group_norm", x_shape, num_groups=g))
            for g in range(2, c)
            if c % g == 0
        ]
    if nd >= 3:
        candidates.append(("instance norm", staged.layout("instance_norm", x_shape)))
    known = {}
    for name, lay in candidates:
        known.setdefault(partition(lay)[0], name)
    return known


def _divisors(lay: Layout) -> dict:
    """Every count a student might divide by instead of M: products of dims of x and of the statistics view,
    and M - 1. value -> words."""
    names = axis_names(lay)
    out = {}
    for k in range(1, len(lay.x_shape) + 1):
        for axes in itertools.combinations(range(len(lay.x_shape)), k):
            d = math.prod(lay.x_shape[a] for a in axes)
            out.setdefault(d, "*".join(names[a] for a in axes) + f" = {d}")
    if lay.norm == "group_norm":
        n, g, rest = lay.view_shape
        out.setdefault(g, f"G = {g}")
        out.setdefault(lay.x_shape[1] // g, f"C/G = {lay.x_shape[1] // g}")
        out.setdefault(n * rest, f"N*C/G*... = {n * rest}")
    m = lay.count
    out[m - 1] = f"M - 1 = {m - 1}"
    out.pop(m, None)
    return {d: w for d, w in out.items() if d > 0}


def view_changes(lay: Layout) -> list[Change]:
    """Statistics over another arrangement of x, each a distinct layer (duplicates and the reference dropped)."""
    x_shape = lay.x_shape
    nd = len(x_shape)
    found: list[tuple[str, str, Layout, int]] = []
    names = axis_names(lay)
    # statistics over any other subset of x's axes, gamma as the norm's
    for k in range(1, nd + 1):
        for axes in itertools.combinations(range(nd), k):
            kept = [a for a in range(nd) if a not in axes]
            per = _per(lay, kept)
            words = f"mean and variance {per} over {_axes_words(lay, axes)}" if kept else f"mean and variance {per}"
            found.append((f"axes={axes}", words, lay.regroup(x_shape, axes), 20))
    if nd >= 2 and lay.norm != "layer_norm":
        n, c = x_shape[:2]
        spatial = math.prod(x_shape[2:])
        if lay.norm == "group_norm":
            g = lay.groups
            cg = c // g
            found.append(
                (
                    "groups=c%G",
                    f"channels grouped as c % G (a reshape to (N, C/G, G, ...)) instead of {g} consecutive groups",
                    lay.regroup((n, cg, g, spatial), (1, 3)),
                    5,
                )
            )
            found.append(
                (
                    "groups=per_position",
                    "mean and variance per (n, group, position): over the group's channels only, not its H, W",
                    lay.regroup((n, g, cg, spatial), (2,)),
                    8,
                )
            )
            found.append(
                (
                    "groups=with_batch",
                    "the batch axis included: statistics per group over (N, the group's channels, H, W)",
                    lay.regroup((n, g, cg * spatial), (0, 2)),
                    12,
                )
            )
        for g2 in range(1, c + 1):
            if c % g2 == 0 and g2 != lay.groups:
                found.append(
                    (
                        f"groups={g2}",
                        f"{g2} groups of {c // g2} channels",
                        lay.regroup((n, g2, c // g2 * spatial), (2,)),
                        15,
                    )
                )
        if nd >= 3:
            # students' reshapes: x.reshape(N*H*W, C) without moving C last, gamma along that view's last axis
            flat = (n * spatial, c)
            found.append(
                (
                    "view=(NHW,C) unmoved",
                    f"x reshaped to (N*{'*'.join(names[2:])}, C) without moving C last (transpose(0, 2, 3, 1) first)",
                    staged.layout("batch_norm", flat),
                    3,
                )
            )
            found.append(
                (
                    "view=(C,NHW) unmoved",
                    f"x reshaped to (C, N*{'*'.join(names[2:])}) without moving C first",
                    Layout(lay.norm, (c, n * spatial), (c, n * spatial), (1,), (c,), (c, 1), (c,)),
                    6,
                )
            )
    seen = {partition(lay)}
    known = _known_norms(x_shape)
    changes = []
    for key, words, view, prior in found:
        part = partition(view)
        if part in seen:
            continue
        seen.add(part)
        name = known.get(part[0], "") if view.affine_broadcast == lay.affine_broadcast else ""
        if name and name != _norm_name(lay):
            words += f": that is {name}"
        changes.append(Change(key, "mu and var, the statistics", words, "forward", layout=view, prior=prior))
    return changes


def forward_changes(lay: Layout, ctx: Context) -> list[Change]:
    """A stage of the forward done differently."""
    m = lay.count
    gamma, beta = ctx.gamma, ctx.beta
    out = []
    for d, words in _divisors(lay).items():
        out.append(
            Change(
                f"mean_divisor={d}",
                "mu = mean(x)",
                f"the mean divides the sum by {words} instead of M = {m}",
                "forward",
                stages={"mu": lambda s, x, d=d: s.sum(x) / d},
                prior=30,
            )
        )
        unbiased = d == m - 1
        out.append(
            Change(
                f"var_divisor={d}",
                "var = mean(sq)",
                f"the variance divides by {words}"
                + (": the unbiased variance (np.var(ddof=1)); normalization uses the biased one" if unbiased else "")
                + f" instead of M = {m}",
                "forward",
                stages={"var": lambda s, sq, d=d: s.sum(sq) / d},
                prior=10 if unbiased else 30,
            )
        )
    out += [
        Change(
            "eps_outside",
            "sqrtvar = sqrt(var + eps)",
            "eps is added outside the square root: 1 / (sqrt(var) + eps), as with np.std(x) + eps",
            "forward",
            stages={"sqrtvar": lambda s, var: np.sqrt(var) + s.eps},
            prior=5,
        ),
        Change(
            "eps_missing",
            "sqrtvar = sqrt(var + eps)",
            "eps is missing: 1 / sqrt(var)",
            "forward",
            stages={"sqrtvar": lambda s, var: np.sqrt(var)},
            prior=8,
        ),
        Change(
            "no_centering",
            "xmu = x - mu",
            "x is not centred: the mean is never subtracted",
            "forward",
            stages={"xmu": lambda s, x, mu: x + 0.0 * mu},
            prior=25,
        ),
        Change(
            "subtract_sqrt",
            "xhat = xmu * ivar",
            "sqrt(var + eps) is subtracted instead of divided by",
            "forward",
            stages={"xhat": lambda s, xmu, ivar: xmu - 1.0 / ivar},
            prior=40,
        ),
        Change(
            "var_all_axes",
            "var = mean(sq)",
            "the variance is taken over every element of x, not per statistics group",
            "forward",
            stages={"var": lambda s, sq: np.full_like(s.sum(sq), sq.mean())},
            prior=35,
        ),
        Change(
            "gamma_missing_forward",
            "gammax = gamma * xhat",
            "gamma is never applied in the forward",
            "forward",
            stages={"gammax": lambda s, gamma, xhat: xhat + 0.0 * gamma},
            prior=20,
        ),
        Change(
            "affine_swapped",
            "out = gammax + beta",
            "gamma and beta are swapped: beta * xhat + gamma",
            "forward",
            stages={
                "gammax": lambda s, g, xhat: beta.reshape(s.lay.affine_broadcast) * xhat,
                "out": lambda s, gammax, b: gammax + gamma.reshape(s.lay.affine_broadcast),
            },
            prior=40,
        ),
    ]
    return out


def _root_mistakes(*, base: str, square_grad: str, mean_sq: str, root: str, inverse: str) -> dict:
    """The mistakes in the backward of inverse = 1 / root, root = sqrt(mean_sq + eps), sq = base**2 that batch, layer,
    instance and group norm (xmu, var, sqrtvar, ivar) and RMSNorm (x, ms, rms, irms) share, by stage name: a flipped
    sign, the lost factors 2 and 1/2, eps left out. Keyed "sign", "no_factor_2", "no_half", "without_eps"."""
    return {
        "sign": Change(
            f"d{root}_sign",
            f"d{root} = -d{inverse} / {root}**2",
            f"the sign of the backward of {inverse} = 1 / {root} is flipped",
            "backward",
            stages={f"d{root}": lambda s, d_inverse, r: d_inverse / r**2},
            prior=15,
        ),
        "no_factor_2": Change(
            "no_factor_2",
            f"{square_grad} = 2 * {base} * dsq",
            f"the factor 2 from sq = {base}**2 is missing",
            "backward",
            stages={square_grad: lambda s, dsq, b: b * dsq},
            prior=15,
        ),
        "no_half": Change(
            "no_half",
            f"d{mean_sq} = 0.5 / sqrt({mean_sq} + eps) * d{root}",
            "the factor 1/2 from the square root is missing",
            "backward",
            stages={f"d{mean_sq}": lambda s, d_root, m: 1.0 / np.sqrt(m + s.eps) * d_root},
            prior=15,
        ),
        "without_eps": Change(
            f"d{mean_sq}_without_eps",
            f"d{mean_sq} = 0.5 / sqrt({mean_sq} + eps) * d{root}",
            f"the backward of the square root leaves eps out: 0.5 / sqrt({mean_sq})",
            "backward",
            stages={f"d{mean_sq}": lambda s, d_root, m: 0.5 / np.sqrt(m) * d_root},
            prior=25,
        ),
    }


def backward_changes(lay: Layout, ctx: Context) -> list[Change]:
    """A stage of the backward done differently."""
    root = _root_mistakes(base="xmu", square_grad="dxmu2", mean_sq="var", root="sqrtvar", inverse="ivar")
    m = lay.count
    out = []
    for d, words in {**_divisors(lay), 1: "1 (no division)"}.items():
        missing = d == 1
        said = "the 1/M is missing" if missing else f"divides by {words} instead of M = {m}"
        mean_path = {"dx2": lambda s, dmu, xmu, d=d: np.ones_like(xmu) / d * dmu}
        var_path = {"dsq": lambda s, dvar, xmu, d=d: np.ones_like(xmu) / d * dvar}
        prior = 10 if missing else 20
        out.append(
            Change(f"mean_path_divisor={d}", "dx2 = dmu / M, the backward of mu = mean(x)", said, "backward",
                   stages=mean_path, prior=prior)
        )  # fmt: skip
        out.append(
            Change(f"var_path_divisor={d}", "dsq = dvar / M, the backward of var = mean(sq)", said, "backward",
                   stages=var_path, prior=prior)
        )  # fmt: skip
        if not missing:
            out.append(
                Change(
                    f"backward_divisor={d}",
                    "dsq and dx2, the backward's 1/M terms",
                    f"both 1/M terms of the backward divide by {words} instead of M = {m}",
                    "backward",
                    stages={**mean_path, **var_path},
                    prior=8,
                )
            )
    view = lay.view_shape
    names = axis_names(lay) if view == lay.x_shape else tuple(f"axis {i}" for i in range(len(view)))
    for k in range(1, len(view) + 1):
        for axes in itertools.combinations(range(len(view)), k):
            if axes == tuple(lay.reduce_axes):
                continue
            words = "(" + ", ".join(names[a] for a in axes) + ")"
            out.append(
                Change(
                    f"backward_axes={axes}",
                    "divar and dmu, the backward's sums over each group",
                    f"the backward's sums run over {words} instead of {_axes_words(lay, lay.reduce_axes)}"
                    if view == lay.x_shape
                    else f"the backward's sums run over the view's {words}",
                    "backward",
                    stages={
                        "divar": lambda s, dxhat, xmu, axes=axes: (dxhat * xmu).sum(axis=axes, keepdims=True),
                        "dmu": lambda s, dx1, axes=axes: -dx1.sum(axis=axes, keepdims=True),
                    },
                    prior=12,
                )
            )
    zero_dvar = {"dvar": lambda s, dsqrtvar, var: np.zeros_like(dsqrtvar)}
    zero_dx2 = {"dx2": lambda s, dmu, xmu: np.zeros_like(xmu)}
    out += [
        Change(
            "no_mean_path",
            "dx2, the path through mu",
            "dx is missing the mean path: the gradient through mu = mean(x) is never added",
            "backward",
            stages=zero_dx2,
            prior=2,
        ),
        Change(
            "no_var_path",
            "dvar, the path through var",
            "dx is missing the variance path: the gradient through var is never added",
            "backward",
            stages=zero_dvar,
            prior=2,
        ),
        Change(
            "no_stats_paths",
            "dx = dxhat * ivar",
            "dx stops at xhat: dx = dy * gamma * rstd, as if mean and variance were constants (the backward "
            "is unfinished, or it is eval mode's gradient)",
            "backward",
            stages={**zero_dvar, **zero_dx2},
            prior=1,
        ),
        Change(
            "dmu_sign",
            "dmu = -sum(dx1)",
            "the sign of the path through mu is flipped",
            "backward",
            stages={"dx": lambda s, dx1, dx2: dx1 - dx2},
            prior=15,
        ),
        root["sign"],
        Change(
            "dsqrtvar_power",
            "dsqrtvar = -divar / sqrtvar**2",
            "the backward of ivar = 1 / sqrtvar divides by sqrtvar instead of sqrtvar**2",
            "backward",
            stages={"dsqrtvar": lambda s, divar, sqrtvar: -divar / sqrtvar},
            prior=25,
        ),
        Change(
            "dvar_exponent",
            "dvar = -0.5 * divar * (var + eps)**-1.5",
            "the exponent is -0.5 where it must be -1.5",
            "backward",
            stages={"dvar": lambda s, dsqrtvar, var: 0.5 * np.sqrt(var + s.eps) * dsqrtvar},
            prior=20,
        ),
        root["no_factor_2"],
        root["no_half"],
        root["without_eps"],
        Change(
            "dvar_eps_outside",
            "dvar = 0.5 / sqrt(var + eps) * dsqrtvar",
            "the backward of the square root uses the cached std with eps outside: 0.5 / (sqrt(var) + eps)",
            "backward",
            stages={"dvar": lambda s, dsqrtvar, var: 0.5 / (np.sqrt(var) + s.eps) * dsqrtvar},
            prior=25,
        ),
        Change(
            "gamma_missing_backward",
            "dxhat = dy * gamma",
            "gamma is missing in the backward: dxhat = dy",
            "backward",
            stages={"dxhat": lambda s, dgammax, gamma: dgammax + 0.0 * gamma},
            prior=3,
        ),
        Change(
            "dgamma_no_xhat",
            "dgamma = sum(dy * xhat)",
            "dgamma sums dy alone, without xhat",
            "backward",
            stages={"dgamma": lambda s, dgammax, xhat: s.sum_affine(dgammax)},
            prior=10,
        ),
        Change(
            "dgamma_times_gamma",
            "dgamma = sum(dy * xhat)",
            "dgamma sums dxhat * xhat with dxhat = dy * gamma: gamma is multiplied in once too often",
            "backward",
            stages={
                "dgamma": lambda s, dgammax, xhat: s.sum_affine(
                    dgammax * xhat * ctx.gamma.reshape(s.lay.affine_broadcast)
                )
            },
            prior=12,
        ),
        Change(
            "dgamma_x",
            "dgamma = sum(dy * xhat)",
            "dgamma sums dy * x instead of dy * xhat",
            "backward",
            stages={"dgamma": lambda s, dgammax, xhat: s.sum_affine(dgammax * ctx.x.reshape(dgammax.shape))},
            prior=20,
        ),
        Change(
            "affine_grads_swapped",
            "dgamma, dbeta",
            "dgamma and dbeta are swapped",
            "backward",
            post=lambda out: {**out, "dgamma": out["dbeta"], "dbeta": out["dgamma"]},
            prior=10,
        ),
        Change(
            "dx_is_dxhat",
            "dx",
            "dx is dy * gamma: the backward stops before ivar and the statistics",
            "backward",
            stages={**zero_dvar, **zero_dx2, "dxmu1": lambda s, dxhat, ivar: dxhat + 0.0 * ivar},
            prior=5,
        ),
    ]
    if _gamma_varies_in_group(lay):  # gamma varies inside a group: pulling it out of the sums is wrong
        out.append(
            Change(
                "gamma_outside_sum",
                "dxhat = dy * gamma",
                "gamma multiplies dx after the row sums instead of dy inside them: "
                "gamma * rstd * (dy - mean(dy) - xhat * mean(dy * xhat))",
                "backward",
                stages={
                    "dxhat": lambda s, dgammax, gamma: dgammax + 0.0 * gamma,
                    "dx": lambda s, dx1, dx2: (dx1 + dx2) * _gamma_in_view(s, ctx.gamma),
                },
                prior=5,
            )
        )
    return out


def _gamma_varies_in_group(lay: Layout) -> bool:
    """Does some statistics group hold elements with different gammas (layer norm, group norm with C/G > 1)?"""
    groups, affine = lay.stats_index().reshape(-1), lay.affine_index().reshape(-1)
    first = np.zeros(groups.max(initial=-1) + 1, dtype=np.int64)
    first[groups] = affine  # some element's gamma index per group
    return bool(np.any(first[groups] != affine))


def float32_changes(lay: Layout, ctx: Context) -> list[Change]:
    """The whole graph, or the backward alone, computed in float32."""
    return [
        Change(
            "float32",
            "every stage",
            "the arithmetic is done in float32 (an astype(np.float32) or a float32 constant)",
            "forward",
            float32="all",
            prior=15,
        ),
        Change(
            "float32_backward",
            "the backward",
            "the backward is computed in float32",
            "backward",
            float32="backward",
            prior=15,
        ),
    ]


def dy_layout_changes(lay: Layout, ctx: Context) -> list[Change]:
    """The backward's reshape of dy to (N*H*W, C) without moving C last, where x has spatial dims."""
    return [_dy_unmoved(lay)] if len(lay.x_shape) >= 3 else []


def stage_changes(lay: Layout, ctx: Context) -> list[Change]:
    """The four norms' stages replaced, forward and backward."""
    return forward_changes(lay, ctx) + backward_changes(lay, ctx)


def _gamma_in_view(s: Stages, gamma) -> np.ndarray:
    """gamma broadcast to x and arranged as the statistics view."""
    lay = s.lay
    return np.broadcast_to(gamma.reshape(lay.affine_broadcast), lay.x_shape).reshape(lay.view_shape)


def _dy_unmoved(lay: Layout) -> Change:
    """The forward moved C last before reshaping to (N*H*W, C); the backward reshaped dy without moving it:
    dy's elements meet the wrong xhat. As a permutation of x: dy is read in the order Q = T^-1 R."""
    n, c = lay.x_shape[:2]
    moved = (n,) + lay.x_shape[2:] + (c,)
    order = tuple([0] + list(range(2, len(lay.x_shape))) + [1])
    ids = np.arange(math.prod(lay.x_shape))
    # the (N*S, C) matrix the backward builds from dy: R(dy) = dy.reshape(-1, C); the forward's T(x) =
    # x.transpose(order).reshape(-1, C). x-space element j meets dy element Q[j] with T(Q) = R(ids).
    q = ids.reshape(-1, c).reshape(moved).transpose(np.argsort(order)).reshape(-1)
    return Change(
        "dy_unmoved",
        "the backward's reshape of dy",
        "the backward reshapes dy to (N*H*W, C), and dx back, without moving C, while the forward moved it: dy "
        "meets the wrong elements of xhat",
        "backward",
        dy_order=q,
        prior=3,
    )


def rms_changes(lay: Layout, ctx: Context) -> list[Change]:
    """RMSNorm's stages replaced (verify.staged.RMSNormStages), forward and backward."""
    root = _root_mistakes(base="x", square_grad="dx2", mean_sq="ms", root="rms", inverse="irms")
    m = lay.count
    out = []
    for d, words in _divisors(lay).items():
        unbiased = d == m - 1
        out.append(
            Change(
                f"ms_divisor={d}",
                "ms = mean(sq)",
                f"the mean square divides the sum of squares by {words} instead of M = {m}"
                + (" (the unbiased variance's divisor; RMSNorm's mean square divides by M)" if unbiased else ""),
                "forward",
                stages={"ms": lambda s, sq, d=d: s.sum(sq) / d},
                prior=10 if unbiased else 30,
            )
        )
    out += [
        Change(
            "mean_subtracted",
            "sq = x ** 2, xhat = x * irms",
            "the mean is subtracted, as layer norm does: this is layer norm without beta, while RMSNorm divides x "
            "itself by its root mean square",
            "forward",
            stages={
                "sq": lambda s, x: (x - s.sum(x) / s.m) ** 2,
                "xhat": lambda s, x, irms: (x - s.sum(x) / s.m) * irms,
            },
            prior=5,
        ),
        Change(
            "eps_outside",
            "rms = sqrt(ms + eps)",
            "eps is added outside the square root: 1 / (sqrt(mean(x**2)) + eps)",
            "forward",
            stages={"rms": lambda s, ms: np.sqrt(ms) + s.eps},
            prior=5,
        ),
        Change(
            "eps_missing",
            "rms = sqrt(ms + eps)",
            "eps is missing: 1 / sqrt(mean(x**2))",
            "forward",
            stages={"rms": lambda s, ms: np.sqrt(ms)},
            prior=8,
        ),
        Change(
            "sqrt_missing",
            "rms = sqrt(ms + eps)",
            "the square root is missing: x is divided by mean(x**2) + eps, not by its root",
            "forward",
            stages={"rms": lambda s, ms: ms + s.eps},
            prior=20,
        ),
        Change(
            "gamma_missing_forward",
            "out = gamma * xhat",
            "gamma is never applied in the forward",
            "forward",
            stages={"out": lambda s, gamma, xhat: xhat + 0.0 * gamma},
            prior=20,
        ),
    ]
    for d, words in {**_divisors(lay), 1: "1 (no division)"}.items():
        missing = d == 1
        out.append(
            Change(
                f"ms_path_divisor={d}",
                "dsq = dms / M, the backward of ms = mean(sq)",
                "the 1/M is missing" if missing else f"divides by {words} instead of M = {m}",
                "backward",
                stages={"dsq": lambda s, dms, x, d=d: np.ones_like(x) / d * dms},
                prior=10 if missing else 20,
            )
        )
    out += [
        Change(
            "no_ms_path",
            "dx2, the path through ms",
            "dx is missing the path through the mean square: the - xhat * mean(dy * gamma * xhat) term (dx = dy * "
            "gamma * rstd, as if rstd were a constant)",
            "backward",
            stages={"dx2": lambda s, dsq, x: np.zeros_like(x)},
            prior=2,
        ),
        root["sign"],
        root["no_factor_2"],
        root["no_half"],
        root["without_eps"],
        Change(
            "gamma_missing_backward",
            "dxhat = dy * gamma",
            "gamma is missing in the backward: dxhat = dy",
            "backward",
            stages={"dxhat": lambda s, dout, gamma: dout + 0.0 * gamma},
            prior=3,
        ),
        Change(
            "dgamma_no_xhat",
            "dgamma = sum(dy * xhat)",
            "dgamma sums dy alone, without xhat",
            "backward",
            stages={"dgamma": lambda s, dout, xhat: s.sum_affine(dout + 0.0 * xhat)},
            prior=10,
        ),
        Change(
            "dgamma_x",
            "dgamma = sum(dy * xhat)",
            "dgamma sums dy * x instead of dy * xhat",
            "backward",
            stages={"dgamma": lambda s, dout, xhat: s.sum_affine(dout * ctx.x.reshape(dout.shape))},
            prior=20,
        ),
    ]
    if _gamma_varies_in_group(lay):
        out.append(
            Change(
                "gamma_outside_sum",
                "dxhat = dy * gamma",
                "gamma multiplies dx after the row sum instead of dy inside it: gamma * rstd * (dy - xhat * "
                "mean(dy * xhat))",
                "backward",
                stages={
                    "dxhat": lambda s, dout, gamma: dout + 0.0 * gamma,
                    "dx": lambda s, dx1, dx2: (dx1 + dx2) * _gamma_in_view(s, ctx.gamma),
                },
                prior=5,
            )
        )
    return out


def _softmax_by_sum(s, logits):
    return logits / logits.sum()


def switchable_changes(lay: Layout, ctx: Context) -> list[Change]:
    """Switchable Normalization's stages replaced (verify.staged.SwitchableNormStages), forward and backward."""
    n, c, spatial = lay.view_shape
    counts = {"in": spatial, "ln": c * spatial, "bn": n * spatial}
    words = {"in": "instance", "ln": "layer", "bn": "batch"}
    out = [
        Change(
            "raw_logits",
            "w = softmax(mean_weight), v = softmax(var_weight)",
            "the raw logits are used as the mixing weights: mean_weight and var_weight are never softmaxed",
            "forward",
            stages={"w": lambda s, a: a + 0.0, "v": lambda s, a: a + 0.0},
            prior=5,
        ),
        Change(
            "weights_by_sum",
            "w = softmax(mean_weight), v = softmax(var_weight)",
            "the mixing weights are the logits divided by their sum, not their softmax",
            "forward",
            stages={"w": _softmax_by_sum, "v": _softmax_by_sum},
            prior=8,
        ),
        Change(
            "weights_swapped",
            "mean = sum w_k mean_k, var = sum v_k var_k",
            "the weights are swapped: the means are mixed with softmax(var_weight), the variances with "
            "softmax(mean_weight)",
            "forward",
            stages={
                "mean": lambda s, w, mi, ml, mb: _mix(_softmax(ctx, "var_weight", w), mi, ml, mb),
                "var": lambda s, v, vi, vl, vb: _mix(_softmax(ctx, "mean_weight", v), vi, vl, vb),
            },
            prior=15,
        ),
        Change(
            "var_weights_unused",
            "var = sum v_k var_k",
            "var_weight is never used: the variances are mixed with softmax(mean_weight) too",
            "forward",
            stages={"var": lambda s, v, vi, vl, vb: _mix(_softmax(ctx, "mean_weight", v), vi, vl, vb)},
            prior=12,
        ),
        Change(
            "eps_outside",
            "sqrtvar = sqrt(var + eps)",
            "eps is added outside the square root: 1 / (sqrt(var) + eps)",
            "forward",
            stages={"sqrtvar": lambda s, var: np.sqrt(var) + s.eps},
            prior=10,
        ),
    ]
    for kind, count in counts.items():
        out.append(
            Change(
                f"unbiased_var_{kind}",
                f"var_{kind} = mean((x - mean_{kind})**2)",
                f"the {words[kind]} variance is the unbiased one (divides by {count - 1} instead of {count}"
                + (", as torch's x.var(-1) in the authors' code" if kind == "in" else "")
                + "); switchable norm mixes biased variances",
                "forward",
                stages={
                    f"var_{kind}": lambda s, x, mean_k, kind=kind, count=count: (
                        s.mean_over((x - mean_k) ** 2, kind) * count / (count - 1)
                    )
                },
                prior=5 if kind == "in" else 10,
            )
        )
    out += [
        Change(
            "no_softmax_backward",
            "dmean_weight = w * (dw - sum(w * dw))",
            "the softmax's gradient is missing: the gradient with respect to the weights w = softmax(mean_weight) "
            "is returned as the logits' (dmean_weight = dw, not w * (dw - sum(w * dw)); likewise dvar_weight)",
            "backward",
            stages={"dmean_weight": lambda s, dw, w: dw + 0.0 * w, "dvar_weight": lambda s, dv, v: dv + 0.0 * v},
            prior=2,
        ),
        Change(
            "no_stats_paths",
            "dx = dxmu + dx_in + dx_ln + dx_bn",
            "dx stops at xhat: dx = dy * gamma * rstd, as if the statistics were constants",
            "backward",
            stages={"dx": lambda s, dxmu, dx_in, dx_ln, dx_bn: dxmu + 0.0 * dx_in},
            prior=1,
        ),
        Change(
            "no_var_paths",
            "dvar, the paths through var",
            "dx is missing the variance paths: the gradient through the mixed variance is never added",
            "backward",
            stages={"dvar": lambda s, dsqrtvar, var: np.zeros_like(dsqrtvar)},
            prior=4,
        ),
        Change(
            "no_mean_paths",
            "dmean, the paths through mean",
            "dx is missing the mean paths: the gradient through the mixed mean is never added",
            "backward",
            stages={"dmean": lambda s, dxmu: np.zeros_like(s.sum(dxmu))},
            prior=4,
        ),
        Change(
            "gamma_missing_backward",
            "dxhat = dy * gamma",
            "gamma is missing in the backward: dxhat = dy",
            "backward",
            stages={"dxhat": lambda s, dgammax, gamma: dgammax + 0.0 * gamma},
            prior=3,
        ),
        Change(
            "dgamma_no_xhat",
            "dgamma = sum(dy * xhat)",
            "dgamma sums dy alone, without xhat",
            "backward",
            stages={"dgamma": lambda s, dgammax, xhat: s.sum_affine(dgammax + 0.0 * xhat)},
            prior=10,
        ),
        Change(
            "affine_grads_swapped",
            "dgamma, dbeta",
            "dgamma and dbeta are swapped",
            "backward",
            post=lambda out: {**out, "dgamma": out["dbeta"], "dbeta": out["dgamma"]},
            prior=10,
        ),
    ]
    for kind, count in counts.items():
        stage = f"dx_{kind}"
        out.append(
            Change(
                f"no_{words[kind]}_path",
                f"{stage}, the path through mean_{kind} and var_{kind}",
                f"dx is missing the path through the {words[kind]} statistics (mean_{kind} and var_{kind})",
                "backward",
                stages={stage: lambda s, dm, dv, x, mean_k: np.zeros_like(x)},
                prior=2,
            )
        )
        for d, said in {spatial: "S", c * spatial: "C*S", n * spatial: "N*S", count - 1: "M - 1"}.items():
            if d == count or d <= 0:
                continue
            out.append(
                Change(
                    f"{stage}_divisor={d}",
                    f"{stage} = (dmean_{kind} + 2 (x - mean_{kind}) dvar_{kind}) / M",
                    f"the path through the {words[kind]} statistics divides by {said} = {d} instead of {count}",
                    "backward",
                    stages={
                        stage: lambda s, dm, dv, x, mean_k, d=d: (dm + 2.0 * (x - mean_k) * dv) / d,
                    },
                    prior=20,
                )
            )
    return out


def _mix(weights, instance, layer, batch):
    return weights[0] * instance + weights[1] * layer + weights[2] * batch


def _softmax(ctx: Context, name: str, like: np.ndarray) -> np.ndarray:
    """softmax of one of the context's logits, in the dtype of the graph's own weights."""
    logits = ctx.params[name].astype(like.dtype)
    e = np.exp(logits - logits.max())
    return e / e.sum()


# The families of mistakes a norm's registry entry may list, and the hypotheses each one builds.
FAMILIES: dict[str, Callable[[Layout, Context], list[Change]]] = {
    norms.VIEW: lambda lay, ctx: view_changes(lay),
    norms.STAGES: stage_changes,
    norms.FLOAT32: float32_changes,
    norms.DY_LAYOUT: dy_layout_changes,
    norms.RMS_STAGES: rms_changes,
    norms.SWITCHABLE_STAGES: switchable_changes,
}


# ---------------------------------------------------------------------------------------------------------------
# The search


@dataclass
class Finding:
    tensor: str
    changes: tuple  # the hypothesis that reproduces the tensor; () if none
    alternatives: list  # other hypotheses as simple that also do
    closest: tuple  # when nothing does: the nearest hypothesis
    closest_residual: float

    @property
    def found(self) -> bool:
        return bool(self.changes)


class _Search:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        changes = [c for family in ctx.entry.mistakes for c in FAMILIES[family](ctx.lay, ctx)]
        self.views = [c for c in changes if c.layout is not None]
        self.forward = [c for c in changes if c.layout is None and c.part == "forward"]
        self.backward = [c for c in changes if c.part == "backward"]
        self._forwards: dict[tuple, tuple] = {}
        self._outcomes: dict[tuple, Outcome | None] = {}
        self._reference_residuals: dict[tuple, float] = {}
        self.pairs = ctx.x.size <= PAIRS_LIMIT
        self.reference = self.run((), True)

    def run(self, changes: tuple, backward: bool) -> Outcome | None:
        key = (tuple(c.key for c in changes), backward)
        if key not in self._outcomes:
            try:
                self._outcomes[key] = evaluate(self.ctx, changes, backward=backward, memo=self._forwards)
            except (ValueError, FloatingPointError, IndexError):
                self._outcomes[key] = None  # a combination that does not fit this input's shapes
        return self._outcomes[key]

    def match(self, tensors: tuple, candidates, backward: bool):
        """The first level of candidates (an iterable of lists of hypotheses) where some hypothesis reproduces
        every tensor in `tensors`: (matches, closest, closest residual)."""
        closest, closest_res = (), np.inf
        for level in candidates:
            hits = []
            for changes in level:
                out = self.run(changes, backward)
                if out is None:
                    continue
                ok, res = True, 0.0
                float32 = any(c.float32 for c in changes)
                for t in tensors:
                    r, rel = residual(self.ctx.got.get(t), out, t)
                    ok = ok and r <= 1
                    res = max(res, rel)
                if ok and (not float32 or self._float32_sized(tensors, out)):
                    hits.append(changes)
                elif res < min(closest_res, 0.5 * self._reference_residual(tensors)):
                    closest, closest_res = changes, res
            if hits:
                # a match within float32's bounds is weaker evidence than one within float64's: use it only
                # when nothing matches at the tighter precision
                exact = [h for h in hits if not any(c.float32 for c in h)]
                hits = exact or hits
                hits.sort(key=lambda ch: sum(c.prior for c in ch))
                return hits, (), np.inf
        return [], closest, closest_res

    def _float32_sized(self, tensors: tuple, out: Outcome) -> bool:
        """float32 arithmetic is named only for an error of float32's size: between 1% and 100 times how far the
        float32 graph itself is from the float64 one. Below, float32's bounds would also take a float64 error ten
        thousand times smaller (from a one-pass variance, say); above, loose float32 bounds (Switchable Norm's
        mix of three kinds of statistics) would take a float64 mistake of 1e-4 as rounding. Two decades either
        side hold any float32 implementation: its summation order and algorithm move its error around the
        graph's by less than the bounds' own margin over typical rounding."""
        for t in tensors:
            ref, got, hyp = self.reference.tensors.get(t), self.ctx.got.get(t), out.tensors.get(t)
            if ref is None or got is None or hyp is None:
                return False
            with np.errstate(invalid="ignore"):
                err = np.nanmax(np.abs(got - ref), initial=0.0)
                own = np.nanmax(np.abs(hyp - ref), initial=0.0)
            if not 0.01 * own <= err <= 100.0 * own:
                return False
        return True

    def _reference_residual(self, tensors: tuple) -> float:
        """How far the reference itself is from these tensors: a hypothesis is the closest explanation only if
        it comes clearly nearer than that (one that changes nothing, or a few ulps, never does)."""
        if tensors not in self._reference_residuals:
            ref = self.reference
            worst = 0.0
            for t in tensors:
                if ref is None or ref.tensors.get(t) is None or self.ctx.got.get(t) is None:
                    worst = np.inf
                    continue
                rel = compare.norm_rel_error(self.ctx.got[t], ref.tensors[t])
                worst = np.inf if np.isnan(rel) else max(worst, rel)
            self._reference_residuals[tensors] = worst
        return self._reference_residuals[tensors]

    def forward_levels(self):
        singles = [(c,) for c in self.views + self.forward]
        if not self.pairs:
            return [singles]
        pairs = [(v, f) for v in self.views for f in self.forward]
        pairs += [(a, b) for a, b in itertools.combinations(self.forward, 2) if not set(a.stages) & set(b.stages)]
        return [singles, pairs]

    def backward_levels(self, base: tuple, views: bool):
        """The forward's hypothesis (base) with no backward change, then one, then two. views: also try each
        statistics view alone, a consistent other layer (when y failed and nothing explained it)."""
        singles = [base + (c,) for c in self.backward]
        levels = ([[base]] if base else []) + [singles]
        if views:
            levels.insert(0, [(c,) for c in self.views])
        if self.pairs:
            levels.append(
                [
                    base + (a, b)
                    for a, b in itertools.combinations(self.backward, 2)
                    if not set(a.stages) & set(b.stages) and not (a.post and b.post)
                ]
            )
        return levels


PAIRS_LIMIT = 4096  # pairs of changes are searched for inputs up to this many elements, single changes beyond
DIAGNOSE_LIMIT = 2**17  # and no diagnosis at all beyond this: every hypothesis is a full staged graph


def diagnose(ctx: Context, failing: list[str]) -> dict[str, Finding]:
    """For each failing tensor, the simplest hypothesis that reproduces it (see the module docstring)."""
    search = _Search(ctx)
    findings = {}
    base: tuple = ()
    if "y" in failing:
        hits, closest, res = search.match(("y",), search.forward_levels(), backward=False)
        findings["y"] = _finding("y", hits, closest, res, ())
        base = hits[0] if hits else ()
    grads = tuple(t for t in failing if t != "y")
    if not grads:
        return findings
    levels = search.backward_levels(base, views="y" in failing and not base)
    hits, closest, res = search.match(grads, levels, backward=True)
    if hits or len(grads) == 1:
        return findings | {t: _finding(t, hits, closest, res, base) for t in grads}
    for t in grads:  # no one hypothesis explains them all: one by one
        findings[t] = _finding(t, *search.match((t,), levels, backward=True), base)
    return findings


def _finding(tensor: str, hits: list, closest: tuple, res: float, base: tuple) -> Finding:
    """The first hit (and two alternatives), each as the changes it adds to the forward's hypothesis base."""
    own = [_own(h, base) for h in hits[:3]]
    return Finding(tensor, own[0] if own else (), own[1:], closest, res)


def _own(changes: tuple, base: tuple) -> tuple:
    """The changes a gradient's hypothesis adds to the forward's (or the whole hypothesis when that is all)."""
    extra = tuple(c for c in changes if c not in base)
    return extra or changes


def cause_text(changes: tuple) -> str:
    return "; and ".join(f"{c.words} [stage {c.stage}]" for c in changes)


def consistent_text(changes: tuple, lay: Layout) -> str:
    """The verdict on a layer whose forward is another layer's and whose backward is that layer's gradient."""
    tail = (
        f" — {_norm_name(lay)} takes {describe_statistics(lay)}. The backward is the exact gradient of this "
        "forward (the finite-difference rows pass): fix the forward, and the backward with it"
    )
    view = next((c for c in changes if c.layout is not None), None)
    if view is not None and len(changes) == 1 and "that is " in view.words:
        other = view.words.split("that is ")[-1]
        return f"your layer is a consistent {other}, not {_norm_name(lay)}: {view.words.split(': that is')[0]}" + tail
    return f"your layer is consistent, but it is not {_norm_name(lay)}: {cause_text(changes)}" + tail


def explain_report(
    report: Report,
    compared: dict,
    got: dict,
    lay: Layout,
    ref_cache: dict,
    dy,
    fd_rows: dict,
    fd_sharp: bool,
    bound,
    dtype,
    training: bool = True,
):
    """Fill the `cause` of each failing "vs staged graph" row, and the report's diagnosis. fd_sharp: the
    finite differences were taken in float64, fine enough to tell an exact gradient from a wrong one. bound:
    verify.bounds for the implementation's dtype."""
    entry = norms.get(lay.norm)
    failing = [t for t in entry.tensors if (r := report.row(f"{t} vs staged graph")) is not None and not r.passed]
    _explain_shapes(report, got, lay, ref_cache, dy, bound)
    failing = [t for t in failing if t in compared]
    if not failing:
        return
    if not training:
        _explain_eval_mode(report, compared, lay, ref_cache, dtype)
        return
    if ref_cache["x"].size > DIAGNOSE_LIMIT:
        report.notes.append(f"no diagnosis above {DIAGNOSE_LIMIT} elements: check a smaller input to get a cause")
        return
    # the reference's cache holds gamma = 1 and beta = 0 where the implementation was given none
    ctx = Context(
        ref_cache["x"],
        {name: ref_cache[name] for name in entry.param_names},
        np.asarray(dy, np.float64),
        ref_cache["eps"],
        lay,
        np.dtype(dtype),
        compared,
    )
    # a gradient whose finite-difference row passes is the exact one of the implementation's own forward:
    # once y is explained, so is it
    search = [
        t
        for t in failing
        if t == "y" or "y" not in failing or not fd_sharp or fd_rows.get(t) is None or not fd_rows[t].passed
    ]
    findings = diagnose(ctx, search)
    y_finding = findings.get("y")
    base = y_finding.changes if y_finding is not None else ()
    for t in failing:
        row = report.row(f"{t} vs staged graph")
        f = findings.get(t)
        if f is None:
            if base:
                row.cause = f"follows from the forward's mistake ({cause_text(base)}): it is the exact gradient of that"
            continue
        if f.found:
            row.hypothesis = "+".join(c.key for c in f.changes)
            row.cause = cause_text(f.changes)
            if t != "y" and f.changes == base:
                row.cause = "follows from the forward's mistake: " + row.cause
            if f.alternatives:
                row.cause += " (or: " + " | ".join(cause_text(a) for a in f.alternatives[:1]) + ")"
        elif f.closest:
            row.detail = (row.detail + "; " if row.detail else "") + (
                f"no hypothesis reproduces {t}; the closest, {cause_text(f.closest)}, is still "
                f"{f.closest_residual:.1e} of its scale away"
            )
        else:
            row.detail = (row.detail + "; " if row.detail else "") + f"no hypothesis reproduces {t}"
    fd_ok = fd_sharp and fd_rows and all(r.passed for r in fd_rows.values())
    if base and fd_ok:
        report.diagnosis = consistent_text(base, lay)
    _explain_finite_differences(report, lay)


def _explain_eval_mode(report: Report, compared: dict, lay: Layout, ref_cache: dict, dtype) -> None:
    """In eval mode one mistake dominates: normalizing with the batch's statistics instead of the running ones."""
    row = report.row("y vs staged graph")
    if row is None or row.passed or "y" not in compared:
        return
    entry = norms.get(lay.norm)
    params = [ref_cache[name] for name in entry.param_names]
    y, cache = staged.forward(ref_cache["x"], *params, stages=entry.stages(lay, ref_cache["eps"]))
    bound = error_bounds.bounds(cache, np.zeros(lay.x_shape), dtype).y
    if np.all(compare.over(compare.error(compared["y"], y), bound) <= 1):
        row.cause = "eval mode normalizes with the batch's mean and variance instead of the running statistics"
        row.hypothesis = "batch_statistics"


def _explain_finite_differences(report: Report, lay: Layout) -> None:
    """A gradient that matches the staged graph but not the differences of the implementation's own forward:
    the backward is right, and the forward is what is wrong."""
    y = report.row("y vs staged graph")
    if y is None or y.passed:
        return
    for t in norms.get(lay.norm).gradients:
        fd, ref = report.row(f"{t} vs finite differences"), report.row(f"{t} vs staged graph")
        if fd is not None and ref is not None and not fd.passed and ref.passed and not fd.cause:
            fd.cause = f"{t} is right for {_norm_name(lay)}: it is the forward that is wrong (see y)"


def _explain_shapes(report: Report, got: dict, lay: Layout, ref_cache: dict, dy, bound) -> None:
    """dgamma/dbeta of a shape that no reshape fixes: summed over the wrong axes? A partial sum of dy * xhat
    (or dy) over axes S has no more terms than the full sums of the affine elements it mixes, so its error is
    within the sum of their bounds (verify.bounds)."""
    row = report.row("shapes")
    if row is None or row.passed:
        return
    dy = np.asarray(dy, np.float64)
    nd = len(lay.x_shape)
    affine_axes = set(range(nd)) - set(lay.affine_reduce_axes)
    affine = (("dgamma", dy * ref_cache["xhat"]), ("dbeta", dy))
    for t, terms in affine:
        a = got.get(t)
        allowed = bound.of(t)
        if a is None or allowed is None or np.size(a) == math.prod(lay.affine_shape):
            continue
        a = np.asarray(a, np.float64)
        full = np.broadcast_to(np.asarray(allowed).reshape(lay.affine_broadcast), lay.x_shape)
        for k in range(0, nd + 1):
            for axes in itertools.combinations(range(nd), k):
                s = terms.sum(axis=axes)
                if s.size != a.size:
                    continue
                limit = full
                for ax in sorted(axes, reverse=True):  # the affine elements a partial element mixes
                    limit = limit.sum(axis=ax) if ax in affine_axes else limit.max(axis=ax)
                if np.all(compare.over(compare.error(a.reshape(-1), s.reshape(-1)), limit.reshape(-1)) <= 1):
                    want = _axes_words(lay, lay.affine_reduce_axes)
                    row.cause = (row.cause + "; " if row.cause else "") + (
                        f"{t} sums over {_axes_words(lay, axes) if axes else 'nothing'} only; it must sum over {want}"
                    )
                    break
            else:
                continue
            break
