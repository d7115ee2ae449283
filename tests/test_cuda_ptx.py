"""Every CUDA kernel the host side launches compiles to PTX for sm_80 and sm_90, with no GPU needed.

The kernels and their argument types are not listed by hand: tests/cuda_launches.py runs every op in Numba's
simulator and records each launch, and this file compiles exactly those. A kernel defined but never launched
fails too: it is either dead code or a variant the recording does not reach.
"""

import importlib
import inspect
import json
import pkgutil
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import background
import numpy as np
import pytest

from normkernels import _backends

if _backends.simulator():
    pytest.skip("the simulator does not compile PTX", allow_module_level=True)
pytest.importorskip("numba_cuda", reason="the cuda extra (numba-cuda) is not installed")

from numba import cuda, types  # noqa: E402
from numba.cuda.dispatcher import CUDADispatcher  # noqa: E402
from numba.np.numpy_support import from_dtype  # noqa: E402

import normkernels.cuda  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# recorded in the simulator, started by conftest when collection finishes (tests/background.py)
BACKGROUND = {"launches": (["tests/cuda_launches.py"], {"NUMBA_ENABLE_CUDASIM": "1"}, None)}


@cache
def launches() -> tuple:
    """(name, kernel, argument types) of every distinct launch, recorded in the simulator."""
    argv, env, _ = BACKGROUND["launches"]
    out = background.result("launches", argv, env, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    found = []
    for entry in json.loads(out.stdout):
        kernel = getattr(importlib.import_module(entry["module"]), entry["name"])
        sig = tuple(_numba_type(*arg) for arg in entry["args"])
        found.append((f"{entry['module'].rsplit('.', 1)[-1]}.{entry['name']}", kernel, sig))
    return tuple(found)


def _numba_type(dtype: str, ndim: int | None = None, layout: str | None = None):
    scalar = from_dtype(np.dtype(dtype))
    return scalar if ndim is None else types.Array(scalar, ndim, layout)


def _sig_id(sig) -> str:
    return ",".join(str(t.dtype if isinstance(t, types.Array) else t) for t in sig)


def defined_kernels() -> dict:
    """Every @cuda.jit kernel (not device function) in the normkernels.cuda modules, by module.name."""
    kernels = {}
    for info in pkgutil.iter_modules(normkernels.cuda.__path__):
        module = importlib.import_module(f"normkernels.cuda.{info.name}")
        for name, obj in vars(module).items():
            if (
                isinstance(obj, CUDADispatcher)
                and not obj.targetoptions.get("device")
                and obj.__module__ == module.__name__
            ):
                kernels[f"{info.name}.{name}"] = obj
    return kernels


def _ptx(kernel, sig, cc):
    ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=cc)
    return ptx


def test_the_recording_reaches_every_kernel_defined():
    launched = {name for name, _, _ in launches()}
    assert launched, "no launch was recorded"
    assert sorted(set(defined_kernels()) - launched) == [], "kernels defined but never launched"


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)], ids=["sm_80", "sm_90"])
def test_every_launched_kernel_compiles_to_ptx(cc):
    for name, kernel, sig in launches():
        ptx = _ptx(kernel, sig, cc)
        assert f".target sm_{cc[0]}{cc[1]}" in ptx, name
        assert ".entry" in ptx, name
        assert "atom." not in ptx, f"{name}({_sig_id(sig)}): no atomics, reductions must be deterministic"


def test_reductions_use_warp_shuffles_on_hardware():
    by_name = {name: (kernel, sig) for name, kernel, sig in launches()}
    names = ("rows.rows_forward", "rows.rows_backward", "channels.stats_spatial", "channels.backward_sums_spatial")
    for name in names + ("switchable.row_stats", "switchable.backward_row_sums"):
        kernel, sig = by_name[name]
        assert "shfl.sync" in _ptx(kernel, sig, (9, 0)), name


def test_every_kernel_fits_its_largest_block():
    """Registers per thread x the largest block a kernel is launched with must fit an SM's 64K registers."""
    from normkernels.cuda._config import BLOCK, MAX_TEAM

    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("ptxas (CUDA toolkit) not on PATH")
    for name, kernel, sig in launches():
        ptx = re.sub(r"\.version \d+\.\d+", ".version 8.0", _ptx(kernel, sig, (9, 0)))  # any recent ptxas takes it
        out = subprocess.run(
            [ptxas, "-arch=sm_90", "-v", "-", "-o", "/dev/null"], input=ptx, capture_output=True, text=True
        )
        if out.returncode:
            pytest.skip(f"this ptxas cannot assemble the PTX: {out.stderr[:200]}")
        registers = int(re.search(r"Used (\d+) registers", out.stderr).group(1))
        # a kernel taking a team size ts is launched through row_launch: blocks of up to MAX_TEAM threads
        team = "ts" in inspect.signature(kernel.py_func).parameters
        threads = max(MAX_TEAM, BLOCK) if team else BLOCK
        assert registers * threads <= 65536, f"{name}({_sig_id(sig)}): {registers} registers x {threads} threads"
