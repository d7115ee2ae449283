"""The --plot figure: GB/s bars per case and backend, and GB/s against input size. Needs matplotlib
(``pip install -e ".[plot]"``)."""

from __future__ import annotations

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError as e:  # an optional extra
    raise SystemExit('--plot needs matplotlib: pip install -e ".[plot]"') from e

from . import harness as h

_STYLE = {"forward": "-", "backward": "--"}
_MARKER = {"cpu": "o", "cpu-out": "^", "cuda": "s", "cuda-out": "v"}  # the curve shows normkernels' own backends


def _series(r: dict) -> tuple:
    """What one line of the curve follows across sizes: (op, ndim, direction)."""
    return r["op"], len(r["shape"]), r["direction"]


def _label(r: dict) -> str:
    return f"{r['op'].replace('_norm', '')} {'x'.join(map(str, r['shape']))}\n{r['direction']}"


def save(results: list[dict], copies: list[dict], path: str, title: str = "") -> None:
    fig, (bars, curve) = plt.subplots(1, 2, figsize=(17, 6.5), gridspec_kw=dict(width_ratios=[3, 2]))

    # Left: one group of bars per (case, direction), one bar per backend, at the cases' largest size per op.
    groups = list(dict.fromkeys((r["case"], r["direction"]) for r in results))
    if len(groups) > 20:  # a sweep: keep the largest size of each op
        biggest: dict[tuple, int] = {}
        for r in results:
            biggest[_series(r)] = max(biggest.get(_series(r), 0), r["model_bytes"])
        keep = {(r["case"], r["direction"]) for r in results if r["model_bytes"] == biggest[_series(r)]}
        groups = [g for g in groups if g in keep]
    backends = list(dict.fromkeys(r["backend"] for r in results))
    width = 0.8 / len(backends)
    index = {g: i for i, g in enumerate(groups)}
    for j, backend in enumerate(backends):
        xs, ys = [], []
        for r in results:
            g = (r["case"], r["direction"])
            if r["backend"] == backend and g in index:
                xs.append(index[g] + (j - (len(backends) - 1) / 2) * width)
                ys.append(r["gbps"])
        bars.bar(xs, ys, width, label=h.LABELS[backend])
    labels = {(r["case"], r["direction"]): _label(r) for r in results}
    bars.set_xticks(range(len(groups)), [labels[g] for g in groups], fontsize=7, rotation=90)
    for device, style in (("cpu", ":"), ("gpu", "-.")):
        best = [c["gbps"] for c in copies if c["device"] == device]
        if best and any(h.DEVICE[b] == device for b in backends):
            bars.axhline(max(best), color="grey", linestyle=style, linewidth=1, label=f"{device} copy (best size)")
    bars.set_ylabel("GB/s (minimum-bytes model, median time)")
    bars.set_yscale("log")
    bars.legend(fontsize=8)
    bars.set_title("GB/s per case and backend")

    # Right: GB/s against bytes moved, normkernels and the copy, one line per op and direction.
    lines: dict[tuple, list] = {}
    for r in results:
        if r["backend"] in _MARKER:
            lines.setdefault((r["backend"], *_series(r)), []).append((r["model_bytes"], r["gbps"]))
    for (backend, op, ndim, direction), pts in lines.items():
        pts.sort()
        curve.plot(
            [p[0] / 2**20 for p in pts],
            [p[1] for p in pts],
            _STYLE[direction],
            marker=_MARKER[backend],
            label=f"{backend} {op.replace('_norm', '')} {ndim}-D {direction}",
        )
    for device in sorted({c["device"] for c in copies}):
        pts = sorted((2 * c["bytes"], c["gbps"]) for c in copies if c["device"] == device)
        curve.plot([p[0] / 2**20 for p in pts], [p[1] for p in pts], "k:", marker=".", label=f"{device} copy")
    curve.set_xscale("log")
    curve.set_xlabel("bytes moved (MB, minimum-bytes model)")
    curve.set_ylabel("GB/s")
    curve.set_title("GB/s against size")
    curve.legend(fontsize=6, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
