"""The README's examples run, and the report it shows is the one its example prints."""

import contextlib
import io
import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_every_python_example_runs_and_the_shown_report_is_real():
    printed = {}
    for i, block in enumerate(PYTHON_BLOCKS):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"README block {i}", "exec"), {})
        printed[i] = out.getvalue()
    shown = re.search(r"```\n(batch_norm float64.*?)```", README, re.S).group(1)
    assert shown in printed.values(), "the report shown in the README is not what its example prints"


def test_the_student_file_output_shown_is_what_the_command_prints(capsys):
    from verify.__main__ import main

    root = Path(__file__).resolve().parent.parent
    assert main([str(root / "examples" / "cs231n_layers.py")]) == 1  # three planted mistakes
    printed = capsys.readouterr().out
    shown = re.findall(r"```\n((?:batchnorm_forward \+|spatial_groupnorm_forward \+).*?)```", README, re.S)
    assert len(shown) == 2 and all(block in printed for block in shown), "README's cs231n output is stale"


def test_the_pytorch_example_runs():
    import pytest

    pytest.importorskip("torch", reason="the PyTorch section needs the torch extra")
    blocks = re.findall(r"```python torch\n(.*?)```", README, re.S)
    assert blocks, "the README's PyTorch example is missing"
    for i, block in enumerate(blocks):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"README torch block {i}", "exec"), {})
        assert out.getvalue().split() == ["normkernels.torch", "1"]
