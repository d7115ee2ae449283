"""The shape catalogue and input recipe shared by the tests, the verifier CLI and the benchmarks.

Each Case names a norm and a shape (plus num_groups or the normalized dims, and eps) and knows how to call the
project's kernels for it, so every consumer runs the same inputs through the same calls. For any norm:

    inputs = case.inputs(np.float32)                  # Inputs: x, params (by name, the norm's order), dy
    y, saved = case.run_forward(inputs, backend)      # saved: the statistics the public forward returns
    grads = case.run_backward(inputs.dy, inputs, saved, backend)   # (dx, *one per parameter)
    pairs, cache = case.outputs_and_staged(inputs)    # each of those against the float64 staged graph

case.forward(x, gamma, beta) / case.backward(dy, x, gamma, *saved) are the same for the norms whose only
parameters are gamma and beta (the four of the family, RMSNorm), as their public ops return them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import normkernels as nk
from normkernels import _device

from . import norms, staged


@dataclass(frozen=True)
class Inputs:
    """What a case's op is called with: x, the norm's parameters by name (verify.norms: gamma and beta for the
    four norms of the family, gamma for rms_norm, and mean_weight, var_weight too for switchable_norm; None for an
    affine not given), and the upstream gradient dy.

    It unpacks as the cs231n four-tuple ``x, gamma, beta, dy = case.inputs(...)`` whatever the norm (beta None
    for rms_norm; the mixing weights are in ``params`` only)."""

    x: np.ndarray
    params: dict
    dy: np.ndarray

    @property
    def gamma(self) -> np.ndarray | None:
        return self.params.get("gamma")

    @property
    def beta(self) -> np.ndarray | None:
        return self.params.get("beta")

    def __iter__(self):
        return iter((self.x, self.gamma, self.beta, self.dy))

    def __getitem__(self, i):
        return tuple(self)[i]

    def __len__(self) -> int:
        return 4

    def values(self) -> tuple:
        """The parameters in the order the norm's forward takes them after x."""
        return tuple(self.params.values())


# How gamma and beta are given: both, neither, or gamma alone (beta None is "no shift"). A norm without beta
# (rms_norm) reads "gamma_beta" as "gamma" (verify.norms.Norm.affine_variants lists its distinct ones).
AFFINE = ("gamma_beta", "none", "gamma")

# How x is drawn. The hard ones are hard for finite differences and for fixed tolerances: a group's radius of
# analyticity is about its spread, and the rounding of x - mean grows with |mean| / spread.
RECIPES = {
    "normal": "1.5 N(0, 1) + 0.5",
    "near_equal": "1 + 1e-3 N(0, 1): groups of nearly equal values, spread 1e-3 of their magnitude",
    "flat_group": "normal, with one statistics group's spread cut 100x",
    "offset": "1e4 + N(0, 1): mean 1e4, std 1",
    "constant_groups": "one N(0, 1) value repeated over each statistics group (for RMSNorm: constant rows)",
    "cs231n": "5 N(0, 1) + 12, as the assignment's notebook draws x",
}


