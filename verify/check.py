"""verify.check: is a normalization layer's forward and backward right, and if not, where and why?

The implementation under test follows the cs231n layer contract, with the norm's parameters after x (as its
entry of verify.norms lists them):

    forward(x, gamma, beta) -> (y, cache)          batch, layer, instance and group norm
    backward(dy, cache)     -> (dx, dgamma, dbeta)
    forward(x, gamma) -> (y, cache)                rms_norm
    backward(dy, cache) -> (dx, dgamma)
    forward(x, gamma, beta, mean_weight, var_weight) -> (y, cache)          switchable_norm
    backward(dy, cache) -> (dx, dgamma, dbeta, dmean_weight, dvar_weight)

Every check is one row of the report:

    forward runs, backward runs   any exception, with the file and line in the implementation that raised it
    inputs unchanged              by forward, and by backward
    backward repeatable           a second backward on the same cache gives the same bits (and the cache
                                  entry a backward wrote into is named)
    shapes                        y, dx like x; dgamma, dbeta like gamma (None without gamma); dmean_weight,
                                  dvar_weight like the weights
    dtypes                        outputs in x's dtype (float64 out of float32 in is a warning only,
                                  unless strict_dtype)
    y, dx, dgamma, dbeta (, dmean_weight, dvar_weight) vs staged graph
                                  the float64 staged graph on the same inputs, within error bounds that
                                  follow the conditioning of each group and the dtype (verify.bounds)
    dx, dgamma, dbeta (, ...) vs finite differences
                                  extrapolated central differences of the implementation's own forward,
                                  steps and tolerance per element (verify.finite_differences)
    sum(dx) = 0, sum(dx * xhat) = eps term
                                  per statistics group, in training mode, those the norm's entry lists
                                  (rms_norm: the second only; switchable_norm: neither, but sum(dx) = 0 over
                                  the whole tensor)

A failing row says where the worst element is and what it means (channel, row, group), and the diagnosis
(verify.diagnose) names the mistake that reproduces the tensor, when one does.
"""

from __future__ import annotations

import copy
import linecache
import os
import sysconfig
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import bounds as error_bounds
from . import compare, diagnose, norms, staged
from .finite_differences import Budget, Probe, Target, finite_difference_row
from .report import Report, Row

# Inputs up to this many elements get finite differences on every element; larger ones get random
# directional derivatives plus a random sample of elements.
FULL_FD_LIMIT = 512
DIRECTIONS = 4
SAMPLED_ELEMENTS = 16

_OWN_DIR = os.path.dirname(os.path.abspath(__file__))
_LIBRARY_DIRS = tuple(
    os.path.abspath(p) for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
)


def raised_at(exc: BaseException) -> str:
    """'ValueError: ... (at layers.py:123 in batchnorm_backward: `dx = ...`)': the innermost frame of the
    traceback in the implementation's own code (not in the verifier, NumPy or the standard library)."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [
        f
        for f in frames
        if not os.path.abspath(f.filename).startswith(_OWN_DIR)
        and not os.path.abspath(f.filename).startswith(_LIBRARY_DIRS)
    ]
    text = f"{type(exc).__name__}: {exc}"
    if not own:
        return text
    f = own[-1]
    line = (f.line or linecache.getline(f.filename, f.lineno)).strip()
    return f"{text} (at {os.path.basename(f.filename)}:{f.lineno} in {f.name}: `{line}`)"


class _Failed(Exception):
    """The implementation raised or broke the contract; the message is the row's detail."""


def _call_forward(forward: Callable, x, *params):
    try:
        out = forward(x, *params)
    except Exception as exc:  # noqa: BLE001 - any failure of the code under test is a finding
        raise _Failed(raised_at(exc)) from exc
    if out is None:
        raise _Failed("forward returned None: it must return (y, cache)")
    if not (isinstance(out, tuple) and len(out) == 2):
        raise _Failed(f"forward must return (y, cache), got {_describe(out)}")
    if out[0] is None:
        raise _Failed("forward returned None for y")
    return out


def _call_backward(backward: Callable, dy, cache, gradients: tuple = ("dx", "dgamma", "dbeta")):
    try:
        out = backward(dy, cache)
    except Exception as exc:  # noqa: BLE001
        raise _Failed(raised_at(exc)) from exc
    owed = f"({', '.join(gradients)})"
    if out is None:
        raise _Failed(f"backward returned None: it must return {owed}")
    if not (isinstance(out, tuple | list) and len(out) == len(gradients)):
        raise _Failed(f"backward must return {owed}, got {_describe(out)}")
    return tuple(out)


