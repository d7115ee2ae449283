"""The two training examples: the NumPy-only MLP, and LeNet with BatchNorm (torch's, ours, none)."""

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the examples extra (scikit-learn's digits) is not installed")

from examples import digits, numpy_mlp  # noqa: E402


def test_digits_split_is_fixed_and_scaled():
    a, b = digits.load(8), digits.load(8)
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert a.x_train.dtype == np.float32 and 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    big = digits.load(28)
    assert big.x_train.shape == (1437, 1, 28, 28) and np.array_equal(big.y_train, a.y_train)
    # the resize keeps the corner pixels (grid_mode=False maps corner to corner)
    assert np.allclose(big.x_train[:, 0, 0, 0], a.x_train[:, 0, 0, 0], atol=1e-6)


@pytest.fixture(scope="module")
def mlp():
    return numpy_mlp.train(epochs=6, quiet=True)


def test_numpy_mlp_learns(mlp):
    _, history, _ = mlp
    # the loss falls epoch by epoch on average, and the net ends far above chance (10 classes)
    assert history.epoch_loss[-1] < 0.5 * history.epoch_loss[0]
    assert history.epoch_loss[-1] < 0.3
    assert history.test_accuracy[-1] > 0.9


def test_numpy_mlp_eval_uses_running_statistics(mlp):
    model, _, data = mlp
    x = data.x_test.reshape(len(data.x_test), -1).astype(np.float64)[:32]
    bn = model.bn
    running = bn.running_mean.copy(), bn.running_var.copy(), int(bn.num_batches_tracked)

    model.eval()
    evaluated = model.forward(x)
    alone = model.forward(x[:1])
    # eval mode: a sample's output does not depend on the rest of the batch, and nothing is updated
    assert np.allclose(alone[0], evaluated[0], rtol=1e-12, atol=1e-12)
    assert np.array_equal(bn.running_mean, running[0]) and int(bn.num_batches_tracked) == running[2]

    model.train()
    trained = model.forward(x)
    # train mode: the batch's own statistics, so the outputs differ from eval's, and the running
    # statistics move towards this batch's
    assert not np.allclose(trained, evaluated, rtol=1e-3, atol=1e-3)
    assert int(bn.num_batches_tracked) == running[2] + 1
    assert not np.array_equal(bn.running_mean, running[0])
    hidden = model.fc1.forward(x)
    batch_mean = hidden.mean(axis=0)
    expected = 0.9 * running[0] + 0.1 * batch_mean
    assert np.allclose(bn.running_mean, expected, rtol=1e-12, atol=1e-12)


def test_lenet_ours_tracks_torch_and_batch_norm_trains_faster():
    pytest.importorskip("torch", reason="the LeNet example needs PyTorch")
    from examples import lenet_bn

    exp = lenet_bn.run(epochs=2)
    torch_run, ours, plain = (exp.runs[n] for n in ("torch", "normkernels", "no BN"))
    # Same initial weights and data order: the two BatchNorm runs differ only by float32 rounding inside
    # BatchNorm (ours sums in float64), about 1e-7 relative per layer and step. SGD at lr 1.0 carries it
    # forward; over the full 230-step run it stays near 2e-6 (README), so 1e-4 over 46 steps leaves room
    # while a wrong running update, gradient or eval path moves the loss by percents.
    assert len(torch_run.step_loss) == len(ours.step_loss) == 46
    assert exp.max_rel_loss_diff < 1e-4
    assert exp.max_running_diff < 1e-4
    # eval mode (running statistics): the same predictions, give or take one borderline test image
    assert all(abs(a - b) <= 1 / 360 + 1e-12 for a, b in zip(torch_run.test_accuracy, ours.test_accuracy, strict=True))
    # the chapter's claim at the same learning rate: with BatchNorm the loss falls, without it it stays near
    # log(10) = 2.30, chance for ten classes
    assert ours.epoch_loss[-1] < 0.6 < 2.0 < plain.epoch_loss[-1]
    assert ours.steps_to(lenet_bn.LOSS_THRESHOLD) is not None and plain.steps_to(lenet_bn.LOSS_THRESHOLD) is None
    text = lenet_bn.report(exp)
    assert "gamma [" in text and "| 2 |" in text
