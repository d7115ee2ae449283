"""Every CUDA kernel compiles to PTX for sm_80 and sm_90 in float32 and float64, with no GPU needed."""

import os

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("the simulator does not compile PTX", allow_module_level=True)
pytest.importorskip("numba_cuda", reason="the cuda extra (numba-cuda) is not installed")

from numba import cuda  # noqa: E402

from normkernels.cuda import kernel_signatures  # noqa: E402

KERNELS = [
    (dtype, name, kernel, sig) for dtype in ("float32", "float64") for name, kernel, sig in kernel_signatures(dtype)
]


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)], ids=["sm_80", "sm_90"])
@pytest.mark.parametrize("dtype, name, kernel, sig", KERNELS, ids=[f"{k[1]}-{k[0]}" for k in KERNELS])
def test_kernel_compiles_to_ptx(dtype, name, kernel, sig, cc):
    ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=cc)
    assert f".target sm_{cc[0]}{cc[1]}" in ptx
    assert ".entry" in ptx
    assert "atom." not in ptx, "no atomics: reductions must be deterministic"


def test_reductions_use_warp_shuffles_on_hardware():
    sigs = {name: (kernel, sig) for name, kernel, sig in kernel_signatures("float32")}
    for name in ("rows_forward", "rows_backward", "stats_spatial", "backward_sums_spatial"):
        kernel, sig = sigs[name]
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        assert "shfl.sync" in ptx, name


def test_every_kernel_fits_its_largest_block():
    """Registers per thread x the largest block a kernel is launched with must fit an SM's 64K registers."""
    import re
    import shutil
    import subprocess

    from normkernels.cuda._config import BLOCK, MAX_TEAM

    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("ptxas (CUDA toolkit) not on PATH")
    for dtype in ("float32", "float64"):
        for name, kernel, sig in kernel_signatures(dtype):
            ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
            ptx = re.sub(r"\.version \d+\.\d+", ".version 8.0", ptx)  # accepted by any recent ptxas
            out = subprocess.run(
                [ptxas, "-arch=sm_90", "-v", "-", "-o", "/dev/null"], input=ptx, capture_output=True, text=True
            )
            if out.returncode:
                pytest.skip(f"this ptxas cannot assemble the PTX: {out.stderr[:200]}")
            registers = int(re.search(r"Used (\d+) registers", out.stderr).group(1))
            threads = max(MAX_TEAM, BLOCK) if name.startswith("rows_") else BLOCK
            assert registers * threads <= 65536, f"{name} {dtype}: {registers} registers x {threads} threads"
