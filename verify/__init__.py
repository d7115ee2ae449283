"""verify: is a normalization layer's forward and backward right, and if not, where and why?

    report = verify.check(forward, backward, norm="batch_norm", x=x, gamma=gamma, beta=beta)
    print(report); report.raise_if_failed()

forward(x, gamma, beta) -> (y, cache) and backward(dy, cache) -> (dx, dgamma, dbeta) is the cs231n layer
contract; verify.cs231n takes the assignment's own functions as they are. Each norm's parameters follow its
entry of the registry (verify.norms): forward(x, gamma) for norm="rms_norm", forward(x, gamma, beta,
mean_weight, var_weight) with backward -> (dx, dgamma, dbeta, dmean_weight, dvar_weight) for
norm="switchable_norm". The references are the float64
staged graph (verify.staged), within error bounds that follow the input's conditioning (verify.bounds), and
extrapolated finite differences of the implementation's own forward (verify.finite_differences); a tensor
that disagrees gets the mistake that reproduces it (verify.diagnose).
"""

from . import cs231n, staged
from .check import check
from .numerical import directional_derivative, numerical_gradient
from .report import GradcheckError, Report, Row

__all__ = [
    "GradcheckError",
    "Report",
    "Row",
    "check",
    "cs231n",
    "directional_derivative",
    "numerical_gradient",
    "staged",
]
