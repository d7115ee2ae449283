"""normkernels.distributed and nn.SyncBatchNorm under real MPI, against the single-process float64 staged graph.

`mpiexec -n K python tests/mpi_worker.py` for K = 1, 2 and 4 runs every case of tests/mpi_worker.py in one launch
per K: every rank builds the same global batch from a seed, takes its slice of the rows (even splits, uneven ones,
empty ranks) and saves its outputs. Here y and dx concatenated in rank order, dgamma and dbeta summed over the
ranks, mean, rstd and the running statistics must match the staged graph on the whole batch within the kernel
tolerance; the statistics must be the same bits on every rank, and a second launch the same bits as the first.
The launches start when collection ends (tests/background.py), so they run beside the rest of the suite.

Without mpi4py, without an mpiexec, or where two ranks cannot start and meet, the module skips and says so.
"""

import atexit
import functools
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import background
import mpi_worker as worker
import numpy as np
import pytest

from verify import compare, staged

INSTALL = 'pip install -e ".[mpi]" installs mpi4py and MPICH, which brings mpiexec'
try:
    import mpi4py  # noqa: F401  (the package only: MPI itself starts in the ranks)
except ImportError as exc:  # not installed, or installed without a working build
    pytest.skip(f"mpi4py cannot be imported ({exc}): {INSTALL}", allow_module_level=True)

RANKS = (1, 2, 4)
LIMIT = 120  # seconds for one launch; past it the launch's whole process group is killed
PROBE_LIMIT = 30


def _mpiexec() -> str | None:
    """The mpiexec of the environment running the tests (MPICH's wheel puts it next to python), else PATH's."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("mpiexec")


def _probe(mpiexec: str) -> str | None:
    """Why two ranks cannot start and pass a barrier, or None when they can."""
    argv = [mpiexec, "-n", "2", sys.executable, "-c", "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"]
    status, out, err = worker.run_bounded(argv, PROBE_LIMIT)
    if status is None:
        return f"`mpiexec -n 2` with a barrier ran past {PROBE_LIMIT} s"
    if status != 0:
        return f"`mpiexec -n 2` with a barrier failed (exit {status}): {(out + err).strip()[-600:]}"
    return None


MPIEXEC = _mpiexec()
if MPIEXEC is None:
    pytest.skip(f"no mpiexec beside the Python running the tests nor on PATH: {INSTALL}", allow_module_level=True)
_why_not = _probe(MPIEXEC)
if _why_not:
    pytest.skip(f"MPI does not run here: {_why_not}. {INSTALL}", allow_module_level=True)

_OUT = Path(tempfile.mkdtemp(prefix="normkernels-mpi-"))
atexit.register(shutil.rmtree, _OUT, True)


def _outdir(key: str) -> Path:
    return _OUT / key.replace(" ", "-")


LAUNCHES = [f"{k} ranks" for k in RANKS] + ["4 ranks again"]  # the last for the run-to-run check
FIRST_LIMIT = 600  # the first launch fills Numba's cache: a cold compile on a busy machine takes minutes
# the launches, one after the other (tests/mpi_worker.py --launch-all), started by conftest when collection finishes
# so they run beside the rest of the suite (tests/background.py)
BACKGROUND = {
    "mpi launches": (
        ["tests/mpi_worker.py", "--launch-all", MPIEXEC, str(_OUT), str(FIRST_LIMIT), str(LIMIT)]
        + [f"{key.replace(' ', '-')}={key.split()[0]}" for key in LAUNCHES],
        {},
        None,
    )
}


def results(key: str) -> list[dict]:
    """Every rank's saved outputs of a launch, in rank order; fails the test with the launch's output when it
    failed or ran past its limit."""
    argv, env, _ = BACKGROUND["mpi launches"]
    done = background.result("mpi launches", argv, env, timeout=FIRST_LIMIT + len(LAUNCHES) * LIMIT + 60)
    assert done.returncode == 0, f"the launcher failed (exit {done.returncode}):\n{done.stderr[-8000:]}"
    launched = json.loads((_outdir(key) / "launch.json").read_text())
    output = f"stderr:\n{launched['stderr'][-8000:]}\nstdout:\n{launched['stdout'][-2000:]}"
    if launched["status"] is None:
        pytest.fail(f"the launch on {key} ran past its time limit: mpiexec and every rank were killed\n{output}")
    if launched["status"] != 0:
        pytest.fail(f"the launch on {key} failed (exit {launched['status']})\n{output}")
    return _load(key)


@functools.cache
def _load(key: str) -> list[dict]:
    loaded = []
    for r in range(int(key.split()[0])):
        with np.load(_outdir(key) / f"rank{r}.npz") as data:
            loaded.append(dict(data))
    return loaded


# ---------------------------------------------------------------------------------------------------------------
# the reference


def _as64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _staged(x, dy, gamma, beta, *, eps=worker.EPS, running=None):
    """The float64 staged graph's forward and backward on the whole batch: y, mean, rstd, the biased variance,
    dx, dgamma, dbeta (None with neither gamma nor beta). `running`: (running_mean, running_var) for eval mode."""
    x64 = _as64(x)
    stages = staged.graph("batch_norm", staged.layout("batch_norm", x64.shape), eps)
    if running is not None:
        stages = staged.eval_mode(stages, *running)
    y, cache = staged.forward(x64, _as64(gamma), _as64(beta), stages=stages)
    grads = staged.backward(_as64(dy), cache)
    var = cache["var"].reshape(-1)
    return dict(
        y=y, mean=cache["mean"], rstd=cache["rstd"], var=var, **{k: grads[k] for k in ("dx", "dgamma", "dbeta")}
    )


def _running_update(before, want, momentum, count):
    """PyTorch's rule: (1 - momentum) * running + momentum * the batch's statistic, the variance unbiased over
    the whole batch's count."""
    stats = want["mean"], want["var"] * count / (count - 1)
    return tuple((1 - momentum) * r + momentum * stat for r, stat in zip(before, stats, strict=True))