def _describe(value) -> str:
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


def _snapshot(value, depth: int = 0):
    """A deep copy of the arrays in a cache (tuples, lists, dicts and plain objects, a few levels deep)."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if depth > 4:
        return None
    if isinstance(value, tuple | list):
        return (
            type(value)(_snapshot(v, depth + 1) for v in value)
            if isinstance(value, list)
            else tuple(_snapshot(v, depth + 1) for v in value)
        )
    if isinstance(value, dict):
        return {k: _snapshot(v, depth + 1) for k, v in value.items()}
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return {"__attrs__": {k: _snapshot(v, depth + 1) for k, v in vars(value).items()}}
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - something we cannot copy is something we do not compare
        return None


def changed_entries(before, after, path: str = "cache", depth: int = 0) -> list[str]:
    """The entries of a cache that differ from a snapshot, by how to reach them: "cache['xmu']", "cache[2]"."""
    if isinstance(before, np.ndarray):
        same = isinstance(after, np.ndarray) and before.shape == after.shape
        return [] if same and np.array_equal(before, after, equal_nan=True) else [path]
    if depth > 4 or before is None:
        return []
    if isinstance(before, tuple | list) and isinstance(after, tuple | list):
        if len(before) != len(after):
            return [path]
        return [
            p
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            for p in changed_entries(b, a, f"{path}[{i}]", depth + 1)
        ]
    if isinstance(before, dict) and "__attrs__" in before and hasattr(after, "__dict__"):
        attrs = vars(after)
        return [
            p
            for k, b in before["__attrs__"].items()
            for p in changed_entries(b, attrs.get(k), f"{path}.{k}", depth + 1)
        ]
    if isinstance(before, dict) and isinstance(after, dict):
        out = [f"{path}[{k!r}]" for k in before.keys() ^ after.keys()]
        return out + [
            p
            for k in before.keys() & after.keys()
            for p in changed_entries(before[k], after[k], f"{path}[{k!r}]", depth + 1)
        ]
    try:
        return [] if before == after else [path]
    except Exception:  # noqa: BLE001
        return []


def _mixing(value, name: str, norm: str, dtype) -> np.ndarray:
    """mean_weight or var_weight as given (a private copy in x's dtype): three logits, always given."""
    if value is None:
        raise ValueError(f"check: {norm} needs {name}, the (3,) logits of its mixing weights (instance, layer, batch)")
    a = np.array(value, dtype=dtype)
    if a.size != 3:
        raise ValueError(f"{name} of shape {a.shape} does not fit {norm}: expected (3,)")
    return a


def _affine(value, name: str, lay: staged.Layout, dtype) -> np.ndarray | None:
    """gamma or beta as given (a private copy in x's dtype), if it holds the affine's elements in a shape that
    broadcasts against x as they must: (C,), or cs231n's (1, C, 1, 1), or normalized_shape for layer norm."""
    if value is None:
        return None
    a = np.array(value, dtype=dtype)
    squeezed = tuple(d for d in a.shape if d != 1)
    want = tuple(d for d in lay.affine_shape if d != 1)
    pad = len(lay.x_shape) - len(lay.affine_broadcast)
    bshape = (1,) * pad + tuple(lay.affine_broadcast)
    fits = squeezed == want and (
        a.shape == tuple(lay.affine_shape) or a.shape == bshape[len(bshape) - a.ndim :] or a.shape == bshape
    )
    if not fits:
        forms = sorted({tuple(lay.affine_shape), bshape}, key=len)
        raise ValueError(
            f"{name} of shape {a.shape} does not fit {lay.norm} on x of shape {lay.x_shape}: expected "
            + " or ".join(str(f) for f in forms)
        )
    return a


def _compare(check: str, got, want, bound, lay: staged.Layout, kind: str, index_shape: tuple | None = None) -> Row:
    """got against want, element by element within bound; the row reports the element furthest outside
    (its index in index_shape, want's shape by default)."""
    want = np.asarray(want, dtype=np.float64)
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), want.shape)
    ratio = compare.over(compare.error(got, want), bound)
    if not ratio.size:
        return Row(check, True, 0.0, 0.0)
    i = int(np.argmax(ratio))
    idx = np.unravel_index(i, want.shape if index_shape is None else index_shape)
    where = f"[{', '.join(str(int(k)) for k in idx)}] {lay.describe(kind, idx)}" if idx else ""
    return Row(
        check,
        bool(ratio.max() <= 1),
        compare.max_abs_error(got, want),
        compare.rel_error(got, want),
        where,
        tol=float(bound.reshape(-1)[i]),
        ratio=float(ratio.reshape(-1)[i]),
    )


