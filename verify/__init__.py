"""verify: gradient checks for normalization kernels, against the staged graph and finite differences."""

from . import staged
from .numerical import numerical_gradient

__all__ = ["numerical_gradient", "staged"]
