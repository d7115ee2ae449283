"""The program tests/test_distributed.py runs under mpiexec, and the cases it runs.

Every rank builds the same global batches from a seed (the case's id), takes its slice of the rows, runs
normkernels.distributed's forward and backward and nn.SyncBatchNorm on it, and saves what it got to
OUTDIR/rank<r>.npz (keys "<case id>/<output>"); the test process checks those against the single-process float64
staged graph on the whole batch. The cases depend on the number of ranks only, so both sides list the same ones.

    mpiexec -n K python tests/mpi_worker.py OUTDIR LIMIT              one rank of K; exits by itself after LIMIT s
    python tests/mpi_worker.py --launch MPIEXEC K OUTDIR LIMIT        the above, killed with its process group after
                                                                      LIMIT s (exit status 124 then)
    python tests/mpi_worker.py --launch-all MPIEXEC OUTROOT FIRST LIMIT NAME=K ...
                                                                      the launches one after the other, into
                                                                      OUTROOT/NAME, each one's exit status and
                                                                      output in OUTROOT/NAME/launch.json; the first
                                                                      gets FIRST s, the others LIMIT s each

The launches run one after the other, not side by side: the first, on its own, compiles the kernels into Numba's
cache (minutes on a busy machine with a cold cache); the later ones load them. Side by side, every rank of every
launch compiled the same kernels at once, on a machine with two cores.

A rank that meets an unexpected exception prints it with the case's id and aborts the job, so that the others do
not wait in a collective for it. The expected errors (ranks that disagree on the channel count, one value per
channel in the whole batch) are caught and their messages saved.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

EPS = 1e-3  # large enough that a kernel ignoring it would be seen at float32's tolerance
MOMENTUM = 0.3
AFFINE = ("gamma_beta", "none", "gamma")
DTYPES = ("float32", "float64")
SHAPES = ((8, 3), (8, 4, 3, 3), (8, 2, 3, 2, 2))  # wide, spatial, 5-d: 8 rows, split over the ranks below
# rows per rank: an even split, uneven ones, empty ranks (rank 0 among them), all rows on one rank
SPLITS = {
    1: ((8,),),
    2: ((4, 4), (7, 1), (0, 8)),
    4: ((2, 2, 2, 2), (5, 1, 0, 2), (0, 3, 0, 5), (0, 0, 8, 0)),
}
# two rows in all: no rank alone has more than one value per channel, the whole batch has two
TWO_ROWS = ((2, 5), {1: ((2,),), 2: ((1, 1),), 4: ((0, 1, 0, 1), (1, 0, 1, 0))})
# nn.SyncBatchNorm: with weight and bias and PyTorch's default momentum; without them and momentum None (a
# cumulative average of the batches' statistics)
LAYERS = {"affine": 0.1, "no_affine": None}
LAYER_EPS = 1e-5  # the layer's default, which its cases keep
LAYER_STEPS = ("train1", "train2", "eval")


class Case(NamedTuple):
    kind: str  # "fn": the forward and backward functions; "layer": nn.SyncBatchNorm
    shape: tuple  # the whole batch's
    dtype: str
    affine: str  # fn: one of AFFINE; layer: a key of LAYERS
    counts: tuple  # rows on each rank
    label: str = ""

    @property
    def id(self) -> str:
        shape = "x".join(map(str, self.shape))
        counts = ".".join(map(str, self.counts))
        return f"{self.label or self.kind}-{shape}-{self.dtype}-{self.affine}-rows{counts}"

    @property
    def running(self) -> bool:
        """fn cases with gamma alone run without running statistics (the None path); every other has them."""
        return self.kind == "layer" or self.affine != "gamma"

    @property
    def momentum(self) -> float | None:
        return LAYERS[self.affine] if self.kind == "layer" else MOMENTUM


def cases(ranks: int) -> list[Case]:
    """Every case of a run on `ranks` ranks, in the order the worker runs them (the layer's after the fn's)."""
    shaped = [(s, counts) for s in SHAPES for counts in SPLITS[ranks]]
    shaped += [(TWO_ROWS[0], counts) for counts in TWO_ROWS[1][ranks]]
    out = [Case("fn", s, d, a, counts) for s, counts in shaped for d in DTYPES for a in AFFINE]
    out += [Case("layer", s, d, a, counts) for s, counts in shaped for d in DTYPES for a in LAYERS]
    return out


def after_errors(ranks: int) -> Case:
    """Run last, after the ranks raised together: they must still be in step."""
    return Case("fn", SHAPES[1], "float64", "gamma_beta", SPLITS[ranks][-1], label="after-errors")


class ErrorCase(NamedTuple):
    id: str
    shapes: tuple  # x's shape on each rank
    expect: str  # what every rank's message must say (a regular expression, case-insensitive)
    layer: bool = False  # nn.SyncBatchNorm instead of the forward function
    refuser: int | None = None  # the one rank whose own arguments are refused (the others are told)
    expect_refuser: str = ""  # what the refusing rank's message says
    refuse: str = ""  # what the refuser gets wrong: "x-float16" (the function), "x-channels" (the layer, built
    # for the others' C), "dy-shape" (the backward after a good forward)


ONE_VALUE = "Expected more than 1 value per channel when training"
TOLD = "RuntimeError: .*rank.* refused their arguments"


def error_cases(ranks: int) -> list[ErrorCase]:
    last = ranks - 1
    out = []
    if ranks > 1:
        even = tuple((2, 3) for _ in range(ranks))
        out += [
            ErrorCase("channels-last-rank", tuple((2, 4 if r == last else 3) for r in range(ranks)), "channel"),
            ErrorCase("channels-empty-rank0", tuple((0, 4) if r == 0 else (2, 3) for r in range(ranks)), "channel"),
            ErrorCase("refused-x-rank0", even, TOLD, False, 0, "TypeError: .*dtype float32 or float64", "x-float16"),
            ErrorCase(
                "refused-layer-x-last-rank",
                tuple((2, 4 if r == last else 3) for r in range(ranks)),
                TOLD,
                True,
                last,
                "ValueError: .*num_features",
                "x-channels",
            ),
            ErrorCase("refused-dy-last-rank", even, TOLD, False, last, "ValueError: .*dy of shape", "dy-shape"),
            ErrorCase("refused-layer-dy-rank0", even, TOLD, True, 0, "ValueError: .*expected dy of shape", "dy-shape"),
        ]
    out += [
        ErrorCase("one-value", tuple((1 if r == last else 0, 3) for r in range(ranks)), ONE_VALUE),
        ErrorCase("one-value-spatial", tuple((1 if r == 0 else 0, 2, 1, 1) for r in range(ranks)), ONE_VALUE),
        ErrorCase("one-value-layer", tuple((1 if r == last else 0, 3) for r in range(ranks)), ONE_VALUE, True),
    ]
    return out


ALL_EMPTY = (0, 3, 2)  # x's shape on every rank of the all-empty case


def error_running_stats(c: int) -> tuple[np.ndarray, np.ndarray]:
    """The running statistics the error and all-empty cases start from; they must come back unchanged."""
    return np.linspace(-1.0, 1.0, c), np.linspace(0.5, 2.0, c)


def inputs(case: Case, step: int = 0) -> dict:
    """The whole batch's x and dy, and gamma, beta and the initial running statistics, in the case's dtype; the
    same on every rank and in the test process (seeded by the case's id and the step)."""
    rng = np.random.default_rng([zlib.crc32(case.id.encode()), step])
    c = case.shape[1]
    bshape = (1, c) + (1,) * (len(case.shape) - 2)
    loc = rng.uniform(-3.0, 3.0, c).reshape(bshape)  # channels of different means and spreads
    scale = rng.uniform(0.5, 2.0, c).reshape(bshape)
    values = {
        "x": loc + scale * rng.standard_normal(case.shape),
        "dy": rng.standard_normal(case.shape),
        "gamma": rng.uniform(0.5, 1.5, c),
        "beta": rng.standard_normal(c),
        "running_mean": rng.standard_normal(c),
        "running_var": rng.uniform(0.5, 2.0, c),
    }
    return {k: v.astype(case.dtype) for k, v in values.items()}


def rows(counts: tuple, rank: int) -> slice:
    start = sum(counts[:rank])
    return slice(start, start + counts[rank])


# ---------------------------------------------------------------------------------------------------------------
# the ranks' side


def _run_fn(case: Case, comm, rank: int, out: dict) -> None:
    from normkernels import distributed

    g = inputs(case)
    mine = rows(case.counts, rank)
    x, dy = g["x"][mine].copy(), g["dy"][mine].copy()
    gamma = None if case.affine == "none" else g["gamma"]
    beta = g["beta"] if case.affine == "gamma_beta" else None
    rm = g["running_mean"].copy() if case.running else None
    rv = g["running_var"].copy() if case.running else None
    y, mean, rstd = distributed.sync_batch_norm_forward(
        x, gamma, beta, eps=EPS, training=True, running_mean=rm, running_var=rv, momentum=case.momentum, comm=comm
    )
    dx, dgamma, dbeta = distributed.sync_batch_norm_backward(dy, x, gamma, mean, rstd, training=True, comm=comm)
    got = dict(y=y, mean=mean, rstd=rstd, dx=dx, dgamma=dgamma, dbeta=dbeta, running_mean=rm, running_var=rv)
    _save(out, case.id, got)  # copies: the eval below must leave the running statistics alone
    if case.running:  # eval: normalized with the running statistics just updated, which stay as they are
        y, mean, rstd = distributed.sync_batch_norm_forward(
            x, gamma, beta, eps=EPS, training=False, running_mean=rm, running_var=rv, comm=comm
        )
        dx, dgamma, dbeta = distributed.sync_batch_norm_backward(dy, x, gamma, mean, rstd, training=False, comm=comm)
        evaluated = dict(y=y, mean=mean, rstd=rstd, dx=dx, dgamma=dgamma, dbeta=dbeta, running_mean=rm, running_var=rv)
        _save(out, f"{case.id}/eval", evaluated)


def _run_layer(case: Case, comm, rank: int, out: dict) -> None:
    from normkernels import nn

    affine = case.affine == "affine"
    g = inputs(case)
    layer = nn.SyncBatchNorm(case.shape[1], momentum=case.momentum, affine=affine, comm=comm, dtype=case.dtype)
    if affine:
        layer.weight[...] = g["gamma"]
        layer.bias[...] = g["beta"]
    mine = rows(case.counts, rank)
    for step, name in enumerate(LAYER_STEPS):
        if name == "eval":
            layer.eval()
        s = inputs(case, step + 1)
        y = layer(s["x"][mine].copy())
        dx = layer.backward(s["dy"][mine].copy())
        got = dict(y=y, dx=dx, weight_grad=layer.weight_grad, bias_grad=layer.bias_grad)
        got.update(running_mean=layer.running_mean, running_var=layer.running_var)
        got.update(num_batches_tracked=layer.num_batches_tracked)
        _save(out, f"{case.id}/{name}", got)


def _run_error(case: ErrorCase, comm, rank: int, out: dict) -> None:
    from normkernels import distributed, nn

    x = np.ones(case.shapes[rank])
    refusing = rank == case.refuser
    others = [shape[1] for r, shape in enumerate(case.shapes) if r != case.refuser]
    channels = others[0] if case.refuse == "x-channels" else x.shape[1]  # the layer is built for the others' C
    rm, rv = error_running_stats(channels)
    got = {}
    try:
        if case.layer:
            layer = nn.SyncBatchNorm(channels, comm=comm, dtype=np.float64)
            layer.running_mean[...] = rm
            layer.running_var[...] = rv
            rm, rv, got["num_batches_tracked"] = layer.running_mean, layer.running_var, layer.num_batches_tracked
            y = layer(x)
            if case.refuse == "dy-shape":
                layer.backward(np.ones((y.shape[0] + 1, *y.shape[1:])) if refusing else np.ones_like(y))
        else:
            if case.refuse == "x-float16" and refusing:
                x = x.astype(np.float16)
            y, mean, rstd = distributed.sync_batch_norm_forward(x, running_mean=rm, running_var=rv, comm=comm)
            if case.refuse == "dy-shape":
                dy = np.ones((x.shape[0] + 1, *x.shape[1:])) if refusing else np.ones_like(x)
                distributed.sync_batch_norm_backward(dy, x, None, mean, rstd, comm=comm)
        got["error"] = ""
    except (ValueError, TypeError, RuntimeError) as e:
        got["error"] = f"{type(e).__name__}: {e}"
    _save(out, case.id, dict(got, running_mean=rm, running_var=rv))  # as they are after the refusal


def _run_all_empty(comm, out: dict) -> None:
    from normkernels import distributed

    x = np.ones(ALL_EMPTY)
    rm, rv = error_running_stats(x.shape[1])
    gamma, beta = np.full(x.shape[1], 2.0), np.full(x.shape[1], 0.5)
    y, mean, rstd = distributed.sync_batch_norm_forward(x, gamma, beta, running_mean=rm, running_var=rv, comm=comm)
    dx, dgamma, dbeta = distributed.sync_batch_norm_backward(np.ones(ALL_EMPTY), x, gamma, mean, rstd, comm=comm)
    got = dict(y=y, mean=mean, rstd=rstd, dx=dx, dgamma=dgamma, dbeta=dbeta, running_mean=rm, running_var=rv)
    _save(out, "all-empty", got)


def _save(out: dict, prefix: str, got: dict) -> None:
    """Copies under "<prefix>/<name>"; None (no gradient without gamma) is saved as a missing key."""
    for name, value in got.items():
        if value is not None:
            out[f"{prefix}/{name}"] = np.array(value)


def rank_main(outdir: str, limit: float) -> None:
    import faulthandler

    # a rank left waiting (a hang in a collective) prints where it is and exits by itself
    faulthandler.dump_traceback_later(limit, exit=True)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    out: dict = {}
    current = "start"
    try:
        for case in cases(size):
            current = case.id
            (_run_fn if case.kind == "fn" else _run_layer)(case, comm, rank, out)
        for case in error_cases(size):
            current = case.id
            _run_error(case, comm, rank, out)
        current = "all-empty"
        _run_all_empty(comm, out)
        case = after_errors(size)
        current = case.id
        _run_fn(case, comm, rank, out)
        np.savez(Path(outdir) / f"rank{rank}.npz", **out)
    except BaseException:
        print(f"rank {rank} of {size}, case {current}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        comm.Abort(1)
    faulthandler.cancel_dump_traceback_later()


# ---------------------------------------------------------------------------------------------------------------
# the launcher's side


def run_bounded(argv: list, timeout: float, env: dict | None = None) -> tuple[int | None, str, str]:
    """(exit status, stdout, stderr) of argv, run in a session of its own; None for the status when it ran past
    timeout, in which case its whole process group (mpiexec and every rank) is killed. Output goes to files, not
    pipes, so that ranks that inherit them never block on a full pipe."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env=env, start_new_session=True)
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
        try:  # on time or not, nothing of the group outlives the call
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        out.seek(0)
        err.seek(0)
        return status, out.read(), err.read()


def launch(mpiexec: str, ranks: int, outdir: str, limit: float) -> tuple[int | None, str, str]:
    """mpiexec -n ranks of this worker; its ranks stop themselves a little before the launch is killed."""
    argv = [mpiexec, "-n", str(ranks), sys.executable, __file__, outdir, str(max(limit - 10, limit * 0.8))]
    return run_bounded(argv, limit, dict(os.environ, NUMBA_NUM_THREADS="1"))  # K ranks may share fewer cores


def launch_all(mpiexec: str, outroot: str, first: str, limit: str, *specs: str) -> int:
    """Every NAME=K launch in turn, its status and output saved beside its ranks' outputs."""
    for i, spec in enumerate(specs):
        name, ranks = spec.rsplit("=", 1)
        outdir = Path(outroot) / name
        outdir.mkdir(parents=True, exist_ok=True)
        status, out, err = launch(mpiexec, int(ranks), str(outdir), float(first if i == 0 else limit))
        (outdir / "launch.json").write_text(json.dumps({"status": status, "stdout": out, "stderr": err}))
    return 0


def launcher_main(mpiexec: str, ranks: str, outdir: str, limit: str) -> int:
    status, out, err = launch(mpiexec, int(ranks), outdir, float(limit))
    sys.stdout.write(out)
    sys.stderr.write(err)
    if status is None:
        sys.stderr.write(f"\nmpiexec -n {ranks} ran past {limit} s: its process group was killed\n")
        return 124
    return status


if __name__ == "__main__":
    if sys.argv[1] == "--launch":
        sys.exit(launcher_main(*sys.argv[2:]))
    if sys.argv[1] == "--launch-all":
        sys.exit(launch_all(*sys.argv[2:]))
    rank_main(sys.argv[1], float(sys.argv[2]))
