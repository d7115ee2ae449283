"""SyncBatchNorm across MPI processes: time per training forward + backward, and the share spent communicating.

Run under MPI, one process per part of the batch (each process's Numba threads set by NUMBA_NUM_THREADS)::

    NUMBA_NUM_THREADS=1 mpiexec -n 2 python -m benchmarks.sync_batch_norm --shape 32 64 56 56

The global batch (--shape) is cut along N into equal parts, one per rank; every rank generates its own part.
Each round starts at a barrier; a rank times its forward + backward (``normkernels.distributed``) and, inside
it, the two collectives (the forward's allgather, the backward's allreduce); a round's time is the slowest
rank's. Collective time includes waiting for the slowest rank to arrive, which is what a step pays. Also timed,
on their own: the fused single-process ops on the same part (``batch_norm_forward`` + ``batch_norm_backward``, no
communication at all), the two collectives alone once per round (cold, as in a step), and each collective alone in
a tight loop of 500 calls (warm: its latency), with a raw-buffer allgather of the same numbers beside mpi4py's
object allgather. Medians over --repeat rounds; rank 0 prints one JSON line (with --json) or a markdown row:

    | dtype | ranks x threads | part | fused (ms) | sync (ms) | in collectives (ms) | share | collectives alone, per
    round (µs) | tight loop: allgather / buffer allgather / allreduce (µs) |
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


class _TimedComm:
    """The communicator, with the seconds spent in its collectives added up."""

    def __init__(self, comm):
        self.comm = comm
        self.seconds = 0.0

    def Get_rank(self):
        return self.comm.Get_rank()

    def allgather(self, obj):
        t = time.perf_counter()
        out = self.comm.allgather(obj)
        self.seconds += time.perf_counter() - t
        return out

    def Allreduce(self, send, recv):
        t = time.perf_counter()
        self.comm.Allreduce(send, recv)
        self.seconds += time.perf_counter() - t


def _slowest(comm, seconds: float) -> float:
    return comm.allreduce(seconds, op=_max())


def _max():
    from mpi4py import MPI

    return MPI.MAX


def run(shape: tuple[int, ...], dtype, repeat: int, warmup: int) -> dict:
    from mpi4py import MPI

    import normkernels as nk
    from normkernels import distributed

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    n = shape[0]
    lo, hi = rank * n // size, (rank + 1) * n // size
    rng = np.random.default_rng(rank)
    part = (hi - lo, *shape[1:])
    x = rng.standard_normal(part, dtype=np.float32).astype(dtype)
    dy = rng.standard_normal(part, dtype=np.float32).astype(dtype)
    c = shape[1]
    gamma, beta = np.ones(c, dtype), np.zeros(c, dtype)
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    timed = _TimedComm(comm)

    def sync_step():
        y, mean, rstd = distributed.sync_batch_norm_forward(x, gamma, beta, running_mean=rm, running_var=rv, comm=timed)
        distributed.sync_batch_norm_backward(dy, x, gamma, mean, rstd, comm=timed)

    def fused_step():
        y, mean, rstd = nk.batch_norm_forward(x, gamma, beta, running_mean=rm, running_var=rv)
        nk.batch_norm_backward(dy, x, gamma, mean, rstd)

    record = distributed.statistics_record(c, 1e-5, 0.1, 1, np.zeros(c), np.zeros(c))  # the forward's allgather
    send, recv = np.zeros(2 * c + 2), np.zeros(2 * c + 2)  # ... and the backward's allreduce
    flat, gathered = np.zeros(2 * c + 5), np.zeros((size, 2 * c + 5))  # the same numbers as one raw buffer

    def collectives():
        comm.allgather(record)
        comm.Allreduce(send, recv)

    rounds: dict[str, list] = {"sync": [], "comm": [], "fused": [], "collectives": []}
    for i in range(warmup + repeat):
        for name, step in (("sync", sync_step), ("fused", fused_step), ("collectives", collectives)):
            comm.Barrier()
            timed.seconds = 0.0
            t = time.perf_counter()
            step()
            elapsed = time.perf_counter() - t
            slowest = _slowest(comm, elapsed)
            if i >= warmup:
                rounds[name].append(slowest)
                if name == "sync":
                    rounds["comm"].append(_slowest(comm, timed.seconds))
            elif name == "sync":
                _slowest(comm, timed.seconds)
    med = {k: float(np.median(v)) for k, v in rounds.items()}
    # each collective alone, in a tight loop (warm, every rank arriving together): its latency
    tight = {
        "allgather": lambda: comm.allgather(record),
        "buffer_allgather": lambda: comm.Allgather(flat, gathered),
        "allreduce": lambda: comm.Allreduce(send, recv),
    }
    latency = {}
    for name, call in tight.items():
        times = []
        for _ in range(500):
            comm.Barrier()
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        latency[name] = 1e6 * _slowest(comm, float(np.median(times)))
    return {
        "shape": list(shape),
        "dtype": np.dtype(dtype).name,
        "ranks": size,
        "threads_per_rank": int(os.environ.get("NUMBA_NUM_THREADS", "0")) or None,
        "part": list(part),
        "sync_ms": 1e3 * med["sync"],
        "comm_ms": 1e3 * med["comm"],
        "comm_share": med["comm"] / med["sync"],
        "fused_ms": 1e3 * med["fused"],
        "collectives_us": 1e6 * med["collectives"],
        "tight_allgather_us": latency["allgather"],
        "tight_buffer_allgather_us": latency["buffer_allgather"],
        "tight_allreduce_us": latency["allreduce"],
        "repeat": repeat,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 64, 56, 56])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON line instead of a table row")
    args = parser.parse_args(argv)
    result = run(tuple(args.shape), np.dtype(args.dtype), args.repeat, args.warmup)
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 0:
        if args.json:
            print(json.dumps(result))
        else:
            r = result
            print(
                f"| {r['dtype']} | {r['ranks']} x {r['threads_per_rank']} | {tuple(r['part'])} | {r['fused_ms']:.2f} | "
                f"{r['sync_ms']:.2f} | {r['comm_ms']:.2f} | {100 * r['comm_share']:.1f}% | {r['collectives_us']:.0f} | "
                f"{r['tight_allgather_us']:.1f} / {r['tight_buffer_allgather_us']:.1f} / "
                f"{r['tight_allreduce_us']:.1f} |"
            )


if __name__ == "__main__":
    main()
