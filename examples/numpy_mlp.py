"""A network with no framework at all: NumPy layers written by hand, and ``normkernels.nn.BatchNorm1d``.

The network a student builds for themselves, trained with minibatch SGD on scikit-learn's 8 x 8 digits
(64 pixels per image, flattened):

    Affine(64, 128) -> BatchNorm1d(128) -> ReLU -> Affine(128, 10) -> softmax cross-entropy

Every layer has ``forward(x)``, which keeps what its backward needs, and ``backward(dy) -> dx``, which also
leaves the parameter gradients on the layer. BatchNorm normalizes with the batch's statistics in training
and with its running statistics in eval mode (``train()`` / ``eval()``), which is what the test accuracy
uses.

    python -m examples.numpy_mlp

Needs scikit-learn for the data (``pip install -e ".[examples]"``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np

from normkernels import nn

try:
    from . import digits
except ImportError:  # run as a script: python examples/numpy_mlp.py
    import digits


class Affine:
    """y = x @ w + b; x (N, D_in), w (D_in, D_out) with He initialization, b (D_out,)."""

    def __init__(self, d_in: int, d_out: int, rng: np.random.Generator):
        self.w = rng.normal(0.0, np.sqrt(2.0 / d_in), (d_in, d_out))
        self.b = np.zeros(d_out)

    def forward(self, x):
        self.x = x
        return x @ self.w + self.b

    def backward(self, dy):
        self.dw = self.x.T @ dy
        self.db = dy.sum(axis=0)
        return dy @ self.w.T

    def step(self, lr: float) -> None:
        self.w -= lr * self.dw
        self.b -= lr * self.db


class ReLU:
    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask


def softmax_cross_entropy(logits, labels):
    """Mean loss over the batch and its gradient with respect to the logits (N, K)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(labels)
    loss = -log_p[np.arange(n), labels].mean()
    dlogits = np.exp(log_p)
    dlogits[np.arange(n), labels] -= 1.0
    return loss, dlogits / n


class MLP:
    def __init__(self, hidden: int = 128, *, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.fc1 = Affine(64, hidden, rng)
        self.bn = nn.BatchNorm1d(hidden, dtype=np.float64)
        self.relu = ReLU()
        self.fc2 = Affine(hidden, 10, rng)
        self.layers = [self.fc1, self.bn, self.relu, self.fc2]

    def train(self):
        self.bn.train()

    def eval(self):
        self.bn.eval()

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)

    def step(self, lr: float) -> None:
        self.fc1.step(lr)
        self.fc2.step(lr)
        self.bn.weight -= lr * self.bn.weight_grad
        self.bn.bias -= lr * self.bn.bias_grad

    def predict(self, x):
        self.eval()
        labels = self.forward(x).argmax(axis=1)
        self.train()
        return labels


@dataclass
class History:
    step_loss: list = field(default_factory=list)
    epoch_loss: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)  # eval mode, after each epoch


def train(*, epochs: int = 20, lr: float = 0.1, batch_size: int = 64, seed: int = 0, quiet: bool = False):
    """Returns the trained MLP, its History and the data split."""
    data = digits.load(8, seed=seed)
    x_train = data.x_train.reshape(len(data.x_train), -1).astype(np.float64)
    x_test = data.x_test.reshape(len(data.x_test), -1).astype(np.float64)
    model, history = MLP(seed=seed), History()
    model.train()
    for epoch in range(epochs):
        losses = []
        for idx in digits.batches(len(x_train), batch_size, epoch=epoch, seed=seed):
            if len(idx) < 2:  # batch norm needs two samples per channel in training
                continue
            loss, dlogits = softmax_cross_entropy(model.forward(x_train[idx]), data.y_train[idx])
            model.backward(dlogits)
            model.step(lr)
            losses.append(loss)
        history.step_loss += losses
        history.epoch_loss.append(float(np.mean(losses)))
        history.test_accuracy.append(float((model.predict(x_test) == data.y_test).mean()))
        if not quiet:
            extra = f"loss {history.epoch_loss[-1]:.3f} test acc {history.test_accuracy[-1]:.3f}"
            digits.progress("numpy MLP", epoch + 1, epochs, extra)
    return model, history, data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.numpy_mlp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    _, history, _ = train(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    print("| epoch | training loss | test accuracy (eval mode) |\n|---:|---:|---:|")
    for e, (loss, acc) in enumerate(zip(history.epoch_loss, history.test_accuracy, strict=True), 1):
        print(f"| {e} | {loss:.4f} | {acc:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
