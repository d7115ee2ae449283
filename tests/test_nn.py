"""normkernels.nn: each layer against its torch.nn twin over training and eval steps (y, dx, parameter
gradients, running statistics), state dicts both ways, and every misuse named. The Switchable layers, which
torch.nn lacks, are checked against a plain torch composition (``SwitchableReference``, also used by
test_torch_modules.py). The cuda cases use tiny shapes: without a GPU they run in the simulator process that
test_cuda_simulator.py starts."""

import math
from typing import NamedTuple

import numpy as np
import pytest
from conftest import BACKENDS, SIMULATOR, backend_case_params

from normkernels import nn
from verify import compare

cpu_only = pytest.mark.skipif(SIMULATOR, reason="the simulator process runs only the cuda cases")


class Config(NamedTuple):
    id: str
    name: str  # the class name, in normkernels.nn and in torch.nn
    args: tuple
    kwargs: dict
    shapes: tuple  # input shapes, taken in turn by the steps


def _running_configs(name: str, features: int, shapes: tuple) -> list[Config]:
    """BatchNorm and InstanceNorm with and without affine, tracked with momentum 0.1 or None, or untracked."""
    configs = []
    for affine in (True, False):
        for track, momentum in ((True, 0.1), (True, None), (False, 0.1)):
            kwargs = dict(affine=affine, track_running_stats=track, momentum=momentum)
            tag = f"{'affine' if affine else 'plain'}-{f'track-m{momentum}' if track else 'untracked'}"
            configs.append(Config(f"{name}-{tag}", name, (features,), kwargs, shapes))
    return configs


RUNNING = {
    "BatchNorm1d": (3, ((8, 3), (4, 3, 5))),
    "BatchNorm2d": (3, ((4, 3, 3, 2), (2, 3, 1, 5))),
    "BatchNorm3d": (2, ((2, 2, 3, 2, 2),)),
    "InstanceNorm1d": (3, ((4, 3, 6), (3, 6))),  # batched and unbatched
    "InstanceNorm2d": (3, ((2, 3, 4, 3), (3, 4, 3))),
    "InstanceNorm3d": (2, ((2, 2, 3, 2, 2), (2, 2, 2, 3))),
    "SwitchableNorm1d": (3, ((4, 3, 5), (2, 3, 6))),
    "SwitchableNorm2d": (3, ((4, 3, 3, 2), (2, 3, 2, 5))),
    "SwitchableNorm3d": (2, ((2, 2, 3, 2, 2),)),
}
CONFIGS = [c for name, (features, shapes) in RUNNING.items() for c in _running_configs(name, features, shapes)] + [
    Config("BatchNorm2d-no-bias", "BatchNorm2d", (3,), dict(bias=False), ((4, 3, 2, 2),)),
    Config("InstanceNorm2d-affine-no-bias", "InstanceNorm2d", (3,), dict(affine=True, bias=False), ((2, 3, 3, 3),)),
    Config("LayerNorm-2d", "LayerNorm", ((4, 3),), {}, ((2, 5, 4, 3), (4, 3))),  # leading dims, and none
    Config("LayerNorm-no-bias", "LayerNorm", (6,), dict(bias=False), ((3, 6),)),
    Config("LayerNorm-plain", "LayerNorm", (6,), dict(elementwise_affine=False), ((2, 3, 6),)),
    Config("GroupNorm-affine", "GroupNorm", (2, 6), {}, ((3, 6, 5), (2, 6, 2, 2))),
    Config("GroupNorm-no-bias", "GroupNorm", (3, 6), dict(bias=False), ((3, 6, 4),)),
    Config("GroupNorm-plain", "GroupNorm", (1, 4), dict(affine=False), ((5, 4),)),
    Config("RMSNorm-2d", "RMSNorm", ((4, 3),), {}, ((2, 5, 4, 3), (4, 3))),  # leading dims, and none
    Config("RMSNorm-eps", "RMSNorm", (6,), dict(eps=1e-3), ((3, 6),)),
    Config("RMSNorm-plain", "RMSNorm", (6,), dict(elementwise_affine=False), ((2, 3, 6),)),
]
CUDA_CONFIGS = [
    Config("BatchNorm1d-affine", "BatchNorm1d", (3,), {}, ((4, 3), (2, 3, 3))),
    Config("BatchNorm2d-plain-m-None", "BatchNorm2d", (2,), dict(affine=False, momentum=None), ((2, 2, 2, 2),)),
    Config(
        "InstanceNorm1d-affine-track",
        "InstanceNorm1d",
        (2,),
        dict(affine=True, track_running_stats=True),
        ((2, 2, 3), (2, 3)),
    ),
    Config("InstanceNorm2d-affine", "InstanceNorm2d", (2,), dict(affine=True), ((2, 2, 2, 2),)),
    Config("LayerNorm", "LayerNorm", (4,), {}, ((3, 4),)),
    Config("GroupNorm", "GroupNorm", (2, 4), {}, ((2, 4, 3),)),
    Config("RMSNorm", "RMSNorm", (4,), {}, ((3, 4),)),
    Config("SwitchableNorm1d-affine-m-None", "SwitchableNorm1d", (2,), dict(momentum=None), ((2, 2, 3),)),
]
TRAIN_STEPS, EVAL_STEPS = 3, 2
LEARNING_RATE = 0.1
PARAMETERS = ("weight", "bias", "mean_weight", "var_weight")  # every name a layer's parameter may have


def switchable_composition(torch, x, weight, bias, mean_weight, var_weight, running, eps):
    """Switchable Normalization written out in torch ops, for autograd: the instance, layer and batch statistics
    by torch.mean / torch.var(unbiased=False) over their axes, mixed by softmaxes of the logits. running =
    (running_mean, running_var) replaces the batch statistics (eval), as constants."""
    spatial = tuple(range(2, x.dim()))

    def stats(dims):
        return x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)

    per_channel = (1, -1) + (1,) * len(spatial)
    mean_in, var_in = stats(spatial)
    mean_ln, var_ln = stats((1, *spatial))
    mean_bn, var_bn = stats((0, *spatial)) if running is None else (r.view(per_channel) for r in running)
    w, v = torch.softmax(mean_weight, 0), torch.softmax(var_weight, 0)
    mean = w[0] * mean_in + w[1] * mean_ln + w[2] * mean_bn
    var = v[0] * var_in + v[1] * var_ln + v[2] * var_bn
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight.view(per_channel) + bias.view(per_channel)
    return y