@dataclass(frozen=True)
class Case:
    norm: str
    shape: tuple
    num_groups: int | None = None  # group_norm
    normalized_ndim: int | None = None  # layer_norm, rms_norm: how many trailing dims are normalized
    why: str = ""  # what the case exercises
    tags: frozenset = field(default_factory=frozenset)
    recipe: str = "normal"  # how x is drawn (RECIPES)
    eps: float = 1e-5  # given to the kernels and the references alike, whatever the norm's own default

    @property
    def id(self) -> str:
        extra = f"-G{self.num_groups}" if self.num_groups else ""
        extra += f"-last{self.normalized_ndim}" if self.normalized_ndim else ""
        extra += f"-{self.recipe}" if self.recipe != "normal" else ""
        extra += f"-eps{self.eps:g}" if self.eps != 1e-5 else ""
        return f"{self.norm}-{'x'.join(map(str, self.shape))}{extra}"

    @property
    def normalized_shape(self) -> tuple | None:
        return self.shape[len(self.shape) - self.normalized_ndim :] if self.normalized_ndim else None

    @property
    def layout(self) -> staged.Layout:
        return staged.layout(self.norm, self.shape, num_groups=self.num_groups, normalized_shape=self.normalized_shape)

    @property
    def norm_entry(self) -> norms.Norm:
        """This case's entry of the norm registry."""
        return norms.get(self.norm)

    def inputs(self, dtype=np.float64, affine: str = "gamma_beta", seed: int | list = 0) -> Inputs:
        """x with a non-zero mean and non-unit scale; gamma away from 1, beta and dy random (never ones); mixing
        weights (switchable norm) random logits, not zeros, so the softmax's Jacobian is exercised."""
        rng = np.random.default_rng(seed)
        x = self._draw(rng).astype(dtype)
        ashape = self.layout.affine_shape
        drawn = dict(
            gamma=(1.0 + 0.5 * rng.standard_normal(ashape)).astype(dtype),
            beta=rng.standard_normal(ashape).astype(dtype),
        )
        dy = rng.standard_normal(self.shape).astype(dtype)
        if affine == "none":
            drawn = {}
        elif affine == "gamma":
            del drawn["beta"]
        elif affine != "gamma_beta":
            raise ValueError(f"affine must be one of {AFFINE}, got {affine!r}")
        params = {}
        for name, kind in self.norm_entry.params:
            if kind == norms.MIXING:
                params[name] = rng.standard_normal(norms.MIXING_SHAPE).astype(dtype)
            else:
                params[name] = drawn.get(name)
        return Inputs(x, params, dy)

    def make_inputs(self, x, dy=None, **params) -> Inputs:
        """Inputs from arrays given by name; ValueError for a parameter the norm does not have."""
        names = self.norm_entry.param_names
        extra = [k for k, v in params.items() if k not in names and v is not None]
        if extra:
            raise ValueError(f"{self.norm} takes the parameters {names} after x, not {', '.join(extra)}")
        return Inputs(x, {name: params.get(name) for name in names}, dy)

    def _draw(self, rng) -> np.ndarray:
        z = rng.standard_normal(self.shape)
        if self.recipe == "near_equal":
            return 1.0 + 1e-3 * z
        if self.recipe == "offset":
            return 1e4 + z
        if self.recipe == "cs231n":
            return 5.0 * z + 12.0
        if self.recipe == "constant_groups":
            lay = self.layout
            return z.reshape(-1)[_first_of_group(lay)].reshape(self.shape)
        x = z * 1.5 + 0.5
        if self.recipe == "flat_group":
            flatten_first_group(x, self.layout, 0.01)
        elif self.recipe != "normal":
            raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {self.recipe!r}")
        return x

    # --- the project's kernels, for any norm -------------------------------------------------------------------

    def run_forward(self, inputs: Inputs, backend: str = "cpu", **kwargs) -> tuple:
        """The project's forward for this case: (y, saved), saved the statistics the public forward returns
        after y ((mean, rstd) for the four norms of the family, (rstd,) for rms_norm, (SwitchableStats,) for
        switchable_norm), what run_backward takes. eps is the case's unless kwargs say otherwise; kwargs go to
        the public forward (training, running_mean, ...)."""
        kwargs.setdefault("eps", self.eps)
        return self.norm_entry.run_forward(self, inputs.x, inputs.params, backend, **kwargs)

    def run_backward(self, dy, inputs: Inputs, saved: tuple, backend: str = "cpu", **kwargs) -> tuple:
        """The project's backward for this case: (dx, *the gradient of every parameter), in the order of the
        norm's parameters (verify.norms.Norm.gradients). kwargs go to the public backward (training=...)."""
        return self.norm_entry.run_backward(self, dy, inputs.x, inputs.params, saved, backend, **kwargs)

    def forward(self, x, gamma, beta, *, backend: str = "cpu", **kwargs):
        """The project's forward for this case as its public op returns it: (y, mean, rstd) for the four norms of
        the family, (y, rstd) for rms_norm. switchable_norm takes its mixing weights too: use run_forward."""
        y, saved = self.run_forward(self._with_affine(x, gamma, beta), backend, **kwargs)
        return (y, *saved)

    def backward(self, dy, x, gamma, *saved, backend: str = "cpu", **kwargs):
        """The project's backward for this case: (dx, dgamma, dbeta) from (mean, rstd) for the four norms,
        (dx, dgamma) from rstd for rms_norm."""
        return self.run_backward(dy, self._with_affine(x, gamma, None), saved, backend, **kwargs)

    def _with_affine(self, x, gamma, beta) -> Inputs:
        missing = [name for name, kind in self.norm_entry.params if kind != norms.AFFINE]
        if missing:
            raise TypeError(
                f"{self.norm} also takes {', '.join(missing)}: call case.run_forward(inputs) and "
                "case.run_backward(dy, inputs, saved)"
            )
        return self.make_inputs(x, gamma=gamma, beta=beta if "beta" in self.norm_entry.param_names else None)

    def staged_forward(self, x, *params, eps: float | None = None):
        """The float64 staged graph on x and the norm's parameters (in its order), with the case's eps."""
        eps = self.eps if eps is None else eps
        return staged.forward(
            x,
            *params,
            norm=self.norm,
            eps=eps,
            num_groups=self.num_groups,
            normalized_shape=self.normalized_shape,
        )

    def layer(self, backend: str = "cpu"):
        """The project's kernels for this case as a layer in the cs231n contract, what verify.check takes:
        forward(x, *params) -> (y, cache), backward(dy, cache) -> (dx, *gradients), params as the norm's entry
        lists them ((gamma, beta) -> (dx, dgamma, dbeta) for the four norms of the family)."""
        names = self.norm_entry.param_names

        def forward(x, *params):
            inputs = Inputs(x, dict(zip(names, params, strict=True)), None)
            y, saved = self.run_forward(inputs, backend)
            return y, (inputs, saved)

        def backward(dy, cache):
            inputs, saved = cache
            return self.run_backward(dy, inputs, saved, backend)

        return forward, backward

    def split_layer(self, backend: str = "cpu", parts: int = 3):
        """Batch norm as SyncBatchNorm computes it, in the cs231n contract: the batch cut along N into ``parts``
        uneven parts (the first empty, the rest as np.array_split cuts the remaining samples), each part's
        statistics from ``batch_norm_stats`` merged by ``batch_norm_gather_stats``, y part by part with
        ``batch_norm_elemt``; the backward's two sums part by part, added, then each part's dx. The gradients of
        gamma and beta are the whole batch's (the parts' shares added)."""
        if self.norm != "batch_norm":
            raise ValueError(f"split_layer is batch norm's, not {self.norm}'s")
        eps = self.eps

        def cuts(n):
            ends = np.cumsum([0, 0] + [len(a) for a in np.array_split(np.arange(n), parts - 1)])
            return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:], strict=True)]

        def forward(x, gamma=None, beta=None):
            pieces = cuts(x.shape[0])
            stats = [nk.batch_norm_stats(x[p], backend=backend) for p in pieces]
            counts = [s[0] for s in stats]
            means = np.stack([_device.host(s[1]) for s in stats])
            m2s = np.stack([_device.host(s[2]) for s in stats])
            mean, rstd = nk.batch_norm_gather_stats(counts, means, m2s, eps=eps, backend=backend)
            y = np.concatenate(
                [_device.host(nk.batch_norm_elemt(x[p], mean, rstd, gamma, beta, backend=backend)) for p in pieces]
            )
            return y, (x, gamma, mean, rstd, pieces, sum(counts))

        def backward(dy, cache):
            x, gamma, mean, rstd, pieces, count = cache
            sums = [nk.batch_norm_backward_reduce(dy[p], x[p], mean, rstd, backend=backend) for p in pieces]
            sum_dy = np.sum([_device.host(s[0]) for s in sums], axis=0)
            sum_dy_xmu = np.sum([_device.host(s[1]) for s in sums], axis=0)
            dx = np.concatenate(
                [
                    _device.host(
                        nk.batch_norm_backward_elemt(
                            dy[p], x[p], mean, rstd, gamma, sum_dy, sum_dy_xmu, count, backend=backend
                        )
                    )
                    for p in pieces
                ]
            )
            if gamma is None:
                return dx, None, None
            return dx, (sum_dy_xmu * _device.host(rstd)).astype(x.dtype), sum_dy.astype(x.dtype)

        return forward, backward

    @property
    def layout_kwargs(self) -> dict:
        """num_groups / normalized_shape as verify.check and verify.staged take them."""
        return dict(num_groups=self.num_groups, normalized_shape=self.normalized_shape)

    @property
    def check_kwargs(self) -> dict:
        """What verify.check needs besides the layer and the inputs: the layout arguments and eps."""
        return dict(self.layout_kwargs, eps=self.eps)

    def check_inputs(self, inputs: Inputs) -> dict:
        """The inputs as verify.check takes them: x and every parameter by name."""
        return dict(x=inputs.x, **inputs.params)

    def torch_forward(self, x, gamma=None, beta=None, eps: float | None = None, **params):
        """The same op in torch.nn.functional (batch norm in training mode; for switchable norm, which has none
        there, a composition of torch ops), on torch tensors; with the case's eps unless told otherwise. The
        mixing logits come by name (mean_weight=..., var_weight=...)."""
        eps = self.eps if eps is None else eps
        return self.norm_entry.call_torch(self, x, dict(params, gamma=gamma, beta=beta), eps)

    def against_staged(self, dtype, affine: str = "gamma_beta", *, backend: str = "cpu") -> dict:
        """Run the project's forward and backward and the staged graph on this case's inputs.

        Returns {tensor: (ours, float64 reference)} for y, each statistic the forward returns, dx and the
        gradient of every parameter; without gamma the references for the affine gradients are None (the
        contract's answer).
        """
        return self.outputs_and_staged(self.inputs(dtype, affine), backend=backend)[0]

    def outputs_and_staged(self, x, gamma=None, beta=None, dy=None, *, backend: str = "cpu") -> tuple[dict, dict]:
        """against_staged on given inputs (an Inputs, or x, gamma, beta, dy for a norm without other
        parameters): the pairs, and the staged forward's cache (mean, rstd, ...). The graph gets the very values
        the kernels get, in float64, and the case's eps."""
        if isinstance(x, Inputs):
            inputs = x
        else:
            inputs = self._with_affine(x, gamma, beta)
            inputs = Inputs(inputs.x, inputs.params, dy)
        entry = self.norm_entry
        y, saved = self.run_forward(inputs, backend)
        grads = self.run_backward(inputs.dy, inputs, saved, backend)
        as64 = [None if a is None else np.asarray(a, dtype=np.float64) for a in inputs.values()]
        ref_y, cache = self.staged_forward(np.asarray(inputs.x, dtype=np.float64), *as64)
        ref = staged.backward(np.asarray(inputs.dy, dtype=np.float64), cache)
        pairs = {"y": (y, ref_y)}
        for name, got in zip(entry.statistics, entry.flatten(saved), strict=True):
            pairs[name] = (got, cache["statistics"][name])
        for name, got in zip(entry.gradients, grads, strict=True):
            pairs[name] = (got, ref[name])
        return pairs, cache


