"""Validation and test splits: stratified, and a pure function of the seed."""

import numpy as np

from kd_keras.data.dataset import DataError


def validation_index(y, val_size, seed=0):
    """(train index, validation index) of a class-stratified validation set of
    `val_size` examples carved out of labels `y`, deterministic for `seed`."""
    n = len(y)
    if not 0 <= val_size < n:
        raise DataError(f"val_size must lie in [0, {n}) for {n} training examples; got {val_size}.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    if val_size == 0:
        return np.arange(n), order[:0]
    # Stratify: take the first round(val_size * share) indices of each class.
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts / n * val_size).astype(int)
    quota[: val_size - quota.sum()] += 1
    val_idx = np.concatenate([order[y[order] == c][:q] for c, q in zip(classes, quota)])
    mask = np.zeros(n, bool)
    mask[val_idx] = True
    return order[~mask[order]], order[mask[order]]


def split_validation(x, y, val_size, seed=0):
    """Carves a class-stratified validation set of `val_size` out of (x, y)."""
    train_idx, val_idx = validation_index(y, val_size, seed)
    if val_size == 0:
        return x, y, x[:0], y[:0]
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def test_index(y, fraction, seed=0):
    """(rest index, test index): a class-stratified test set of
    ``round(fraction * N)`` examples (at least 1, at most N - 1),
    deterministic for `seed`.

    Raises:
      DataError: `fraction` outside (0, 1), or fewer than 2 examples.
    """
    if not 0 < fraction < 1:
        raise DataError(f"test_fraction must lie in (0, 1); got {fraction}.")
    if len(y) < 2:
        raise DataError(f"{len(y)} example(s) cannot be split into train and test.")
    return validation_index(y, test_size(len(y), fraction), seed)


def test_size(n, fraction):
    """Examples :func:`test_index` holds out of `n` for test:
    ``round(fraction * n)``, at least 1 and at most n - 1."""
    return min(max(1, int(round(fraction * n))), n - 1)


def split_test(x, y, fraction, seed=0):
    """Splits (x, y) into (x, y, x_test, y_test) with :func:`test_index`."""
    rest, test = test_index(y, fraction, seed)
    return x[rest], y[rest], x[test], y[test]