def switchable_reference(torch, name: str):
    """The class SwitchableNorm<k>d is checked against: torch.nn's BatchNorm<k>d with mean_weight and var_weight
    (ones) added, whose forward is switchable_composition. Its running statistics are kept by torch's own
    BatchNorm forward, run on the side without gradients (so momentum, momentum None, num_batches_tracked and
    tracking turned off are torch's), and used in eval as torch's BatchNorm uses them. Its constructor, its
    parameters and buffers and their state dict order are those the Switchable layers promise."""
    base = getattr(torch.nn, name.replace("Switchable", "Batch"))

    class SwitchableReference(base):
        def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, **factory):
            super().__init__(num_features, eps, momentum, affine, track_running_stats, **factory)
            self.mean_weight = torch.nn.Parameter(torch.ones(3, **factory))
            self.var_weight = torch.nn.Parameter(torch.ones(3, **factory))

        def forward(self, x):
            batch_stats = self.training or (self.running_mean is None and self.running_var is None)
            with torch.no_grad():
                super().forward(x)  # only for its update of the running statistics (none in eval)
            running = None if batch_stats else (self.running_mean, self.running_var)
            return switchable_composition(
                torch, x, self.weight, self.bias, self.mean_weight, self.var_weight, running, self.eps
            )

    return SwitchableReference


def _ours(config: Config, **kwargs):
    return getattr(nn, config.name)(*config.args, **config.kwargs, **kwargs)


def _twin(torch, config: Config, **kwargs):
    """torch.nn's layer of the same name, or for the Switchable layers the torch composition."""
    if config.name.startswith("Switchable"):
        return switchable_reference(torch, config.name)(*config.args, **config.kwargs, **kwargs)
    cls = getattr(torch.nn, config.name)
    if "bias=" in repr(_ours(config)) and "bias=" not in repr(cls(*config.args)):
        pytest.skip(f"this PyTorch's {config.name} predates its bias argument")
    return cls(*config.args, **config.kwargs, **kwargs)


def _randomize(layer, rng) -> None:
    """Parameters and running statistics away from their initial values; two batches already counted, so
    momentum=None averages with weight 1/3, 1/4, ..."""
    for name, a in layer.named_parameters() + layer.named_buffers():
        if name == "num_batches_tracked":
            a[...] = 2
        elif name in ("weight", "running_var"):
            a[...] = rng.uniform(0.5, 1.5, a.shape)
        else:
            a[...] = rng.standard_normal(a.shape)


def _step(layer, x, dy) -> dict:
    """y, dx, <parameter>_grad of each parameter name the layer has (None where built without it), buffers."""
    y = layer(x)
    dx = layer.backward(dy)
    grads = {f"{n}_grad": getattr(layer, f"{n}_grad") for n in PARAMETERS if hasattr(layer, n)}
    return {"y": y, "dx": dx} | grads | dict(layer.named_buffers())


def _twin_step(torch, twin, x, dy) -> dict:
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    twin.zero_grad()
    ty = twin(tx)
    ty.backward(torch.tensor(dy, dtype=torch.float64))
    params = {n: getattr(twin, n) for n in PARAMETERS if hasattr(twin, n)}
    grads = {f"{n}_grad": None if p is None else p.grad.numpy() for n, p in params.items()}
    return {"y": ty.detach().numpy(), "dx": tx.grad.numpy()} | grads | {n: b.numpy() for n, b in twin.named_buffers()}


def _sgd(torch, ours, twin) -> None:
    """An SGD step on our parameters, then the twin's parameters set to ours: the next step starts both from
    the same values (float32 ones are exact in float64), so only that step's rounding is compared."""
    for name, a in ours.named_parameters():
        a -= LEARNING_RATE * getattr(ours, f"{name}_grad")
        with torch.no_grad():
            getattr(twin, name).copy_(torch.as_tensor(a))


@pytest.mark.parametrize("backend, config", backend_case_params(CONFIGS, CUDA_CONFIGS))
def test_layers_match_torch_in_training_then_eval(backend, config, dtype):
    """Several training steps then eval steps, with an SGD step after each: y, dx, the parameter gradients and
    the buffers after each step against the float64 torch twin fed the same values; the buffers are updated in
    place; x and dy untouched."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    ours = _ours(config, dtype=dtype, backend=backend)
    _randomize(ours, rng)
    twin = _twin(torch, config, dtype=torch.float64)
    twin.load_state_dict({k: torch.as_tensor(v) for k, v in ours.state_dict().items()})
    if config.name == "RMSNorm" and ours.eps is None:
        # eps None is the machine epsilon of x's dtype: the float64 twin would take float64's for a float32 x
        twin.eps = float(np.finfo(dtype).eps)
    buffers = dict(ours.named_buffers())
    tol = compare.kernel_tolerance(dtype)
    for step in range(TRAIN_STEPS + EVAL_STEPS):
        if step == TRAIN_STEPS:
            assert ours.eval() is ours and not ours.training
            twin.eval()
        shape = config.shapes[step % len(config.shapes)]
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        x_before, dy_before = x.copy(), dy.copy()
        got, want = _step(ours, x, dy), _twin_step(torch, twin, x, dy)
        assert got.keys() == want.keys()
        for name, value in got.items():
            what = f"{config.id} {backend} step {step} {name}"
            if want[name] is None:
                assert value is None, what
            elif name == "num_batches_tracked":
                assert value.dtype == np.int64 and value.shape == () and value == want[name], what
            else:
                assert isinstance(value, np.ndarray) and value.shape == want[name].shape, what
                assert value.dtype == dtype, f"{what}: {value.dtype}"
                compare.assert_close(value, want[name], tol, what=what)
        np.testing.assert_array_equal(x, x_before)
        np.testing.assert_array_equal(dy, dy_before)
        _sgd(torch, ours, twin)
    assert all(getattr(ours, n) is a for n, a in buffers.items()), "running buffers are updated in place"


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_is_kept_and_shown(backend):
    layer = nn.BatchNorm1d(2, backend=backend)
    assert layer.backend == backend
    torch_repr = "BatchNorm1d(2, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True"
    assert repr(layer) == torch_repr + (")" if backend == "cpu" else ", backend='cuda')")


def _state_twin(torch, config: Config, **kwargs):
    """The module whose state dict and repr ours must have: torch.nn's, or for the Switchable layers
    normkernels.torch's (nn <-> torch in both directions)."""
    if config.name.startswith("Switchable"):
        import normkernels.torch as nkt

        return getattr(nkt, config.name)(*config.args, **config.kwargs, **kwargs)
    return _twin(torch, config, **kwargs)


