"""verify.check: is a normalization layer's forward and backward right, and if not, where and why?

The implementation under test follows the cs231n layer contract:

    forward(x, gamma, beta) -> (y, cache)
    backward(dy, cache)     -> (dx, dgamma, dbeta)

Every check is one row of the report:

    shapes and dtypes        y, dx like x; dgamma, dbeta like gamma (None without gamma)
    y vs staged graph        the float64 staged graph on the same inputs; tolerance by the dtype under test
    dx, dgamma, dbeta vs staged graph
    dx, dgamma, dbeta vs finite differences of the implementation's own forward (central, float64)
    sum(dx) = 0              per statistics group
    sum(dx * xhat) = eps term  per group: rstd * mean(g * xhat) * M * eps / (var + eps), 0 when eps = 0
    inputs unchanged         by forward, and by backward
    backward repeatable      a second backward on the same cache gives the same bits

A failing row says where the worst element is and what it means (channel, row, group), and when the
error matches a known mistake (verify.mistakes), names it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import compare, mistakes, staged
from .numerical import default_step, directional_derivative, numerical_gradient
from .report import Report, Row

# Inputs up to this many elements get finite differences on every element; larger ones get random
# directional derivatives plus a random sample of elements.
FULL_FD_LIMIT = 512
DIRECTIONS = 4
SAMPLED_ELEMENTS = 16


def _fmt_tol(tol: compare.Tol) -> str:
    return f"rtol {tol.rtol:.0e}, atol {tol.atol:.0e}"


def _worst(got, want, tol: compare.Tol) -> tuple:
    """Index of the element furthest outside |a - b| <= atol + rtol * |b|."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        excess = np.abs(got - want) / (tol.atol + tol.rtol * np.abs(want))
    excess = np.where(np.isnan(excess), np.inf, excess)
    return np.unravel_index(int(np.argmax(excess)), got.shape) if got.size else ()


def _where(idx: tuple, lay: staged.Layout, kind: str) -> str:
    return f"[{', '.join(str(int(i)) for i in idx)}] {lay.describe(kind, idx)}" if len(idx) else ""


def _compare_row(check: str, got, want, tol: compare.Tol, lay: staged.Layout, kind: str) -> Row:
    if got is None or np.shape(got) != np.shape(want):
        return Row(check, False, detail=f"shape {None if got is None else np.shape(got)}, expected {np.shape(want)}")
    idx = _worst(got, want, tol)
    where = _where(idx, lay, kind)
    return Row(
        check,
        compare.within(got, want, tol),
        compare.max_abs_error(got, want),
        compare.rel_error(got, want),
        where,
        _fmt_tol(tol),
    )


class _Implementation:
    """Runs the forward and backward under test, catching what they raise."""

    def __init__(self, forward: Callable, backward: Callable):
        self.forward = forward
        self.backward = backward

    def run_forward(self, x, gamma, beta):
        out = self.forward(x, gamma, beta)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"forward must return (y, cache), got {type(out).__name__}")
        return out

    def run_backward(self, dy, cache):
        out = self.backward(dy, cache)
        if not (isinstance(out, tuple) and len(out) == 3):
            raise TypeError(f"backward must return (dx, dgamma, dbeta), got {type(out).__name__}")
        return out


def _fd_precision(impl: _Implementation, x, gamma, beta) -> tuple[np.dtype, str]:
    """The dtype the finite differences can be trusted at: float64 if forward keeps float64 input in float64."""
    try:
        y64, _ = impl.run_forward(*(None if a is None else a.astype(np.float64) for a in (x, gamma, beta)))
        if np.asarray(y64).dtype == np.float64:
            return np.dtype(np.float64), "float64"
        return np.dtype(np.float32), "forward returns float32 for float64 input: float32 finite differences"
    except Exception as exc:  # noqa: BLE001 - an implementation that only takes its own dtype
        return np.dtype(x.dtype), f"forward rejects float64 input ({type(exc).__name__}): {x.dtype} differences"


