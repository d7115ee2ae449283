"""The cs231n assignment's normalization functions, checked as they are written.

    report = verify.cs231n.check(batchnorm_forward, batchnorm_backward, x=x, gamma=gamma, beta=beta,
                                 bn_param={"mode": "train"})
    reports = verify.cs231n.check_file("cs231n/layers.py")      # what `python -m verify layers.py` runs

The assignment's signatures: `batchnorm_forward(x, gamma, beta, bn_param)` (x (N, D); bn_param with "mode"
"train" or "test", "eps", "momentum", "running_mean", "running_var"), `layernorm_forward(x, gamma, beta,
ln_param)`, `spatial_batchnorm_forward(x, gamma, beta, bn_param)` (x (N, C, H, W)),
`spatial_groupnorm_forward(x, gamma, beta, G, gn_param)` (gamma (C,) or, in older versions, (1, C, 1, 1)),
each with a `*_backward(dout, cache)`, and `batchnorm_backward_alt`. Its running averages follow its own
convention, not PyTorch's: momentum (0.9) multiplies the old value, and the variance is the biased one:

    running_mean = momentum * running_mean + (1 - momentum) * sample_mean
    running_var  = momentum * running_var  + (1 - momentum) * sample_var
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import bounds as error_bounds
from . import compare
from .cases import Case
from .check import _call_forward, _Failed, raised_at
from .check import check as check_layer
from .report import Report, Row


@dataclass(frozen=True)
class Layer:
    """One of the assignment's layers: its functions, the norm it is, and the input the check feeds it."""

    name: str  # e.g. "spatial_groupnorm"
    norm: str
    param: str  # the name of its parameter dict
    shape: tuple  # no two dims alike, and M - 1 no dim, so a wrong axis or divisor cannot pass unseen
    num_groups: int | None = None

    @property
    def forward_name(self) -> str:
        return f"{self.name}_forward"

    @property
    def case(self) -> Case:
        """The input the check feeds it: x drawn as the assignment's notebook draws it (verify.cases.RECIPES)."""
        normalized_ndim = 1 if self.norm == "layer_norm" else None
        return Case(self.norm, self.shape, self.num_groups, normalized_ndim, recipe="cs231n")

    def layout_kwargs(self, x_shape: tuple) -> dict:
        """What verify.check needs to know the norm exactly, for an x of this shape."""
        if self.norm == "layer_norm":
            return {"normalized_shape": tuple(x_shape[-1:])}
        return {"num_groups": self.num_groups} if self.num_groups else {}


LAYERS = {
    "batchnorm": Layer("batchnorm", "batch_norm", "bn_param", (8, 5)),
    "layernorm": Layer("layernorm", "layer_norm", "ln_param", (4, 7)),
    "spatial_batchnorm": Layer("spatial_batchnorm", "batch_norm", "bn_param", (2, 3, 4, 5)),
    "spatial_groupnorm": Layer("spatial_groupnorm", "group_norm", "gn_param", (2, 6, 4, 5), num_groups=2),
}
# (layer, backward function): the pairs a layers.py may define, in the assignment's order
PAIRS = (
    ("batchnorm", "batchnorm_backward"),
    ("batchnorm", "batchnorm_backward_alt"),
    ("layernorm", "layernorm_backward"),
    ("spatial_batchnorm", "spatial_batchnorm_backward"),
    ("spatial_groupnorm", "spatial_groupnorm_backward"),
)
MOMENTUM = 0.9  # the assignment's default


def _layer_for(forward: Callable, x, param_names: dict) -> Layer:
    """Which layer a forward is, from what the caller passed (and its signature)."""
    name = getattr(forward, "__name__", "")
    for layer in LAYERS.values():
        if name == layer.forward_name:
            return layer
    if "gn_param" in param_names or "G" in param_names:
        return LAYERS["spatial_groupnorm"]
    if "ln_param" in param_names:
        return LAYERS["layernorm"]
    if "bn_param" in param_names:
        return LAYERS["spatial_batchnorm" if np.ndim(x) == 4 else "batchnorm"]
    params = list(inspect.signature(forward).parameters)
    for layer in LAYERS.values():
        if layer.param in params:
            return layer
    raise ValueError("cs231n.check: pass bn_param, ln_param or gn_param (with G for group norm), so the layer is known")