def check(
    forward: Callable,
    backward: Callable | None,
    *,
    norm: str,
    x: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    eps: float | None = None,
    num_groups: int | None = None,
    normalized_shape=None,
    dy: np.ndarray | None = None,
    seed: int = 0,
    name: str | None = None,
    full_fd_limit: int = FULL_FD_LIMIT,
    directions: int = DIRECTIONS,
    sampled: int = SAMPLED_ELEMENTS,
    training: bool = True,
    running_mean=None,
    running_var=None,
    strict_dtype: bool = False,
    explain: bool = True,
    mean_weight: np.ndarray | None = None,
    var_weight: np.ndarray | None = None,
) -> Report:
    """Check forward/backward (the cs231n layer contract) of one norm at one input. Returns a Report.

    x: the input, float32 or float64, whose dtype sets the error bounds. gamma/beta: the affine parameters,
    (C,) or cs231n's (1, C, 1, 1) (normalized_shape for layer norm and rms norm), or None for an implementation
    without them; rms_norm has no beta (forward(x, gamma)). mean_weight/var_weight: switchable_norm's (3,) logits
    (forward(x, gamma, beta, mean_weight, var_weight)). A gamma that is constant (all ones, say), or logits all
    equal, are replaced by random ones, since they hide whole classes of bugs; dy defaults to a random upstream
    gradient. eps: the implementation's; None is the norm's default for x's dtype (1e-5; rms_norm, like
    F.rms_norm, the machine epsilon of x's dtype). num_groups (group norm) and normalized_shape (layer norm, rms
    norm) say which norm exactly. training=False checks eval mode: the reference normalizes with running_mean and
    running_var (batch norm; switchable norm's batch statistics), and nothing flows back through them.
    backward=None checks the forward alone. Finite differences: every element of inputs up to full_fd_limit
    elements, else `directions` random directional derivatives and `sampled` random elements (lower them for
    slow implementations). strict_dtype: float64 outputs for float32 input fail instead of warning.
    explain=False skips the diagnosis.
    """
    x = np.array(x)  # private copies of every input: the checks restore them, never the caller's arrays
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"check: expected x of dtype float32 or float64, got {x.dtype}")
    entry = norms.get(norm)
    lay = entry.layout(x.shape, num_groups=num_groups, normalized_shape=normalized_shape)
    given = dict(gamma=gamma, beta=beta, mean_weight=mean_weight, var_weight=var_weight)
    extra = [k for k, v in given.items() if v is not None and k not in entry.param_names]
    if extra:
        raise ValueError(
            f"check: {norm} has no {' or '.join(extra)}: its forward is forward(x, {', '.join(entry.param_names)})"
        )
    if not training and (running_mean is None or running_var is None):
        raise ValueError("check: training=False needs running_mean and running_var")
    # eps None with a norm whose default follows the dtype (rms_norm): the implementation's function at float64
    # input is another one (eps 2.2e-16 for 1.2e-7), so its finite differences are taken in x's own dtype
    eps_follows_dtype = eps is None and entry.default_eps is None
    eps = entry.resolve_eps(eps, x.dtype)
    # a stream of its own: drawn from default_rng(seed) itself, dy would repeat the user's x when x was made
    # with the same seed, and dy affine in x makes a batch-norm dx vanish
    rng = np.random.default_rng([0x5EED, seed])
    report = Report(name or f"{norm} {x.dtype} {tuple(x.shape)}" + ("" if training else " eval"))
    inputs = _Inputs.prepare(x, {k: given[k] for k in entry.param_names}, dy, lay, rng, report)

    # the reference: the float64 staged graph on the same input values
    stages = entry.stages(lay, eps)
    if not training:
        stages = staged.eval_mode(stages, running_mean, running_var)
    as64 = [
        None if a is None else np.asarray(a, np.float64).reshape(entry.param_shape(k, lay))
        for k, a in inputs.params.items()
    ]
    ref_y, ref_cache = staged.forward(inputs.x, *as64, stages=stages)
    ref = staged.backward(inputs.dy, ref_cache)
    bound = error_bounds.bounds(ref_cache, inputs.dy, x.dtype)
    _note_conditioning(report, bound, x)

    got = _run(forward, backward, inputs, report, entry.gradients)
    if got is None:
        return report
    report.add(_shapes(got, lay, inputs))
    report.add(_dtypes(got, x.dtype, strict_dtype))
    want = {"y": ref_y, **{t: ref[t] for t in entry.gradients}}
    compared = _against_staged(report, got, want, bound, lay, inputs)
    fd_rows, fd_dtype = {}, None
    if "dx" in got and "y" in compared:
        budget = Budget(full_fd_limit, directions, sampled)
        fd_rows, fd_dtype = _against_finite_differences(
            report, forward, inputs, compared, want, bound, ref_cache, rng, budget, eps_follows_dtype
        )
    if training and "dx" in compared and lay.count:
        report.rows.extend(_identity_rows(compared["dx"], ref_cache, lay, eps, bound, inputs.dy, entry.identities))
    if explain and not report.passed:
        # float32 differences are too coarse to say that a backward is the exact gradient of its forward
        fd_sharp = fd_dtype == np.float64
        diagnose.explain_report(
            report, compared, got, lay, ref_cache, inputs.dy, fd_rows, fd_sharp, bound, x.dtype, training
        )
    return report