def _first_of_group(lay: staged.Layout) -> np.ndarray:
    """For every element of x (flat), the flat index of the first element of its statistics group."""
    groups = lay.stats_index().reshape(-1)
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    return first[inverse]


def flatten_first_group(x: np.ndarray, lay: staged.Layout, factor: float) -> None:
    """Scale the spread of x's first statistics group by factor around its mean, in place."""
    group = lay.stats_index() == 0
    x[group] = x[group].mean() + factor * (x[group] - x[group].mean())


_SMALL = frozenset({"small"})  # small enough for finite differences on every element
_F32_EPS = float(np.finfo(np.float32).eps)  # torch.finfo(torch.float32).eps: F.rms_norm's eps for float32

CASES = (
    Case("batch_norm", (2, 5), why="N=2, (N, D)", tags=_SMALL),
    Case("batch_norm", (3, 7, 5), why="3-D, C not a power of two", tags=_SMALL),
    Case("batch_norm", (2, 3, 4, 5), why="NCHW", tags=_SMALL),
    Case("batch_norm", (4, 5, 1, 1), why="spatial 1x1 with N > 1", tags=_SMALL),
    Case("batch_norm", (2, 3, 2, 3, 2), why="5-D", tags=_SMALL),
    Case("batch_norm", (40000, 7), why="(N, D) over several statistics blocks"),
    Case("batch_norm", (16, 3, 5000), why="spatial over several statistics blocks"),
    Case("layer_norm", (2, 7), normalized_ndim=1, why="N=2, one normalized dim", tags=_SMALL),
    Case("layer_norm", (3, 4, 5), normalized_ndim=1, why="3-D, last dim", tags=_SMALL),
    Case("layer_norm", (2, 3, 4, 5), normalized_ndim=3, why="three normalized dims", tags=_SMALL),
    Case("layer_norm", (3, 5000), normalized_ndim=1, why="rows longer than 4096"),
    Case("layer_norm", (130, 33), normalized_ndim=1, why="more rows than backward blocks"),
    Case("layer_norm", (1030, 17), normalized_ndim=1, why="backward blocks of 17 rows"),
    Case("instance_norm", (2, 3, 5), why="3-D", tags=_SMALL),
    Case("instance_norm", (2, 5, 3, 4), why="C not a power of two", tags=_SMALL),
    Case("instance_norm", (2, 3, 2, 3, 2), why="5-D", tags=_SMALL),
    Case("instance_norm", (2, 3, 4500), why="rows longer than 4096"),
    Case("group_norm", (2, 6, 4, 3), num_groups=3, why="two channels per group", tags=_SMALL),
    Case("group_norm", (2, 5, 3, 2), num_groups=1, why="G=1, C not a power of two", tags=_SMALL),
    Case("group_norm", (2, 4, 3, 3), num_groups=4, why="G=C", tags=_SMALL),
    Case("group_norm", (3, 6), num_groups=2, why="no spatial dims", tags=_SMALL),
    Case("group_norm", (4, 4, 1, 1), num_groups=2, why="spatial 1x1 with N > 1", tags=_SMALL),
    Case("group_norm", (2, 6, 2, 2, 3), num_groups=3, why="5-D", tags=_SMALL),
    Case("group_norm", (2, 4, 3000), num_groups=2, why="rows longer than 4096"),
    Case("rms_norm", (2, 7), normalized_ndim=1, why="N=2, one normalized dim", tags=_SMALL),
    Case("rms_norm", (3, 4, 5), normalized_ndim=2, why="two normalized dims", tags=_SMALL),
    Case("rms_norm", (2, 3, 8), normalized_ndim=1, eps=1e-6, why="LLaMA's eps", tags=_SMALL),
    Case("rms_norm", (4, 6), normalized_ndim=1, eps=_F32_EPS, why="F.rms_norm's default eps for float32", tags=_SMALL),
    Case("rms_norm", (3, 5000), normalized_ndim=1, why="rows longer than 4096"),
    Case("rms_norm", (130, 33), normalized_ndim=1, why="more rows than backward blocks"),
    Case("rms_norm", (1, 1 << 20), normalized_ndim=1, eps=1e-6, why="a million-element row"),
    Case("switchable_norm", (2, 3, 5), why="3-D", tags=_SMALL),
    Case("switchable_norm", (3, 4, 2, 3), why="NCHW", tags=_SMALL),
    Case("switchable_norm", (2, 5, 2, 3, 2), why="5-D, C not a power of two", tags=_SMALL),
    Case("switchable_norm", (2, 3, 5000), why="rows longer than 4096"),
    Case("switchable_norm", (8, 16, 20, 20), why="128 rows of 400: the layer and batch sums over many rows"),
)