@cpu_only
@pytest.mark.parametrize("config", [pytest.param(c, id=c.id) for c in CONFIGS])
def test_state_dict_round_trips_with_torch(config):
    """torch -> ours loads the torch state_dict as it is; ours -> torch loads ours with torch.as_tensor. Keys,
    their order, parameter and buffer names, values and repr are torch's (normkernels.torch's for the
    Switchable layers)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    twin = _state_twin(torch, config)
    with torch.no_grad():
        for p in twin.parameters():
            p.uniform_(0.5, 1.5)
    twin(torch.randn(config.shapes[0]))  # moves the running statistics and the count, where tracked
    ours = _ours(config)
    assert ours.load_state_dict(twin.state_dict()) == ([], [])
    theirs = twin.state_dict()
    assert list(ours.state_dict()) == list(theirs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in twin.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in twin.named_buffers()]
    for key, value in ours.state_dict().items():
        assert value.dtype == theirs[key].numpy().dtype, key
        np.testing.assert_array_equal(value, theirs[key].numpy(), err_msg=key)
    assert repr(ours) == repr(twin)

    x = np.random.default_rng(1).standard_normal(config.shapes[0]).astype(np.float32)
    ours.backward(ours(x))
    for name, a in ours.named_parameters():
        a -= 0.1 * getattr(ours, f"{name}_grad")
    fresh = _state_twin(torch, config)
    fresh.load_state_dict({k: torch.as_tensor(v) for k, v in ours.state_dict().items()})
    for key, value in fresh.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), ours.state_dict()[key], err_msg=key)


@cpu_only
def test_running_statistics_by_hand():
    """Without torch: momentum=None is the plain average of the batch statistics (factor 1/num_batches_tracked);
    InstanceNorm averages its per-instance statistics over the batch, with the unbiased variance."""
    rng = np.random.default_rng(6)
    batches = [rng.standard_normal((5, 2, 3)) * (i + 1) + i for i in range(3)]
    bn = nn.BatchNorm1d(2, momentum=None, dtype=np.float64)
    for x in batches:
        bn(x)
    assert bn.num_batches_tracked == 3
    np.testing.assert_allclose(bn.running_mean, np.mean([x.mean(axis=(0, 2)) for x in batches], axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, np.mean([x.var(axis=(0, 2), ddof=1) for x in batches], axis=0))

    inorm = nn.InstanceNorm1d(2, momentum=0.25, track_running_stats=True, dtype=np.float64)
    x = batches[2]
    inorm(x)
    assert inorm.num_batches_tracked == 0  # as torch: instance norm never counts
    np.testing.assert_allclose(inorm.running_mean, 0.25 * x.mean(axis=2).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(inorm.running_var, 0.75 + 0.25 * x.var(axis=2, ddof=1).mean(axis=0), rtol=1e-12)
    y = inorm.eval()(x)  # eval: each channel with its running statistics
    expected = (x - inorm.running_mean[:, None]) / np.sqrt(inorm.running_var[:, None] + inorm.eps)
    np.testing.assert_allclose(y, expected, rtol=1e-12)


@cpu_only
def test_switchable_running_statistics_by_hand():
    """Without torch: the Switchable layers keep batch norm's running statistics (momentum None: the plain
    average of the batch means and unbiased variances); in eval, with the batch weight dominant (logit 50 against
    0: the others weigh e^-50), the layer is batch norm's eval with them."""
    rng = np.random.default_rng(6)
    batches = [rng.standard_normal((5, 2, 3)) * (i + 1) + i for i in range(3)]
    sn = nn.SwitchableNorm1d(2, momentum=None, dtype=np.float64)
    for x in batches:
        sn(x)
    assert sn.num_batches_tracked == 3
    np.testing.assert_allclose(sn.running_mean, np.mean([x.mean(axis=(0, 2)) for x in batches], axis=0), rtol=1e-12)
    np.testing.assert_allclose(sn.running_var, np.mean([x.var(axis=(0, 2), ddof=1) for x in batches], axis=0))
    sn.mean_weight[...] = sn.var_weight[...] = [0.0, 0.0, 50.0]
    y = sn.eval()(batches[0])
    expected = (batches[0] - sn.running_mean[:, None]) / np.sqrt(sn.running_var[:, None] + sn.eps)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert sn.num_batches_tracked == 3  # eval counts nothing


@cpu_only
def test_load_state_dict_copies_into_the_arrays_and_keeps_their_dtype():
    layer = nn.BatchNorm2d(3, dtype=np.float64)
    arrays = dict(layer.named_parameters() + layer.named_buffers())
    state = {
        "weight": np.full(3, 2.0, np.float32),
        "bias": [0.5, 0.25, 0.125],  # anything np.asarray takes
        "running_mean": np.arange(3.0),
        "running_var": np.full(3, 4.0),
        "num_batches_tracked": np.array(7),
    }
    assert layer.load_state_dict(state) == ([], [])
    for name, a in arrays.items():
        assert getattr(layer, name) is a, name
        np.testing.assert_array_equal(a, np.asarray(state[name]), err_msg=name)
    assert layer.weight.dtype == np.float64 and layer.num_batches_tracked.dtype == np.int64
    copy = layer.state_dict()
    copy["weight"][...] = 0.0  # a copy, not the layer's array
    assert np.all(layer.weight == 2.0)


GOOD = {k: v + 1 for k, v in nn.BatchNorm2d(3).state_dict().items()}  # loadable, and unlike a new layer's