@dataclass
class _Inputs:
    """Private copies of what the implementation is called with, and their originals to restore."""

    x: np.ndarray
    params: dict  # the norm's parameters after x, by name, in the order forward takes them (None: not given)
    dy: np.ndarray
    originals: list = field(default_factory=list)

    @classmethod
    def prepare(cls, x, params: dict, dy, lay: staged.Layout, rng, report: Report) -> _Inputs:
        dtype = x.dtype
        entry = norms.get(lay.norm)
        kinds = dict(entry.params)
        prepared = {}
        for name, value in params.items():
            if kinds[name] == norms.MIXING:
                a = _mixing(value, name, lay.norm, dtype)
                if np.ptp(a) == 0:
                    a = rng.standard_normal(a.shape).astype(dtype)
                    report.notes.append(f"{name} was constant (equal logits): checked with random logits instead")
            else:
                a = _affine(value, name, lay, dtype)
                if name == "gamma" and a is not None and a.size > 1 and np.ptp(a) == 0:
                    a = (1.0 + 0.5 * rng.standard_normal(a.shape)).astype(dtype)
                    report.notes.append("gamma was constant: checked with a random gamma instead")
            prepared[name] = a
        if dy is None:
            dy = rng.standard_normal(x.shape).astype(dtype)
        else:
            dy = np.array(dy, dtype=dtype)
            if dy.shape != x.shape:
                raise ValueError(f"check: dy must have x's shape {x.shape}, got {dy.shape}")
            if dy.size > 1 and np.ptp(dy) == 0:
                report.notes.append("dy is constant: for batch norm dx is then zero and many bugs hide")
        inputs = cls(x, prepared, dy)
        inputs.originals = [None if a is None else a.copy() for a in inputs.all]
        return inputs

    @property
    def names(self) -> tuple:
        return ("x", *self.params, "dy")

    @property
    def all(self) -> tuple:
        return (self.x, *self.params.values(), self.dy)

    @property
    def args(self) -> tuple:
        """What forward is called with: x and the parameters."""
        return (self.x, *self.params.values())

    @property
    def gamma(self) -> np.ndarray | None:
        return self.params.get("gamma")

    @property
    def beta(self) -> np.ndarray | None:
        return self.params.get("beta")

    def unchanged(self, when: str) -> Row:
        names = [
            n
            for n, a, o in zip(self.names, self.all, self.originals, strict=True)
            if a is not None and not np.array_equal(a, o, equal_nan=True)
        ]
        cause = "the implementation writes into its input" if names else ""
        return Row(f"inputs unchanged by {when}", not names, where=", ".join(names), cause=cause)

    def restore(self) -> None:
        """Later checks need the true inputs, whatever the implementation wrote into them."""
        for a, o in zip(self.all, self.originals, strict=True):
            if a is not None:
                a[...] = o