# Inputs chosen to be hard for finite differences and for fixed tolerances (verify.bounds,
# verify.finite_differences): groups of two values, nearly equal values, one group with 100x less spread,
# mean 1e4 with std 1, eps = 0 and eps = 0.1. Every correct implementation must pass verify.check on them.
_HARD = frozenset({"hard"})
HARD = (
    Case("batch_norm", (2, 5), why="two values per channel", tags=_HARD),
    Case("layer_norm", (5, 2), normalized_ndim=1, why="two values per row", tags=_HARD),
    Case("instance_norm", (2, 3, 2), why="two values per (n, c)", tags=_HARD),
    Case("group_norm", (3, 4), num_groups=2, why="two values per group", tags=_HARD),
    Case("layer_norm", (5, 2), normalized_ndim=1, eps=0.0, why="two values, eps = 0: |xhat| = 1, dx = 0", tags=_HARD),
    Case("batch_norm", (6, 3, 2), recipe="near_equal", why="spread well under sqrt(eps)", tags=_HARD),
    Case("layer_norm", (4, 6), normalized_ndim=1, recipe="near_equal", tags=_HARD),
    Case("instance_norm", (2, 3, 5), recipe="near_equal", tags=_HARD),
    Case("group_norm", (2, 4, 3), num_groups=2, recipe="near_equal", tags=_HARD),
    Case("batch_norm", (6, 3, 2), recipe="flat_group", why="one channel 100x flatter than max|x|", tags=_HARD),
    Case("layer_norm", (4, 6), normalized_ndim=1, recipe="flat_group", tags=_HARD),
    Case("instance_norm", (2, 3, 4), recipe="flat_group", tags=_HARD),
    Case("group_norm", (2, 6, 2), num_groups=3, recipe="flat_group", tags=_HARD),
    Case("batch_norm", (6, 3, 2), recipe="offset", why="x - mean cancels four digits", tags=_HARD),
    Case("layer_norm", (4, 6), normalized_ndim=1, recipe="offset", tags=_HARD),
    Case("instance_norm", (2, 3, 5), recipe="offset", tags=_HARD),
    Case("group_norm", (2, 4, 3), num_groups=2, recipe="offset", tags=_HARD),
    Case("batch_norm", (6, 3, 2), eps=0.0, tags=_HARD),
    Case("layer_norm", (4, 6), normalized_ndim=1, eps=0.0, tags=_HARD),
    Case("instance_norm", (2, 3, 5), eps=0.0, tags=_HARD),
    Case("group_norm", (2, 4, 3), num_groups=2, eps=0.0, tags=_HARD),
    Case("batch_norm", (6, 3, 2), eps=0.1, tags=_HARD),
    Case("layer_norm", (4, 6), normalized_ndim=1, eps=0.1, tags=_HARD),
    Case("group_norm", (2, 4, 3), num_groups=2, recipe="near_equal", eps=0.1, why="eps dominates var", tags=_HARD),
    Case("instance_norm", (2, 3, 5), recipe="offset", eps=0.1, tags=_HARD),
    Case("rms_norm", (5, 2), normalized_ndim=1, why="two values per row", tags=_HARD),
    Case("rms_norm", (5, 1), normalized_ndim=1, why="rows of one element: xhat = x / sqrt(x**2 + eps)", tags=_HARD),
    Case("rms_norm", (5, 1), normalized_ndim=1, eps=0.0, why="one element, eps 0: y = sign(x) gamma", tags=_HARD),
    Case("rms_norm", (4, 6), normalized_ndim=1, recipe="constant_groups", why="constant rows", tags=_HARD),
    Case("rms_norm", (4, 6), normalized_ndim=1, recipe="offset", why="xhat near 1, nothing cancels", tags=_HARD),
    Case("rms_norm", (4, 6), normalized_ndim=1, recipe="near_equal", tags=_HARD),
    Case("rms_norm", (4, 6), normalized_ndim=1, recipe="flat_group", tags=_HARD),
    Case("rms_norm", (4, 6), normalized_ndim=1, eps=0.0, tags=_HARD),
    Case("rms_norm", (4, 6), normalized_ndim=1, recipe="near_equal", eps=0.1, why="eps dominates ms", tags=_HARD),
    Case("switchable_norm", (3, 2, 2), why="two values per row", tags=_HARD),
    Case("switchable_norm", (2, 3, 5), recipe="offset", why="x - mean cancels four digits", tags=_HARD),
    Case("switchable_norm", (2, 3, 5), recipe="near_equal", tags=_HARD),
    Case("switchable_norm", (2, 3, 4), recipe="flat_group", why="one row 100x flatter than the rest", tags=_HARD),
    Case("switchable_norm", (2, 3, 5), eps=0.0, tags=_HARD),
    Case("switchable_norm", (2, 3, 5), recipe="near_equal", eps=0.1, why="eps dominates var", tags=_HARD),
)