def _fd_rows(impl, name: str, arg: int, inputs: list, dy, analytic, fd_dtype, tol, lay, kind, rng, budget) -> Row:
    """Finite differences of sum(dy * forward(...)) with respect to inputs[arg], against the analytic gradient."""
    check = f"{name} vs finite differences"
    base = inputs[arg].astype(fd_dtype)

    def f(v):
        args = [None if a is None else a.astype(fd_dtype) for a in inputs]
        args[arg] = v
        return np.asarray(impl.run_forward(*args)[0], dtype=np.float64)

    y0 = f(base)
    h = default_step(base)
    # rounding in sum(dy * y) is ~eps * sum|dy * y|; divided by 2h, it bounds the difference's own error
    noise = 10 * np.finfo(fd_dtype).eps * float(np.sum(np.abs(dy * y0))) / h
    fd_tol = compare.FINITE_DIFFERENCE if fd_dtype == np.float64 else compare.FINITE_DIFFERENCE_FLOAT32
    tol = compare.Tol(max(tol.rtol, fd_tol.rtol), max(tol.atol, fd_tol.atol) + noise)
    analytic = np.asarray(analytic, dtype=np.float64)
    if analytic.shape != base.shape:
        return Row(check, False, detail=f"shape {analytic.shape}, expected {base.shape}")
    full_limit, directions, sampled = budget
    if base.size <= full_limit:
        numeric = numerical_gradient(f, base, dy, h=h)
        row = _compare_row(check, analytic, numeric, tol, lay, kind)
        row.detail = f"every element, h = {h:.1e}"
        return row
    # large input: random directions, then a random sample of elements; the worst one found is reported
    detail = f"{directions} directions + {sampled} elements, h = {h:.1e}"
    worst_excess, row = -1.0, Row(check, True, detail=detail)
    for _ in range(directions):
        u = rng.standard_normal(base.shape)
        numeric = directional_derivative(f, base, dy, u, h=h)
        exact = float(np.sum(analytic * u))
        scale = float(np.linalg.norm(analytic) * np.linalg.norm(u))
        err = abs(numeric - exact)
        excess = err / (tol.atol + tol.rtol * scale)
        if excess > worst_excess:
            worst_excess = excess
            row = Row(
                check,
                excess <= 1,
                err,
                err / max(1e-8, abs(numeric) + abs(exact)),
                "random direction",
                _fmt_tol(tol),
                detail=detail,
            )
    picks = rng.choice(base.size, size=min(sampled, base.size), replace=False)
    for i in picks:
        u = np.zeros(base.shape)
        u.reshape(-1)[i] = 1.0
        numeric = directional_derivative(f, base, dy, u, h=h)
        exact = float(analytic.reshape(-1)[i])
        err = abs(numeric - exact)
        excess = err / (tol.atol + tol.rtol * abs(numeric))
        if excess > worst_excess:
            worst_excess = excess
            idx = np.unravel_index(i, base.shape)
            row = Row(
                check,
                excess <= 1,
                err,
                err / max(1e-8, abs(numeric) + abs(exact)),
                _where(idx, lay, kind),
                _fmt_tol(tol),
                detail=detail,
            )
    return row