@cpu_only
@pytest.mark.parametrize(
    "state, patterns",
    [
        ({"weight": GOOD["weight"]}, [r'Missing key\(s\) in state_dict: "bias", "running_mean", "running_var"\.']),
        (GOOD | {"foo": np.ones(1)}, [r'Unexpected key\(s\) in state_dict: "foo"\.']),
        (
            GOOD | {"weight": np.ones(4)},
            [
                r"size mismatch for weight: copying a param with shape \(4,\) from checkpoint, the shape in current "
                r"model is \(3,\)\."
            ],
        ),
        (GOOD | {"bias": np.array(["a", "b", "c"])}, ["expected numbers for bias, got dtype <U1"]),
        (
            {"weight": np.ones(4), "foo": 1.0},
            [r'Missing key\(s\) in state_dict: "bias"', r'Unexpected key\(s\) in state_dict: "foo"', "size mismatch"],
        ),
    ],
    ids=["missing", "unexpected", "wrong-shape", "strings", "all-at-once"],
)
def test_load_state_dict_refuses_bad_state_and_loads_nothing(state, patterns):
    layer = nn.BatchNorm2d(3)
    before = layer.state_dict()
    with pytest.raises(RuntimeError, match=r"Error\(s\) in loading state_dict for BatchNorm2d:\n\t") as info:
        layer.load_state_dict(state)
    for pattern in patterns:
        assert info.match(pattern), pattern
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


@cpu_only
def test_num_batches_tracked_may_be_left_out_of_a_plain_dict_as_in_torch():
    """PyTorch reads a state dict without version metadata as one saved before num_batches_tracked existed."""
    layer = nn.BatchNorm1d(3)
    layer.num_batches_tracked[...] = 5
    state = {k: v for k, v in GOOD.items() if k != "num_batches_tracked"}
    assert layer.load_state_dict(state) == ([], [])
    assert layer.num_batches_tracked == 5 and np.all(layer.running_mean == 1.0)

    class Versioned(dict):  # what torch.nn.Module.state_dict() returns carries _metadata
        _metadata = {"": {"version": 2}}

    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "num_batches_tracked"'):
        layer.load_state_dict(Versioned(state))


@cpu_only
@pytest.mark.parametrize(
    "value",
    [np.array([4]), np.array([4.0]), np.array([[4]]), np.array([4, 5]), np.array(4)],
    ids=["(1,)", "(1,) float", "(1, 1)", "(2,)", "()"],
)
def test_a_one_element_value_loads_into_the_0d_count_exactly_where_torch_s_does(value):
    """PyTorch takes a (1,) value for a 0-d buffer (checkpoints from before 0.4 saved num_batches_tracked so),
    and no other shape than (1,) or the buffer's own."""
    torch = pytest.importorskip("torch")
    theirs, ours = torch.nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    state = {k: torch.as_tensor(v) for k, v in GOOD.items()} | {"num_batches_tracked": torch.as_tensor(value)}
    try:
        theirs.load_state_dict(state)
    except RuntimeError as error:
        assert "size mismatch for num_batches_tracked" in str(error)
        with pytest.raises(RuntimeError, match="size mismatch for num_batches_tracked"):
            ours.load_state_dict(state)
        assert ours.num_batches_tracked == 0
    else:
        assert ours.load_state_dict(state) == ([], [])
        assert ours.num_batches_tracked.shape == () and ours.num_batches_tracked == theirs.num_batches_tracked


@cpu_only
def test_load_state_dict_reads_live_parameters_as_torch_does():
    """A module's own Parameters, and tensors that require grad, load (torch.nn loads them); a tensor NumPy
    cannot read (here one on the meta device) is named, and nothing is loaded."""
    torch = pytest.importorskip("torch")
    twin = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        twin.weight.uniform_(0.5, 1.5)
    twin(torch.randn(4, 3))
    ours = nn.BatchNorm1d(3)
    assert ours.load_state_dict(dict(twin.named_parameters()) | dict(twin.named_buffers())) == ([], [])
    for key, value in twin.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[key], value.numpy(), err_msg=key)

    grad = {k: torch.as_tensor(v) for k, v in GOOD.items()} | {"bias": torch.full((3,), 2.0, requires_grad=True)}
    assert ours.load_state_dict(grad) == ([], []) and np.all(ours.bias == 2.0)

    before = ours.state_dict()
    meta = grad | {"running_var": torch.ones(3, device="meta")}
    with pytest.raises(
        TypeError, match=r"BatchNorm1d: state_dict\['running_var'\] \(Tensor\) cannot be read as a NumPy"
    ):
        ours.load_state_dict(meta)
    for key, value in ours.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


class _FakeDeviceTensor:
    """What load_state_dict relies on in a GPU tensor: NumPy cannot read it until .cpu() brings it over."""

    def __init__(self, value):
        self.value = value

    def __array__(self, dtype=None, copy=None):
        raise TypeError("can't convert a device tensor to numpy; use .cpu() first")

    def detach(self):
        return self

    def cpu(self):
        return np.asarray(self.value)


@cpu_only
def test_load_state_dict_brings_device_tensors_to_the_host():
    layer = nn.GroupNorm(2, 4)
    state = {"weight": _FakeDeviceTensor(np.full(4, 3.0)), "bias": _FakeDeviceTensor(np.arange(4.0))}
    assert layer.load_state_dict(state) == ([], [])
    np.testing.assert_array_equal(layer.weight, np.full(4, 3.0))
    np.testing.assert_array_equal(layer.bias, np.arange(4.0))


@cpu_only
def test_load_state_dict_errors_read_as_torch_s():
    """The missing and unexpected lines are torch's, word for word."""
    torch = pytest.importorskip("torch")
    state = {"weight": torch.ones(3), "foo": torch.ones(2)}
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.BatchNorm1d(3).load_state_dict(state)
    with pytest.raises(RuntimeError) as ours:
        nn.BatchNorm1d(3).load_state_dict(state)

    def lines(info):
        return [line.strip() for line in str(info.value).splitlines()]

    assert lines(ours) == lines(theirs)


@cpu_only
def test_load_state_dict_not_strict_loads_what_is_there():
    layer = nn.GroupNorm(2, 4)
    result = layer.load_state_dict({"weight": np.full(4, 3.0), "extra": np.ones(2)}, strict=False)
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["extra"]
    assert np.all(layer.weight == 3.0) and np.all(layer.bias == 0.0)
    with pytest.raises(RuntimeError, match="size mismatch for bias"):
        layer.load_state_dict({"bias": np.ones(5)}, strict=False)
    with pytest.raises(TypeError, match="expected state_dict to be a mapping, got list"):
        layer.load_state_dict([("weight", np.ones(4))])


