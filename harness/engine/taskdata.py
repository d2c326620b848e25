"""The task's tensors: CIFAR-10 decoded once per process and split into train / search / score at
a budget's resolution. Every job and the standalone ground truth get their data here."""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from harness.data.cifar import load_cifar10
from harness.data.splits import make_splits
from harness.data.tensors import to_float
from harness.engine.job import TaskData


@functools.lru_cache(maxsize=2)
def prepare_data(data_dir: str | None, cache_dir: str, resolution: int, score_size: int, device: str,
                 progress: bool = True) -> tuple[TaskData, dict]:
    """Decoded CIFAR-10 split into train / search / score at ``resolution`` (cached per process)."""
    raw = load_cifar10(Path(data_dir) if data_dir else None, Path(cache_dir), download=data_dir is None,
                       progress=progress)
    splits = make_splits(raw.y_train.numpy(), score_size)
    dev = torch.device(device)

    def take(idx):
        i = torch.as_tensor(idx, dtype=torch.long)
        return to_float(raw.x_train[i], resolution).to(dev), raw.y_train[i].to(dev)

    tx, ty = take(splits.train)
    sx, sy = take(splits.search)
    qx, qy = take(splits.score)
    info = {"source": raw.source, "splits": splits.sizes(), "resolution": resolution}
    return TaskData(tx, ty, sx, sy, qx, qy, num_classes=len(raw.classes)), info