def _note_conditioning(report: Report, bound, x) -> None:
    if not np.all(np.isfinite(x)):
        report.notes.append("x holds NaN or inf: the statistics groups they are in are not judged")
    elif bound.unjudged:
        report.notes.append(
            f"{bound.unjudged} elements of x are in statistics groups so ill-conditioned for {x.dtype} that no "
            "digit of the answer is determined: they are not judged"
        )
    elif bound.loose:
        report.notes.append(
            f"this input is ill-conditioned for {x.dtype} (max|x| * rstd up to {np.nanmax(bound.kappa):.0e}): "
            "the bounds must allow errors of 1% or more, so only large mistakes show; check in float64 too"
        )


def _run(forward: Callable, backward: Callable | None, inputs: _Inputs, report: Report, gradients: tuple):
    """Forward, then backward twice on the same cache: rows for exceptions, inputs written and repeatability.
    The outputs as returned ({"y"} alone without a backward, or when it raised), or None if forward raised."""
    try:
        y, cache = _call_forward(forward, *inputs.args)
    except _Failed as exc:
        report.add(Row("forward runs", False, detail=str(exc)))
        return None
    report.add(inputs.unchanged("forward"))
    inputs.restore()
    got = {"y": y}
    if backward is None:
        return got
    before = _snapshot(cache)
    try:
        grads = _call_backward(backward, inputs.dy, cache, gradients)
        report.add(inputs.unchanged("backward"))
        inputs.restore()  # the repeat gets the same dy, so "backward repeatable" judges the cache alone
        written = changed_entries(before, cache)
        again = _call_backward(backward, inputs.dy, cache, gradients)
        inputs.restore()
    except _Failed as exc:
        report.add(Row("backward runs", False, detail=str(exc)))
        return got
    report.add(_repeatable(grads, again, written))
    got.update(zip(gradients, grads, strict=True))
    return got


def _kind(lay: staged.Layout, tensor: str) -> str:
    """How an element of a tensor is named: "x" for y and dx, else the kind of the parameter it differentiates."""
    return norms.get(lay.norm).kind(tensor)


def _against_staged(report: Report, got: dict, want: dict, bound, lay, inputs: _Inputs) -> dict:
    """A row per tensor the implementation owes; returns the tensors in the reference's shape, float64."""
    compared = {}
    for nm in want:
        if nm not in got or not _owed(nm, got[nm], inputs):
            continue
        value = _values(got[nm], want[nm])
        if value is None:
            report.add(Row(f"{nm} vs staged graph", False, detail=f"not comparable: {_shape_of(got[nm])}"))
            continue
        compared[nm] = value
        report.add(_compare(f"{nm} vs staged graph", value, want[nm], bound.of(nm), lay, _kind(lay, nm)))
    return compared


def _owed(nm: str, value, inputs: _Inputs) -> bool:
    """Is this output compared? dgamma when gamma was given. dbeta when both gamma and beta were, and when
    either was and the implementation returned one: PyTorch returns None for a bias it was not given, and
    this project's kernels return no affine gradients without gamma. The mixing weights' always."""
    if nm == "dgamma":
        return inputs.gamma is not None
    if nm == "dbeta":
        given = (inputs.gamma is not None, inputs.beta is not None)
        return all(given) or (any(given) and value is not None)
    return True


