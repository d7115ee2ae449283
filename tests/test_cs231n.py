"""cs231n's functions plug in as written: verify.cs231n.check with the assignment's dicts and shapes, and
`python -m verify layers.py` on a student's file."""

from pathlib import Path

import numpy as np
import pytest

from verify import cs231n
from verify.__main__ import main

STUDENTS = Path(__file__).resolve().parent / "students"
CORRECT_1C11 = cs231n.load(STUDENTS / "student_01.py")  # correct; group norm gamma (1, C, 1, 1)
CORRECT_C = cs231n.load(STUDENTS / "student_02.py")  # correct; group norm gamma (C,)


def _inputs(layer: str):
    """x, gamma, beta for one of the assignment's layers, drawn as verify.cs231n.check_module draws them."""
    return cs231n.LAYERS[layer].case.inputs()[:3]


def test_batchnorm_with_bn_param_in_train_and_test_mode():
    x, gamma, beta = _inputs("batchnorm")
    m = CORRECT_1C11
    train = cs231n.check(m.batchnorm_forward, m.batchnorm_backward, x=x, gamma=gamma, beta=beta,
                         bn_param={"mode": "train"})  # fmt: skip
    assert train.passed, str(train)
    test_param = {"mode": "test", "running_mean": np.arange(5.0), "running_var": np.full(5, 2.0)}
    test = cs231n.check(m.batchnorm_forward, m.batchnorm_backward, x=x, gamma=gamma, beta=beta, bn_param=test_param)
    assert test.passed and test.row("dx vs staged graph") is None, str(test)  # test mode: forward only
    with pytest.raises(ValueError, match="running_mean"):
        cs231n.check(m.batchnorm_forward, None, x=x, gamma=gamma, beta=beta, bn_param={"mode": "test"})


@pytest.mark.parametrize("module, shape", [(CORRECT_1C11, (1, 6, 1, 1)), (CORRECT_C, (6,))], ids=["1C11", "C"])
def test_groupnorm_with_G_and_either_gamma_shape(module, shape):
    x, gamma, beta = _inputs("spatial_groupnorm")
    report = cs231n.check(
        module.spatial_groupnorm_forward, module.spatial_groupnorm_backward,
        x=x, gamma=gamma.reshape(shape), beta=beta.reshape(shape), G=2, gn_param={},
    )  # fmt: skip
    assert report.passed, str(report)
    with pytest.raises(ValueError, match="needs G"):
        cs231n.check(module.spatial_groupnorm_forward, None, x=x, gamma=gamma, beta=beta, gn_param={})


def test_layernorm_with_ln_param_and_its_eps():
    x, gamma, beta = _inputs("layernorm")
    m = CORRECT_C
    report = cs231n.check(m.layernorm_forward, m.layernorm_backward, x=x, gamma=gamma, beta=beta,
                          ln_param={"eps": 0.1})  # fmt: skip
    assert report.passed, str(report)


def test_correct_files_pass_every_pair():
    for module in (CORRECT_1C11, CORRECT_C):
        entries = cs231n.check_module(module)
        assert [e.name for e in entries] == [f"{cs231n.LAYERS[lay].forward_name} + {b}" for lay, b in cs231n.PAIRS]
        assert all(e.passed for e in entries), cs231n.summary(entries)


def test_missing_functions_are_listed_not_errors(tmp_path, capsys):
    path = tmp_path / "layers.py"
    path.write_text((STUDENTS / "student_01.py").read_text().split("def layernorm_forward")[0])
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "not found: layernorm_forward, layernorm_backward" in out and "batchnorm_backward_alt" in out


def test_a_file_that_does_not_import_is_a_failed_row_with_its_line(tmp_path, capsys):
    path = tmp_path / "layers.py"
    path.write_text("import numpy as np\n\nSCALE = 1 / 0\n")
    assert main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "ZeroDivisionError" in out and "layers.py:3" in out


def test_a_file_without_any_of_the_functions_fails(tmp_path, capsys):
    path = tmp_path / "layers.py"
    path.write_text("def affine_forward(x, w, b):\n    return x @ w + b, None\n")
    assert main([str(path), str(tmp_path / "missing.py")]) == 1
    out = capsys.readouterr().out
    assert "none of the assignment's normalization functions" in out and "no such file" in out


def test_the_running_averages_follow_the_assignments_convention():
    x, gamma, beta = _inputs("batchnorm")
    layer = cs231n.LAYERS["batchnorm"]
    assert all(r.passed for r in cs231n.running_rows(CORRECT_1C11.batchnorm_forward, layer, x, gamma, beta))

    def pytorch_convention(x, gamma, beta, bn_param):  # momentum on the new value, unbiased variance
        m = bn_param.get("momentum", 0.9)
        rm = bn_param.get("running_mean", np.zeros(x.shape[1]))
        rv = bn_param.get("running_var", np.zeros(x.shape[1]))
        bn_param["running_mean"] = (1 - m) * rm + m * x.mean(0)
        bn_param["running_var"] = (1 - m) * rv + m * x.var(0, ddof=1)
        return CORRECT_1C11.batchnorm_forward(x, gamma, beta, {"mode": "train"})

    rows = cs231n.running_rows(pytorch_convention, layer, x, gamma, beta)
    named = {r.check.split(" after")[0]: r.hypothesis for r in rows if not r.passed}
    assert named == {"running_mean": "momentum_flipped", "running_var": "torch"}, rows