def _identity_rows(dx, ref_cache, lay: staged.Layout, eps: float, tol: compare.Tol, dy, gamma) -> list[Row]:
    """Per statistics group: sum(dx) = 0 and sum(dx * xhat) = rstd * mean(g * xhat) * M * eps / (var + eps)."""
    ax = lay.reduce_axes
    dxv = np.asarray(dx, dtype=np.float64).reshape(lay.view_shape)
    xhat = ref_cache["xhat"].reshape(lay.view_shape)
    g = dy * (1.0 if gamma is None else np.asarray(gamma, np.float64).reshape(lay.affine_broadcast))
    g = g.reshape(lay.view_shape)
    m = lay.count
    var, ivar = ref_cache["var"], ref_cache["ivar"]
    eps_term = ivar * (g * xhat).mean(axis=ax, keepdims=True) * m * eps / (var + eps)
    scale = np.abs(dxv).sum(axis=ax, keepdims=True)
    rows = []
    for check, value, expected in [
        ("sum(dx) = 0 per group", dxv.sum(axis=ax, keepdims=True), np.zeros_like(eps_term)),
        ("sum(dx * xhat) = eps term per group", (dxv * xhat).sum(axis=ax, keepdims=True), eps_term),
    ]:
        err = np.abs(value - expected)
        allowed = tol.atol + tol.rtol * scale
        excess = np.where(np.isnan(err), np.inf, err / allowed)
        i = int(np.argmax(excess))
        idx = np.unravel_index(i, lay.stats_shape) if lay.stats_shape else ()
        rows.append(
            Row(
                check,
                bool(np.all(excess <= 1)),
                float(np.nanmax(err, initial=0.0)),
                float(np.nanmax(err / np.maximum(scale, 1e-300), initial=0.0)),
                _where(idx, lay, "stats"),
                f"{_fmt_tol(tol)} x sum|dx|",
            )
        )
    return rows