def adapt(forward: Callable, layer: Layer, param: dict) -> Callable:
    """forward(x, gamma, beta) -> (y, cache) around a cs231n forward (the backward already has the layer
    contract): every call gets a fresh copy of param, so the checks never pile up running averages."""

    def wrapped_forward(x, gamma, beta):
        p = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in param.items()}
        if layer.norm == "group_norm":
            return forward(x, gamma, beta, layer.num_groups, p)
        return forward(x, gamma, beta, p)

    return wrapped_forward


def check(
    forward: Callable,
    backward: Callable | None = None,
    *,
    x,
    gamma=None,
    beta=None,
    bn_param: dict | None = None,
    ln_param: dict | None = None,
    gn_param: dict | None = None,
    G: int | None = None,
    **kwargs,
) -> Report:
    """verify.check for cs231n functions as they are: the layer, eps and mode come from the param dict given.

    In "test" mode the reference normalizes with bn_param's running_mean and running_var, and only the
    forward is checked (the assignment has no test-mode backward). kwargs go to verify.check.
    """
    given = {k: v for k, v in (("bn_param", bn_param), ("ln_param", ln_param), ("gn_param", gn_param)) if v is not None}
    if G is not None:
        given["G"] = G
    layer = _layer_for(forward, x, given)
    param = dict(given.get(layer.param, {}))
    if layer.norm == "group_norm":
        if G is None:
            raise ValueError("cs231n.check: spatial_groupnorm_forward needs G, the number of groups")
        layer = Layer(layer.name, layer.norm, layer.param, np.shape(x), num_groups=int(G))
    eps = float(param.get("eps", 1e-5))
    if layer.param == "bn_param":
        param.setdefault("mode", "train")  # the assignment's batch norm reads bn_param["mode"]
    mode = param.get("mode", "train")
    if mode not in ("train", "test"):
        raise ValueError(f"cs231n.check: {layer.param}['mode'] must be 'train' or 'test', got {mode!r}")
    extra = {}
    if mode == "test":
        if "running_mean" not in param or "running_var" not in param:
            raise ValueError(f"cs231n.check: test mode needs {layer.param}['running_mean'] and ['running_var']")
        extra = dict(training=False, running_mean=param["running_mean"], running_var=param["running_var"])
        backward = None
    fwd = adapt(forward, layer, param)
    kw = layer.layout_kwargs(np.shape(x))
    return check_layer(fwd, backward, norm=layer.norm, x=x, gamma=gamma, beta=beta, eps=eps, **kw, **extra, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Running averages


RUNNING_HYPOTHESES = (
    (
        "momentum_flipped",
        "momentum multiplies the new batch statistic instead of the old running value "
        "(PyTorch's convention; the assignment's 0.9 multiplies the old value)",
    ),
    ("unbiased", "running_var averages the unbiased batch variance (M - 1); the assignment uses the biased one"),
    ("torch", "the running averages follow PyTorch (momentum on the new value, unbiased variance)"),
    ("replaced", "the running averages are replaced by the batch statistics instead of averaged"),
    ("std", "running_var averages the standard deviation instead of the variance"),
    ("not_stored", "the running averages are never stored back into bn_param (a copy was updated, or a local)"),
)


def _expected_running(rm, rv, mean, var, m_count: int, momentum: float) -> dict:
    unbiased = var * m_count / max(m_count - 1, 1)
    return {
        "cs231n": (momentum * rm + (1 - momentum) * mean, momentum * rv + (1 - momentum) * var),
        "momentum_flipped": ((1 - momentum) * rm + momentum * mean, (1 - momentum) * rv + momentum * var),
        "unbiased": (momentum * rm + (1 - momentum) * mean, momentum * rv + (1 - momentum) * unbiased),
        "torch": ((1 - momentum) * rm + momentum * mean, (1 - momentum) * rv + momentum * unbiased),
        "replaced": (mean, var),
        "std": (momentum * rm + (1 - momentum) * mean, momentum * rv + (1 - momentum) * np.sqrt(var)),
        "not_stored": (rm, rv),
    }


def _running_statistics(rng, c: int) -> tuple[np.ndarray, np.ndarray]:
    """running_mean and running_var as a few steps of training leave them: any mean, a positive variance."""
    return rng.standard_normal(c), 0.5 + rng.random(c)


def running_rows(forward: Callable, layer: Layer, x, gamma, beta, seed: int = 0) -> list[Row]:
    """Rows for one train step's running averages, with given running statistics and with none given."""
    rng = np.random.default_rng([0x5EED, seed, 1])
    c = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)
    m_count = x.size // c
    rows = []
    for given in (True, False):
        rm, rv = _running_statistics(rng, c) if given else (np.zeros(c), np.zeros(c))
        param = {"mode": "train", "momentum": MOMENTUM}
        if given:
            param.update(running_mean=rm.copy(), running_var=rv.copy())
        label = "given" if given else "defaults"
        try:
            _call_forward(lambda a, g, b, p=param: forward(a, g, b, p), x, gamma, beta)
        except _Failed as exc:
            rows.append(Row(f"running averages ({label}) run", False, detail=str(exc)))
            continue
        expected = _expected_running(rm, rv, mean, var, m_count, MOMENTUM)
        got = (param.get("running_mean"), param.get("running_var"))
        # one step of m * old + (1 - m) * new: a few roundings of the larger of old and new, plus the batch
        # statistics' own (a sum of M terms, verify.bounds.roundings)
        u = error_bounds.unit_roundoff(np.float64)
        scale_mean = np.abs(rm) + np.abs(mean) + np.max(np.abs(x))
        scale_var = np.abs(rv) + var + np.max(np.abs(x)) ** 2
        grow = error_bounds.SAFETY * (error_bounds.roundings(m_count) + 5) * u
        for i, (nm, scale) in enumerate((("running_mean", scale_mean), ("running_var", scale_var))):
            rows.append(_running_row(nm, label, got[i], expected, i, grow * scale))
    return rows


