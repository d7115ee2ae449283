"""normkernels: forward and backward kernels for BatchNorm, LayerNorm, InstanceNorm, GroupNorm, RMSNorm and
Switchable Normalization.

Batch, layer, instance and group norm return ``(y, mean, rstd)`` from their forward and ``(dx, dgamma, dbeta)``
from their backward, whose signature is the same for all four: ``<op>_backward(dy, x, gamma, mean, rstd, *,
backend="cpu")``. RMSNorm has no mean and no beta: ``(y, rstd)`` and ``(dx, dgamma)``. Switchable Normalization
returns ``(y, stats)`` and ``(dx, dgamma, dbeta, dmean_weight, dvar_weight)``.

BatchNorm also comes split in the steps PyTorch's SyncBatchNorm takes (``batch_norm_stats``,
``batch_norm_gather_stats``, ``batch_norm_elemt``, ``batch_norm_backward_reduce``, ``batch_norm_backward_elemt``),
which ``normkernels.distributed`` runs across MPI processes and ``batch_norm_population_stats`` over the batches
of a data set.
"""

from ._backends import BACKENDS
from ._batch_norm import batch_norm_backward, batch_norm_forward
from ._batch_norm_split import (
    batch_norm_backward_elemt,
    batch_norm_backward_reduce,
    batch_norm_elemt,
    batch_norm_gather_stats,
    batch_norm_population_stats,
    batch_norm_stats,
)
from ._row_norms import (
    group_norm_backward,
    group_norm_forward,
    instance_norm_backward,
    instance_norm_forward,
    layer_norm_backward,
    layer_norm_forward,
    rms_norm_backward,
    rms_norm_forward,
)
from ._switchable_norm import SwitchableStats, switchable_norm_backward, switchable_norm_forward

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "SwitchableStats",
    "batch_norm_backward",
    "batch_norm_backward_elemt",
    "batch_norm_backward_reduce",
    "batch_norm_elemt",
    "batch_norm_forward",
    "batch_norm_gather_stats",
    "batch_norm_population_stats",
    "batch_norm_stats",
    "group_norm_backward",
    "group_norm_forward",
    "instance_norm_backward",
    "instance_norm_forward",
    "layer_norm_backward",
    "layer_norm_forward",
    "rms_norm_backward",
    "rms_norm_forward",
    "switchable_norm_backward",
    "switchable_norm_forward",
]