def _against_finite_differences(
    report, forward, inputs: _Inputs, compared, want, bound, ref_cache, rng, budget, eps_follows_dtype=False
):
    """dx, dgamma, dbeta against differences of the implementation's own forward: the rows by tensor, and the
    dtype the differences were taken in."""
    if eps_follows_dtype and inputs.x.dtype != np.float64:
        fd_dtype = np.dtype(inputs.x.dtype)
        fd_note = f"eps=None is the machine epsilon of the input's dtype: finite differences in {fd_dtype}"
    else:
        fd_dtype, fd_note = _fd_precision(forward, *inputs.args)
    if fd_note:
        report.notes.append(fd_note)
    dy64 = inputs.dy.astype(np.float64)
    y_shape = inputs.x.shape

    def forward_y(args):
        y = np.asarray(_call_forward(forward, *args)[0], dtype=np.float64)
        if y.size != dy64.size:
            raise _Failed(f"y has shape {y.shape} for x of shape {y_shape}")
        return y.reshape(y_shape)

    y_bound = bound.y if fd_dtype == inputs.x.dtype else error_bounds.bounds(ref_cache, dy64, fd_dtype).y
    rows = {}
    try:
        probe = Probe.at(forward_y, list(inputs.args), dy64, y_bound, fd_dtype)
    except _Failed as exc:
        probe, failure = None, exc
    lay = ref_cache["layout"]
    for arg, (nm, value) in enumerate(zip(norms.get(lay.norm).gradients, inputs.args, strict=True)):
        if value is None or nm not in compared:
            continue
        shape = value.shape
        target = Target(
            nm, arg, _kind(lay, nm), compared[nm].reshape(shape), bound.of(nm).reshape(shape), want[nm].reshape(shape)
        )
        try:
            if probe is None:
                raise failure
            row = finite_difference_row(probe, target, ref_cache, rng, budget)
        except _Failed as exc:
            row = Row(f"{nm} vs finite differences", False, detail=f"forward failed on a nearby input: {exc}")
        inputs.restore()
        rows[nm] = report.add(row)
    return rows, fd_dtype


def _shape_of(value) -> str:
    return "None" if value is None else f"shape {np.shape(value)}"


def _values(got, want):
    """got as float64 in want's shape when its elements fit (a (1, D) dgamma for a (D,) one), else None."""
    if got is None or want is None:
        return None
    try:
        a = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if a.shape == want.shape:
        return a
    if a.size == want.size and tuple(d for d in a.shape if d != 1) == tuple(d for d in want.shape if d != 1):
        return a.reshape(want.shape)
    return None


def _same_output(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        return bool(np.array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), equal_nan=True))
    except (TypeError, ValueError):  # not numbers: the shapes row says what they are
        return a is b


def _repeatable(grads, again, written: list[str]) -> Row:
    same = all(_same_output(a, b) for a, b in zip(grads, again, strict=True))
    entries = ", ".join(written[:4]) + (" ..." if len(written) > 4 else "")
    if same and not written:
        return Row("backward repeatable", True)
    if same:
        return Row("backward repeatable", True, warn=True, where=f"backward writes into {entries}")
    cause = (
        f"backward writes into {entries}, so a second backward on the same cache gets another answer"
        if written
        else "backward depends on state outside its cache (or is nondeterministic)"
    )
    return Row("backward repeatable", False, where=entries or "second call differs", cause=cause)


def _allowed_shapes(nm: str, lay: staged.Layout, inputs: _Inputs) -> set:
    """The shapes an output may come in: x's for y and dx; the parameter's own shape for its gradient, or the
    shape it was given in (cs231n's (1, C, 1, 1), the other affine parameter's when it alone was given)."""
    entry = norms.get(lay.norm)
    if entry.kind(nm) == "x":
        return {tuple(inputs.x.shape)}
    name = nm[1:]
    given = inputs.params.get(name)
    if given is None:
        given = inputs.gamma if inputs.gamma is not None else inputs.beta
    return {entry.param_shape(name, lay), tuple(given.shape)}


def _shapes(got: dict, lay: staged.Layout, inputs: _Inputs) -> Row:
    problems, keepdims = [], []
    for nm, a in got.items():
        if nm in ("dgamma", "dbeta") and not _owed(nm, a, inputs):
            if a is not None:
                problems.append(f"{nm} should be None without {'gamma' if nm == 'dgamma' else 'gamma or beta'}")
            continue
        allowed = _allowed_shapes(nm, lay, inputs)
        shape = None if a is None else np.shape(a)
        if shape not in allowed:
            want = " or ".join(str(s) for s in sorted(allowed, key=len))
            if a is not None and _values(a, np.zeros(next(iter(allowed)))) is not None:
                problems.append(f"{nm} has shape {shape}, expected {want}")
                keepdims.append(nm)
            else:
                problems.append(f"{nm}: {'None' if a is None else f'shape {shape}'}, expected {want}")
    text = "; ".join(problems)
    cause = ""
    if keepdims:
        cause = f"{' and '.join(keepdims)} {'have' if len(keepdims) > 1 else 'has'} the right values, kept in a shape "
        cause += "with extra axes of size 1 (keepdims=True): return them in their parameter's shape"
    return Row("shapes", not problems, where=text[:80], detail=text if len(text) > 80 else "", cause=cause)