def _running_row(nm: str, label: str, got, expected: dict, i: int, tol) -> Row:
    check = f"{nm} after a train step ({label})"
    want = expected["cs231n"][i]
    if got is None:
        return Row(check, False, where=f"bn_param has no {nm!r}", cause=dict(RUNNING_HYPOTHESES)["not_stored"])
    a = np.asarray(got, dtype=np.float64)
    if a.size != want.size:
        return Row(check, False, where=f"shape {a.shape}, expected {want.shape}")
    shape_note = "" if a.shape == want.shape else f"shape {a.shape}, expected {want.shape}"
    a = a.reshape(want.shape)
    ratio = float(compare.over(compare.error(a, want), tol).max(initial=0.0))
    passed = ratio <= 1 and not shape_note
    row = Row(check, passed, compare.max_abs_error(a, want), None, shape_note, tol=float(np.max(tol)), ratio=ratio)
    if ratio > 1:
        for key, words in RUNNING_HYPOTHESES:
            if np.all(compare.over(compare.error(a, expected[key][i]), tol) <= 1):
                row.cause, row.hypothesis = words, key
                break
    elif shape_note:
        row.cause = (
            f"the values are right, but {nm} has shape {np.shape(got)} (keepdims=True?): it must be {want.shape}"
        )
        row.hypothesis = "running_keepdims"
    return row


# ---------------------------------------------------------------------------------------------------------------
# A student's file


