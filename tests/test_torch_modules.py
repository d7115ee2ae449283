"""normkernels.torch against PyTorch: gradcheck of every Function, every module beside its torch twin over
training and eval steps, the zero-copy hand-over, convert(model), errors, and (with a GPU) CUDA tensors. The
Switchable modules, which torch.nn lacks, have for twin the plain torch composition of test_nn.py."""

import copy
import subprocess
import sys
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest
from test_nn import switchable_reference

from verify import compare

torch = pytest.importorskip("torch")

import normkernels  # noqa: E402
import normkernels.torch as nkt  # noqa: E402  (needs torch: imported after the skip)

F = torch.nn.functional
nn = torch.nn
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and a CUDA build of PyTorch")
TORCH_NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
    nn.RMSNorm,
)
TORCH_NN = SimpleNamespace(**(vars(nn) | vars(F)))  # torch's modules and functionals, named as in nkt


def torch_dtype(dtype) -> "torch.dtype":
    return getattr(torch, np.dtype(dtype).name)


# gradcheck: every op, float64, small shapes


def _leaf(*shape, seed=0, scale=1.0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + offset).requires_grad_()


def _running(c, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(c, generator=g, dtype=torch.float64), torch.rand(c, generator=g, dtype=torch.float64) + 0.5


def _gradcheck_cases():
    """(id, function of the inputs, inputs); the running statistics are fresh copies on every call, so that
    gradcheck's many calls see the same function."""
    x2, x3, x4 = _leaf(6, 3, offset=1.0), _leaf(3, 4, 5, scale=2.0), _leaf(2, 3, 2, 3, seed=3)
    w, b = _leaf(3, seed=4, offset=1.0), _leaf(3, seed=5)
    w4, b4 = _leaf(4, seed=6, offset=1.0), _leaf(4, seed=7)
    wl, bl = _leaf(4, 5, seed=8, offset=1.0), _leaf(4, 5, seed=9)
    rm, rv = _running(3)
    rm4, rv4 = _running(4)
    mw, vw = _leaf(3, seed=10), _leaf(3, seed=11)  # the mixing logits: no two alike, so each statistic matters
    x4b = _leaf(3, 3, 2, 2, seed=12, scale=1.5, offset=0.5)

    def bn(training, with_running=True, c_rm=rm, c_rv=rv):
        def f(x, *affine):
            run = (c_rm.clone(), c_rv.clone()) if with_running else (None, None)
            return nkt.batch_norm(x, *run, *affine, training=training)

        return f

    def inn(use_input_stats, with_running, c_rm=rm, c_rv=rv):
        def f(x, *affine):
            run = (c_rm.clone(), c_rv.clone()) if with_running else (None, None)
            return nkt.instance_norm(x, *run, *affine, use_input_stats=use_input_stats)

        return f

    def sn(training, with_running=True):
        def f(x, weight, bias, *mixing):
            run = (rm.clone(), rv.clone()) if with_running else (None, None)
            return nkt.switchable_norm(x, *run, weight, bias, *mixing, training=training)

        return f

    return [
        ("batch_norm-train-(N,D)-affine", bn(True), (x2, w, b)),
        ("batch_norm-train-(N,D)", bn(True), (x2,)),
        ("batch_norm-train-(N,C,H,W)-affine", bn(True), (x4, w, b)),
        ("batch_norm-train-no-running-affine", bn(True, with_running=False), (x4, w, b)),
        ("batch_norm-train-bias-only", lambda x, b: nkt.batch_norm(x, None, None, None, b, training=True), (x2, b)),
        ("batch_norm-eval-affine", bn(False), (x4, w, b)),
        ("batch_norm-eval", bn(False), (x2,)),
        ("layer_norm-affine", lambda x, w, b: nkt.layer_norm(x, (4, 5), w, b), (x3, wl, bl)),
        ("layer_norm", lambda x: nkt.layer_norm(x, 5), (x3,)),
        ("layer_norm-bias-only", lambda x, b: nkt.layer_norm(x, (4, 5), None, b), (x3, bl)),
        (
            "group_norm-affine",
            lambda x, w, b: nkt.group_norm(x, 2, w, b),
            (x3, w4, b4),
        ),
        ("group_norm", lambda x: nkt.group_norm(x, 2), (x3,)),
        ("group_norm-weight-only", lambda x, w: nkt.group_norm(x, 4, w), (x3, w4)),
        ("instance_norm-input-stats-affine", inn(True, False), (x4, w, b)),
        ("instance_norm-input-stats", inn(True, False), (x4,)),
        ("instance_norm-input-stats-running-affine", inn(True, True), (x4, w, b)),
        ("instance_norm-running-stats-only-affine", inn(False, True), (x4, w, b)),
        ("instance_norm-running-stats-only", inn(False, True), (x4,)),
        ("instance_norm-1d-running-affine", inn(True, True, rm4, rv4), (x3, w4, b4)),
        ("rms_norm-weight", lambda x, w: nkt.rms_norm(x, (4, 5), w), (x3, wl)),
        ("rms_norm", lambda x: nkt.rms_norm(x, [5]), (x3,)),
        ("rms_norm-eps", lambda x, w: nkt.rms_norm(x, (5,), w[0], 0.1), (x3, wl)),
        ("switchable_norm-train-running-affine", sn(True), (x4, w, b, mw, vw)),
        ("switchable_norm-train-affine", sn(True, with_running=False), (x4b, w, b, mw, vw)),
        ("switchable_norm-eval-affine", sn(False), (x4, w, b, mw, vw)),
        ("switchable_norm-train", lambda x, *mixing: sn(True)(x, None, None, *mixing), (x3[:, :3], mw, vw)),
        ("switchable_norm-eval", lambda x, *mixing: sn(False)(x, None, None, *mixing), (x4b, mw, vw)),
        ("switchable_norm-bias-only", lambda x, b, *mixing: sn(True)(x, None, b, *mixing), (x4, b, mw, vw)),
        ("switchable_norm-weight-only", lambda x, w, *mixing: sn(True)(x, w, None, *mixing), (x4b, w, mw, vw)),
    ]


GRADCHECK_CASES = _gradcheck_cases()


@pytest.mark.parametrize("fn, inputs", [pytest.param(f, i, id=n) for n, f, i in GRADCHECK_CASES])
def test_gradcheck(fn, inputs):
    assert torch.autograd.gradcheck(fn, inputs, raise_exception=True)


def test_functional_matches_torch_functional():
    x, w, b = _leaf(4, 3, 5), _leaf(3, seed=1), _leaf(3, seed=2)
    ours_rm, ours_rv = _running(3)
    torch_rm, torch_rv = ours_rm.clone(), ours_rv.clone()
    w35 = _leaf(3, 5, seed=3)
    pairs = [
        (nkt.rms_norm(x, [3, 5], w35), F.rms_norm(x, [3, 5], w35)),
        (nkt.rms_norm(x, [5], None, 1e-3), F.rms_norm(x, [5], None, 1e-3)),
        (nkt.batch_norm(x, ours_rm, ours_rv, w, b, True, 0.3), F.batch_norm(x, torch_rm, torch_rv, w, b, True, 0.3)),
        (nkt.layer_norm(x, [3, 5], None, None, 1e-3), F.layer_norm(x, [3, 5], None, None, 1e-3)),
        (nkt.group_norm(x, 3, w, b, 1e-4), F.group_norm(x, 3, w, b, 1e-4)),
        (nkt.instance_norm(x, ours_rm, ours_rv, w, b), F.instance_norm(x, torch_rm, torch_rv, w, b)),
        (nkt.instance_norm(x, ours_rm, ours_rv, w, b, False), F.instance_norm(x, torch_rm, torch_rv, w, b, False)),
    ]
    tol = compare.kernel_tolerance(np.float64)
    for i, (got, want) in enumerate(pairs):
        compare.assert_close(got.detach(), want.detach(), tol, what=f"pair {i}")
    compare.assert_close(ours_rm, torch_rm, tol, what="running_mean")
    compare.assert_close(ours_rv, torch_rv, tol, what="running_var")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_switchable_functional_matches_the_composition(training):
    """y, every gradient, and the running statistics moved as F.batch_norm moves them (momentum 0.3)."""
    g = torch.Generator().manual_seed(4)
    x, dy = (torch.randn(3, 4, 2, 5, generator=g, dtype=torch.float64) for _ in range(2))
    params = [torch.rand(4, generator=g, dtype=torch.float64) + 0.5, torch.randn(4, generator=g, dtype=torch.float64)]
    params += [torch.randn(3, generator=g, dtype=torch.float64) for _ in range(2)]
    running = _running(4)
    results = []
    for ours in (True, False):
        xi, (wi, bi, mwi, vwi) = x.clone().requires_grad_(), [p.clone().requires_grad_() for p in params]
        rm, rv = (r.clone() for r in running)
        if ours:
            y = nkt.switchable_norm(xi, rm, rv, wi, bi, mwi, vwi, training, 0.3, 1e-4)
        else:
            y = switchable_composition(xi, wi, bi, mwi, vwi, None if training else (rm, rv), 1e-4)
            if training:
                F.batch_norm(x, rm, rv, training=True, momentum=0.3)
        y.backward(dy)
        results.append(
            {"y": y.detach(), "rm": rm, "rv": rv}
            | {n: t.grad for n, t in zip("xwbmv", (xi, wi, bi, mwi, vwi), strict=True)}
        )
    got, want = results
    tol = compare.kernel_tolerance(np.float64)
    for name in want:
        compare.assert_close(got[name], want[name], tol, what=name)
    assert torch.equal(results[0]["rm"], running[0]) != training  # moved in training, left alone in eval


def test_backward_is_once_differentiable():
    x = _leaf(4, 3)
    (dx,) = torch.autograd.grad(nkt.layer_norm(x, 3).pow(3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        dx.sum().backward()


def test_gradients_only_where_asked():
    x = _leaf(4, 3)
    w = _leaf(3, seed=1)
    b = torch.zeros(3, dtype=torch.float64)  # no requires_grad: its gradient is neither asked for nor made
    nkt.batch_norm(x, None, None, w, b, training=True).pow(2).sum().backward()
    assert x.grad is not None and w.grad is not None and b.grad is None
    assert float(w.grad.abs().sum()) > 0


# Every module beside its torch twin: same constructor arguments, same state dict, the same steps


class ModuleCase(NamedTuple):
    id: str
    name: str  # the class name, in torch.nn and in normkernels.torch
    args: tuple
    kwargs: dict
    shape: tuple  # of the input


MODULE_CASES = [
    ModuleCase("BatchNorm1d-(N,C)", "BatchNorm1d", (3,), {}, (8, 3)),
    ModuleCase("BatchNorm1d-(N,C,L)-momentum-None", "BatchNorm1d", (3,), {"momentum": None}, (4, 3, 5)),
    ModuleCase("BatchNorm2d", "BatchNorm2d", (3,), {}, (4, 3, 5, 2)),
    ModuleCase("BatchNorm2d-momentum-None", "BatchNorm2d", (3,), {"momentum": None}, (4, 3, 5, 2)),
    ModuleCase("BatchNorm2d-affine-False", "BatchNorm2d", (3,), {"affine": False, "momentum": 0.3}, (4, 3, 5, 2)),
    ModuleCase("BatchNorm2d-no-running", "BatchNorm2d", (3,), {"track_running_stats": False}, (4, 3, 5, 2)),
    ModuleCase("BatchNorm3d", "BatchNorm3d", (3,), {"eps": 1e-3}, (2, 3, 2, 3, 2)),
    ModuleCase("LayerNorm", "LayerNorm", ((4, 5),), {}, (3, 2, 4, 5)),
    ModuleCase("LayerNorm-affine-False", "LayerNorm", (5,), {"elementwise_affine": False}, (3, 4, 5)),
    ModuleCase("LayerNorm-bias-False", "LayerNorm", (5,), {"bias": False}, (3, 4, 5)),
    ModuleCase("InstanceNorm1d", "InstanceNorm1d", (3,), {}, (2, 3, 6)),
    ModuleCase(
        "InstanceNorm1d-unbatched-tracked",
        "InstanceNorm1d",
        (3,),
        {"affine": True, "track_running_stats": True},
        (3, 6),
    ),
    ModuleCase("InstanceNorm2d-affine", "InstanceNorm2d", (3,), {"affine": True}, (2, 3, 4, 3)),
    ModuleCase(
        "InstanceNorm2d-tracked", "InstanceNorm2d", (3,), {"affine": True, "track_running_stats": True}, (2, 3, 4, 3)
    ),
    ModuleCase(
        "InstanceNorm2d-tracked-momentum-None",
        "InstanceNorm2d",
        (3,),
        {"track_running_stats": True, "momentum": None},
        (2, 3, 4, 3),
    ),
    ModuleCase(
        "InstanceNorm3d", "InstanceNorm3d", (3,), {"affine": True, "track_running_stats": True}, (2, 3, 2, 3, 2)
    ),
    ModuleCase("GroupNorm", "GroupNorm", (2, 4), {}, (3, 4, 5)),
    ModuleCase("GroupNorm-2d-affine-False", "GroupNorm", (4, 4), {"affine": False}, (3, 4, 3, 2)),
    ModuleCase("RMSNorm", "RMSNorm", ((4, 5),), {}, (3, 2, 4, 5)),
    ModuleCase("RMSNorm-eps", "RMSNorm", (5,), {"eps": 1e-3}, (3, 4, 5)),
    ModuleCase("RMSNorm-affine-False", "RMSNorm", (5,), {"elementwise_affine": False}, (3, 4, 5)),
]
# torch.nn has no twin: each is checked against test_nn's composition, built by the same arguments
SWITCHABLE_CASES = [
    ModuleCase("SwitchableNorm1d", "SwitchableNorm1d", (3,), {}, (4, 3, 5)),
    ModuleCase("SwitchableNorm1d-momentum-None", "SwitchableNorm1d", (3,), {"momentum": None}, (4, 3, 5)),
    ModuleCase("SwitchableNorm2d", "SwitchableNorm2d", (3,), {}, (4, 3, 5, 2)),
    ModuleCase(
        "SwitchableNorm2d-affine-False", "SwitchableNorm2d", (3,), {"affine": False, "momentum": 0.3}, (4, 3, 5, 2)
    ),
    ModuleCase("SwitchableNorm2d-no-running", "SwitchableNorm2d", (3,), {"track_running_stats": False}, (4, 3, 5, 2)),
    ModuleCase("SwitchableNorm3d", "SwitchableNorm3d", (3,), {"eps": 1e-3}, (2, 3, 2, 3, 2)),
]


def switchable_composition(x, weight, bias, mean_weight, var_weight, running, eps):
    from test_nn import switchable_composition as composition

    return composition(torch, x, weight, bias, mean_weight, var_weight, running, eps)


def torch_twin_class(name: str):
    """torch.nn's class of that name, or for the Switchable modules the composition."""
    return switchable_reference(torch, name) if name.startswith("Switchable") else getattr(nn, name)


TRAIN_STEPS, EVAL_STEPS = 3, 2
LEARNING_RATE = 0.1


def make_twins(case: ModuleCase, dtype, device="cpu"):
    """(torch's module, ours) with the same arguments and state; weight and bias away from their 1 and 0."""
    torch.manual_seed(0)
    theirs = torch_twin_class(case.name)(*case.args, **case.kwargs, dtype=torch_dtype(dtype), device=device)
    with torch.no_grad():
        for p in theirs.parameters():
            p.uniform_(0.5, 1.5)
    ours = getattr(nkt, case.name)(*case.args, **case.kwargs, dtype=torch_dtype(dtype), device=device)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def steps(case: ModuleCase, dtype, device="cpu"):
    """(training, x, dy) for TRAIN_STEPS training steps then EVAL_STEPS eval steps; x of mean ~step, std 2."""
    g = torch.Generator().manual_seed(1)
    for step in range(TRAIN_STEPS + EVAL_STEPS):
        x = torch.randn(case.shape, generator=g, dtype=torch.float64) * 2 + step
        dy = torch.randn(case.shape, generator=g, dtype=torch.float64)
        yield step < TRAIN_STEPS, x.to(device, torch_dtype(dtype)), dy.to(device, torch_dtype(dtype))


def run_step(module, training: bool, x, dy) -> dict:
    """One forward and backward, then an SGD update of the parameters. Returns y, dx, d<parameter> and every
    buffer after the step."""
    module.train(training)
    x = x.clone().requires_grad_()
    y = module(x)
    y.backward(dy)
    out = {"y": y.detach(), "dx": x.grad}
    with torch.no_grad():
        for name, p in module.named_parameters():
            out[f"d{name}"] = p.grad.clone()
            p -= LEARNING_RATE * p.grad
            p.grad = None
    out.update({name: b.clone() for name, b in module.named_buffers()})
    return out


def twin_steps(case: ModuleCase, dtype, device="cpu"):
    """For each step: (training, {name: (ours, torch's)})."""
    theirs, ours = make_twins(case, dtype, device)
    for training, x, dy in steps(case, dtype, device):
        want, got = run_step(theirs, training, x, dy), run_step(ours, training, x, dy)
        assert got.keys() == want.keys()
        yield training, {name: (got[name], want[name]) for name in want}


def assert_twin_steps_match(case: ModuleCase, dtype, device="cpu"):
    tol = compare.kernel_tolerance(dtype)
    seen = set()
    for step, (training, pairs) in enumerate(twin_steps(case, dtype, device)):
        for name, (got, want) in pairs.items():
            what = f"{case.id} {np.dtype(dtype).name} step {step} ({'train' if training else 'eval'}) {name}"
            assert got.dtype == want.dtype and got.shape == want.shape and got.device == want.device, what
            if name == "num_batches_tracked":
                assert torch.equal(got, want), what
            else:
                compare.assert_close(got.cpu(), want.cpu(), tol, what=what)
            seen.add(name)
    return seen


@pytest.mark.parametrize("case", MODULE_CASES + SWITCHABLE_CASES, ids=lambda c: c.id)
def test_module_matches_torch_twin(case, dtype):
    seen = assert_twin_steps_match(case, dtype)
    module = getattr(nkt, case.name)(*case.args, **case.kwargs)
    expected = {"y", "dx"} | {f"d{n}" for n, _ in module.named_parameters()} | {n for n, _ in module.named_buffers()}
    assert seen == expected  # every tensor was compared


@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: c.id)
def test_module_is_torch_class_with_torch_state(case):
    theirs, ours = make_twins(case, np.float64)
    assert isinstance(ours, type(theirs)) and type(ours) is not type(theirs)
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert repr(ours) == repr(theirs)


def test_switchable_modules_hold_what_normkernels_nn_holds():
    """Parameters and buffers by name and order, initial values (the authors' equal mix), repr, and the state
    dict keys of normkernels.nn's layer; without affine or tracking, the same Nones as torch's BatchNorm."""
    from normkernels import nn as nkn

    for dims in (1, 2, 3):
        name = f"SwitchableNorm{dims}d"
        ours, numpy_layer = getattr(nkt, name)(4, momentum=None), getattr(nkn, name)(4, momentum=None)
        assert [n for n, _ in ours.named_parameters()] == ["weight", "bias", "mean_weight", "var_weight"]
        assert [n for n, _ in ours.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
        assert list(ours.state_dict()) == list(numpy_layer.state_dict())
        assert (
            repr(ours)
            == repr(numpy_layer)
            == f"{name}(4, eps=1e-05, momentum=None, affine=True, track_running_stats=True)"
        )
        for key, value in ours.state_dict().items():
            assert value.dtype == torch_dtype(numpy_layer.state_dict()[key].dtype), key
            np.testing.assert_array_equal(value.numpy(), numpy_layer.state_dict()[key], err_msg=key)
    plain = nkt.SwitchableNorm2d(3, affine=False, track_running_stats=False)
    assert (
        plain.weight is None and plain.bias is None and plain.running_mean is None and plain.num_batches_tracked is None
    )
    assert list(plain.state_dict()) == ["mean_weight", "var_weight"]
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "num_batches_tracked"'):
        nkt.SwitchableNorm2d(3).load_state_dict(
            {k: v for k, v in nkt.SwitchableNorm2d(3).state_dict().items() if k != "num_batches_tracked"}
        )


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    "name, shape",
    [("SwitchableNorm1d", (3, 2, 4)), ("SwitchableNorm2d", (2, 2, 2, 3)), ("SwitchableNorm3d", (2, 2, 3, 1, 2))],
)
def test_switchable_module_gradcheck(name, shape, training):
    """The module itself (BatchNorm's forward logic around switchable_norm), its four parameters as inputs."""
    module = getattr(nkt, name)(2, dtype=torch.float64).train(training)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for t in list(module.parameters()) + [module.running_mean]:
            t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64))
        module.running_var.uniform_(0.5, 1.5, generator=g)
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    x = (torch.randn(shape, generator=g, dtype=torch.float64) + 0.5).requires_grad_()

    def f(x, *params):
        return torch.func.functional_call(module, dict(zip(names, params, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), raise_exception=True)


def test_training_steps_change_the_running_statistics():
    """The module parity above compares buffers that do move: guard against comparing two untouched buffers."""
    case = MODULE_CASES[2]
    _, ours = make_twins(case, np.float64)
    for training, x, dy in steps(case, np.float64):
        if training:
            run_step(ours, training, x, dy)
    assert int(ours.num_batches_tracked) == TRAIN_STEPS
    assert not torch.allclose(ours.running_mean, torch.zeros(3, dtype=torch.float64))


def test_non_contiguous_input_matches_torch():
    x = torch.randn(5, 4, 3, dtype=torch.float64).transpose(0, 2)  # (3, 4, 5), not contiguous
    assert not x.is_contiguous()
    tol = compare.kernel_tolerance(np.float64)
    for ours, theirs in [(nkt.GroupNorm(2, 4), nn.GroupNorm(2, 4)), (nkt.LayerNorm(5), nn.LayerNorm(5))]:
        ours.double(), theirs.double()
        compare.assert_close(ours(x).detach(), theirs(x).detach(), tol, what=type(ours).__name__)


def _in_place_cases():
    """Every module class; instance norm batched and unbatched, with and without running statistics."""
    cases = [c for c in MODULE_CASES + SWITCHABLE_CASES if not c.name.startswith("InstanceNorm")]
    for dims in (1, 2, 3):
        name, spatial = f"InstanceNorm{dims}d", (4, 3, 2)[:dims]
        for tracked in (False, True):
            for batch in ((2,), ()):
                kind = f"{'batched' if batch else 'unbatched'}-{'tracked' if tracked else 'untracked'}"
                kwargs = {"affine": True, "track_running_stats": tracked}
                cases.append(ModuleCase(f"{name}-{kind}", name, (3,), kwargs, (*batch, 3, *spatial)))
    return cases


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", _in_place_cases(), ids=lambda c: c.id)
def test_output_can_be_modified_in_place(case, training):
    """As after torch's own norm layers, e.g. ReLU(inplace=True): the output is no view made inside a Function."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(case.shape, generator=g, dtype=torch.float64)
    dy = torch.randn(case.shape, generator=g, dtype=torch.float64)
    results = []
    for module in make_twins(case, np.float64):
        module.train(training)
        xi = x.clone().requires_grad_()
        y = torch.relu_(module(xi))
        y.backward(dy)
        results.append({"y": y.detach(), "dx": xi.grad} | {f"d{n}": p.grad for n, p in module.named_parameters()})
    want, got = results
    assert got.keys() == want.keys()
    tol = compare.kernel_tolerance(np.float64)
    for name in want:
        compare.assert_close(got[name], want[name], tol, what=f"{case.id} {name}")


# The zero-copy hand-over on the CPU


def test_running_statistics_updated_in_place():
    m = nkt.BatchNorm2d(3)
    mean, var = m.running_mean, m.running_var
    pointers = mean.data_ptr(), var.data_ptr()
    version = mean._version
    m(torch.randn(4, 3, 2, 2) + 3)
    assert m.running_mean is mean and m.running_var is var
    assert (mean.data_ptr(), var.data_ptr()) == pointers
    assert float(mean.min()) > 0.1  # moved towards the batch mean (3) from 0
    assert mean._version > version  # autograd sees the in-place update, as with torch's own


def test_switchable_running_statistics_updated_in_place():
    m = nkt.SwitchableNorm2d(3)
    mean, var = m.running_mean, m.running_var
    pointers, version = (mean.data_ptr(), var.data_ptr()), mean._version
    m(torch.randn(4, 3, 2, 2) + 3)
    assert m.running_mean is mean and m.running_var is var and (mean.data_ptr(), var.data_ptr()) == pointers
    assert float(mean.min()) > 0.1 and mean._version > version and int(m.num_batches_tracked) == 1
    before = mean.clone()
    m.eval()(torch.randn(4, 3, 2, 2))
    assert torch.equal(mean, before) and int(m.num_batches_tracked) == 1  # eval reads them only


def test_kernels_see_the_tensors_memory_and_outputs_are_theirs(monkeypatch):
    seen = {}
    forward, backward = normkernels.batch_norm_forward, normkernels.batch_norm_backward

    def spy_forward(x, gamma, beta, **kwargs):
        seen.update(x=x, gamma=gamma, running_mean=kwargs["running_mean"])
        seen["y"], mean, rstd = forward(x, gamma, beta, **kwargs)
        return seen["y"], mean, rstd

    def spy_backward(dy, x, gamma, mean, rstd, **kwargs):
        seen.update(dy=dy, saved_x=x)
        return backward(dy, x, gamma, mean, rstd, **kwargs)

    monkeypatch.setattr(normkernels, "batch_norm_forward", spy_forward)
    monkeypatch.setattr(normkernels, "batch_norm_backward", spy_backward)
    x = torch.randn(4, 3, 5, requires_grad=True)
    w = torch.ones(3, requires_grad=True)
    rm, rv = torch.zeros(3), torch.ones(3)
    y = nkt.batch_norm(x, rm, rv, w, None, training=True)
    dy = torch.randn(4, 3, 5)
    y.backward(dy)
    assert isinstance(seen["x"], np.ndarray)
    assert seen["x"].ctypes.data == x.data_ptr()
    assert seen["gamma"].ctypes.data == w.data_ptr()
    assert seen["running_mean"].ctypes.data == rm.data_ptr()
    assert y.data_ptr() == seen["y"].ctypes.data  # y is the kernel's output buffer itself
    assert seen["saved_x"].ctypes.data == x.data_ptr() and seen["dy"].ctypes.data == dy.data_ptr()


def test_import_needs_no_torch_and_says_how_to_get_it():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import normkernels\n"
        "assert 'normkernels.torch' not in sys.modules\n"
        "try:\n"
        "    import normkernels.torch\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install torch" in out


def test_import_normkernels_does_not_import_torch():
    code = "import sys, normkernels; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# convert


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), nn.Sequential(nn.GroupNorm(2, 8), nn.Conv2d(8, 4, 1)))
        self.instance = nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
        self.layer = nn.LayerNorm([4, 6, 6])

    def forward(self, x):
        return self.layer(self.instance(self.body(self.conv(x))))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = _Block()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(144, 10), nn.BatchNorm1d(10), nn.Linear(10, 2))

    def forward(self, x):
        return self.head(self.block(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_convert_small_cnn(dtype):
    torch.manual_seed(0)
    model = SmallCNN().to(torch_dtype(dtype))
    reference = copy.deepcopy(model)
    parameters, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)  # built before convert
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.05)

    converted = nkt.convert(model)

    assert converted is model
    norms = [m for m in converted.modules() if isinstance(m, TORCH_NORMS)]
    assert len(norms) == 5 and all(type(m).__module__ == "normkernels.torch" for m in norms)
    assert all(p is parameters[name] for name, p in converted.named_parameters())
    assert all(b is buffers[name] for name, b in converted.named_buffers())
    assert converted.state_dict().keys() == reference.state_dict().keys()

    tol = compare.kernel_tolerance(dtype)
    g = torch.Generator().manual_seed(2)
    for step in range(4):
        training = step < 3
        x = torch.randn(4, 3, 6, 6, generator=g).to(torch_dtype(dtype))
        outputs = []
        for net, opt in ((reference, reference_optimizer), (converted, optimizer)):
            net.train(training)
            opt.zero_grad()
            out = net(x)
            out.pow(2).sum().backward()
            if training:
                opt.step()
            outputs.append(out.detach())
        compare.assert_close(outputs[1], outputs[0], tol, what=f"output, step {step}")
    for name, p in converted.named_parameters():
        compare.assert_close(p.detach(), reference.get_parameter(name).detach(), tol, what=name)
    for name, b in converted.named_buffers():
        compare.assert_close(b, reference.get_buffer(name), tol, what=name)
    torch.manual_seed(0)
    start = SmallCNN().to(torch_dtype(dtype))  # the same seed as model: its initial parameters
    moved = [n for n, p in converted.named_parameters() if not torch.equal(p, start.get_parameter(n))]
    assert "block.body.0.weight" in moved and "head.2.bias" in moved  # the early optimizer updated them


def _count_kernel_calls(monkeypatch, *names) -> list:
    """A list that grows by a kernel's name at each call of it (batch_norm_forward by default): which layers
    ran ours."""
    calls = []

    def spy_on(name):
        kernel = getattr(normkernels, name)

        def spy(*args, **kwargs):
            calls.append(name)
            return kernel(*args, **kwargs)

        return spy

    for name in names or ("batch_norm_forward",):
        monkeypatch.setattr(normkernels, name, spy_on(name))
    return calls


class _TinyTransformerBlock(nn.Module):
    """Pre-norm MLP block as language models use RMSNorm: normalize, project, add."""

    def __init__(self):
        super().__init__()
        self.norm = nn.RMSNorm(8)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.final = nn.RMSNorm([8], eps=1e-5, elementwise_affine=False)

    def forward(self, x):
        return self.final(x + self.mlp(self.norm(x)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_convert_a_model_with_rms_norm(monkeypatch, dtype):
    calls = _count_kernel_calls(monkeypatch, "rms_norm_forward")
    torch.manual_seed(0)
    model = _TinyTransformerBlock().to(torch_dtype(dtype))
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
    reference = copy.deepcopy(model)
    weight = model.norm.weight
    optimizer, reference_optimizer = (torch.optim.SGD(m.parameters(), lr=0.05) for m in (model, reference))

    assert nkt.convert(model) is model
    assert type(model.norm) is nkt.RMSNorm and type(model.final) is nkt.RMSNorm and model.norm.weight is weight
    assert model.final.eps == 1e-5 and model.norm.eps is None

    tol = compare.kernel_tolerance(dtype)
    g = torch.Generator().manual_seed(2)
    for step in range(3):
        x = (torch.randn(5, 4, 8, generator=g) * 2 + 1).to(torch_dtype(dtype))
        outputs = []
        for net, opt in ((reference, reference_optimizer), (model, optimizer)):
            opt.zero_grad()
            out = net(x)
            out.pow(2).sum().backward()
            opt.step()
            outputs.append(out.detach())
        compare.assert_close(outputs[1], outputs[0], tol, what=f"output, step {step}")
    assert calls == ["rms_norm_forward"] * 6  # both norms ran ours, at each of the three steps
    for name, p in model.named_parameters():
        compare.assert_close(p.detach(), reference.get_parameter(name).detach(), tol, what=name)


def test_convert_keeps_root_flags_and_hooks():
    m = nn.BatchNorm2d(3, momentum=None).double().eval()
    m.weight.requires_grad_(False)
    weight, running_var = m.weight, m.running_var
    calls = []
    m.register_forward_hook(lambda module, args, out: calls.append(type(module)))
    c = nkt.convert(m)
    assert c is m and type(m) is nkt.BatchNorm2d  # the root itself, converted in place
    assert m.weight is weight and m.running_var is running_var
    assert not m.training and m.momentum is None and not m.weight.requires_grad and m.weight.dtype == torch.float64
    m(torch.randn(2, 3, 2, 2, dtype=torch.float64))
    assert calls == [nkt.BatchNorm2d]


@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: c.id)
def test_our_modules_add_no_state(case):
    """convert only sets a layer's class: ours must hold exactly what torch's twin holds, nothing set apart."""
    theirs, ours = make_twins(case, np.float64)
    assert vars(ours).keys() == vars(theirs).keys()
    mro = type(ours).__mro__
    assert not any("__init__" in vars(k) for k in mro[: mro.index(type(theirs))])


def test_convert_a_layer_that_another_model_holds_too(monkeypatch):
    """One object: the model not converted sees our layer too, and dtype, mode and hooks stay one."""
    calls = _count_kernel_calls(monkeypatch)
    bn = nn.BatchNorm1d(3)
    a, b = nn.Sequential(bn), nn.Sequential(nn.Linear(3, 3), bn)
    optimizer = torch.optim.SGD(b.parameters(), lr=0.1)  # built before convert, from the other model
    weight = bn.weight
    hooked = []
    handle = b[1].register_forward_hook(lambda m, args, out: hooked.append(type(m)))

    assert nkt.convert(a) is a
    assert a[0] is bn and b[1] is bn and type(bn) is nkt.BatchNorm1d and bn.weight is weight
    b.double()
    assert a[0].weight.dtype == a[0].running_mean.dtype == torch.float64
    b.eval()
    assert not a[0].training
    b.train()
    a(torch.randn(4, 3, dtype=torch.float64))
    assert hooked == [nkt.BatchNorm1d] and calls == ["batch_norm_forward"]
    b(torch.randn(4, 3, dtype=torch.float64)).sum().backward()
    assert calls == ["batch_norm_forward"] * 2  # b runs our kernel too
    before = bn.bias.detach().clone()
    optimizer.step()
    assert not torch.equal(bn.bias.detach(), before)  # b's optimizer trains the converted layer
    handle.remove()  # the handle from b removes the hook for a as well
    a(torch.randn(4, 3, dtype=torch.float64))
    assert hooked == [nkt.BatchNorm1d] * 2


def test_convert_a_deep_copy_leaves_the_original_to_torch(monkeypatch):
    calls = _count_kernel_calls(monkeypatch, "batch_norm_forward", "layer_norm_forward")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.LayerNorm(18))
    state = copy.deepcopy(model.state_dict())
    ours = nkt.convert(copy.deepcopy(model))
    assert [type(m) for m in model] == [nn.Conv2d, nn.BatchNorm2d, nn.Flatten, nn.LayerNorm]
    assert [type(m) for m in ours] == [nn.Conv2d, nkt.BatchNorm2d, nn.Flatten, nkt.LayerNorm]
    assert all(p is not q for p, q in zip(model.parameters(), ours.parameters(), strict=True))
    x = torch.randn(4, 1, 5, 5)
    ours(x)
    assert calls == ["batch_norm_forward", "layer_norm_forward"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # the original's state untouched
    model(x)
    assert calls == ["batch_norm_forward", "layer_norm_forward"]  # the original runs torch's kernels


@pytest.mark.parametrize("root", [False, True], ids=["nested", "root"])
def test_hook_handles_taken_before_convert_still_remove(root):
    calls = []
    model = nn.Sequential(nn.BatchNorm1d(3))
    layer = model[0]
    forward = layer.register_forward_hook(lambda m, args, out: calls.append("forward"), always_call=True)
    pre = layer.register_forward_pre_hook(lambda m, args, kwargs: calls.append("pre"), with_kwargs=True)
    converted = nkt.convert(layer if root else model)
    ours = converted if root else converted[0]
    assert type(ours) is nkt.BatchNorm1d
    x = torch.randn(4, 3)
    converted(x)
    assert calls == ["pre", "forward"]  # still registered on the converted layer
    forward.remove()
    converted(x)
    assert calls == ["pre", "forward", "pre"]
    pre.remove()
    converted(x)
    assert calls == ["pre", "forward", "pre"]
    assert not ours._forward_hooks_always_called and not ours._forward_pre_hooks_with_kwargs  # removed there too


@pytest.mark.parametrize("compiled", ["layer", "container"])
def test_convert_of_a_compiled_model_runs_our_kernel(monkeypatch, compiled):
    model = nn.Sequential(nn.BatchNorm1d(3))
    target = model[0] if compiled == "layer" else model
    if not hasattr(target, "compile"):
        pytest.skip("nn.Module.compile needs a newer PyTorch")
    try:
        target.compile(backend="eager")
        model(torch.randn(4, 3))  # compiled, and traced through torch's forward
    except RuntimeError as exc:  # e.g. a Python that torch.compile does not support yet
        pytest.skip(f"torch.compile is unavailable: {exc}")
    calls = _count_kernel_calls(monkeypatch)
    assert nkt.convert(model) is model
    assert type(model[0]) is nkt.BatchNorm1d
    assert model[0]._compiled_call_impl is None  # the converted layer comes back uncompiled
    x = torch.randn(4, 3)
    y = model(x)
    assert calls == ["batch_norm_forward"]  # not the call compiled before, which runs torch's kernel
    want = F.batch_norm(x, torch.zeros(3), torch.ones(3), training=True)
    compare.assert_close(y.detach(), want, compare.kernel_tolerance(np.float32), what="y")


def test_convert_leaves_other_modules_alone():
    class MyNorm(nn.BatchNorm2d):
        pass

    shared = nn.LayerNorm(4)
    ours = nkt.GroupNorm(2, 4)
    model = nn.Sequential(MyNorm(4), nn.SyncBatchNorm(4), shared, shared, ours, nn.Linear(4, 4))
    nkt.convert(model)
    assert type(model[0]) is MyNorm and type(model[1]) is nn.SyncBatchNorm and model[4] is ours
    assert type(model[2]) is nkt.LayerNorm and model[2] is model[3]  # still one shared layer


# Errors


def test_half_precision_is_refused_by_name():
    m = nkt.BatchNorm2d(3).half()
    with pytest.raises(TypeError, match=r"torch\.float16.*float32 and torch\.float64"):
        m(torch.randn(2, 3, 2, 2).half())
    with pytest.raises(TypeError, match=r"torch\.bfloat16"):
        nkt.layer_norm(torch.randn(2, 3, dtype=torch.bfloat16), 3)


def test_mismatched_companions_are_named():
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match="weight.*torch.float32.*torch.float64"):
        nkt.batch_norm(x, None, None, torch.ones(3, dtype=torch.float64), training=True)
    with pytest.raises(TypeError, match="input is on device meta"):
        nkt.group_norm(torch.empty(2, 4, 3, device="meta"), 2)
    with pytest.raises(TypeError, match="bias to be a torch.Tensor"):
        nkt.layer_norm(x, 3, None, [0.0, 0.0, 0.0])


@pytest.mark.parametrize(
    "ours, theirs, x",
    [
        (nkt.BatchNorm2d(3), nn.BatchNorm2d(3), torch.randn(2, 3, 4)),
        (nkt.BatchNorm1d(3), nn.BatchNorm1d(3), torch.randn(3)),
        (nkt.InstanceNorm2d(3), nn.InstanceNorm2d(3), torch.randn(2, 3)),
        (nkt.InstanceNorm1d(3, affine=True), nn.InstanceNorm1d(3, affine=True), torch.randn(2, 4, 5)),
    ],
    ids=["bn2d-3d-input", "bn1d-1d-input", "in2d-2d-input", "in1d-channels"],
)
def test_shape_errors_are_torchs(ours, theirs, x):
    with pytest.raises(ValueError) as expected:
        theirs(x)
    with pytest.raises(ValueError) as got:
        ours(x)
    assert str(got.value) == str(expected.value)


def test_shape_error_is_both_runtime_error_and_value_error():
    assert issubclass(nkt.ShapeError, RuntimeError) and issubclass(nkt.ShapeError, ValueError)
    with pytest.raises(RuntimeError) as got:
        nkt.LayerNorm(10)(torch.randn(32, 9))
    assert type(got.value) is nkt.ShapeError


def _value_error_cases():
    """(id, call(module), message): each call made once with torch.nn and once with normkernels.torch."""
    x = torch.randn(2, 3, 4)
    return [
        ("bn-one-value-module", lambda m: m.BatchNorm1d(3)(torch.randn(1, 3)), "more than 1 value per channel"),
        (
            "bn-one-value-functional",
            lambda m: m.batch_norm(torch.randn(1, 3, 1), None, None, training=True),
            "more than 1 value per channel",
        ),
        ("in-one-spatial-element", lambda m: m.instance_norm(torch.randn(2, 3, 1)), "more than 1 spatial element"),
        ("gn-one-value", lambda m: m.group_norm(torch.randn(1, 2), 2), "more than 1 value per channel"),
        ("bn-eps", lambda m: m.batch_norm(x, None, None, training=True, eps=0.0), "eps must be positive"),
        ("bn-running-pair", lambda m: m.batch_norm(x, torch.zeros(3), None, training=True), "running_var"),
        ("in-running-pair", lambda m: m.instance_norm(x, None, torch.ones(3)), "running_var"),
        ("bn2d-ndim", lambda m: m.BatchNorm2d(3)(x), r"expected 4D input \(got 3D input\)"),
        ("gn-divisible", lambda m: m.GroupNorm(2, 4)(torch.randn(2, 3, 5)), "divisible by num_groups"),
        ("gn-divisible-functional", lambda m: m.group_norm(torch.randn(2, 6, 3), 4), "divisible by num_groups"),
        ("gn-num_groups", lambda m: m.group_norm(torch.randn(2, 6, 3), -1), "num_groups|num groups"),
        ("gn-ndim", lambda m: m.group_norm(torch.randn(4), 1), "dimensions"),
        ("ln-shape", lambda m: m.LayerNorm(10)(torch.randn(32, 9)), r"Given normalized_shape=\[10\]"),
        ("ln-empty-shape", lambda m: m.layer_norm(torch.randn(3, 2), ()), "at least 1-dimensional"),
        ("ln-weight", lambda m: m.layer_norm(x, (4,), torch.ones(3)), "weight"),
        ("gn-weight", lambda m: m.group_norm(x, 3, torch.ones(1, 3)), "weight"),
        ("bn-channels", lambda m: m.BatchNorm1d(4)(torch.randn(2, 3, 5)), "3 elements"),
        ("bn-weight", lambda m: m.batch_norm(x, None, None, torch.ones(4), training=True), "weight"),
        ("bn-running-shape", lambda m: m.batch_norm(x, torch.zeros(1, 3), torch.ones(1, 3)), "running_mean"),
        ("bn-eval-no-running", lambda m: m.batch_norm(x, None, None, training=False), "running_mean"),
        ("in-weight", lambda m: m.instance_norm(x, None, None, torch.ones(4)), "weight"),
        ("in-eval-no-running", lambda m: m.instance_norm(x, use_input_stats=False), "use_input_stats is false"),
        ("rms-shape", lambda m: m.RMSNorm(10)(torch.randn(32, 9)), r"Given normalized_shape=\[10\]"),
        ("rms-empty-shape", lambda m: m.rms_norm(torch.randn(3, 2), ()), "at least 1-dimensional"),
        ("rms-weight", lambda m: m.rms_norm(x, (4,), torch.ones(3)), "weight"),
    ]


@pytest.mark.parametrize("call, message", [pytest.param(c, m, id=i) for i, c, m in _value_error_cases()])
def test_value_errors_speak_as_torch(call, message):
    """torch's exception class, so that code catching it around torch's layers catches ours; always a
    ValueError too (ShapeError where torch raises RuntimeError), as everywhere in normkernels."""
    with pytest.raises(Exception) as expected:
        call(TORCH_NN)
    with pytest.raises(type(expected.value), match=message) as got:
        call(nkt)
    assert isinstance(got.value, ValueError)
    assert isinstance(got.value, RuntimeError) == isinstance(expected.value, RuntimeError)
    assert type(got.value) is (nkt.ShapeError if isinstance(expected.value, RuntimeError) else ValueError)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.BatchNorm1d(3)(torch.randn(1, 3)),
        lambda m: m.batch_norm(torch.randn(1, 3), None, None, training=True),
        lambda m: m.batch_norm(torch.randn(1, 3, 1), torch.zeros(3), torch.ones(3), training=True),
        lambda m: m.instance_norm(torch.randn(2, 3, 1)),
    ],
    ids=["BatchNorm1d", "batch_norm", "batch_norm-running", "instance_norm"],
)
def test_one_value_per_channel_is_refused_in_torchs_words(call):
    """The message of torch.nn.functional itself, not the kernel's, which names the kernel."""
    with pytest.raises(ValueError) as expected:
        call(TORCH_NN)
    with pytest.raises(ValueError) as got:
        call(nkt)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize(
    "call, kind, message",
    [
        (
            lambda: nkt.batch_norm(X_NCL, torch.zeros(3), torch.ones(3), training=True, momentum=None),
            TypeError,
            "batch_norm: expected momentum to be a real number, got NoneType",
        ),
        (
            lambda: nkt.batch_norm(X_NCL, None, None, training=True, momentum=None),
            TypeError,
            "batch_norm: expected momentum to be a real number, got NoneType",
        ),
        (
            lambda: nkt.instance_norm(X_NCL, torch.zeros(3), torch.ones(3), momentum=None),
            TypeError,
            "instance_norm: expected momentum to be a real number, got NoneType",
        ),
        (
            lambda: nkt.batch_norm(X_NCL, None, None, training=True, momentum=float("nan")),
            ValueError,
            "batch_norm: expected momentum to be a finite number, got nan",
        ),
        (
            lambda: nkt.batch_norm(X_NCL, None, None, training=True, eps=float("inf")),
            ValueError,
            "batch_norm: expected eps to be a finite number in [0.0, inf], got inf",
        ),
        (
            lambda: nkt.layer_norm(X_NCL, 5, eps=-1.0),
            ValueError,
            "layer_norm: expected eps to be a finite number in [0.0, inf], got -1.0",
        ),
        (
            lambda: nkt.group_norm(X_NCL, 3, eps="1e-5"),
            TypeError,
            "group_norm: expected eps to be a real number, got str",
        ),
        (
            lambda: nkt.rms_norm(X_NCL, (5,), eps=-1.0),
            ValueError,
            "rms_norm: expected eps to be a finite number in [0.0, inf], got -1.0",
        ),
        (
            lambda: nkt.switchable_norm(X_NCL, None, None, None, None, *MIXING, True, None),
            TypeError,
            "switchable_norm: expected momentum to be a real number, got NoneType",
        ),
        (
            lambda: nkt.switchable_norm(X_NCL, None, None, None, None, *MIXING, True, 0.1, float("nan")),
            ValueError,
            "switchable_norm: expected eps to be a finite number in [0.0, inf], got nan",
        ),
    ],
    ids=[
        "bn-momentum-None",
        "bn-momentum-None-untracked",
        "in-momentum-None",
        "bn-momentum-nan",
        "bn-eps-inf",
        "ln-eps",
        "gn-eps",
        "rms-eps",
        "sn-momentum-None",
        "sn-eps-nan",
    ],
)
def test_numbers_are_checked_by_the_functionals_name(call, kind, message):
    with pytest.raises(kind) as got:
        call()
    assert str(got.value) == message


X_NCL = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0))  # C = 3
MIXING = (torch.zeros(3), torch.zeros(3))  # switchable_norm's mean_weight and var_weight


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: nkt.batch_norm(X_NCL, None, None, torch.ones(4), training=True),
            "batch_norm: expected weight with 3 elements (one per channel), got shape (4,)",
        ),
        (
            lambda: nkt.batch_norm(X_NCL, None, None, None, torch.ones(()), training=True),
            "batch_norm: expected bias with 3 elements (one per channel), got shape ()",
        ),
        (
            lambda: nkt.batch_norm(X_NCL, torch.zeros(4), torch.ones(4)),
            "batch_norm: expected running_mean of shape (3,), got (4,)",
        ),
        (
            lambda: nkt.batch_norm(X_NCL, torch.zeros(3), torch.ones(2), training=True),
            "batch_norm: expected running_var of shape (3,), got (2,)",
        ),
        (
            lambda: nkt.batch_norm(X_NCL, torch.zeros(3, 1), torch.ones(3, 1), training=True),
            "batch_norm: expected running_mean of shape (3,), got (3, 1)",
        ),
        (
            lambda: nkt.batch_norm(torch.randn(4), None, None, training=True),
            "batch_norm: expected input with at least 2 dimensions, got shape (4,)",
        ),
        (
            lambda: nkt.batch_norm(X_NCL, None, None, training=False),
            "batch_norm: running_mean must be defined in evaluation mode",
        ),
        (
            lambda: nkt.instance_norm(X_NCL, torch.zeros(4), torch.ones(4)),
            "instance_norm: expected running_mean of shape (3,), got (4,)",
        ),
        (
            lambda: nkt.instance_norm(X_NCL, torch.zeros(4), torch.ones(4), use_input_stats=False),
            "instance_norm: expected running_mean of shape (3,), got (4,)",
        ),
        (
            lambda: nkt.instance_norm(X_NCL, torch.zeros(3), torch.ones(3), torch.ones(4)),
            "instance_norm: expected weight of shape (3,), got (4,)",
        ),
        (
            lambda: nkt.instance_norm(X_NCL, None, None, None, torch.ones(6)),
            "instance_norm: expected bias of shape (3,), got (6,)",
        ),
        (
            lambda: nkt.instance_norm(X_NCL, None, None, torch.ones(3, 1)),
            "instance_norm: expected weight of shape (3,), got (3, 1)",
        ),
        (
            lambda: nkt.instance_norm(X_NCL[:, :1], torch.zeros(()), torch.ones(())),
            "instance_norm: expected running_mean of shape (1,), got ()",
        ),
        (
            lambda: nkt.instance_norm(X_NCL[:, :1], None, None, torch.ones(1, 1)),
            "instance_norm: expected weight of shape (1,) or (), got (1, 1)",
        ),
        (lambda: nkt.layer_norm(X_NCL, 5, torch.ones(4)), "layer_norm: expected weight of shape (5,), got (4,)"),
        (
            lambda: nkt.layer_norm(X_NCL, (3, 5), None, torch.ones(5)),
            "layer_norm: expected bias of shape (3, 5), got (5,)",
        ),
        (lambda: nkt.group_norm(X_NCL, 3, torch.ones(4)), "group_norm: expected weight of shape (3,), got (4,)"),
        (
            lambda: nkt.group_norm(X_NCL, 3, None, torch.ones(1, 3)),
            "group_norm: expected bias of shape (3,), got (1, 3)",
        ),
        (lambda: nkt.rms_norm(X_NCL, 5, torch.ones(4)), "rms_norm: expected weight of shape (5,), got (4,)"),
        (
            lambda: nkt.switchable_norm(X_NCL, None, None, torch.ones(4), None, *MIXING, True),
            "switchable_norm: expected weight of shape (3,), got (4,)",
        ),
        (
            lambda: nkt.switchable_norm(X_NCL, None, None, None, torch.ones(3, 1), *MIXING, True),
            "switchable_norm: expected bias of shape (3,), got (3, 1)",
        ),
        (
            lambda: nkt.switchable_norm(X_NCL, torch.zeros(3), torch.ones(2), None, None, *MIXING, True),
            "switchable_norm: expected running_var of shape (3,), got (2,)",
        ),
        (
            lambda: nkt.switchable_norm(X_NCL, None, None, None, None, torch.zeros(2), torch.zeros(3), True),
            "switchable_norm: expected mean_weight of shape (3,), got (2,)",
        ),
        (
            lambda: nkt.switchable_norm(X_NCL, None, None, None, None, torch.zeros(3), torch.zeros(1, 3), True),
            "switchable_norm: expected var_weight of shape (3,), got (1, 3)",
        ),
        (
            lambda: nkt.switchable_norm(X_NCL[:, :, 0], None, None, None, None, *MIXING, True),
            "switchable_norm: expected input with at least 3 dimensions, got shape (4, 3)",
        ),
        (
            lambda: nkt.switchable_norm(X_NCL, None, None, None, None, *MIXING, False),
            "switchable_norm: running_mean must be defined in evaluation mode",
        ),
    ],
    ids=[
        "bn-weight",
        "bn-bias",
        "bn-running_mean",
        "bn-running_var",
        "bn-running_mean-2d",
        "bn-1d-input",
        "bn-eval-no-running",
        "in-running_mean",
        "in-running_mean-eval",
        "in-weight-tracked",
        "in-bias",
        "in-weight-2d",
        "in-running-0d-tracked",
        "in-weight-2d-C1",
        "ln-weight",
        "ln-bias",
        "gn-weight",
        "gn-bias",
        "rms-weight",
        "sn-weight",
        "sn-bias",
        "sn-running_var",
        "sn-mean_weight",
        "sn-var_weight-2d",
        "sn-2d-input",
        "sn-eval-no-running",
    ],
)
def test_shape_errors_name_the_callers_arguments(call, message):
    """By the functional and the caller's argument (input, weight, bias, running_*) and shapes: not the kernels'
    gamma and beta, nor instance norm's statistics as repeated N times for the kernel. Each refused by torch
    too, with RuntimeError."""
    with pytest.raises(nkt.ShapeError) as got:
        call()
    assert str(got.value) == message


