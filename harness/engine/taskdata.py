"""The task's tensors: the run's data set (CIFAR-10 unless ``--dataset`` says) decoded once per
process and split into train / search / score at a budget's resolution. Every job and the
standalone ground truth get their data here."""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from harness.data.datasets import DEFAULT_DATASET, benchmark_splits, get_dataset, load_dataset
from harness.data.splits import make_splits
from harness.data.tensors import to_float
from harness.engine.job import TaskData


@functools.lru_cache(maxsize=2)
def prepare_data(data_dir: str | None, cache_dir: str, resolution: int, score_size: int, device: str,
                 progress: bool = True, dataset: str = DEFAULT_DATASET) -> tuple[TaskData, dict]:
    """The data set's training split, decoded and split into train / search / score at
    ``resolution`` (cached per process). ``info`` (the manifest's ``data``) records the data set,
    its source, the split sizes and the images one epoch is (the train half)."""
    spec = get_dataset(dataset)  # CIFAR-10: load_cifar10 and its normalisation, exactly as before
    raw = load_dataset(dataset, Path(data_dir) if data_dir else None, Path(cache_dir), download=data_dir is None,
                       progress=progress)
    splits = make_splits(raw.y_train.numpy(), score_size)
    dev = torch.device(device)

    def take(idx):
        i = torch.as_tensor(idx, dtype=torch.long)
        return to_float(raw.x_train[i], resolution, spec.mean, spec.std).to(dev), raw.y_train[i].to(dev)

    tx, ty = take(splits.train)
    sx, sy = take(splits.search)
    qx, qy = take(splits.score)
    info = {"dataset": dataset, "source": raw.source, "splits": splits.sizes(), "resolution": resolution,
            "num_classes": len(raw.classes), "images_per_epoch": len(splits.train),
            "benchmark_splits": benchmark_splits(dataset, raw)}
    return TaskData(tx, ty, sx, sy, qx, qy, num_classes=len(raw.classes), mean=spec.mean, std=spec.std), info