# Tiny shapes for the CUDA simulator (one Python thread per CUDA thread), chosen against its launch sizes
# (normkernels/cuda/_config.py: teams of up to 8 threads caching 2 values each, chunks of 16 values or 4
# samples) so they still exercise every structure of the GPU kernels.
_TINY = frozenset({"tiny"})
CUDA_TINY = (
    Case("batch_norm", (9, 5), why="(N, D): three sample chunks, C not a power of two", tags=_TINY),
    Case("batch_norm", (3, 3, 11), why="spatial: three chunks per channel", tags=_TINY),
    Case("layer_norm", (5, 21), normalized_ndim=1, why="rows longer than a team's cached values", tags=_TINY),
    Case(
        "layer_norm", (40, 3), normalized_ndim=1, why="short rows: teams share blocks, grid-stride rounds", tags=_TINY
    ),
    Case("instance_norm", (2, 3, 9), why="rows longer than a team", tags=_TINY),
    Case("group_norm", (2, 6, 5), num_groups=3, why="two channel segments per row", tags=_TINY),
    Case("group_norm", (2, 5, 3), num_groups=1, why="G=1, C not a power of two", tags=_TINY),
    Case("group_norm", (2, 4, 3), num_groups=4, why="G=C", tags=_TINY),
    Case("group_norm", (4, 6), num_groups=3, why="no spatial dims: one value per channel segment", tags=_TINY),
    Case("rms_norm", (5, 21), normalized_ndim=1, why="rows longer than a team's cached values", tags=_TINY),
    Case("rms_norm", (40, 3), normalized_ndim=1, why="short rows: teams share blocks, grid-stride rounds", tags=_TINY),
    Case("switchable_norm", (2, 3, 21), why="rows longer than a team's cached values", tags=_TINY),
    Case("switchable_norm", (3, 4, 5), why="12 rows, more than the grid's 8 teams: grid-stride rounds", tags=_TINY),
)


