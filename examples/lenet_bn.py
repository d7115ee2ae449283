"""LeNet with BatchNorm, trained end to end: the experiment of d2l's batch-normalization chapter.

LeNet with a BatchNorm layer after every convolution and every hidden dense layer, sigmoid activations,
plain SGD at learning rate 1.0, trained on scikit-learn's handwritten digits resized to 28 x 28 (they ship
inside the package: nothing is downloaded). Three runs from the same seed, with the same initial weights and
the same data order:

- ``torch``: ``torch.nn.BatchNorm2d`` / ``BatchNorm1d``;
- ``normkernels``: the same model passed through ``normkernels.torch.convert``, so every BatchNorm runs this
  project's kernels (forward, backward and running statistics);
- ``no BN``: the same network without BatchNorm, at the same learning rate.

It prints, per epoch, the mean training loss and the test accuracy (eval mode: BatchNorm normalizes with its
running statistics) of each run, the largest relative difference between the two BatchNorm runs' losses at
any step, how many steps each run needs to bring the loss under a threshold, and the first BatchNorm layer's
learned gamma and beta, as the chapter prints them. ``--plot PATH`` saves the curves (needs matplotlib).

    python -m examples.lenet_bn --plot lenet_bn.png

Needs PyTorch and scikit-learn (``pip install -e ".[torch,examples]"``).
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass, field

import numpy as np

try:
    from . import digits
except ImportError:  # run as a script: python examples/lenet_bn.py
    import digits

LOSS_THRESHOLD = 0.5  # "trained": the first step whose 10-step mean loss is below this


def lenet(batch_norm: bool):
    """d2l's LeNet with BatchNorm (or without it): (N, 1, 28, 28) images to (N, 10) logits, with d2l's Xavier
    initialization of the convolution and dense weights."""
    from torch import nn

    def norm(layer):
        return [layer] if batch_norm else []

    net = nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), *norm(nn.BatchNorm2d(6)), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), *norm(nn.BatchNorm2d(16)), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 120), *norm(nn.BatchNorm1d(120)), nn.Sigmoid(),
        nn.Linear(120, 84), *norm(nn.BatchNorm1d(84)), nn.Sigmoid(),
        nn.Linear(84, 10),
    )  # fmt: skip
    for layer in net:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):  # d2l's train_ch6 initializes these so
            nn.init.xavier_uniform_(layer.weight)
    return net


@dataclass
class History:
    name: str
    step_loss: list = field(default_factory=list)  # every minibatch's loss, in order
    epoch_loss: list = field(default_factory=list)  # mean training loss of each epoch
    test_accuracy: list = field(default_factory=list)  # after each epoch, in eval mode
    epoch_seconds: list = field(default_factory=list)  # training only, evaluation excluded

    def steps_to(self, threshold: float, window: int = 10) -> int | None:
        """The first step at which the mean loss of the last ``window`` steps is below threshold."""
        loss = np.asarray(self.step_loss)
        for i in range(window, len(loss) + 1):
            if loss[i - window : i].mean() < threshold:
                return i
        return None


def accuracy(model, x, y) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    model.train()
    return float((predicted == y).mean())


class Trainer:
    """One run: a model, its SGD optimizer and its History, trained one epoch at a time."""

    def __init__(self, name: str, model, data: digits.Split, *, lr: float, batch_size: int, seed: int):
        import torch

        self.history, self.model, self.data = History(name), model, data
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.x_train, self.y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
        self.batch_size, self.seed = batch_size, seed

    def epoch(self, epoch: int) -> None:
        import torch

        h, losses = self.history, []
        self.model.train()
        start = time.perf_counter()
        for idx in digits.batches(len(self.y_train), self.batch_size, epoch=epoch, seed=self.seed):
            idx = torch.from_numpy(idx)
            loss = self.loss_fn(self.model(self.x_train[idx]), self.y_train[idx])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
        h.epoch_seconds.append(time.perf_counter() - start)
        h.step_loss += losses
        h.epoch_loss.append(float(np.mean(losses)))
        h.test_accuracy.append(accuracy(self.model, self.data.x_test, self.data.y_test))


@dataclass
class Experiment:
    runs: dict  # name -> History
    models: dict  # name -> trained model
    max_rel_loss_diff: float  # between the two BatchNorm runs, over every step
    max_running_diff: float  # largest |difference| of any running statistic at the end


def run(*, epochs: int = 10, lr: float = 1.0, batch_size: int = 64, seed: int = 0) -> Experiment:
    """The three runs. Each model is built right after ``torch.manual_seed(seed)``, so all three start from
    the same convolution and dense weights (BatchNorm's initial gamma = 1, beta = 0 draw no random numbers).
    The runs take turns epoch by epoch, so their times are measured side by side on a machine whose load
    drifts; each run's results do not depend on the order (its own model, optimizer and data order)."""
    import torch

    from normkernels.torch import convert

    data = digits.load(28, seed=seed)
    torch.manual_seed(seed)
    with_bn = lenet(batch_norm=True)
    ours = convert(copy.deepcopy(with_bn))
    torch.manual_seed(seed)
    plain = lenet(batch_norm=False)
    models = {"torch": with_bn, "normkernels": ours, "no BN": plain}
    trainers = [Trainer(n, m, data, lr=lr, batch_size=batch_size, seed=seed) for n, m in models.items()]
    for epoch in range(epochs):
        for trainer in trainers:
            trainer.epoch(epoch)
        losses = " ".join(f"{t.history.name} {t.history.epoch_loss[-1]:.3f}" for t in trainers)
        digits.progress("LeNet", epoch + 1, epochs, f"loss: {losses}")
    runs = {t.history.name: t.history for t in trainers}
    a, b = np.asarray(runs["torch"].step_loss), np.asarray(runs["normkernels"].step_loss)
    buffers = zip(with_bn.buffers(), ours.buffers(), strict=True)
    running = max((float((p.double() - q.double()).abs().max()) for p, q in buffers), default=0.0)
    return Experiment(runs, models, float(np.max(np.abs(a - b) / np.abs(a))), running)


def report(exp: Experiment) -> str:
    """Markdown: the per-epoch table, the agreement and speed lines, and the first layer's gamma and beta."""
    names = list(exp.runs)
    lines = [
        "| epoch | " + " | ".join(f"loss ({n})" for n in names) + " | "
        + " | ".join(f"test acc ({n})" for n in names) + " | "
        + " | ".join(f"s/epoch ({n})" for n in names) + " |",
        "|---:|" + "---:|" * (3 * len(names)),
    ]  # fmt: skip
    torch_run = exp.runs["torch"]
    for e in range(len(torch_run.epoch_loss)):
        losses = " | ".join(f"{exp.runs[n].epoch_loss[e]:.4f}" for n in names)
        accs = " | ".join(f"{exp.runs[n].test_accuracy[e]:.3f}" for n in names)
        seconds = " | ".join(f"{exp.runs[n].epoch_seconds[e]:.2f}" for n in names)
        lines.append(f"| {e + 1} | {losses} | {accs} | {seconds} |")
    steps = {n: exp.runs[n].steps_to(LOSS_THRESHOLD) for n in names}
    total = len(torch_run.step_loss)
    lines += [
        "",
        f"- largest relative difference between the torch and normkernels losses over all {total} steps: "
        f"{exp.max_rel_loss_diff:.2e}; largest difference of a running statistic at the end: "
        f"{exp.max_running_diff:.2e}",
        "- median seconds per epoch, the runs taking turns: "
        + ", ".join(f"{n} {np.median(exp.runs[n].epoch_seconds):.3f}" for n in names),
        f"- steps until the 10-step mean loss is below {LOSS_THRESHOLD}: "
        + ", ".join(f"{n} {'not within ' + str(total) if s is None else s}" for n, s in steps.items()),
    ]
    first = next(m for m in exp.models["normkernels"].modules() if hasattr(m, "running_mean"))
    gamma, beta = (p.detach().reshape(-1).numpy() for p in (first.weight, first.bias))
    lines += [
        "",
        "first BatchNorm layer (normkernels run), as the chapter prints `net[1].gamma`, `net[1].beta`:",
        "",
        "    gamma " + np.array2string(gamma, precision=4),
        "    beta  " + np.array2string(beta, precision=4),
    ]
    return "\n".join(lines)


def plot(exp: Experiment, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"torch": dict(lw=2.5, alpha=0.5), "normkernels": dict(lw=1, ls="--"), "no BN": dict(lw=1)}
    for name, h in exp.runs.items():
        left.plot(np.arange(1, len(h.step_loss) + 1), h.step_loss, label=name, **styles[name])
        right.plot(np.arange(1, len(h.test_accuracy) + 1), h.test_accuracy, marker="o", label=name, **styles[name])
    left.set(xlabel="step", ylabel="training loss (minibatch)", title="LeNet on digits, SGD lr 1.0")
    right.set(xlabel="epoch", ylabel="test accuracy (eval mode)", ylim=(0, 1))
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.lenet_bn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PATH", help="save the loss and accuracy curves as a PNG")
    args = parser.parse_args(argv)
    exp = run(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    print(report(exp))
    if args.plot:
        plot(exp, args.plot)
        print(f"\ncurves saved to {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
