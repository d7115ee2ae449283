"""The handwritten digits that ship inside scikit-learn (no download): 1797 images of 8 x 8 pixels, 10 classes.

Both examples train on the same split: 1437 training and 360 test images, stratified, with a fixed seed.
Pixels are scaled from 0..16 to [0, 1]. ``load(size=28)`` resizes the images (bilinear) for LeNet, whose
first layer expects 28 x 28 inputs as in the d2l chapter (Fashion-MNIST there).
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    x_train: np.ndarray  # (1437, 1, size, size) float32
    y_train: np.ndarray  # (1437,) int64
    x_test: np.ndarray  # (360, 1, size, size) float32
    y_test: np.ndarray  # (360,) int64


def load(size: int = 8, *, seed: int = 0) -> Split:
    """The digits as (N, 1, size, size) float32 images in [0, 1] and int64 labels, split 80/20."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError('the examples read scikit-learn\'s digits: pip install -e ".[examples]"') from exc
    from scipy import ndimage

    digits = load_digits()
    images = digits.images.astype(np.float64) / 16.0  # (1797, 8, 8)
    if size != images.shape[1]:
        # order 1: bilinear; the zoom maps the 8 corner pixels onto the size corner pixels
        images = ndimage.zoom(images, (1, size / 8, size / 8), order=1, grid_mode=False)
    images = np.clip(images, 0.0, 1.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, random_state=seed, stratify=labels
    )
    return Split(x_train, y_train, x_test, y_test)


def batches(n: int, batch_size: int, *, epoch: int, seed: int = 0):
    """Index arrays of one epoch's minibatches: a shuffle fixed by (seed, epoch), so every run sees the same
    data in the same order. The last, smaller batch is kept."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def progress(label: str, done: int, total: int, extra: str = "", *, width: int = 24, stream=None) -> None:
    """One line that redraws itself: ``label [#####.....] done/total extra``; a newline when done."""
    stream = sys.stderr if stream is None else stream
    filled = width * done // max(total, 1)
    end = "\n" if done >= total else ""
    stream.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {extra}{end}")
    stream.flush()