def _check(data, prefix, case, want, tol, grads=("dgamma", "dbeta")):
    """y and dx concatenated in rank order and the parameter gradients `grads` summed over the ranks (None in
    want: absent on every rank) against want. Each rank's y and dx have its rows and the case's dtype."""
    for name in ("y", "dx"):
        parts = [d[f"{prefix}/{name}"] for d in data]
        for r, (part, n) in enumerate(zip(parts, case.counts, strict=True)):
            assert part.shape == (n, *case.shape[1:]) and part.dtype == case.dtype, (
                f"{prefix}/{name} rank {r}: {part.dtype} {part.shape}"
            )
        compare.assert_close(np.concatenate(parts), want[name], tol, what=f"{prefix}/{name}, ranks concatenated")
    for name, ref in zip(grads, (want["dgamma"], want["dbeta"]), strict=True):
        have = [r for r, d in enumerate(data) if f"{prefix}/{name}" in d]
        if ref is None:
            assert not have, f"{prefix}/{name}: should be None without gamma, is not on ranks {have}"
            continue
        assert len(have) == len(data), f"{prefix}/{name}: None on some ranks, given on {have}"
        parts = [d[f"{prefix}/{name}"] for d in data]
        assert all(p.shape == ref.shape for p in parts), f"{prefix}/{name}: shapes {[p.shape for p in parts]}"
        compare.assert_close(sum(_as64(p) for p in parts), ref, tol, what=f"{prefix}/{name}, summed over the ranks")


def _check_each_rank(data, key, want, tol, dtype=None):
    """Every rank's `key` against want; of `dtype` unless None."""
    for r, d in enumerate(data):
        got = d[key]
        assert dtype in (None, got.dtype) and got.shape == np.shape(want), f"{key} rank {r}: {got.dtype} {got.shape}"
        compare.assert_close(got, want, tol, what=f"{key} rank {r}")


# ---------------------------------------------------------------------------------------------------------------
# the tests


def _params(kind):
    out = []
    for k in RANKS:
        listed = [c for c in worker.cases(k) if c.kind == kind] + ([worker.after_errors(k)] if kind == "fn" else [])
        out += [pytest.param(k, c, id=f"{k}ranks-{c.id}") for c in listed]
    return out