@pytest.mark.parametrize(
    "op, training, x_shape, shapes",
    [
        ("batch_norm", True, (4, 3, 5), ((3, 1), (1, 3), (3,))),
        ("batch_norm", True, (4, 3, 5), ((1, 3, 1), (3, 1, 1), None)),
        ("batch_norm", False, (4, 3, 5), ((3, 1), (1, 3), (3,))),
        ("batch_norm", True, (4, 1, 5), ((), (), (1,))),
        ("batch_norm", True, (6, 1), ((), None, None)),
        ("instance_norm", True, (4, 1, 5), ((), (), None)),
        ("instance_norm", True, (4, 1, 5), ((), (), (1,))),
        ("instance_norm", False, (4, 1, 5), ((), (), ())),
    ],
    ids=[
        "bn-train-(C,1)-(1,C)",
        "bn-train-3d",
        "bn-eval-(C,1)-(1,C)",
        "bn-train-C1-0d",
        "bn-(N,C)-C1-0d-weight",
        "in-C1-0d",
        "in-C1-0d-tracked",
        "in-eval-C1-0d-running",
    ],
)
def test_channel_tensors_in_the_shapes_torch_accepts(op, training, x_shape, shapes):
    """weight, bias (and running statistics) shaped as shapes (None: not given), where torch's op accepts them:
    y and the running statistics, updated in place in the caller's tensors, as torch's; gradients in the
    caller's shapes, with torch's values (from (C,) tensors: torch's own backward fails for a weight not 1-d)."""
    c = x_shape[1]
    g = torch.Generator().manual_seed(5)
    x, dy = (torch.randn(x_shape, generator=g, dtype=torch.float64) for _ in range(2))
    w = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    b = torch.randn(c, generator=g, dtype=torch.float64)
    rm, rv = _running(c)
    w_shape, b_shape, r_shape = shapes

    def call(lib, shaped: bool):
        def arg(t, shape):
            return None if shape is None else (t.reshape(shape) if shaped else t).clone()

        xi = x.clone().requires_grad_()
        wi, bi = (None if t is None else t.requires_grad_() for t in (arg(w, w_shape), arg(b, b_shape)))
        running = arg(rm, r_shape), arg(rv, r_shape)
        y = getattr(lib, op)(xi, *running, wi, bi, training)
        return y, xi, wi, bi, running

    with torch.no_grad():
        shaped_torch = call(F, True)  # torch's forward takes these shapes
    want, x_want, w_want, b_want, running_want = call(F, False)
    want.backward(dy)
    got, x_got, w_got, b_got, running_got = call(nkt, True)
    got.backward(dy)

    tol = compare.kernel_tolerance(np.float64)
    compare.assert_close(got.detach(), want.detach(), tol, what="y")
    compare.assert_close(got.detach(), shaped_torch[0], tol, what="y, torch with the same shapes")
    compare.assert_close(x_got.grad, x_want.grad, tol, what="dx")
    for name, mine, theirs in [("weight", w_got, w_want), ("bias", b_got, b_want)]:
        if mine is not None:
            assert mine.grad.shape == mine.shape, name
            compare.assert_close(mine.grad, theirs.grad.reshape(mine.shape), tol, what=f"d{name}")
    for mine, theirs, same_shape in zip(running_got, running_want, shaped_torch[4], strict=True):
        if mine is not None:
            compare.assert_close(mine, theirs.reshape(mine.shape), tol, what="running statistics")
            compare.assert_close(mine, same_shape, tol, what="running statistics, torch with the same shapes")


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.batch_norm(X_NCL, torch.zeros(3, 1), torch.ones(3, 1), training=True),
        lambda m: m.batch_norm(X_NCL, torch.zeros(1, 3), torch.ones(1, 3)),
        lambda m: m.batch_norm(X_NCL[:, :1], torch.zeros(()), torch.ones(()), training=True),
        lambda m: m.batch_norm(X_NCL, None, None, torch.ones(()), training=True),
        lambda m: m.batch_norm(X_NCL, None, None, None, torch.ones(1), training=True),
        lambda m: m.instance_norm(X_NCL, None, None, torch.ones(3, 1)),
        lambda m: m.instance_norm(X_NCL, None, None, None, torch.ones(())),
        lambda m: m.instance_norm(X_NCL, torch.zeros(1, 3), torch.ones(1, 3), use_input_stats=False),
        lambda m: m.instance_norm(X_NCL[:, :1], torch.zeros(()), torch.ones(())),
        lambda m: m.instance_norm(X_NCL[:, :1], None, None, torch.ones(1, 1)),
        lambda m: m.group_norm(X_NCL[:, :1], 1, torch.ones(())),
        lambda m: m.layer_norm(X_NCL[..., :1], (1,), torch.ones(())),
    ],
    ids=[
        "bn-running-(C,1)",
        "bn-running-(1,C)-eval",
        "bn-running-0d-C1",
        "bn-weight-0d-C3",
        "bn-bias-(1,)-C3",
        "in-weight-(C,1)",
        "in-bias-0d-C3",
        "in-running-(1,C)-eval",
        "in-running-0d-C1-tracked",
        "in-weight-(1,1)-C1",
        "gn-weight-0d-C1",
        "ln-weight-0d",
    ],
)
def test_channel_tensors_in_shapes_torch_refuses_are_refused(call):
    with pytest.raises(RuntimeError):
        call(TORCH_NN)
    with pytest.raises(nkt.ShapeError):
        call(nkt)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_instance_norm_module_with_running_statistics_checks_num_features(training):
    """torch says this only with affine (its message, here too); the running statistics have num_features too."""
    x = torch.randn(4, 3, 5)
    with pytest.raises(ValueError) as expected:
        nn.InstanceNorm1d(5, affine=True)(x)
    with pytest.raises(ValueError) as got:
        nkt.InstanceNorm1d(5, track_running_stats=True).train(training)(x)
    assert str(got.value) == str(expected.value)
    assert str(got.value) == "expected input's size at dim=1 to match num_features (5), but got: 3."