def check(
    forward: Callable,
    backward: Callable,
    *,
    norm: str,
    x: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    eps: float = 1e-5,
    num_groups: int | None = None,
    normalized_shape=None,
    dy: np.ndarray | None = None,
    seed: int = 0,
    name: str | None = None,
    full_fd_limit: int = FULL_FD_LIMIT,
    directions: int = DIRECTIONS,
    sampled: int = SAMPLED_ELEMENTS,
) -> Report:
    """Check forward/backward (the cs231n layer contract) of one norm at one input. Returns a Report.

    x: the input, whose dtype (float32 or float64) picks the tolerances. gamma/beta: the affine parameters,
    or None for an implementation without them. A gamma that is constant (all ones, say) is replaced by a
    random one, since it hides whole classes of bugs; dy defaults to a random upstream gradient.
    Finite differences: every element of inputs up to full_fd_limit elements, else `directions` random
    directional derivatives and `sampled` random elements (lower them for slow implementations).
    """
    x = np.array(x)  # private copies of every input: the checks restore them, never the caller's arrays
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"check: expected x of dtype float32 or float64, got {x.dtype}")
    lay = staged.layout(norm, x.shape, num_groups=num_groups, normalized_shape=normalized_shape)
    dtype = x.dtype
    # a stream of its own: drawn from default_rng(seed) itself, dy would repeat the user's x when x was made
    # with the same seed, and dy affine in x makes a batch-norm dx vanish
    rng = np.random.default_rng([0x5EED, seed])
    report = Report(name or f"{norm} {x.dtype} {tuple(x.shape)}")
    if gamma is not None:
        gamma = np.array(gamma, dtype=dtype)
        if gamma.size > 1 and np.ptp(gamma) == 0:
            gamma = (1.0 + 0.5 * rng.standard_normal(gamma.shape)).astype(dtype)
            report.notes.append("gamma was constant: checked with a random gamma instead")
    if beta is not None:
        beta = np.array(beta, dtype=dtype)
    if dy is None:
        dy = rng.standard_normal(x.shape).astype(dtype)
    else:
        dy = np.array(dy, dtype=dtype)
        if dy.size > 1 and np.ptp(dy) == 0:
            report.notes.append("dy is constant: for batch norm dx is then zero and many bugs hide")
    tol = compare.kernel_tolerance(dtype)
    impl = _Implementation(forward, backward)
    inputs = [x, gamma, beta]
    originals = [None if a is None else a.copy() for a in (x, gamma, beta, dy)]

    def unchanged(when: str) -> Row:
        names = [
            n
            for n, a, o in zip(("x", "gamma", "beta", "dy"), (x, gamma, beta, dy), originals, strict=True)
            if a is not None and not np.array_equal(a, o, equal_nan=True)
        ]
        return Row(
            f"inputs unchanged by {when}",
            not names,
            where=", ".join(names),
            cause="the implementation writes into its input" if names else "",
        )

    # run the implementation
    try:
        y, cache = impl.run_forward(x, gamma, beta)
    except Exception as exc:  # noqa: BLE001 - any failure of the code under test is a finding
        report.add(Row("forward runs", False, detail=f"{type(exc).__name__}: {exc}"))
        return report

    def restore():  # later checks need the true inputs, whatever the implementation wrote into them
        for a, o in zip((x, gamma, beta, dy), originals, strict=True):
            if a is not None:
                a[...] = o

    report.add(unchanged("forward"))
    restore()
    try:
        dx, dgamma, dbeta = impl.run_backward(dy, cache)
        report.add(unchanged("backward"))
        restore()  # the repeat gets the same dy, so "backward repeatable" judges the cache alone
        again = impl.run_backward(dy, cache)
        restore()
    except Exception as exc:  # noqa: BLE001
        report.add(Row("backward runs", False, detail=f"{type(exc).__name__}: {exc}"))
        return report

    # shapes and dtypes
    problems = []
    for nm, a, shape in [
        ("y", y, x.shape),
        ("dx", dx, x.shape),
        ("dgamma", dgamma, lay.affine_shape),
        ("dbeta", dbeta, lay.affine_shape),
    ]:
        if gamma is None and nm in ("dgamma", "dbeta"):
            if a is not None:
                problems.append(f"{nm} should be None without gamma")
            continue
        a = np.asarray(a) if a is not None else None
        if a is None or a.shape != tuple(shape) or a.dtype != dtype:
            problems.append(
                f"{nm}: {None if a is None else (a.dtype.name, a.shape)}, expected {(dtype.name, tuple(shape))}"
            )
    report.add(Row("shapes and dtypes", not problems, detail="; ".join(problems), where="; ".join(problems)[:60]))
    same = all(
        (a is None and b is None)
        or (a is not None and b is not None and np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
        for a, b in zip((dx, dgamma, dbeta), again, strict=True)
    )
    report.add(
        Row(
            "backward repeatable",
            same,
            cause="" if same else "backward changes its cache or depends on state (or is nondeterministic)",
        )
    )

    # against the staged graph
    ref_y, ref_cache = staged.forward(
        x, gamma, beta, norm=norm, eps=eps, num_groups=num_groups, normalized_shape=normalized_shape
    )
    ref = staged.backward(dy, ref_cache)
    grads = {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}
    checks = [("y", y, ref_y, "x"), ("dx", dx, ref["dx"], "x")]
    if gamma is not None:
        checks += [("dgamma", dgamma, ref["dgamma"], "affine"), ("dbeta", dbeta, ref["dbeta"], "affine")]
    for nm, got, want, kind in checks:
        row = report.add(_compare_row(f"{nm} vs staged graph", got, want, tol, lay, kind))
        if not row.passed and got is not None and np.shape(got) == np.shape(want):
            row.cause = mistakes.diagnose(nm, np.asarray(got), x, gamma, beta, dy, eps, lay, tol)

    # against finite differences of the implementation's own forward
    fd_dtype, fd_note = _fd_precision(impl, x, gamma, beta)
    if fd_dtype != np.float64:
        report.notes.append(fd_note)
    dy64 = dy.astype(np.float64)
    for nm, arg, kind in [("dx", 0, "x"), ("dgamma", 1, "affine"), ("dbeta", 2, "affine")]:
        if inputs[arg] is None or grads[nm] is None:
            continue
        try:
            report.add(
                _fd_rows(
                    impl,
                    nm,
                    arg,
                    inputs,
                    dy64,
                    grads[nm],
                    fd_dtype,
                    tol,
                    lay,
                    kind,
                    rng,
                    (full_fd_limit, directions, sampled),
                )
            )
        except Exception as exc:  # noqa: BLE001
            report.add(Row(f"{nm} vs finite differences", False, detail=f"{type(exc).__name__}: {exc}"))

    # identities that need no reference
    if dx is not None and np.shape(dx) == x.shape:
        report.rows.extend(_identity_rows(dx, ref_cache, lay, eps, tol, dy64, gamma))
    return report
