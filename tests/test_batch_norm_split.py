"""BatchNorm split in SyncBatchNorm's steps (batch_norm_stats, _gather_stats, _elemt, _backward_reduce,
_backward_elemt), batch_norm_population_stats, and normkernels.distributed on a one-rank communicator that needs
no MPI. The cuda cases run in the simulator process (tests/test_cuda_simulator.py) on tiny shapes; the real MPI
runs are in tests/test_distributed.py."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import BACKENDS, SIMULATOR

import normkernels as nk
from normkernels import distributed, nn
from normkernels._device import host as _host
from verify import compare, staged
from verify.cases import CASES, CUDA_TINY, HARD

BN_CASES = [c for c in CASES + HARD if c.norm == "batch_norm" and np.prod(c.shape) <= 1 << 16]
BN_TINY = [c for c in CUDA_TINY if c.norm == "batch_norm"]


def _cases(backend):
    return BN_TINY if backend == "cuda" else BN_CASES


def _parts(n: int, split: str) -> list[slice]:
    """The batch's rows cut into parts: one part, two halves, or uneven with empty parts first and in between."""
    if split == "one":
        return [slice(0, n)]
    if split == "halves":
        return [slice(0, n // 2), slice(n // 2, n)]
    cut = max(1, n // 3)
    return [slice(0, 0), slice(0, cut), slice(cut, cut), slice(cut, n)]


def _split_run(x, gamma, beta, dy, parts, *, eps, running=None, backend="cpu"):
    """The split ops over the given parts of the batch, as the ranks of SyncBatchNorm run them."""
    stats = [nk.batch_norm_stats(x[p], backend=backend) for p in parts]
    counts = [s[0] for s in stats]
    rm, rv = running if running is not None else (None, None)
    mean, rstd = nk.batch_norm_gather_stats(
        counts,
        np.stack([_host(s[1]) for s in stats]),
        np.stack([_host(s[2]) for s in stats]),
        eps=eps,
        running_mean=rm,
        running_var=rv,
        backend=backend,
    )
    y = np.concatenate([nk.batch_norm_elemt(x[p], mean, rstd, gamma, beta, backend=backend) for p in parts])
    sums = [nk.batch_norm_backward_reduce(dy[p], x[p], mean, rstd, backend=backend) for p in parts]
    sum_dy = np.sum([s[0] for s in sums], axis=0)
    sum_dy_xmu = np.sum([s[1] for s in sums], axis=0)
    dx = np.concatenate(
        [
            nk.batch_norm_backward_elemt(
                dy[p], x[p], mean, rstd, gamma, sum_dy, sum_dy_xmu, sum(counts), backend=backend
            )
            for p in parts
        ]
    )
    return y, mean, rstd, dx, sum_dy_xmu * rstd, sum_dy


@pytest.mark.parametrize("split", ["one", "halves", "uneven"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_split_over_parts_matches_the_staged_graph_on_the_whole_batch(backend, split, dtype):
    tol = compare.kernel_tolerance(dtype)
    for case in _cases(backend):
        for affine in ("gamma_beta", "none"):
            x, gamma, beta, dy = case.inputs(dtype, affine)
            c = x.shape[1]
            running = (np.zeros(c), np.ones(c))
            y, mean, rstd, dx, dgamma, dbeta = _split_run(
                x, gamma, beta, dy, _parts(x.shape[0], split), eps=case.eps, running=running, backend=backend
            )
            as64 = [None if a is None else np.asarray(a, np.float64) for a in (x, gamma, beta)]
            ref_y, cache = case.staged_forward(*as64)
            ref = staged.backward(np.asarray(dy, np.float64), cache)
            what = f"{case.id} {affine} {split} {backend}"
            assert y.dtype == dtype and dx.dtype == dtype and mean.dtype == np.float64 and rstd.dtype == np.float64
            compare.assert_close(y, ref_y, tol, what=f"{what} y")
            compare.assert_close(dx, ref["dx"], tol, what=f"{what} dx")
            compare.assert_close(mean, cache["statistics"]["mean"], tol, what=f"{what} mean")
            compare.assert_close(rstd, cache["statistics"]["rstd"], tol, what=f"{what} rstd")
            if gamma is not None:
                compare.assert_close(dgamma, ref["dgamma"], tol, what=f"{what} dgamma")
                compare.assert_close(dbeta, ref["dbeta"], tol, what=f"{what} dbeta")
            # the running statistics as PyTorch keeps them: the unbiased variance over the whole count
            x64 = np.moveaxis(np.asarray(x, np.float64), 1, 0).reshape(c, -1)
            compare.assert_close(running[0], 0.1 * x64.mean(1), tol, what=f"{what} running_mean")
            compare.assert_close(running[1], 0.9 + 0.1 * x64.var(1, ddof=1), tol, what=f"{what} running_var")


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_part_gives_the_fused_ops_bits(backend, dtype):
    """On one process the split is batch_norm_forward: the same y, statistics and running statistics bit for
    bit (the same kernels on the same float64 mean and rstd), and dx within rounding."""
    for case in _cases(backend):
        x, gamma, beta, dy = case.inputs(dtype)
        c = x.shape[1]
        fused_running = (np.zeros(c, dtype), np.ones(c, dtype))
        split_running = (np.zeros(c, dtype), np.ones(c, dtype))
        y, mean, rstd = nk.batch_norm_forward(
            x, gamma, beta, eps=case.eps, running_mean=fused_running[0], running_var=fused_running[1], backend=backend
        )
        count, m, m2 = nk.batch_norm_stats(x, backend=backend)
        mean64, rstd64 = nk.batch_norm_gather_stats(
            [count], _host(m)[None], _host(m2)[None], eps=case.eps, running_mean=split_running[0],
            running_var=split_running[1], backend=backend,
        )  # fmt: skip
        assert np.array_equal(nk.batch_norm_elemt(x, mean64, rstd64, gamma, beta, backend=backend), y), case.id
        assert np.array_equal(mean64.astype(dtype), mean) and np.array_equal(rstd64.astype(dtype), rstd), case.id
        for fused, split in zip(fused_running, split_running, strict=True):
            assert np.array_equal(fused, split), case.id
        if case not in CASES:  # hard inputs: the fused backward's mean rounded to x's dtype is further off
            continue
        dx, dgamma, dbeta = nk.batch_norm_backward(dy, x, gamma, mean, rstd, backend=backend)
        sum_dy, sum_dy_xmu = nk.batch_norm_backward_reduce(dy, x, mean64, rstd64, backend=backend)
        dx_split = nk.batch_norm_backward_elemt(
            dy, x, mean64, rstd64, gamma, sum_dy, sum_dy_xmu, count, backend=backend
        )
        tol = compare.kernel_tolerance(dtype)
        compare.assert_close(dx_split, dx, tol, what=f"{case.id} dx")
        compare.assert_close(sum_dy_xmu * rstd64, dgamma, tol, what=f"{case.id} dgamma")
        compare.assert_close(sum_dy, dbeta, tol, what=f"{case.id} dbeta")


@pytest.mark.parametrize("backend", BACKENDS)
def test_offset_data_split_over_parts_keeps_float32_exact(backend):
    """Mean 1e4, std 1, float32, cut into parts of different sizes: the parts' float64 (mean, M2) merge exactly,
    where adding the parts' sums of squares would cancel every digit."""
    rng = np.random.default_rng(3)
    n = 9 if backend == "cuda" else 64
    x = (1e4 + rng.standard_normal((n, 3, 5))).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, mean, rstd, *_ = _split_run(x, None, None, dy, _parts(n, "uneven"), eps=1e-5, backend=backend)
    x64 = x.astype(np.float64)
    m = x64.mean(axis=(0, 2), keepdims=True)
    want = (x64 - m) / np.sqrt(x64.var(axis=(0, 2), keepdims=True) + 1e-5)
    # float32 y is within a few ulps of 1 (2e-7 measured); centred on a float32-rounded mean (half an ulp of 1e4,
    # 5e-4) it would be off by about 5e-4
    assert np.abs(y - want).max() < 1e-5
    assert np.abs(mean - m.ravel()).max() < 1e-9


def test_the_merge_is_in_rank_order_and_repeatable():
    """The same rows give the same bits every time; an empty row anywhere changes nothing at all."""
    rng = np.random.default_rng(4)
    counts = [5, 9, 3]
    means = rng.standard_normal((3, 4)) + 100.0
    m2s = rng.random((3, 4)) * 10
    a = nk.batch_norm_gather_stats(counts, means, m2s)
    b = nk.batch_norm_gather_stats(counts, means, m2s)
    padded = [np.insert(np.insert(a, 0, np.nan, 0), 2, 7.0, 0) for a in (means, m2s)]  # junk in the empty rows
    with_empty = nk.batch_norm_gather_stats([0, 5, 0, 9, 3], *padded)
    for u, v, w in zip(a, b, with_empty, strict=True):
        assert np.array_equal(u, v) and np.array_equal(u, w)
    # in row order: the same bits as Chan's formulas applied row after row in float64 by hand
    mean_ref, m2_ref, n_ref = means[0].copy(), m2s[0].copy(), float(counts[0])
    for n_b, mean_b, m2_b in zip(counts[1:], means[1:], m2s[1:], strict=True):
        delta, total = mean_b - mean_ref, n_ref + n_b
        mean_ref, m2_ref = mean_ref + delta * n_b / total, m2_ref + m2_b + delta * delta * (n_ref * n_b / total)
        n_ref = total
    np.testing.assert_array_equal(a[0], mean_ref)
    np.testing.assert_array_equal(a[1], 1.0 / np.sqrt(m2_ref / n_ref + 1e-5))
    # the merge of the rows is the statistics of the values they summarize
    values = [rng.standard_normal((n, 2)) * 3 + 50 for n in counts]
    stats = [nk.batch_norm_stats(v) for v in values]
    mean, rstd = nk.batch_norm_gather_stats(
        [s[0] for s in stats], [s[1] for s in stats], [s[2] for s in stats], eps=0.0
    )
    whole = np.concatenate(values)
    np.testing.assert_allclose(mean, whole.mean(0), rtol=1e-14)
    np.testing.assert_allclose(rstd, 1 / whole.std(0), rtol=1e-13)


def test_no_values_at_all_and_one_value_in_all():
    c = 3
    rm, rv = np.full(c, 0.5), np.full(c, 2.0)
    count, mean, m2 = nk.batch_norm_stats(np.zeros((0, c, 4)))
    assert count == 0 and np.array_equal(mean, np.zeros(c)) and np.array_equal(m2, np.zeros(c))
    mean, rstd = nk.batch_norm_gather_stats([0, 0], np.zeros((2, c)), np.zeros((2, c)), running_mean=rm, running_var=rv)
    assert np.isnan(mean).all() and np.isnan(rstd).all()
    assert np.array_equal(rm, np.full(c, 0.5)) and np.array_equal(rv, np.full(c, 2.0))  # left alone
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nk.batch_norm_gather_stats([0, 1], np.zeros((2, c)), np.zeros((2, c)))
    # an empty part of a larger batch: empty y and dx, zero sums
    x = np.zeros((0, c, 2), np.float32)
    mean, rstd = np.zeros(c), np.ones(c)
    assert nk.batch_norm_elemt(x, mean, rstd).shape == x.shape
    sums = nk.batch_norm_backward_reduce(x, x, mean, rstd)
    assert all(np.array_equal(s, np.zeros(c)) for s in sums)
    assert nk.batch_norm_backward_elemt(x, x, mean, rstd, None, *sums, 10).shape == x.shape


def test_population_statistics_are_the_concatenated_data_where_a_running_average_is_not():
    """The BN paper's inference statistics (its Algorithm 2) over a data set whose batches drift: merged exactly,
    they are the mean and unbiased variance of all the data, however the batches are cut; BatchNorm's running
    average (momentum 0.1, or the cumulative momentum=None) is not."""
    rng = np.random.default_rng(5)
    sizes = [32, 32, 32, 7, 32, 1]  # a short last batch and a batch of one
    batches = [(rng.standard_normal((n, 4, 3, 3)) * (1 + i) + 2.0 * i).astype(np.float32) for i, n in enumerate(sizes)]
    whole = np.moveaxis(np.concatenate(batches).astype(np.float64), 1, 0).reshape(4, -1)
    mean, var = nk.batch_norm_population_stats(iter(batches))  # a generator is fine
    np.testing.assert_allclose(mean, whole.mean(1), rtol=1e-12)
    np.testing.assert_allclose(var, whole.var(1, ddof=1), rtol=1e-12)
    # the same statistics however the data is batched
    regrouped = [np.concatenate(batches[:3]), np.concatenate(batches[3:])]
    mean2, var2 = nk.batch_norm_population_stats(regrouped)
    np.testing.assert_allclose(mean2, mean, rtol=1e-13)
    np.testing.assert_allclose(var2, var, rtol=1e-13)
    for momentum in (0.1, None):
        layer = nn.BatchNorm2d(4, momentum=momentum, dtype=np.float64)
        for b in batches[:-1]:  # a batch of one cannot train
            layer(b)
        assert np.abs(layer.running_var / whole.var(1, ddof=1) - 1).max() > 0.1, momentum
    # and eval mode normalizes with them
    layer = nn.BatchNorm2d(4, dtype=np.float64).eval()
    layer.running_mean[...], layer.running_var[...] = mean, var
    y = layer(batches[0].astype(np.float64))
    want = (batches[0] - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


def test_population_statistics_refuse_what_they_cannot_merge():
    with pytest.raises(ValueError, match="at least one batch"):
        nk.batch_norm_population_stats([])
    with pytest.raises(ValueError, match="at least 2 values per channel"):
        nk.batch_norm_population_stats([np.zeros((1, 3))])
    with pytest.raises(ValueError, match="batch 1 has 2"):
        nk.batch_norm_population_stats([np.zeros((4, 3)), np.zeros((4, 2))])
    with pytest.raises(TypeError, match="batch 1: .*dtype float32 or float64"):
        nk.batch_norm_population_stats([np.zeros((4, 3)), np.zeros((4, 3), np.int64)])
    with pytest.raises(TypeError, match="iterable of arrays"):
        nk.batch_norm_population_stats(np.zeros((4, 3)))


X = np.zeros((4, 3, 2), np.float32)
C3 = np.zeros(3)
R3 = C3[None]  # one part's row
gather, elemt, reduce_, elemt_bwd = (
    nk.batch_norm_gather_stats,
    nk.batch_norm_elemt,
    nk.batch_norm_backward_reduce,
    nk.batch_norm_backward_elemt,
)

BAD = [
    ("stats: x 1-D", ValueError, "at least 2 dimensions", lambda: nk.batch_norm_stats(np.zeros(3))),
    ("stats: int x", TypeError, "dtype float32 or float64", lambda: nk.batch_norm_stats(np.zeros((2, 3), int))),
    ("gather: counts 2-D", ValueError, "counts of shape", lambda: gather([[1]], R3, R3)),
    ("gather: negative count", ValueError, "non-negative integers", lambda: gather([-2], R3, R3)),
    ("gather: fractional count", ValueError, "non-negative integers", lambda: gather([2.5], R3, R3)),
    ("gather: string counts", TypeError, "counts to be integers", lambda: gather(["2"], R3, R3)),
    (
        "gather: counts past 2**53",
        ValueError,
        "less than 2\\*\\*53",
        lambda: gather([2**60, 2**70], R3[[0, 0]], R3[[0, 0]]),
    ),
    ("gather: rows != counts", ValueError, "one row of means", lambda: gather([2, 3], R3, R3)),
    ("gather: means 1-D", ValueError, r"means of shape \(R, C\)", lambda: gather([2], C3, C3)),
    ("gather: m2s shape", ValueError, "m2s of the shape of means", lambda: gather([2], R3, np.zeros((1, 2)))),
    ("gather: ragged means", ValueError, "different lengths", lambda: gather([2, 2], [C3, C3[:2]], R3)),
    ("gather: negative eps", ValueError, "eps", lambda: gather([2], R3, R3, eps=-1.0)),
    ("gather: one running", ValueError, "both given or both None", lambda: gather([2], R3, R3, running_mean=C3.copy())),
    (
        "gather: running shape",
        ValueError,
        r"running_var of shape \(3,\)",
        lambda: gather([2], R3, R3, running_mean=C3.copy(), running_var=np.ones(2)),
    ),
    ("elemt: mean shape", ValueError, r"mean of shape \(3,\)", lambda: elemt(X, np.zeros(2), C3)),
    ("elemt: rstd list", TypeError, "rstd to be a numpy.ndarray", lambda: elemt(X, C3, [1.0, 1.0, 1.0])),
    ("elemt: gamma shape", ValueError, r"gamma of shape \(3,\)", lambda: elemt(X, C3, C3, np.ones(4))),
    ("reduce: dy shape", ValueError, "dy of shape", lambda: reduce_(X[:2], X, C3, C3)),
    ("reduce: rstd shape", ValueError, r"rstd of shape \(3,\)", lambda: reduce_(X, X, C3, C3[:1])),
    (
        "elemt bwd: sum shape",
        ValueError,
        r"sum_dy_xmu of shape \(3,\)",
        lambda: elemt_bwd(X, X, C3, C3, None, C3, C3[:2], 8),
    ),
    (
        "elemt bwd: count below local",
        ValueError,
        "at least this batch's 8",
        lambda: elemt_bwd(X, X, C3, C3, None, C3, C3, 5),
    ),
    ("elemt bwd: count float", TypeError, "count to be an int", lambda: elemt_bwd(X, X, C3, C3, None, C3, C3, 8.5)),
    ("elemt bwd: count str", TypeError, "count to be an int", lambda: elemt_bwd(X, X, C3, C3, None, C3, C3, "8")),
    ("elemt bwd: bad backend", ValueError, "backend", lambda: elemt_bwd(X, X, C3, C3, None, C3, C3, 8, backend="tpu")),
]


@pytest.mark.skipif(SIMULATOR, reason="the cpu half")
@pytest.mark.parametrize("what, error, message, call", BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_the_argument(what, error, message, call):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.skipif(SIMULATOR, reason="the cpu half")
def test_inputs_are_never_modified():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    dy, gamma, beta = rng.standard_normal(x.shape), rng.standard_normal(3), rng.standard_normal(3)
    counts, means, m2s = [24, 0], rng.standard_normal((2, 3)), rng.random((2, 3))
    before = [a.copy() for a in (x, dy, gamma, beta, means, m2s)]
    nk.batch_norm_stats(x)
    nk.batch_norm_population_stats([x, x[:2]])
    mean, rstd = nk.batch_norm_gather_stats(counts, means, m2s)
    nk.batch_norm_elemt(x, mean, rstd, gamma, beta)
    sums = nk.batch_norm_backward_reduce(dy, x, mean, rstd)
    nk.batch_norm_backward_elemt(dy, x, mean, rstd, gamma, *sums, 24)
    y, mean, rstd = distributed.sync_batch_norm_forward(x, gamma, beta, comm=OneRank())
    distributed.sync_batch_norm_backward(dy, x, gamma, mean, rstd, comm=OneRank())
    for a, b in zip((x, dy, gamma, beta, means, m2s), before, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.values[0] == "cuda"])
def test_device_arrays_in_give_device_arrays_out(backend):
    from numba import cuda

    from normkernels._device import is_device_array

    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    dy, gamma = rng.standard_normal(x.shape).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    dx_, dy_, dg_ = (cuda.to_device(a) for a in (x, dy, gamma))
    count, m, m2 = nk.batch_norm_stats(dx_, backend=backend)
    assert count == 20 and is_device_array(m) and is_device_array(m2)
    mean, rstd = nk.batch_norm_gather_stats([count], m.reshape(1, 3), m2.reshape(1, 3), backend=backend)
    assert is_device_array(mean) and mean.dtype == np.float64
    y = nk.batch_norm_elemt(dx_, mean, rstd, dg_, None, backend=backend)
    sums = nk.batch_norm_backward_reduce(dy_, dx_, mean, rstd, backend=backend)
    dx = nk.batch_norm_backward_elemt(dy_, dx_, mean, rstd, dg_, *sums, count, backend=backend)
    assert is_device_array(y) and is_device_array(dx) and all(is_device_array(s) for s in sums)
    host = _split_run(x, gamma, None, dy, [slice(0, 5)], eps=1e-5, backend="cpu")
    tol = compare.kernel_tolerance(np.float32)
    compare.assert_close(y.copy_to_host(), host[0], tol, what="y")
    compare.assert_close(dx.copy_to_host(), host[3], tol, what="dx")


# --- normkernels.distributed on a communicator of one rank (no MPI needed) ---------------------------------------


class OneRank:
    """A communicator of one rank with mpi4py's signatures, counting its collectives."""

    def __init__(self):
        self.calls = []

    def Get_rank(self):
        return 0

    def allgather(self, obj):
        self.calls.append("allgather")
        return [obj]

    def Allreduce(self, send, recv):
        self.calls.append("Allreduce")
        recv[...] = send


@pytest.mark.skipif(SIMULATOR, reason="the cpu half")
def test_one_collective_each_way_and_none_in_eval(dtype):
    case = next(c for c in BN_CASES if len(c.shape) == 4)
    x, gamma, beta, dy = case.inputs(dtype)
    comm = OneRank()
    c = x.shape[1]
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    y, mean, rstd = distributed.sync_batch_norm_forward(x, gamma, beta, running_mean=rm, running_var=rv, comm=comm)
    dx, dgamma, dbeta = distributed.sync_batch_norm_backward(dy, x, gamma, mean, rstd, comm=comm)
    assert comm.calls == ["allgather", "Allreduce"]
    rm1, rv1 = np.zeros(c, dtype), np.ones(c, dtype)
    y1, mean1, rstd1 = nk.batch_norm_forward(x, gamma, beta, running_mean=rm1, running_var=rv1)
    assert np.array_equal(y, y1) and np.array_equal(rm, rm1) and np.array_equal(rv, rv1)
    tol = compare.kernel_tolerance(dtype)
    for got, want in zip((dx, dgamma, dbeta), nk.batch_norm_backward(dy, x, gamma, mean1, rstd1), strict=True):
        assert got.dtype == dtype
        compare.assert_close(got, want, tol, what="backward")
    comm.calls.clear()
    y, mean, rstd = distributed.sync_batch_norm_forward(
        x, gamma, beta, training=False, running_mean=rm, running_var=rv, comm=comm
    )
    distributed.sync_batch_norm_backward(dy, x, gamma, mean, rstd, training=False, comm=comm)
    assert comm.calls == []


@pytest.mark.skipif(SIMULATOR, reason="the cpu half")
def test_sync_layer_on_one_rank_is_batch_norm():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    sync, plain = nn.SyncBatchNorm(4, comm=OneRank()), nn.BatchNorm2d(4)
    for _ in range(2):
        assert np.array_equal(sync(x), plain(x))
        compare.assert_close(sync.backward(dy), plain.backward(dy), compare.kernel_tolerance(np.float32), what="dx")
        np.testing.assert_allclose(sync.weight_grad, plain.weight_grad, rtol=1e-5, atol=1e-5)
    assert sync.state_dict().keys() == plain.state_dict().keys()
    assert all(np.array_equal(a, b) for a, b in zip(sync.buffers(), plain.buffers(), strict=True))
    sync.eval(), plain.eval()
    assert np.array_equal(sync(x), plain(x))
    # a part with a single value per channel is fine for a sync layer (only the whole batch counts) ...
    with pytest.raises(ValueError, match="more than 1 value per channel"):  # ... but here it is the whole batch
        nn.SyncBatchNorm(4, comm=OneRank())(x[:1, :, :1, :1])
    with pytest.raises(ValueError, match="at least 2D input"):
        nn.SyncBatchNorm(4, comm=OneRank())(np.zeros(4, np.float32))


@pytest.mark.skipif(SIMULATOR, reason="the cpu half")
def test_a_communicator_must_be_one():
    with pytest.raises(TypeError, match="mpi4py communicator"):
        distributed.sync_batch_norm_forward(np.zeros((4, 3)), comm="world")


@pytest.mark.skipif(SIMULATOR, reason="the cpu half")
def test_nothing_needs_mpi4py_until_a_training_step_runs_on_the_default_communicator():
    code = """
import sys
sys.modules["mpi4py"] = None  # as if not installed
import numpy as np
import normkernels, normkernels.nn, normkernels.distributed
from normkernels import distributed, nn
x = np.ones((4, 3), np.float32)
distributed.sync_batch_norm_forward(x, training=False, running_mean=np.zeros(3), running_var=np.ones(3))
nn.SyncBatchNorm(3).eval()(x)
try:
    distributed.sync_batch_norm_forward(x)
except ImportError as exc:
    assert 'pip install "normkernels[mpi]"' in str(exc), exc
    print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.values[0] == "cuda"])
def test_distributed_on_device_arrays_stays_on_the_device(backend):
    from numba import cuda

    from normkernels._device import is_device_array

    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    dy, gamma = rng.standard_normal(x.shape).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    rm, rv = cuda.to_device(np.zeros(3, np.float32)), cuda.to_device(np.ones(3, np.float32))
    d_x, d_dy, d_g = (cuda.to_device(a) for a in (x, dy, gamma))
    comm = OneRank()
    y, mean, rstd = distributed.sync_batch_norm_forward(
        d_x, d_g, None, running_mean=rm, running_var=rv, comm=comm, backend=backend
    )
    dx, dgamma, dbeta = distributed.sync_batch_norm_backward(d_dy, d_x, d_g, mean, rstd, comm=comm, backend=backend)
    assert comm.calls == ["allgather", "Allreduce"]
    assert all(is_device_array(a) for a in (y, mean, rstd, dx, dgamma, dbeta))
    host_rm, host_rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    want = distributed.sync_batch_norm_forward(
        x, gamma, None, running_mean=host_rm, running_var=host_rv, comm=OneRank()
    )
    tol = compare.kernel_tolerance(np.float32)
    compare.assert_close(y.copy_to_host(), want[0], tol, what="y")
    compare.assert_close(rv.copy_to_host(), host_rv, tol, what="running_var")
    grads = distributed.sync_batch_norm_backward(dy, x, gamma, *want[1:], comm=OneRank())
    for got, w in zip((dx, dgamma, dbeta), grads, strict=True):
        compare.assert_close(got.copy_to_host(), w, tol, what="backward")


class TwoRanks(OneRank):
    """Rank 0 of two, the other rank's part of each collective given: its allgather record and allreduce buffer."""

    def __init__(self, other_record=None, other_buffer=None):
        super().__init__()
        self.other_record, self.other_buffer, self.sent = other_record, other_buffer, []

    def allgather(self, obj):
        self.calls.append("allgather")
        self.sent.append(obj)
        return [obj, self.other_record]

    def Allreduce(self, send, recv):
        self.calls.append("Allreduce")
        self.sent.append(send.copy())
        recv[...] = send + self.other_buffer


def _record(c=3, eps=1e-5, momentum=0.1, refused=None):
    """What another rank sends in the forward's allgather (refused: its error message)."""
    if refused:
        return (refused, None, None, None, 0, None, None)
    return distributed.statistics_record(c, eps, momentum, 4, np.zeros(c), np.ones(c))


@pytest.mark.skipif(SIMULATOR, reason="the cpu half")
@pytest.mark.parametrize(
    "other, error, message",
    [
        (_record(refused="TypeError: x has no dtype"), RuntimeError, r"rank\(s\) \[1\] refused .*x has no dtype"),
        (_record(c=4), ValueError, r"disagree on the number of channels .*\{0: 3, 1: 4\}"),
        (_record(eps=1e-3), ValueError, "disagree on the eps"),
        (_record(momentum=0.5), ValueError, "disagree on the momentum"),
    ],
    ids=["refused", "channels", "eps", "momentum"],
)
def test_what_another_rank_sends_is_refused_here_too(other, error, message):
    rm, rv = np.zeros(3), np.ones(3)
    comm = TwoRanks(other)
    with pytest.raises(error, match=message):
        distributed.sync_batch_norm_forward(np.ones((4, 3)), running_mean=rm, running_var=rv, comm=comm)
    assert comm.calls == ["allgather"] and np.array_equal(rm, np.zeros(3)) and np.array_equal(rv, np.ones(3))


@pytest.mark.skipif(SIMULATOR, reason="the cpu half")
def test_a_refusal_here_still_takes_part_in_the_collective():
    """This rank's own error is raised here after it told the others through the collective, so none waits."""
    comm = TwoRanks(_record())
    with pytest.raises(ValueError, match=r"gamma of shape \(3,\)"):
        distributed.sync_batch_norm_forward(np.ones((4, 3)), np.ones(2), comm=comm)
    assert comm.calls == ["allgather"] and "gamma of shape" in comm.sent[0][0]
    comm = TwoRanks(_record())
    with pytest.raises(TypeError, match="training to be a bool"):  # refused in the collective, not skipped
        distributed.sync_batch_norm_forward(np.ones((4, 3)), training="no", comm=comm)
    assert comm.calls == ["allgather"]
    # the backward: a dy of the wrong shape here; its buffer has the agreed size (from mean) and a raised flag
    x = np.random.default_rng(10).standard_normal((4, 3))
    y, mean, rstd = distributed.sync_batch_norm_forward(x, comm=OneRank())
    comm = TwoRanks(other_buffer=np.zeros(8))
    with pytest.raises(ValueError, match="dy of shape"):
        distributed.sync_batch_norm_backward(np.ones((5, 3)), x, None, mean, rstd, comm=comm)
    assert comm.calls == ["Allreduce"] and comm.sent[0].shape == (8,) and comm.sent[0][-1] == 1
    # ... and the other rank's flag refuses it here
    other = np.zeros(8)
    other[-1] = 1
    with pytest.raises(RuntimeError, match="1 other rank"):
        distributed.sync_batch_norm_backward(np.ones_like(x), x, None, mean, rstd, comm=TwoRanks(other_buffer=other))


@pytest.mark.skipif(SIMULATOR, reason="the cpu half")
def test_the_layer_refuses_through_the_collective_and_never_syncs_in_eval():
    comm = TwoRanks(_record())
    layer = nn.SyncBatchNorm(3, comm=comm)
    with pytest.raises(ValueError, match="num_features"):
        layer(np.ones((4, 2), np.float32))
    assert comm.calls == ["allgather"] and "num_features" in comm.sent[0][0]
    comm = OneRank()
    layer = nn.SyncBatchNorm(3, comm=comm)
    layer(np.random.default_rng(11).standard_normal((4, 3)).astype(np.float32))
    with pytest.raises(ValueError, match="dy of shape"):
        layer.backward(np.ones((5, 3), np.float32))
    assert comm.calls == ["allgather", "Allreduce"]  # the refused dy took part in the allreduce
    # eval never communicates, with running statistics or (untracked) with this rank's own batch statistics
    for tracked in (True, False):
        comm = OneRank()
        layer = nn.SyncBatchNorm(3, track_running_stats=tracked, comm=comm).eval()
        x = np.random.default_rng(12).standard_normal((4, 3)).astype(np.float32)
        y = layer(x)
        layer.backward(np.ones_like(y))
        assert comm.calls == [], tracked
        plain = nn.BatchNorm1d(3, track_running_stats=tracked).eval()
        assert np.array_equal(y, plain(x))


@pytest.mark.skipif(SIMULATOR, reason="the cpu half")
def test_a_failed_forward_leaves_no_backward_to_sync():
    """After a refused eval forward on this rank, its backward must not join an allreduce the others (whose eval
    forward went through, locally) never start: nothing is saved, so it raises here, alone."""
    comm = OneRank()
    layer = nn.SyncBatchNorm(3, comm=comm)
    x = np.random.default_rng(13).standard_normal((4, 3)).astype(np.float32)
    layer(x)
    layer.eval()
    with pytest.raises(TypeError, match="dtype"):
        layer(x.astype(np.int64))
    with pytest.raises(RuntimeError, match="call forward before backward"):
        layer.backward(np.ones_like(x))
    assert comm.calls == ["allgather"]
    with pytest.raises(ValueError, match="SyncBatchNorm: Expected more than 1 value per channel"):
        nn.SyncBatchNorm(3, track_running_stats=False, comm=comm).eval()(x[:1])


@pytest.mark.skipif(SIMULATOR, reason="the cpu half")
def test_a_refusal_inside_the_function_is_one_collective_from_the_layer():
    comm = OneRank()
    layer = nn.SyncBatchNorm(3, comm=comm)
    layer.weight = np.ones(2, np.float32)  # refused by sync_batch_norm_forward, inside its collective
    with pytest.raises(ValueError, match=r"gamma of shape \(3,\)"):
        layer(np.ones((4, 3), np.float32))
    assert comm.calls == ["allgather"]