@pytest.mark.parametrize("ranks, case", _params("fn"))
def test_sync_batch_norm_matches_the_whole_batch(ranks, case):
    """Forward and backward in training (the running statistics updated), then in eval with the running
    statistics, against the staged graph on the concatenated batch."""
    data = results(f"{ranks} ranks")
    values = worker.inputs(case)
    gamma = None if case.affine == "none" else values["gamma"]
    beta = values["beta"] if case.affine == "gamma_beta" else None
    tol = compare.kernel_tolerance(case.dtype)
    want = _staged(values["x"], values["dy"], gamma, beta)
    _check(data, case.id, case, want, tol)
    for name in ("mean", "rstd"):
        _check_each_rank(data, f"{case.id}/{name}", want[name], tol, np.float64)
    if not case.running:
        return
    before = _as64(values["running_mean"]), _as64(values["running_var"])
    running = _running_update(before, want, case.momentum, values["x"].size // case.shape[1])
    for name, ref in zip(("running_mean", "running_var"), running, strict=True):
        _check_each_rank(data, f"{case.id}/{name}", ref, tol, np.dtype(case.dtype))

    held = data[0][f"{case.id}/running_mean"], data[0][f"{case.id}/running_var"]  # the same bits on every rank
    want = _staged(values["x"], values["dy"], gamma, beta, running=held)
    _check(data, f"{case.id}/eval", case, want, tol)
    for name in ("mean", "rstd"):  # eval is batch_norm_forward on each rank: the running statistics' dtype
        _check_each_rank(data, f"{case.id}/eval/{name}", want[name], tol)
    for r, d in enumerate(data):
        for name in ("running_mean", "running_var"):
            trained = d[f"{case.id}/{name}"]
            assert _bytes(d[f"{case.id}/eval/{name}"]) == _bytes(trained), f"{case.id}: eval changed {name}, rank {r}"


@pytest.mark.parametrize("ranks, case", _params("layer"))
def test_sync_batch_norm_layer_trains_and_evaluates_as_batch_norm_on_the_whole_batch(ranks, case):
    """nn.SyncBatchNorm over two training steps and one eval step: y, dx, this rank's share of weight_grad and
    bias_grad (summed over the ranks: the whole batch's), running statistics and num_batches_tracked."""
    data = results(f"{ranks} ranks")
    values = worker.inputs(case)
    affine = case.affine == "affine"
    gamma, beta = (values["gamma"], values["beta"]) if affine else (None, None)
    tol = compare.kernel_tolerance(case.dtype)
    running = np.zeros(case.shape[1]), np.ones(case.shape[1])  # PyTorch's initial values
    tracked = 0
    for step, name in enumerate(worker.LAYER_STEPS):
        prefix = f"{case.id}/{name}"
        s = worker.inputs(case, step + 1)
        if name == "eval":
            held = data[0][f"{prefix}/running_mean"], data[0][f"{prefix}/running_var"]
            want = _staged(s["x"], s["dy"], gamma, beta, eps=worker.LAYER_EPS, running=held)
        else:
            want = _staged(s["x"], s["dy"], gamma, beta, eps=worker.LAYER_EPS)
            tracked += 1
            momentum = 1 / tracked if case.momentum is None else case.momentum  # None: a cumulative average
            running = _running_update(running, want, momentum, s["x"].size // case.shape[1])
        _check(data, prefix, case, want, tol, grads=("weight_grad", "bias_grad"))
        for buffer, ref in zip(("running_mean", "running_var"), running, strict=True):
            _check_each_rank(data, f"{prefix}/{buffer}", ref, tol, np.dtype(case.dtype))
        counted = [int(d[f"{prefix}/num_batches_tracked"]) for d in data]
        assert counted == [tracked] * ranks, f"{prefix}: num_batches_tracked {counted}, expected {tracked}"


STATISTICS = ("mean", "rstd", "running_mean", "running_var", "num_batches_tracked")


@pytest.mark.parametrize("ranks", RANKS)
def test_statistics_are_the_same_bits_on_every_rank(ranks):
    """mean, rstd and the running statistics (every case, every step) are identical bytes on every rank."""
    data = results(f"{ranks} ranks")
    errors = tuple(f"{c.id}/" for c in worker.error_cases(ranks))  # their own, checked below
    keys = [k for k in data[0] if k.rsplit("/", 1)[-1] in STATISTICS and not k.startswith(errors)]
    assert len(keys) > 100
    differ = [k for k in keys if any(_bytes(d[k]) != _bytes(data[0][k]) for d in data[1:])]
    assert not differ, f"{len(differ)} statistics differ between ranks: {differ[:10]}"


def _bytes(a: np.ndarray) -> tuple:
    return a.dtype.str, a.shape, a.tobytes()


def test_a_second_launch_gives_the_same_bits():
    """Run to run, every output on every rank is the same bytes (a fixed order of the sums and merges)."""
    first, second = results("4 ranks"), results("4 ranks again")
    for r, (a, b) in enumerate(zip(first, second, strict=True)):
        assert a.keys() == b.keys(), f"rank {r}: outputs {sorted(a.keys() ^ b.keys())[:10]} only in one launch"
        differ = [k for k in a if _bytes(a[k]) != _bytes(b[k])]
        assert not differ, f"rank {r}: {len(differ)} outputs differ between two launches: {differ[:10]}"


@pytest.mark.parametrize(
    "ranks, case", [pytest.param(k, c, id=f"{k}ranks-{c.id}") for k in RANKS for c in worker.error_cases(k)]
)
def test_refused_on_every_rank(ranks, case):
    """Ranks that disagree on the channel count, one value per channel in the whole batch when training, or one
    rank whose own arguments are refused (x or dy, to the function or the layer): every rank raises (none is left
    waiting), the refusing rank with its own error and the others told which rank refused; a refused forward
    leaves the running statistics as they were and the layer counts no batch; and the ranks go on in step (the
    after-errors case of test_sync_batch_norm_matches_the_whole_batch)."""
    data = results(f"{ranks} ranks")
    for r, d in enumerate(data):
        message = str(d[f"{case.id}/error"])
        expect = case.expect_refuser if r == case.refuser else case.expect
        assert message, f"rank {r} of {ranks} ({case.shapes[r]}) raised nothing"
        assert re.search(expect, message, re.IGNORECASE), f"rank {r}: {message!r} does not say {expect!r}"
        if case.refuse == "dy-shape":  # the forward went through: its running statistics moved
            continue
        before = worker.error_running_stats(d[f"{case.id}/running_mean"].shape[0])
        for name, value in zip(("running_mean", "running_var"), before, strict=True):
            assert _bytes(d[f"{case.id}/{name}"]) == _bytes(value), f"rank {r}: {name} changed by a refused batch"
        if case.layer:
            assert int(d[f"{case.id}/num_batches_tracked"]) == 0, f"rank {r}: a refused batch was counted"


@pytest.mark.parametrize("ranks", RANKS)
def test_an_empty_batch_on_every_rank(ranks):
    """No values anywhere: empty y and dx, NaN mean and rstd, the running statistics untouched, zero gradients."""
    data = results(f"{ranks} ranks")
    c = worker.ALL_EMPTY[1]
    before = worker.error_running_stats(c)
    for r, d in enumerate(data):
        got = {k.split("/", 1)[1]: v for k, v in d.items() if k.startswith("all-empty/")}
        for name in ("y", "dx"):
            assert got[name].shape == worker.ALL_EMPTY and got[name].dtype == np.float64, f"{name} rank {r}"
        for name in ("mean", "rstd"):
            assert got[name].shape == (c,) and np.isnan(got[name]).all(), f"{name} rank {r}: {got[name]}"
        for name, value in zip(("running_mean", "running_var"), before, strict=True):
            assert _bytes(got[name]) == _bytes(value), f"rank {r}: {name} changed by an empty batch"
        for name in ("dgamma", "dbeta"):
            np.testing.assert_array_equal(got[name], np.zeros(c), err_msg=f"{name} rank {r}")


def test_the_example_agrees_with_one_process():
    """examples/sync_batch_norm.py, as the README launches it (mpiexec -n 4 python -m mpi4py ...): its uneven parts
    of one batch, three training steps of nn.SyncBatchNorm against BatchNorm2d on the whole batch."""
    example = Path(__file__).resolve().parent.parent / "examples" / "sync_batch_norm.py"
    argv = [MPIEXEC, "-n", "4", sys.executable, "-m", "mpi4py", str(example)]
    status, out, err = worker.run_bounded(argv, LIMIT, dict(os.environ, NUMBA_NUM_THREADS="1"))
    assert status == 0, f"exit {status}\n{out}\n{err[-4000:]}"
    assert "4 ranks holding [3, 3, 2, 2] samples" in out, out
    differences = [float(v) for v in re.findall(r"= (\S+)$", out, re.M)]
    assert len(differences) == 3 and max(differences) < 1e-5, out


def test_the_readme_example_runs_on_two_ranks(tmp_path):
    """The README's ```python mpi block (rank 0 holds no samples) under mpiexec -n 2."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python mpi\n(.*?)```", readme, re.S)
    assert blocks, "the README's MPI example is missing"
    for i, block in enumerate(blocks):
        script = tmp_path / f"readme_mpi_{i}.py"
        script.write_text(block)
        argv = [MPIEXEC, "-n", "2", sys.executable, "-m", "mpi4py", str(script)]
        status, out, err = worker.run_bounded(argv, LIMIT, dict(os.environ, NUMBA_NUM_THREADS="1"))
        assert status == 0, f"README MPI block {i}: exit {status}\n{out}\n{err[-4000:]}"