def load(path: str | Path):
    """Import a layers.py from its path (its own folder on sys.path, as a notebook would have it)."""
    path = Path(path).resolve()
    spec = importlib.util.spec_from_file_location(f"_student_{path.stem}_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


@dataclass
class Entry:
    """One pair of the assignment in a student's file: its report, or why there is none."""

    name: str  # "batchnorm_forward + batchnorm_backward"
    report: Report | None
    missing: tuple = ()  # function names not defined in the file

    @property
    def passed(self) -> bool:
        return self.report is not None and self.report.passed


def _groupnorm_gamma(forward, backward, x, gamma, beta, g: int):
    """gamma in the shape the student's group norm is written for: (1, C, 1, 1) or (C,), whichever its forward
    takes and its backward returns dgamma in."""
    shapes = ((1, x.shape[1], 1, 1), (x.shape[1],))
    fits = []
    for shape in shapes:
        try:
            y, cache = forward(x, gamma.reshape(shape), beta.reshape(shape), g, {"eps": 1e-5})
            if np.shape(y) != x.shape:
                continue
            fits.append(shape)
            if backward is not None and np.shape(backward(np.ones_like(x), cache)[1]) == shape:
                return shape
        except Exception:  # noqa: BLE001, S112 - a shape the code does not take
            continue
    return fits[0] if fits else shapes[1]


def check_module(module, *, seed: int = 0, **kwargs) -> list[Entry]:
    """Every cs231n pair the module defines: train mode; test mode and the running averages for batch norm."""
    entries = []
    for layer_name, backward_name in PAIRS:
        layer = LAYERS[layer_name]
        forward = getattr(module, layer.forward_name, None)
        backward = getattr(module, backward_name, None)
        title = f"{layer.forward_name} + {backward_name}"
        missing = tuple(n for n, f in ((layer.forward_name, forward), (backward_name, backward)) if not callable(f))
        if not callable(forward):
            entries.append(Entry(title, None, missing))
            continue
        rng = np.random.default_rng([seed, len(entries)])
        x, gamma, beta, _ = layer.case.inputs(seed=[seed, len(entries)])
        params = {layer.param: {"mode": "train", "eps": 1e-5}}
        if layer.norm == "group_norm":
            shape = _groupnorm_gamma(forward, backward, x, gamma, beta, layer.num_groups)
            gamma, beta = gamma.reshape(shape), beta.reshape(shape)
            params["G"] = layer.num_groups
        report = check(
            forward,
            backward if callable(backward) else None,
            x=x,
            gamma=gamma,
            beta=beta,
            name=title,
            **params,
            **kwargs,
        )
        if layer.param == "bn_param" and backward_name.endswith("_backward"):
            rm, rv = _running_statistics(rng, x.shape[1])
            test_param = {"mode": "test", "eps": 1e-5, "running_mean": rm, "running_var": rv}
            test = check(forward, None, x=x, gamma=gamma, beta=beta, bn_param=test_param, **kwargs)
            for row in test.rows:
                if row.check.startswith("y vs") or not row.passed:
                    row.check = f"test mode: {row.check}"
                    report.rows.append(row)
            report.rows.extend(running_rows(forward, layer, x, gamma, beta, seed))
        entries.append(Entry(title, report, missing))
    return entries


def check_file(path: str | Path, **kwargs) -> list[Entry]:
    """check_module on a layers.py given by its path. A file that fails to import is one failed entry."""
    try:
        module = load(path)
    except Exception as exc:  # noqa: BLE001 - the student's file is what is under test
        report = Report(f"import {Path(path).name}")
        report.add(Row("file imports", False, detail=raised_at(exc)))
        return [Entry(f"import {Path(path).name}", report)]
    return check_module(module, **kwargs)


def summary(entries: list[Entry]) -> str:
    """One line per pair: PASS/FAIL and the first cause, or the functions not found."""
    width = max(len(e.name) for e in entries)
    lines = []
    for e in entries:
        if e.report is None:
            lines.append(f"{e.name:<{width}}  not found: {', '.join(e.missing)}")
            continue
        first = next((r for r in e.report.failures if r.cause), None)
        note = f"\n    {first.check}: {first.cause}" if first else ""
        if e.report.diagnosis:
            note = f"\n    {e.report.diagnosis.split(' — ')[0]}"
        extra = f"; {', '.join(e.missing)} not found" if e.missing else ""
        failed = len(e.report.failures)
        verdict = "PASS" if e.report.passed else f"FAIL ({failed} of {len(e.report.rows)} checks)"
        lines.append(f"{e.name:<{width}}  {verdict}{extra}{note}")
    return "\n".join(lines)
