"""normkernels: forward and backward kernels for BatchNorm, LayerNorm, InstanceNorm and GroupNorm.

Every op returns ``(y, mean, rstd)`` from its forward and ``(dx, dgamma, dbeta)`` from its backward, whose
signature is the same for all ops: ``<op>_backward(dy, x, gamma, mean, rstd, *, backend="cpu")``.
"""

from ._backends import BACKENDS
from ._batch_norm import batch_norm_backward, batch_norm_forward
from ._row_norms import (
    group_norm_backward,
    group_norm_forward,
    instance_norm_backward,
    instance_norm_forward,
    layer_norm_backward,
    layer_norm_forward,
)
from ._switchable_norm import SwitchableStats, switchable_norm_backward, switchable_norm_forward

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "SwitchableStats",
    "batch_norm_backward",
    "batch_norm_forward",
    "group_norm_backward",
    "group_norm_forward",
    "instance_norm_backward",
    "instance_norm_forward",
    "layer_norm_backward",
    "layer_norm_forward",
    "switchable_norm_backward",
    "switchable_norm_forward",
]