@pytest.mark.parametrize(
    "call",
    [
        lambda s: nkt.layer_norm(s, 3),
        lambda s: nkt.batch_norm(s, None, None, training=True),
        lambda s: nkt.group_norm(s, 3),
        lambda s: nkt.instance_norm(s.unsqueeze(0)),
        lambda s: nkt.layer_norm(torch.randn(2, 3), 3, s[0]),
        lambda s: nkt.LayerNorm(3)(s),
        lambda s: nkt.rms_norm(s, 3),
        lambda s: nkt.switchable_norm(s.unsqueeze(0), None, None, None, None, *MIXING, True),
        lambda s: nkt.switchable_norm(torch.randn(2, 3, 3), None, None, None, None, s[0], MIXING[1], True),
    ],
    ids=[
        "layer_norm",
        "batch_norm",
        "group_norm",
        "instance_norm",
        "sparse-weight",
        "LayerNorm",
        "rms_norm",
        "switchable_norm",
        "sparse-mean_weight",
    ],
)
def test_sparse_tensors_are_refused_by_kind(call):
    sparse = torch.eye(3).to_sparse()
    with pytest.raises(TypeError, match=r"strided \(dense\) tensor, got layout torch\.sparse_coo"):
        call(sparse)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda rm, rv: nkt.batch_norm(X_NCL, rm, rv, training=True), "batch_norm"),
        (lambda rm, rv: nkt.batch_norm(X_NCL, rm, rv, training=False), "batch_norm"),
        (lambda rm, rv: nkt.instance_norm(X_NCL, rm, rv), "instance_norm"),
        (lambda rm, rv: nkt.instance_norm(X_NCL, rm, rv, use_input_stats=False), "instance_norm"),
        (lambda rm, rv: nkt.switchable_norm(X_NCL, rm, rv, None, None, *MIXING, True), "switchable_norm"),
        (lambda rm, rv: nkt.switchable_norm(X_NCL, rm, rv, None, None, *MIXING, False), "switchable_norm"),
    ],
    ids=["bn-train", "bn-eval", "in-input-stats", "in-running-stats", "sn-train", "sn-eval"],
)
@pytest.mark.parametrize("which", ["running_mean", "running_var"])
def test_running_statistics_requiring_grad_are_refused_as_by_torch(call, name, which):
    def statistics():
        rm, rv = torch.zeros(3), torch.ones(3)
        (rm if which == "running_mean" else rv).requires_grad_()
        return rm, rv

    rm, rv = statistics()
    with pytest.raises(RuntimeError, match=f"not differentiable with respect to argument '{which}'") as got:
        call(rm, rv)
    assert str(got.value).startswith(f"The function '{name}'")
    assert torch.equal(rm.detach(), torch.zeros(3)) and torch.equal(rv.detach(), torch.ones(3))  # not updated
    with torch.no_grad():  # as torch: no gradient asked for, nothing to refuse
        call(*statistics())