def _dtypes(got: dict, dtype, strict: bool) -> Row:
    """Outputs in x's dtype. float64 for float32 input costs nothing in accuracy: a warning (unless strict);
    float32 for float64 input loses precision and fails."""
    wider, narrower = [], []
    for nm, a in got.items():
        if a is None or not hasattr(a, "dtype"):
            continue
        if a.dtype != dtype:
            (wider if np.dtype(a.dtype).itemsize > dtype.itemsize else narrower).append(f"{nm} is {a.dtype}")
    text = "; ".join(narrower + wider) + (f" for {dtype} input" if narrower or wider else "")
    if narrower or (wider and strict):
        return Row("dtypes", False, where=text)
    return Row("dtypes", True, warn=bool(wider), where=text)


def _fd_precision(forward: Callable, x, *params) -> tuple[np.dtype, str]:
    """The dtype the finite differences can be trusted at, and a note when it is not float64. float64 if the
    forward computes float64 input in float64. One that returns float32 for it computes in float32; one that
    returns float64 but rounds its input to float32 inside sees no change when every element moves by
    2**-30 of itself. Their differences are taken in float32, the steps they really see."""
    as64 = [None if a is None else a.astype(np.float64) for a in (x, *params)]
    float32 = np.dtype(np.float32)
    try:
        y64 = _call_forward(forward, *as64)[0]
        if np.asarray(y64).dtype != np.float64:
            return float32, "forward computes in float32 whatever it is given: finite differences in float32"
        nudged = as64[0] * (1 + 2.0**-30 * np.where(np.arange(x.size).reshape(x.shape) % 2, 1.0, -1.0))
        y_nudged = _call_forward(forward, nudged, *as64[1:])[0]
    except _Failed:
        return np.dtype(x.dtype), f"forward does not take float64 input: finite differences in {x.dtype}"
    if x.size and np.array_equal(np.asarray(y64), np.asarray(y_nudged), equal_nan=True) and np.any(x != 0):
        return float32, "forward rounds its input to float32 inside: finite differences in float32"
    return np.dtype(np.float64), ""


def _identity_rows(dx, ref_cache, lay: staged.Layout, eps: float, bound, dy, identities: tuple) -> list[Row]:
    """Per statistics group, those of the norm's identities (verify.norms) that hold for it: sum(dx) = 0 and
    sum(dx * xhat) = rstd * mean(g * xhat) * M * eps / (var + eps) = rstd**3 * mean(g * xhat) * M * eps. For
    RMSNorm var is ms: dx = rstd (g - xhat mean(g xhat)) gives sum(dx xhat) = rstd M mean(g xhat) (1 -
    mean(xhat**2)), and mean(xhat**2) = var / (var + eps) for either."""
    ax = lay.reduce_axes
    dxv = np.asarray(dx, dtype=np.float64).reshape(lay.view_shape)
    xhat = ref_cache["xhat"].reshape(lay.view_shape)
    g = (np.asarray(dy, np.float64) * ref_cache["gamma"].reshape(lay.affine_broadcast)).reshape(lay.view_shape)
    rows = []
    if norms.SUM_DX in identities:
        value = dxv.sum(axis=ax, keepdims=True)
        rows.append(_identity_row("sum(dx) = 0 per group", value, np.zeros_like(value), bound.sum_dx, lay))
    if norms.SUM_DX_ALL in identities:
        value = dxv.sum()
        rows.append(_compare("sum(dx) = 0 over the whole tensor", value, 0.0, bound.sum_dx_all, lay, "x", ()))
    if norms.SUM_DX_XHAT in identities:
        ivar = ref_cache["rstd"].reshape(lay.stats_broadcast)
        eps_term = ivar * (g * xhat).mean(axis=ax, keepdims=True) * lay.count * eps * ivar**2  # eps / (var + eps)
        value = (dxv * xhat).sum(axis=ax, keepdims=True)
        rows.append(_identity_row("sum(dx * xhat) = eps term per group", value, eps_term, bound.sum_dx_xhat, lay))
    return rows


def _identity_row(check: str, value, expected, allowed, lay: staged.Layout) -> Row:
    flat = [a.reshape(-1) for a in (value, expected, allowed)]
    return _compare(check, *flat, lay, "stats", index_shape=lay.stats_shape)