def _every_op(nchw: tuple, wide: tuple, why: str) -> tuple:
    """The five benchmarked ops at one size: batch norm on (N, C, H, W) and on (N, D), layer norm over the
    last dim of (N, D), instance norm, and group norm with 32 groups."""
    return (
        Case("batch_norm", nchw, why=why),
        Case("batch_norm", wide, why=why),
        Case("layer_norm", wide, normalized_ndim=1, why=why),
        Case("instance_norm", nchw, why=why),
        Case("group_norm", nchw, num_groups=32, why=why),
    )


def _new_ops(rows: tuple, nchw: tuple, why: str, tokens: tuple | None = None) -> tuple:
    """RMSNorm over the last dim of (rows) and of a LLaMA-like (batch, tokens, hidden) activation, and
    Switchable Norm on (N, C, H, W)."""
    cases = [Case("rms_norm", rows, normalized_ndim=1, eps=1e-6, why=why)]
    if tokens is not None:
        cases.append(Case("rms_norm", tokens, normalized_ndim=1, eps=1e-6, why=f"{why}, LLaMA-like"))
    return (*cases, Case("switchable_norm", nchw, why=why))


# The reference shapes quoted in benchmarks and notes (float32).
REFERENCE = _every_op((32, 64, 56, 56), (4096, 1024), "reference") + _new_ops(
    (4096, 4096), (32, 64, 56, 56), "reference", tokens=(8, 2048, 4096)
)

