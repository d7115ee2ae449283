"""SyncBatchNorm across MPI processes: each rank holds a part of one batch, and the layer normalizes every part
with the whole batch's statistics. Run with

    mpiexec -n 4 python -m mpi4py examples/sync_batch_norm.py

(``-m mpi4py`` ends every rank if one raises). Rank 0 prints how far the parts are from one process running
BatchNorm2d on the whole batch."""

import numpy as np
from mpi4py import MPI

from normkernels import nn

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()

# One batch of 10 samples, cut into uneven parts: with 4 ranks, 3, 3, 2 and 2 samples (with 12 ranks, some none).
rng = np.random.default_rng(0)
x_all = rng.standard_normal((10, 16, 8, 8)).astype(np.float32) * 3 + 1
dy_all = rng.standard_normal(x_all.shape).astype(np.float32)
rows = np.array_split(np.arange(len(x_all)), size)[rank]
x, dy = x_all[rows], dy_all[rows]

bn = nn.SyncBatchNorm(16)  # comm defaults to MPI.COMM_WORLD
for _step in range(3):
    y = bn(x)  # one allgather of each rank's (count, mean, M2)
    dx = bn.backward(dy)  # one allreduce of sum(dy), sum(dy * (x - mean)) and the count
    # weight_grad and bias_grad are this rank's share: reduce them as any other parameter's gradient
    for p, g in ((bn.weight, bn.weight_grad), (bn.bias, bn.bias_grad)):
        p -= 0.01 * comm.allreduce(g)

# the same steps on one process, on the whole batch
ref = nn.BatchNorm2d(16)
for _step in range(3):
    y_ref = ref(x_all)
    dx_ref = ref.backward(dy_all)
    ref.weight -= 0.01 * ref.weight_grad
    ref.bias -= 0.01 * ref.bias_grad

ys, dxs = comm.gather(y, root=0), comm.gather(dx, root=0)
if rank == 0:
    print(f"{size} ranks holding {[len(p) for p in np.array_split(np.arange(len(x_all)), size)]} samples")
    print(f"max |y - y_one_process|  = {np.abs(np.concatenate(ys) - y_ref).max():.1e}")
    print(f"max |dx - dx_one_process| = {np.abs(np.concatenate(dxs) - dx_ref).max():.1e}")
    print(f"max |running_var - running_var_one_process| = {np.abs(bn.running_var - ref.running_var).max():.1e}")
