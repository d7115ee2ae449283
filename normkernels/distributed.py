"""BatchNorm across processes: each MPI rank holds a part of the batch, and every part is normalized with the
statistics of the whole batch (PyTorch's SyncBatchNorm, on MPI).

Built on the split ops of ``normkernels._batch_norm_split``. Per training forward, one allgather of each rank's
(count, mean, M2), 2C + 1 numbers; per training backward, one allreduce of the two per-channel sums and the
count, 2C + 2 numbers. Nothing else crosses the network, and eval mode (the running statistics) communicates
nothing::

    from mpi4py import MPI
    from normkernels import distributed

    y, mean, rstd = distributed.sync_batch_norm_forward(x, gamma, beta, running_mean=rm, running_var=rv)
    dx, dgamma, dbeta = distributed.sync_batch_norm_backward(dy, x, gamma, mean, rstd)

run as ``mpiexec -n 4 python -m mpi4py train.py`` (``-m mpi4py`` aborts every rank when one raises, instead of
leaving the others waiting in a collective).

- Every rank merges the gathered statistics itself, in rank order, with the same code: mean, rstd and the
  running statistics come out as the same bits on every rank, and the same bits from run to run.
- Ranks may hold different batch sizes, including none. Ranks that disagree on the channel count, on eps or on
  momentum, and an argument refused on one rank, raise on every rank (the allgather carries the channel count,
  eps, momentum and a refusal with the statistics; the allreduce a refusal flag with the sums), so no rank is
  left waiting. What cannot be told apart from waiting: a rank that skips the call (say, one in eval mode while
  the others train) or calls it on another communicator (or passes something that is not one), and, in the
  backward, a rank whose mean is not the forward's (C,): its part of the allreduce is sized from mean's length,
  so a wrong length makes the buffers differ, which MPI reports by aborting the job ("Message truncated" in
  MPICH), and with neither mean nor x usable there is no size at all. ``python -m mpi4py`` ends the job when
  such a rank raises.
- dgamma and dbeta are this rank's share, as in PyTorch: the whole batch's gradient is their sum over ranks,
  and a data-parallel training loop reduces them as it reduces every other parameter's gradient.
- mpi4py is needed only when a training forward or backward runs with ``comm=None`` (then
  ``MPI.COMM_WORLD``): ``import normkernels.distributed`` does not import it.
"""

from __future__ import annotations

import numpy as np

from . import _checks, _device
from ._batch_norm import _view, batch_norm_backward, batch_norm_forward
from ._batch_norm_split import (
    batch_norm_backward_elemt,
    batch_norm_backward_reduce,
    batch_norm_elemt,
    batch_norm_gather_stats,
    batch_norm_stats,
)

__all__ = ["sync_batch_norm_backward", "sync_batch_norm_forward"]


def sync_batch_norm_forward(
    x: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    *,
    eps: float = 1e-5,
    training: bool = True,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    momentum: float = 0.1,
    comm=None,
    backend: str = "cpu",
):
    """batch_norm_forward over the batch whose parts the ranks of ``comm`` hold: (y, mean, rstd).

    x: this rank's part, (N, C, *spatial) or (N, D); N may differ between ranks and may be 0. comm: an mpi4py
    communicator (default ``MPI.COMM_WORLD``); every rank of it must call. Training: y (x's shape and dtype) is
    x normalized with the mean and biased variance of the whole batch; mean and rstd are (C,) float64, the same
    bits on every rank, as ``sync_batch_norm_backward`` takes them; running_mean/running_var are updated in
    place with the unbiased variance over the whole batch's count. No rank holding any value: y is empty, mean
    and rstd NaN, and the running statistics are left alone. Eval (``training=False``): batch_norm_forward on
    this rank alone, with the running statistics; nothing is communicated.
    """
    op = "sync_batch_norm_forward"
    if _is_false(training):
        return batch_norm_forward(
            x,
            gamma,
            beta,
            eps=eps,
            training=False,
            running_mean=running_mean,
            running_var=running_var,
            momentum=momentum,
            backend=backend,
        )
    comm = _communicator(comm, op=op)
    try:  # everything this rank can refuse, before the collective, so that a refusal reaches every rank
        _checks.flag("training", training, op=op)
        x = _checks.input_array(x, min_ndim=2, op=op, backend=backend)
        eps = _checks.eps(eps, op=op)
        momentum = _checks.real("momentum", momentum, op=op)
        c = x.shape[1]
        _checks.affine(gamma, beta, (c,), x, op=op)
        _checks.running_pair(running_mean, running_var, c, x, True, op=op)
        count, mean, m2 = batch_norm_stats(x, backend=backend)
        record = statistics_record(c, eps, momentum, count, _device.host(mean), _device.host(m2))
    except Exception as exc:
        refuse_forward(comm, exc)
        raise
    records = comm.allgather(record)  # the forward's one collective
    _agree(records, op=op)
    counts = np.array([r[4] for r in records], dtype=np.float64)
    means = np.stack([r[5] for r in records])
    m2s = np.stack([r[6] for r in records])
    device = _device.is_device_array(x)
    if device:  # the merge runs where the running statistics live, and mean and rstd stay with x
        means, m2s = _to_device(means), _to_device(m2s)
    mean, rstd = batch_norm_gather_stats(
        counts,
        means,
        m2s,
        eps=eps,
        running_mean=running_mean,
        running_var=running_var,
        momentum=momentum,
        backend=backend,
    )
    return batch_norm_elemt(x, mean, rstd, gamma, beta, backend=backend), mean, rstd


