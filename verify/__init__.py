"""verify: is a normalization layer's forward and backward right, and if not, where and why?

    report = verify.check(forward, backward, norm="batch_norm", x=x, gamma=gamma, beta=beta)
    print(report); report.raise_if_failed()

forward(x, gamma, beta) -> (y, cache) and backward(dy, cache) -> (dx, dgamma, dbeta) is the cs231n layer
contract. The references are the float64 staged graph (verify.staged) and central finite differences of
the implementation's own forward (verify.numerical_gradient).
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
