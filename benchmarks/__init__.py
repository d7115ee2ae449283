"""Benchmarks of the normkernels kernels against the staged NumPy graph and PyTorch."""