@pytest.mark.parametrize(
    "call, kind, message",
    [
        (
            lambda: nkt.switchable_norm(X_NCL, None, None, None, None, None, MIXING[1], True),
            TypeError,
            "switchable_norm: expected mean_weight to be a torch.Tensor of shape (3,), got None",
        ),
        (
            lambda: nkt.switchable_norm(X_NCL, None, None, None, None, MIXING[0], [0.0, 0.0, 0.0], True),
            TypeError,
            "switchable_norm: expected var_weight to be a torch.Tensor or None, got list",
        ),
        (
            lambda: nkt.switchable_norm(X_NCL[..., :1], None, None, None, None, *MIXING, True),
            ValueError,
            "switchable_norm: expected more than 1 spatial element (the instance statistics are taken over them), "
            "got input size [4, 3, 1]",
        ),
        (
            lambda: nkt.switchable_norm(X_NCL, torch.zeros(3), None, None, None, *MIXING, True),
            ValueError,
            "switchable_norm: expected running_mean and running_var both given or both None",
        ),
        (
            lambda: nkt.SwitchableNorm2d(3)(X_NCL),
            ValueError,
            "SwitchableNorm2d: expected 4D input (got 3D input)",
        ),
        (
            lambda: nkt.SwitchableNorm1d(4, affine=False, track_running_stats=False)(X_NCL),
            ValueError,
            "SwitchableNorm1d: expected input's size at dim=1 to match num_features (4), but got: 3.",
        ),
        (
            lambda: nkt.SwitchableNorm1d(0),
            ValueError,
            "SwitchableNorm1d: expected num_features to be a positive int, got 0",
        ),
        (
            lambda: nkt.SwitchableNorm2d(2.0),
            TypeError,
            "SwitchableNorm2d: expected num_features to be an int, got float",
        ),
        (
            lambda: nkt.SwitchableNorm3d(3, eps=-1.0),
            ValueError,
            "SwitchableNorm3d: expected eps to be a finite number in [0.0, inf], got -1.0",
        ),
        (
            lambda: nkt.SwitchableNorm2d(3, momentum="0.1"),
            TypeError,
            "SwitchableNorm2d: expected momentum to be a real number, got str",
        ),
        (
            lambda: nkt.SwitchableNorm2d(3, affine=1),
            TypeError,
            "SwitchableNorm2d: expected affine to be a bool, got int",
        ),
    ],
    ids=[
        "mean_weight-None",
        "var_weight-list",
        "one-spatial-element",
        "running-pair",
        "module-ndim",
        "module-channels",
        "num_features-0",
        "num_features-float",
        "eps-negative",
        "momentum-str",
        "affine-int",
    ],
)
def test_switchable_misuse_is_named(call, kind, message):
    """No torch twin to speak as: our words, naming the function or module and the argument."""
    with pytest.raises(kind) as got:
        call()
    assert str(got.value) == message