class _FakeGPUArray:
    __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (0, False), "version": 3}


X4 = np.ones((2, 3, 4, 4), np.float32)
BAD_INPUT = [
    ("x a list", TypeError, "BatchNorm1d: expected x to be a numpy.ndarray, got list", nn.BatchNorm1d(3), [[1.0] * 3]),
    ("x int64", TypeError, "expected x to have dtype float32 or float64, got int64", nn.LayerNorm(4), np.ones(4, int)),
    ("x a GPU array", TypeError, "LayerNorm: the layers take NumPy arrays", nn.LayerNorm(3), _FakeGPUArray()),
    ("BatchNorm2d 3-D", ValueError, r"BatchNorm2d: expected 4D input \(got 3D input\)", nn.BatchNorm2d(3), X4[0]),
    ("BatchNorm1d 4-D", ValueError, r"expected 2D or 3D input \(got 4D input\)", nn.BatchNorm1d(3), X4),
    ("BatchNorm3d 4-D", ValueError, r"expected 5D input \(got 4D input\)", nn.BatchNorm3d(3), X4),
    ("InstanceNorm1d 4-D", ValueError, r"expected 2D or 3D input \(got 4D input\)", nn.InstanceNorm1d(3), X4),
    ("InstanceNorm2d 2-D", ValueError, r"expected 3D or 4D input \(got 2D input\)", nn.InstanceNorm2d(3), X4[0, 0]),
    ("InstanceNorm3d 3-D", ValueError, r"expected 4D or 5D input \(got 3D input\)", nn.InstanceNorm3d(3), X4[0]),
    (
        "GroupNorm 1-D",
        ValueError,
        r"GroupNorm: expected at least 2D input \(got 1D input\)",
        nn.GroupNorm(1, 3),
        X4[0, 0, 0],
    ),
    (
        "BatchNorm2d channels",
        ValueError,
        r"BatchNorm2d: expected input's size at dim=1 to match num_features \(4\), but got: 3\.",
        nn.BatchNorm2d(4),
        X4,
    ),
    (
        "BatchNorm1d channels, nothing that needs them",
        ValueError,
        r"match num_features \(2\), but got: 3",
        nn.BatchNorm1d(2, affine=False, track_running_stats=False),
        X4[:, :, 0],
    ),
    (
        "InstanceNorm2d channels, affine",
        ValueError,
        r"InstanceNorm2d: expected input's size at dim=1 to match num_features \(5\), but got: 3\.",
        nn.InstanceNorm2d(5, affine=True),
        X4,
    ),
    (
        "InstanceNorm2d channels, unbatched, tracked",
        ValueError,
        r"size at dim=0 to match num_features \(5\), but got: 3",
        nn.InstanceNorm2d(5, track_running_stats=True),
        X4[0],
    ),
    (
        "GroupNorm channels",
        ValueError,
        r"GroupNorm: expected input's size at dim=1 to match num_channels \(6\), but got: 3",
        nn.GroupNorm(3, 6),
        X4,
    ),
    (
        "LayerNorm trailing dims",
        ValueError,
        r"LayerNorm: Given normalized_shape=\[3, 4\], expected input with shape \[\*, 3, 4\], but got input of size",
        nn.LayerNorm((3, 4)),
        X4,
    ),
    (
        "BatchNorm1d training, one value per channel",
        ValueError,
        r"BatchNorm1d: Expected more than 1 value per channel when training, got input size \[1, 3\]",
        nn.BatchNorm1d(3),
        X4[:1, :, 0, 0],
    ),
    (
        "GroupNorm, one value per group of channels",
        ValueError,
        r"GroupNorm: Expected more than 1 value per channel when training, got input size \[1, 2\]",
        nn.GroupNorm(2, 2),
        X4[:1, :2, 0, 0],
    ),
    (
        "GroupNorm eval, one value per group of channels",  # GroupNorm has no modes: torch checks in eval too
        ValueError,
        r"GroupNorm: Expected more than 1 value per channel when training, got input size \[1, 3, 1\]",
        nn.GroupNorm(3, 3).eval(),
        X4[:1, :, :1, 0],
    ),
    (
        "InstanceNorm1d, one spatial element",
        ValueError,
        r"InstanceNorm1d: Expected more than 1 spatial element when training, got input size \[2, 3, 1\]",
        nn.InstanceNorm1d(3),
        X4[:, :, 0, :1],
    ),
    (
        "RMSNorm trailing dims",
        ValueError,
        r"RMSNorm: Given normalized_shape=\[3, 4\], expected input with shape \[\*, 3, 4\], but got input of size",
        nn.RMSNorm((3, 4)),
        X4,
    ),
    (
        "RMSNorm x int64",
        TypeError,
        "RMSNorm: expected x to have dtype float32 or float64",
        nn.RMSNorm(4),
        X4.astype(int),
    ),
    (
        "SwitchableNorm2d 3-D",
        ValueError,
        r"SwitchableNorm2d: expected 4D input \(got 3D input\)",
        nn.SwitchableNorm2d(3),
        X4[0],
    ),
    (
        "SwitchableNorm1d (N, C)",  # BatchNorm1d's 2-D case has no spatial dims, so no instance statistics
        ValueError,
        r"SwitchableNorm1d: expected 3D input \(got 2D input\)",
        nn.SwitchableNorm1d(3),
        X4[:, :, 0, 0],
    ),
    ("SwitchableNorm3d 4-D", ValueError, r"expected 5D input \(got 4D input\)", nn.SwitchableNorm3d(3), X4),
    (
        "SwitchableNorm2d channels, nothing that needs them",
        ValueError,
        r"SwitchableNorm2d: expected input's size at dim=1 to match num_features \(4\), but got: 3\.",
        nn.SwitchableNorm2d(4, affine=False, track_running_stats=False),
        X4,
    ),
    (
        "SwitchableNorm1d, one spatial element",
        ValueError,
        r"SwitchableNorm1d: expected more than 1 spatial element \(the instance statistics are taken over them\), "
        r"got input size \[2, 3, 1\]",
        nn.SwitchableNorm1d(3),
        X4[:, :, 0, :1],
    ),
    (
        "SwitchableNorm2d eval, one spatial element",  # the instance statistics are the input's in eval too
        ValueError,
        r"SwitchableNorm2d: expected more than 1 spatial element",
        nn.SwitchableNorm2d(3).eval(),
        X4[:, :, :1, :1],
    ),
]


