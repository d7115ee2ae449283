"""The shape catalogue and input recipe shared by the tests, the verifier CLI and the benchmarks.

Each Case names a norm and a shape (plus num_groups or the normalized dims) and knows how to call the
project's kernels for it, so every consumer runs the same inputs through the same calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import norms, staged


class Inputs(NamedTuple):
    x: np.ndarray
    gamma: np.ndarray | None
    beta: np.ndarray | None
    dy: np.ndarray


# How gamma and beta are given: both, neither, or gamma alone (beta None is "no shift").
AFFINE = ("gamma_beta", "none", "gamma")

# How x is drawn. The hard ones are hard for finite differences and for fixed tolerances: a group's radius of
# analyticity is about its spread, and the rounding of x - mean grows with |mean| / spread.
RECIPES = {
    "normal": "1.5 N(0, 1) + 0.5",
    "near_equal": "1 + 1e-3 N(0, 1): groups of nearly equal values, spread 1e-3 of their magnitude",
    "flat_group": "normal, with one statistics group's spread cut 100x",
    "offset": "1e4 + N(0, 1): mean 1e4, std 1",
    "cs231n": "5 N(0, 1) + 12, as the assignment's notebook draws x",
}


@dataclass(frozen=True)
class Case:
    norm: str
    shape: tuple
    num_groups: int | None = None  # group_norm
    normalized_ndim: int | None = None  # layer_norm: how many trailing dims are normalized
    why: str = ""  # what the case exercises
    tags: frozenset = field(default_factory=frozenset)
    recipe: str = "normal"  # how x is drawn (RECIPES)
    eps: float = 1e-5

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

    def inputs(self, dtype=np.float64, affine: str = "gamma_beta", seed: int | list = 0) -> Inputs:
        """x with a non-zero mean and non-unit scale; gamma away from 1, beta and dy random (never ones)."""
        rng = np.random.default_rng(seed)
        x = self._draw(rng).astype(dtype)
        ashape = self.layout.affine_shape
        gamma = (1.0 + 0.5 * rng.standard_normal(ashape)).astype(dtype)
        beta = rng.standard_normal(ashape).astype(dtype)
        dy = rng.standard_normal(self.shape).astype(dtype)
        if affine == "none":
            gamma = beta = None
        elif affine == "gamma":
            beta = None
        elif affine != "gamma_beta":
            raise ValueError(f"affine must be one of {AFFINE}, got {affine!r}")
        return Inputs(x, gamma, beta, dy)

    def _draw(self, rng) -> np.ndarray:
        z = rng.standard_normal(self.shape)
        if self.recipe == "near_equal":
            return 1.0 + 1e-3 * z
        if self.recipe == "offset":
            return 1e4 + z
        if self.recipe == "cs231n":
            return 5.0 * z + 12.0
        x = z * 1.5 + 0.5
        if self.recipe == "flat_group":
            flatten_first_group(x, self.layout, 0.01)
        elif self.recipe != "normal":
            raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {self.recipe!r}")
        return x

    @property
    def norm_entry(self) -> norms.Norm:
        """This case's entry of the norm registry."""
        return norms.get(self.norm)

    def forward(self, x, gamma, beta, *, backend: str = "cpu", **kwargs):
        """The project's forward for this case: (y, mean, rstd)."""
        return self.norm_entry.call_forward(self, x, gamma, beta, backend, **kwargs)

    def backward(self, dy, x, gamma, mean, rstd, *, backend: str = "cpu"):
        """The project's backward for this case: (dx, dgamma, dbeta)."""
        return self.norm_entry.backward(dy, x, gamma, mean, rstd, backend=backend)

    def staged_forward(self, x, gamma, beta, eps: float | None = None):
        eps = self.eps if eps is None else eps
        return staged.forward(
            x, gamma, beta, norm=self.norm, eps=eps, num_groups=self.num_groups, normalized_shape=self.normalized_shape
        )

    def layer(self, backend: str = "cpu"):
        """The project's kernels for this case as a cs231n layer: forward(x, gamma, beta) -> (y, cache),
        backward(dy, cache) -> (dx, dgamma, dbeta); what verify.check takes."""

        def forward(x, gamma, beta):
            y, mean, rstd = self.forward(x, gamma, beta, backend=backend, eps=self.eps)
            return y, (x, gamma, mean, rstd)

        def backward(dy, cache):
            return self.backward(dy, *cache, backend=backend)

        return forward, backward

    @property
    def layout_kwargs(self) -> dict:
        """num_groups / normalized_shape as verify.check and verify.staged take them."""
        return dict(num_groups=self.num_groups, normalized_shape=self.normalized_shape)

    @property
    def check_kwargs(self) -> dict:
        """What verify.check needs besides the layer and the inputs: the layout arguments and eps."""
        return dict(self.layout_kwargs, eps=self.eps)

    def torch_forward(self, x, gamma, beta, eps: float = 1e-5):
        """The same op in torch.nn.functional (batch norm in training mode), on torch tensors."""
        return self.norm_entry.call_torch(self, x, gamma, beta, eps)

    def against_staged(self, dtype, affine: str = "gamma_beta", *, backend: str = "cpu") -> dict:
        """Run the project's forward and backward and the staged graph on this case's inputs.

        Returns {tensor: (ours, float64 reference)} for y, mean, rstd, dx, dgamma and dbeta; without gamma the
        references for dgamma and dbeta are None (the contract's answer).
        """
        return self.outputs_and_staged(*self.inputs(dtype, affine), backend=backend)[0]

    def outputs_and_staged(self, x, gamma, beta, dy, *, backend: str = "cpu") -> tuple[dict, dict]:
        """against_staged on given inputs: the pairs, and the staged forward's cache (mean, rstd, ...). The
        graph gets the very values the kernels get, in float64."""
        y, mean, rstd = self.forward(x, gamma, beta, backend=backend)
        dx, dgamma, dbeta = self.backward(dy, x, gamma, mean, rstd, backend=backend)
        as64 = [None if a is None else np.asarray(a, dtype=np.float64) for a in (x, gamma, beta, dy)]
        ref_y, cache = self.staged_forward(*as64[:3])
        ref = staged.backward(as64[3], cache)
        pairs = dict(
            y=(y, ref_y),
            mean=(mean, cache["mean"]),
            rstd=(rstd, cache["rstd"]),
            dx=(dx, ref["dx"]),
            dgamma=(dgamma, ref["dgamma"]),
            dbeta=(dbeta, ref["dbeta"]),
        )
        return pairs, cache