def test_switchable_refused_batch_is_not_counted():
    """As normkernels.nn (and unlike torch's BatchNorm, which counts before it checks)."""
    m = nkt.SwitchableNorm1d(3)
    with pytest.raises(ValueError):
        m(X_NCL[..., :1])
    assert int(m.num_batches_tracked) == 0 and torch.equal(m.running_mean, torch.zeros(3))


def test_instance_norm_size_mismatch_without_affine_warns_as_torch():
    with pytest.warns(UserWarning, match="does not match num_features"):
        y = nkt.InstanceNorm1d(5)(torch.randn(2, 3, 4))
    assert y.shape == (2, 3, 4)


def test_on_stream_zero_is_the_default_stream():
    """Numba spells the default stream 0: inside on_stream(0) launches and copies go there, synchronously, as
    outside any block (no GPU needed: only how the block resolves its stream is checked)."""
    pytest.importorskip("numba_cuda", reason="the cuda extra (numba-cuda) is not installed")
    from normkernels.cuda import ops

    x = np.zeros((2, 3), np.float32)
    for default in (0, None):
        with ops.on_stream(default):
            assert ops._launch_stream() == 0
            assert not ops._Transfer(x).asynchronous


# CUDA tensors (run on a machine with a GPU and a CUDA build of PyTorch)

