"""The protocol's fixed splits of the official CIFAR-10 training set.

- ``train``: a class-balanced half of the official training set (supernet / model weights);
- ``valid``: the other half;
- ``score``: a fixed class-balanced subset of ``valid`` reserved for final scores only (no method sees
  it while training or searching);
- ``search``: ``valid`` minus ``score`` (validation signal for methods that search).

The split depends only on the labels, ``score_size`` and its own ``seed`` (default 0), never on the job
seed: it is part of the protocol. For a fixed seed the score sets are nested: a smaller
``score_size`` picks a subset of a larger one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.core.seeding import numpy_rng


@dataclass(frozen=True)
class Splits:
    """Sorted int64 index arrays into ``x_train``."""

    train: np.ndarray
    valid: np.ndarray
    search: np.ndarray
    score: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {k: int(len(getattr(self, k))) for k in ("train", "valid", "search", "score")}


def make_splits(y_train: np.ndarray, score_size: int, seed: int = 0) -> Splits:
    """Class-balanced train/valid halves, and a class-balanced ``score`` subset of ``valid``.

    Per class a seeded permutation is split in half (``train`` gets the smaller half when a class has
    an odd count). ``score`` takes ``score_size // n_classes`` images per class from the valid half,
    plus one more from each of the first ``score_size % n_classes`` classes.
    """
    y = np.asarray(y_train)
    if y.ndim != 1:
        raise ValueError(f"y_train must be 1-D, got shape {y.shape}")
    score_size = int(score_size)
    if score_size < 0:
        raise ValueError(f"score_size must be >= 0, got {score_size}")
    classes = np.unique(y)
    n_classes = len(classes)
    if n_classes == 0:
        raise ValueError("y_train is empty")

    rng = numpy_rng("splits", int(seed))
    train_parts, valid_parts = [], []
    for c in classes:
        idx = np.flatnonzero(y == c)
        perm = rng.permutation(idx)
        half = len(perm) // 2
        train_parts.append(perm[:half])
        valid_parts.append(perm[half:])  # kept in permuted order: the score set takes a prefix
    n_valid = sum(len(v) for v in valid_parts)
    if score_size > n_valid:
        raise ValueError(f"score_size {score_size} is larger than the valid half ({n_valid} images)")

    per_class, remainder = divmod(score_size, n_classes)
    score_parts = []
    for i, (c, v) in enumerate(zip(classes, valid_parts)):
        k = per_class + (1 if i < remainder else 0)
        if k > len(v):
            raise ValueError(
                f"score_size {score_size} needs {k} images of class {c}, but its valid half has only {len(v)}"
            )
        score_parts.append(v[:k])

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.sort(np.concatenate(parts).astype(np.int64)) if parts else np.empty(0, np.int64)

    train, valid, score = cat(train_parts), cat(valid_parts), cat(score_parts)
    search = np.setdiff1d(valid, score, assume_unique=True).astype(np.int64)
    return Splits(train=train, valid=valid, search=search, score=score)
