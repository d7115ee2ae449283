"""The two command-line entry points run and say what they found."""

import json

from benchmarks.__main__ import main as benchmarks_main
from verify.__main__ import main as verify_main


def test_verify_cli_passes_and_writes_json(tmp_path, capsys):
    path = tmp_path / "reports.json"
    assert verify_main(["--quick", "--ops", "group_norm", "--dtypes", "float32", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "group_norm" in out
    reports = json.loads(path.read_text())
    assert reports and all(r["passed"] and r["dtype"] == "float32" for r in reports)


def test_benchmarks_cli_prints_both_passes_of_every_op(capsys):
    assert benchmarks_main(["--quick", "--repeat", "1", "--sizes", "small", "--backends", "cpu"]) == 0
    rows = {tuple(line.split()[::2][:2]) for line in capsys.readouterr().out.splitlines() if "normkernels cpu" in line}
    ops = ("batch_norm", "layer_norm", "instance_norm", "group_norm")
    assert rows == {(op, direction) for op in ops for direction in ("forward", "backward")}
