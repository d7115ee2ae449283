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