def flatten_first_group(x: np.ndarray, lay: staged.Layout, factor: float) -> None:
    """Scale the spread of x's first statistics group by factor around its mean, in place."""
    group = lay.stats_index() == 0
    x[group] = x[group].mean() + factor * (x[group] - x[group].mean())


_SMALL = frozenset({"small"})  # small enough for finite differences on every element

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


# The reference shapes quoted in benchmarks and notes (float32).
REFERENCE = _every_op((32, 64, 56, 56), (4096, 1024), "reference")

# Benchmark sizes (python -m benchmarks --sizes, the pytest-benchmark suite): the reference shapes, each
# shrunk about 16x (small, cache-resident) and grown to 2**26 elements (large: 256 MB in float32, past any
# last-level cache), and a sweep of every op from 2**14 to 2**26 elements for the GB/s-against-size curve.
SMALL = _every_op((8, 64, 28, 28), (1024, 256), "small")
LARGE = _every_op((64, 64, 128, 128), (65536, 1024), "large")
_SWEEP_NCHW = ((1, 16), (4, 16), (4, 32), (16, 32), (16, 64), (64, 64), (64, 128))  # (N, H=W), C=64
SWEEP = tuple(
    case for n, s in _SWEEP_NCHW for case in _every_op((n, 64, s, s), (n * 64 * s * s // 1024, 1024), "sweep")
)

SIZES = {"small": SMALL, "reference": REFERENCE, "large": LARGE, "sweep": SWEEP}