def sync_batch_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    gamma: np.ndarray | None,
    mean: np.ndarray,
    rstd: np.ndarray,
    *,
    training: bool = True,
    comm=None,
    backend: str = "cpu",
):
    """Gradients of sync_batch_norm_forward: (dx, dgamma, dbeta).

    dy, x: this rank's part; mean, rstd: what the forward returned. dx (x's shape and dtype) is this rank's part
    of the whole batch's dx. dgamma and dbeta ((C,), x's dtype; None without gamma) are this rank's share:
    their sum over the ranks is the whole batch's gradient (PyTorch's SyncBatchNorm convention). Training: one
    allreduce of sum(dy), sum(dy * (x - mean)) and the count; every rank of ``comm`` must call. Eval
    (``training=False``, the forward's running statistics): batch_norm_backward on this rank alone.
    """
    op = "sync_batch_norm_backward"
    if _is_false(training):
        return batch_norm_backward(dy, x, gamma, mean, rstd, training=False, backend=backend)
    comm = _communicator(comm, op=op)
    try:
        _checks.flag("training", training, op=op)
        x = _checks.input_array(x, min_ndim=2, op=op, backend=backend)
        c = x.shape[1]
        _checks.affine(gamma, None, (c,), x, op=op)
        sum_dy, sum_dy_xmu = batch_norm_backward_reduce(dy, x, mean, rstd, backend=backend)
        x3 = _view(x)
        local = np.concatenate([_device.host(sum_dy), _device.host(sum_dy_xmu), [x3.shape[0] * x3.shape[2], 0.0]])
    except Exception:
        # the buffer must have the others' size: the forward made every rank agree on C, which mean's length is
        c = _channels(mean, x)
        if c is not None:
            refuse_backward(comm, c)
        raise
    total = np.empty_like(local)
    comm.Allreduce(local, total)  # the backward's one collective (the default operation is the sum)
    if total[-1]:
        raise RuntimeError(f"{op}: {int(total[-1])} other rank(s) refused their arguments (see their error)")
    sums = total[:c], total[c : 2 * c]
    if _device.is_device_array(x):
        sums = tuple(_to_device(a) for a in sums)
    dx = batch_norm_backward_elemt(dy, x, mean, rstd, gamma, *sums, int(total[2 * c]), backend=backend)
    if gamma is None:
        return dx, None, None
    if local[2 * c]:  # this rank's share
        dgamma = (local[c : 2 * c] * _device.host(rstd).astype(np.float64)).astype(x.dtype)
    else:  # no values here: no share, whatever rstd holds (NaN when no rank has values)
        dgamma = np.zeros(c, x.dtype)
    dbeta = local[:c].astype(x.dtype)
    if _device.is_device_array(x):
        return dx, _to_device(dgamma), _to_device(dbeta)
    return dx, dgamma, dbeta


def _communicator(comm, *, op: str):
    """comm, or MPI.COMM_WORLD for None (importing mpi4py only then)."""
    if comm is None:
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise ImportError(
                f'{op}: the default communicator needs mpi4py and an MPI library: pip install "normkernels[mpi]" '
                "(mpi4py and MPICH), then launch with mpiexec"
            ) from exc
        return MPI.COMM_WORLD
    if not all(hasattr(comm, m) for m in ("allgather", "Allreduce", "Get_rank")):
        raise TypeError(
            f"{op}: expected comm to be an mpi4py communicator (e.g. MPI.COMM_WORLD), got {type(comm).__name__}"
        )
    return comm


def statistics_record(channels: int, eps: float, momentum: float, count: int, mean, m2) -> tuple:
    """What a rank sends in a training forward's allgather: no refusal, then what the ranks must agree on (C, eps,
    momentum), then its partial statistics (count, mean, M2)."""
    return (None, channels, eps, momentum, count, mean, m2)


def refuse_forward(comm, exc: Exception) -> None:
    """This rank's part in a training forward's collective when it cannot take part with statistics (its
    arguments were refused): the others then raise RuntimeError naming this rank and exc. The caller raises exc."""
    comm.allgather((f"{type(exc).__name__}: {exc}", None, None, None, 0, None, None))


def refuse_backward(comm, channels: int) -> None:
    """This rank's part in a training backward's collective when it cannot take part with its sums: a buffer of
    the agreed size whose flag makes the others raise RuntimeError. The caller raises its own error."""
    local = np.zeros(2 * channels + 2)
    local[-1] = 1.0
    comm.Allreduce(local, np.empty_like(local))


def _is_false(training) -> bool:
    """training=False (or NumPy's False): eval, local. Anything else takes part in the collective, an invalid
    value too (it is refused there, so the ranks that train with it are told instead of left waiting)."""
    return isinstance(training, (bool, np.bool_)) and not training


def _agree(records: list, *, op: str) -> None:
    """Raise, on every rank alike, if a rank refused its arguments or the ranks disagree on C, eps or momentum."""
    failed = {rank: r[0] for rank, r in enumerate(records) if r[0] is not None}
    if failed:
        raise RuntimeError(f"{op}: rank(s) {sorted(failed)} refused their arguments: {failed}")
    for i, name in ((1, "number of channels (x.shape[1])"), (2, "eps"), (3, "momentum")):
        values = [r[i] for r in records]
        if len(set(values)) > 1:
            raise ValueError(f"{op}: the ranks disagree on the {name}: rank -> value {dict(enumerate(values))}")


def _channels(mean, x) -> int | None:
    """The channel count the ranks agreed on in the forward: mean's length, else x's C, else None (unknown)."""
    shape = getattr(mean, "shape", None)
    if shape is not None and len(shape) == 1:
        return int(shape[0])
    shape = getattr(x, "shape", None)
    if shape is not None and len(shape) >= 2:
        return int(shape[1])
    return None


def _to_device(a: np.ndarray):
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))