@cpu_only
@pytest.mark.parametrize("error, pattern, layer, x", [pytest.param(*row[1:], id=row[0]) for row in BAD_INPUT])
def test_bad_input_is_named(error, pattern, layer, x):
    """A refused batch leaves every buffer as it was, num_batches_tracked included: it is not counted. PyTorch's
    BatchNorm does count it (it increments before its check raises); the module docstring says ours differs."""
    buffers = {n: a.copy() for n, a in layer.named_buffers()}
    with pytest.raises(error, match=pattern):
        layer(x)
    for name, a in layer.named_buffers():  # a refused batch is neither counted nor averaged in
        np.testing.assert_array_equal(a, buffers[name], err_msg=name)


@cpu_only
@pytest.mark.parametrize(
    "groups, shape",
    [(2, (1, 2)), (4, (1, 4, 1)), (2, (1, 2, 1, 1)), (1, (1, 2)), (2, (2, 2)), (2, (1, 2, 2)), (2, (0, 2, 1))],
)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_group_norm_refuses_what_torch_s_refuses(groups, shape, mode):
    """torch's F.group_norm refuses x whose (N * C // G, G, *spatial) view has N * C // G * prod(spatial) == 1,
    whatever the mode, and names that view's size."""
    torch = pytest.importorskip("torch")
    x = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    theirs, ours = torch.nn.GroupNorm(groups, shape[1]), nn.GroupNorm(groups, shape[1])
    theirs.train(mode == "train"), ours.train(mode == "train")
    try:
        want = theirs(torch.from_numpy(x)).detach().numpy()
    except ValueError as error:
        with pytest.raises(ValueError) as info:
            ours(x)
        assert str(info.value) == f"GroupNorm: {error}"
    else:  # a one-value group is 0 up to torch's rounding of its mean, times 1/sqrt(eps)
        np.testing.assert_allclose(ours(x), want, rtol=1e-5, atol=1e-4)


@cpu_only
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_with_tracking_turned_off_leaves_the_buffers_alone(momentum):
    """track_running_stats set False after construction: as torch, training normalizes with the batch's
    statistics and neither reads nor writes the buffers (an inf in x must not reach them, not even times a
    momentum of 0), and eval still normalizes with them since they exist."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    ours, theirs = nn.BatchNorm1d(3, momentum=momentum), torch.nn.BatchNorm1d(3, momentum=momentum)
    _randomize(ours, rng)
    theirs.load_state_dict({k: torch.as_tensor(v) for k, v in ours.state_dict().items()})
    ours.track_running_stats = theirs.track_running_stats = False
    before = ours.state_dict()
    x = rng.standard_normal((4, 3, 2)).astype(np.float32)
    x[0, 1, 0] = np.inf
    for train in (True, False):
        ours.train(train), theirs.train(train)
        with np.errstate(invalid="ignore"):
            y = ours(x)
        np.testing.assert_allclose(y, theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
        for key, value in ours.state_dict().items():
            np.testing.assert_array_equal(value, before[key], err_msg=f"train={train} {key}")
            np.testing.assert_array_equal(value, theirs.state_dict()[key].numpy(), err_msg=f"train={train} {key}")


@cpu_only
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_built_untracked_then_tracking_runs_as_torch(momentum):
    """track_running_stats set True on a layer built without buffers: nothing to update or count, and eval
    normalizes with the batch's statistics, as torch does."""
    torch = pytest.importorskip("torch")
    ours = nn.BatchNorm1d(3, momentum=momentum, track_running_stats=False)
    theirs = torch.nn.BatchNorm1d(3, momentum=momentum, track_running_stats=False)
    ours.track_running_stats = theirs.track_running_stats = True
    x = np.random.default_rng(8).standard_normal((4, 3)).astype(np.float32)
    for train in (True, False):
        ours.train(train), theirs.train(train)
        np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert ours.buffers() == [] and ours.num_batches_tracked is None


