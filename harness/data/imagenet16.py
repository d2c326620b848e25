"""ImageNet16-120 from the official 16 x 16 downsampled ImageNet (Chrabaszcz, Loshchilov & Hutter,
2017, "A Downsampled Variant of ImageNet as an Alternative to the CIFAR datasets"), as NB201 reads
it: one folder holding ``train_data_batch_1`` .. ``train_data_batch_10`` and ``val_data``.

Each file is a pickled dict with ``data`` (N x 768 uint8: 256 red, then green, then blue values of
a 16 x 16 image, row-major) and ``labels`` (N ints, **1-based**, 1..1000). NB201's ImageNet16-120
keeps the images whose label is in 1..120 and uses ``label - 1`` as the class, in file order
(batches 1..10, then the validation file): 151,700 training and 6,000 validation images of the
full files' 1,281,167 and 50,000.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.core.errors import DataError
from harness.data.cifar100 import images_and_labels, read_pickle, require_files

FOLDER = "ImageNet16"
TRAIN_FILES = tuple(f"train_data_batch_{k}" for k in range(1, 11))
VAL_FILE = "val_data"
NUM_CLASSES = 120  # NB201's subset: official labels 1..120
SIDE = 16
ORIGIN = ("get the 16x16 downsampled ImageNet (Imagenet16_train.zip, Imagenet16_val.zip; Chrabaszcz et al. 2017) "
          "from https://image-net.org/download-images and unzip both so that train_data_batch_1..10 and "
          "val_data lie side by side in it")


def _subset(path: Path) -> tuple[np.ndarray, np.ndarray]:
    x, labels = images_and_labels(read_pickle(path, "ImageNet16-120"), path, "labels", SIDE, "ImageNet16-120")
    if len(labels) and int(labels.min()) < 1:
        raise DataError(f"ImageNet16-120: {path} has label {int(labels.min())}; the official files' labels are "
                        f"1-based (1..1000): use the official files, not a 0-based re-export")
    keep = labels <= NUM_CLASSES
    return x[keep], labels[keep] - 1


def read_imagenet16_120(folder: Path, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                       torch.Tensor, list[str]]:
    """(x_train, y_train, x_val, y_val, class names) of the 120-class subset from ``folder``."""
    from tqdm.auto import tqdm

    folder = require_files(folder, (*TRAIN_FILES, VAL_FILE), "ImageNet16-120",
                           f"{TRAIN_FILES[0]}..10 and {VAL_FILE} in it", ORIGIN)
    xs, ys = [], []
    for name in tqdm(TRAIN_FILES, desc="decoding ImageNet16-120", unit="file", disable=not progress):
        x, y = _subset(folder / name)  # one file at a time: the subset is ~12% of each
        xs.append(x)
        ys.append(y)
    xv, yv = _subset(folder / VAL_FILE)
    x_train = torch.from_numpy(np.ascontiguousarray(np.concatenate(xs)))
    y_train = torch.from_numpy(np.concatenate(ys))
    classes = [str(k) for k in range(1, NUM_CLASSES + 1)]  # the official 1-based labels
    return x_train, y_train, torch.from_numpy(np.ascontiguousarray(xv)), torch.from_numpy(yv), classes