CUDA_CASES = [
    c
    for c in MODULE_CASES + SWITCHABLE_CASES
    if c.id in ("BatchNorm2d", "LayerNorm", "GroupNorm", "InstanceNorm2d-tracked", "RMSNorm", "SwitchableNorm2d")
]


@CUDA
@pytest.mark.parametrize("case", CUDA_CASES, ids=lambda c: c.id)
def test_cuda_module_matches_torch_twin(case, dtype):
    seen = assert_twin_steps_match(case, dtype, device="cuda")
    assert {"y", "dx"} <= seen


@CUDA
def test_cuda_outputs_stay_on_the_device_and_buffers_in_place():
    m = nkt.BatchNorm2d(3, device="cuda")
    pointer = m.running_mean.data_ptr()
    x = torch.randn(4, 3, 5, 2, device="cuda", requires_grad=True)
    y = m(x)
    y.sum().backward()
    assert y.device == x.device and x.grad.device == x.device and m.weight.grad.device == x.device
    assert m.running_mean.data_ptr() == pointer and float(m.running_mean.abs().sum()) > 0


@CUDA
def test_cuda_runs_on_torchs_current_stream(monkeypatch):
    from normkernels.cuda import ops

    handles = []
    on_stream = ops.on_stream

    def spy(stream):
        handles.append(int(stream.handle))
        return on_stream(stream)

    monkeypatch.setattr(ops, "on_stream", spy)
    theirs, ours = make_twins(CUDA_CASES[0], np.float32, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())  # the modules' parameters were made on the default stream
    with torch.cuda.stream(side):
        # x is made on the side stream: only work ordered on it may read x
        x = (torch.randn(64, 3, 32, 32, device="cuda") * 2 + 1).requires_grad_()
        y = ours(x)
        y.backward(torch.ones_like(y))
    torch.cuda.synchronize()
    assert handles and set(handles) == {side.cuda_stream}
    xr = x.detach().clone().requires_grad_()
    yr = theirs(xr)
    yr.backward(torch.ones_like(yr))
    tol = compare.kernel_tolerance(np.float32)
    compare.assert_close(y.detach().cpu(), yr.detach().cpu(), tol, what="y")
    compare.assert_close(x.grad.cpu(), xr.grad.cpu(), tol, what="dx")
    compare.assert_close(ours.running_var.cpu(), theirs.running_var.cpu(), tol, what="running_var")