@cpu_only
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_instance_norm_with_tracking_turned_off_updates_the_buffers_as_torch(momentum, mode):
    """Unlike its BatchNorm, torch's InstanceNorm passes the buffers whenever they exist: with tracking turned
    off it normalizes with the batch's statistics in either mode and averages them into the buffers. Ours
    follows it there, inf (and momentum None's 0 * inf = NaN) included."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    ours = nn.InstanceNorm1d(3, momentum=momentum, track_running_stats=True)
    theirs = torch.nn.InstanceNorm1d(3, momentum=momentum, track_running_stats=True)
    _randomize(ours, rng)
    theirs.load_state_dict({k: torch.as_tensor(v) for k, v in ours.state_dict().items()})
    ours.track_running_stats = theirs.track_running_stats = False
    ours.train(mode == "train"), theirs.train(mode == "train")
    for step in range(2):
        x = rng.standard_normal((2, 3, 4)).astype(np.float32)
        if step:
            x[0, 1, 0] = np.inf
        with np.errstate(invalid="ignore"):
            y = ours(x)
        np.testing.assert_allclose(y, theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
        for key, value in ours.state_dict().items():
            want = theirs.state_dict()[key].numpy()
            np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6, err_msg=f"step {step} {key}")


@cpu_only
def test_instance_norm_warns_as_torch_when_num_features_is_unused():
    x = np.random.default_rng(2).standard_normal((2, 5, 4))
    with pytest.warns(UserWarning, match="dim=1 does not match num_features"):
        y = nn.InstanceNorm1d(3)(x)
    np.testing.assert_array_equal(y, nn.InstanceNorm1d(5)(x))


BAD_CONSTRUCTOR = [
    (
        "num_features 0",
        ValueError,
        "BatchNorm2d: expected num_features to be a positive int",
        lambda: nn.BatchNorm2d(0),
    ),
    ("num_features 2.5", TypeError, "expected num_features to be an int, got float", lambda: nn.BatchNorm1d(2.5)),
    ("num_features True", TypeError, "expected num_features to be an int, got bool", lambda: nn.InstanceNorm1d(True)),
    ("eps negative", ValueError, r"expected eps to be a finite number in \[0.0, inf\]", lambda: nn.LayerNorm(3, -1.0)),
    ("eps a string", TypeError, "expected eps to be a real number, got str", lambda: nn.GroupNorm(1, 2, "1e-5")),
    (
        "momentum a string",
        TypeError,
        "expected momentum to be a real number",
        lambda: nn.BatchNorm2d(3, momentum="0.1"),
    ),
    ("momentum NaN", ValueError, "expected momentum to be a finite number", lambda: nn.BatchNorm2d(3, momentum=np.nan)),
    ("affine 'yes'", TypeError, "BatchNorm3d: expected affine to be a bool", lambda: nn.BatchNorm3d(3, affine="yes")),
    (
        "track_running_stats 1",
        TypeError,
        "expected track_running_stats to be a bool",
        lambda: nn.InstanceNorm2d(3, track_running_stats=1),
    ),
    ("bias None", TypeError, "expected bias to be a bool", lambda: nn.LayerNorm(3, bias=None)),
    ("elementwise_affine 0", TypeError, "expected elementwise_affine to be a bool", lambda: nn.LayerNorm(3, 1e-5, 0)),
    ("dtype int32", TypeError, "expected dtype float32 or float64, got", lambda: nn.BatchNorm1d(3, dtype=np.int32)),
    ("dtype 'nope'", TypeError, "expected dtype float32 or float64, got 'nope'", lambda: nn.LayerNorm(3, dtype="nope")),
    (
        "backend 'gpu'",
        ValueError,
        r"backend must be one of \('cpu', 'cuda'\)",
        lambda: nn.GroupNorm(1, 2, backend="gpu"),
    ),
    ("normalized_shape ()", ValueError, "normalized_shape to be at least 1-dimensional", lambda: nn.LayerNorm(())),
    ("normalized_shape '4'", TypeError, "normalized_shape to be an int or a tuple of ints", lambda: nn.LayerNorm("4")),
    (
        "normalized_shape with 0",
        ValueError,
        "each dim of normalized_shape to be a positive",
        lambda: nn.LayerNorm((4, 0)),
    ),
    ("num_groups 0", ValueError, "GroupNorm: expected num_groups to be a positive int", lambda: nn.GroupNorm(0, 4)),
    (
        "num_channels not divisible",
        ValueError,
        r"GroupNorm: num_channels \(6\) must be divisible by num_groups \(4\)",
        lambda: nn.GroupNorm(4, 6),
    ),
    (
        "RMSNorm normalized_shape ()",
        ValueError,
        "RMSNorm: expected normalized_shape to be at least",
        lambda: nn.RMSNorm(()),
    ),
    ("RMSNorm normalized_shape 2.0", TypeError, "normalized_shape to be an int or a tuple", lambda: nn.RMSNorm(2.0)),
    (
        "RMSNorm eps negative",
        ValueError,
        r"RMSNorm: expected eps to be a finite number in \[0.0",
        lambda: nn.RMSNorm(3, -1.0),
    ),
    ("RMSNorm eps a string", TypeError, "RMSNorm: expected eps to be a real number", lambda: nn.RMSNorm(3, "1e-6")),
    (
        "RMSNorm elementwise_affine 1",
        TypeError,
        "expected elementwise_affine to be a bool",
        lambda: nn.RMSNorm(3, None, 1),
    ),
    ("RMSNorm bias", TypeError, "unexpected keyword argument 'bias'", lambda: nn.RMSNorm(3, bias=False)),
    (
        "SwitchableNorm2d num_features 0",
        ValueError,
        "SwitchableNorm2d: expected num_features to be a positive",
        lambda: nn.SwitchableNorm2d(0),
    ),
    (
        "SwitchableNorm1d momentum '0.1'",
        TypeError,
        "SwitchableNorm1d: expected momentum to be a real number",
        lambda: nn.SwitchableNorm1d(3, momentum="0.1"),
    ),
    (
        "SwitchableNorm3d affine None",
        TypeError,
        "SwitchableNorm3d: expected affine to be a bool",
        lambda: nn.SwitchableNorm3d(3, affine=None),
    ),
    (
        "SwitchableNorm2d dtype float16",
        TypeError,
        "expected dtype float32 or float64",
        lambda: nn.SwitchableNorm2d(3, dtype=np.float16),
    ),
]


@cpu_only
@pytest.mark.parametrize("error, pattern, make", [pytest.param(*row[1:], id=row[0]) for row in BAD_CONSTRUCTOR])
def test_bad_constructor_arguments_are_named(error, pattern, make):
    with pytest.raises(error, match=pattern):
        make()


@cpu_only
def test_backward_misuse_is_named():
    layer = nn.BatchNorm2d(3)
    with pytest.raises(RuntimeError, match="BatchNorm2d: call forward before backward"):
        layer.backward(np.ones_like(X4))
    layer(X4 + np.arange(4, dtype=np.float32))
    with pytest.raises(ValueError, match=r"expected dy of shape \(2, 3, 4, 4\) \(the last forward's output\)"):
        layer.backward(X4[0])
    with pytest.raises(TypeError, match="expected dy to be a numpy.ndarray, got list"):
        layer.backward(X4.tolist())
    with pytest.raises(TypeError, match="expected dy to have a floating-point dtype, got int64"):
        layer.backward(np.ones(X4.shape, np.int64))
    with pytest.raises(TypeError, match="expected mode to be a bool"):
        layer.train("no")


@cpu_only
def test_gradients_are_overwritten_not_accumulated():
    rng = np.random.default_rng(3)
    layer = nn.GroupNorm(2, 4)
    assert layer.weight_grad is None and layer.bias_grad is None
    x, dy = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    layer(x)
    dx = layer.backward(dy)
    first = layer.weight_grad.copy(), layer.bias_grad.copy()
    np.testing.assert_array_equal(layer.backward(dy), dx)  # again on the same forward: same dx
    np.testing.assert_array_equal(layer.weight_grad, first[0])
    np.testing.assert_array_equal(layer.bias_grad, first[1])
    assert layer.weight_grad.dtype == np.float32  # the parameter's dtype, not x's
    np.testing.assert_allclose(layer.bias_grad, dy.sum(axis=(0, 2)), rtol=1e-6)
    layer.zero_grad()
    assert layer.weight_grad is None and layer.bias_grad is None


@cpu_only
def test_backward_uses_the_forward_s_x_and_weight_even_if_they_change():
    rng = np.random.default_rng(4)
    x, dy = rng.standard_normal((4, 3, 2, 2)), rng.standard_normal((4, 3, 2, 2))
    reference = nn.BatchNorm2d(3)
    reference(x)
    want = reference.backward(dy)
    layer = nn.BatchNorm2d(3)
    layer(x.copy())
    changed = x.copy()
    layer(changed)
    changed += 5.0
    layer.weight *= 3.0
    np.testing.assert_array_equal(layer.backward(dy), want)


@cpu_only
@pytest.mark.parametrize(
    "config",
    [
        Config("BatchNorm2d", "BatchNorm2d", (3,), {}, ((4, 3, 2, 2),)),
        Config("InstanceNorm2d", "InstanceNorm2d", (3,), dict(affine=True, track_running_stats=True), ((2, 3, 3, 2),)),
        Config("LayerNorm", "LayerNorm", ((3, 2),), {}, ((4, 3, 2),)),
        Config("RMSNorm", "RMSNorm", ((3, 2),), dict(eps=1e-5), ((4, 3, 2),)),
        Config("SwitchableNorm2d", "SwitchableNorm2d", (3,), {}, ((4, 3, 2, 2),)),
    ],
    ids=lambda c: c.id,
)
def test_float32_parameters_take_float64_input(config):
    """Parameters and running statistics stay float32; y and dx have x's dtype; the float64 layer agrees."""
    rng = np.random.default_rng(5)
    mixed, double = _ours(config), _ours(config, dtype=np.float64)
    _randomize(mixed, rng)
    double.load_state_dict(mixed.state_dict())
    tol = compare.kernel_tolerance(np.float32)
    for step in range(3):
        if step == 2:
            mixed.eval(), double.eval()
        x = rng.standard_normal(config.shapes[0]) + step
        dy = rng.standard_normal(x.shape)
        got, want = _step(mixed, x, dy), _step(double, x, dy)
        assert got["y"].dtype == got["dx"].dtype == np.float64
        for name, value in got.items():
            if name.endswith("_grad") or name in ("running_mean", "running_var"):
                assert value.dtype == np.float32, name
            compare.assert_close(value, want[name], tol, what=f"{config.id} step {step} {name}")


