"""Subprocesses that tests wait for, started as soon as pytest knows it will run those tests.

The CUDA simulator runs (tests/test_cuda_simulator.py) and the launch recording of the PTX test
(tests/test_cuda_ptx.py) are single-threaded Python in a second process and take minutes; started when
collection finishes (conftest.pytest_collection_finish), they run beside the rest of the suite instead of
after it. A test module declares its commands in a dict BACKGROUND = {key: (argv, extra environment, the names
of the tests that need it, or None for all of the module's)}; those tests call result(key, argv, env), which
starts the command then if it was not started early.
Output goes to files, not pipes, so a chatty child never blocks on a full pipe.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_RUNNING: dict = {}  # key -> (Popen, stdout file, stderr file)


def start(key: str, argv: list, env: dict | None = None) -> None:
    if key in _RUNNING:
        return
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [sys.executable, *argv], cwd=ROOT, env=dict(os.environ, **(env or {})), stdout=out, stderr=err, text=True
    )
    _RUNNING[key] = (proc, out, err)


def result(key: str, argv: list, env: dict | None = None, timeout: float = 1200) -> subprocess.CompletedProcess:
    """The finished command's (returncode, stdout, stderr); starts it first if it is not running yet."""
    start(key, argv, env)
    proc, out, err = _RUNNING[key]
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    texts = []
    for f in (out, err):
        f.seek(0)
        texts.append(f.read())
    return subprocess.CompletedProcess(proc.args, proc.returncode, *texts)


def stop_all() -> None:
    """Kill what is still running (a session that ended early) and close the files."""
    for proc, out, err in _RUNNING.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        err.close()
    _RUNNING.clear()