# Benchmark sizes (python -m benchmarks --sizes, the pytest-benchmark suite): the reference shapes, each
# shrunk about 16x (small, cache-resident) and grown to 2**26 elements (large: 256 MB in float32, past any
# last-level cache; the LLaMA-like RMSNorm activation is 2**26 already), and a sweep of every op from 2**14 to
# 2**26 elements for the GB/s-against-size curve.
SMALL = _every_op((8, 64, 28, 28), (1024, 256), "small") + _new_ops(
    (1024, 1024), (8, 64, 28, 28), "small", tokens=(2, 512, 4096)
)
LARGE = _every_op((64, 64, 128, 128), (65536, 1024), "large") + _new_ops(
    (16384, 4096), (64, 64, 128, 128), "large", tokens=(8, 2048, 4096)
)
_SWEEP_NCHW = ((1, 16), (4, 16), (4, 32), (16, 32), (16, 64), (64, 64), (64, 128))  # (N, H=W), C=64
SWEEP = tuple(
    case
    for n, s in _SWEEP_NCHW
    for case in _every_op((n, 64, s, s), (n * 64 * s * s // 1024, 1024), "sweep")
    + _new_ops((n * 64 * s * s // 1024, 1024), (n, 64, s, s), "sweep")
)

SIZES = {"small": SMALL, "reference": REFERENCE, "large": LARGE, "sweep": SWEEP}