@cpu_only
def test_parameters_and_buffers_are_the_layer_s_arrays_initialized_as_torch():
    layer = nn.InstanceNorm1d(4, affine=True, track_running_stats=True, dtype=np.float64)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.parameters()[0] is layer.weight and layer.parameters()[1] is layer.bias
    assert [n for n, _ in layer.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    assert layer.buffers()[2] is layer.num_batches_tracked
    np.testing.assert_array_equal(layer.weight, np.ones(4))
    np.testing.assert_array_equal(layer.bias, np.zeros(4))
    np.testing.assert_array_equal(layer.running_mean, np.zeros(4))
    np.testing.assert_array_equal(layer.running_var, np.ones(4))
    assert layer.weight.dtype == np.float64 and layer.num_batches_tracked.dtype == np.int64
    plain = nn.LayerNorm(3, elementwise_affine=False)
    assert plain.parameters() == [] and plain.buffers() == [] and plain.state_dict() == {}
    assert plain.weight is None and plain.bias is None and plain.normalized_shape == (3,)
    assert nn.BatchNorm1d(3, dtype=None).weight.dtype == np.float32  # None is torch's default, not NumPy's


@cpu_only
def test_switchable_parameters_buffers_and_gradients():
    """Parameters in state-dict order, initialized as the authors' code (weight 1, bias 0, an equal mix of
    logits 1), BatchNorm's buffers; backward sets all four gradients and zero_grad clears them; without affine
    only the mixing logits are parameters."""
    layer = nn.SwitchableNorm2d(4, dtype=np.float64)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias", "mean_weight", "var_weight"]
    assert [n for n, _ in layer.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    assert list(layer.state_dict()) == [n for n, _ in layer.named_parameters() + layer.named_buffers()]
    for name, want in (("weight", 1.0), ("bias", 0.0), ("mean_weight", 1.0), ("var_weight", 1.0)):
        a = getattr(layer, name)
        assert a.dtype == np.float64 and np.all(a == want), name
    assert layer.mean_weight.shape == layer.var_weight.shape == (3,)
    x = np.random.default_rng(10).standard_normal((2, 4, 3, 3))
    layer.backward(layer(x) ** 2)
    for name in ("weight", "bias", "mean_weight", "var_weight"):
        grad = getattr(layer, f"{name}_grad")
        assert grad.shape == getattr(layer, name).shape and np.any(grad != 0), name
    layer.zero_grad()
    assert all(getattr(layer, f"{n}_grad") is None for n in ("weight", "bias", "mean_weight", "var_weight"))
    plain = nn.SwitchableNorm1d(3, affine=False, track_running_stats=False)
    assert [n for n, _ in plain.named_parameters()] == ["mean_weight", "var_weight"] and plain.buffers() == []
    plain.backward(plain(x[:, :3, 0]))
    assert plain.weight_grad is None and plain.bias_grad is None and plain.mean_weight_grad.shape == (3,)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "num_batches_tracked"'):
        layer.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "num_batches_tracked"})


@cpu_only
def test_rms_norm_has_torch_s_attributes():
    """torch.nn.RMSNorm has no bias: neither attribute nor gradient nor state-dict key; eps None is kept."""
    layer = nn.RMSNorm([2, 3])
    assert layer.normalized_shape == (2, 3) and layer.eps is None and layer.elementwise_affine
    assert not hasattr(layer, "bias") and not hasattr(layer, "bias_grad")
    assert list(layer.state_dict()) == ["weight"] and layer.weight.dtype == np.float32
    assert np.all(layer.weight == 1.0) and layer.weight_grad is None
    plain = nn.RMSNorm(3, 1e-6, False)
    assert plain.parameters() == [] and plain.state_dict() == {} and plain.weight is None
    assert repr(plain) == "RMSNorm((3,), eps=1e-06, elementwise_affine=False)"
