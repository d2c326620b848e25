"""CIFAR-100 in torchvision's format: ``cifar-100-python/`` with the pickles ``train`` (50,000
images), ``test`` (10,000) and ``meta`` (class names), as the authors distribute them
(``cifar-100-python.tar.gz``) and torchvision downloads them.

Each of ``train``/``test`` is a pickled dict with ``data`` (N x 3072 uint8: 1,024 red, then green,
then blue values of a 32 x 32 image, row-major) and ``fine_labels`` (N ints in [0, 100)); ``meta``
holds ``fine_label_names``. The files are read with :mod:`pickle` (``encoding="latin1"``, as
torchvision does); their shapes and labels are checked instead of MD5 sums.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from harness.core.errors import DataError

FOLDER = "cifar-100-python"
FILES = ("train", "test")
META = "meta"
NUM_CLASSES = 100
ORIGIN = ("download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html (or "
          "torchvision.datasets.CIFAR100(DIR/datasets, download=True)) and unpack it there")


def read_pickle(path: Path, what: str) -> dict:
    """A pickled dict with str keys (Python 2 pickles come back with latin-1 str keys)."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise DataError(f"{what}: {path} is missing; see data/README.md") from None
    except Exception as e:  # noqa: BLE001 -- unpickling raises many types for damaged files
        raise DataError(f"{what}: cannot read {path} ({type(e).__name__}: {e}); replace it with the official file") from e
    if not isinstance(entry, dict):
        raise DataError(f"{what}: {path} holds a {type(entry).__name__}, not the official pickled dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def require_files(folder: Path, names, what: str, expected: str, origin: str) -> Path:
    """``folder`` holding every file in ``names``, else one DataError line saying what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what}: {folder} is not a folder; expected {expected}")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{what}: {folder} lacks {', '.join(missing)}; {origin}")
    return folder


def images_and_labels(entry: dict, path: Path, label_key: str, side: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``entry[data]`` as N x 3 x side x side uint8 and ``entry[label_key]`` as int64."""
    for key in ("data", label_key):
        if key not in entry:
            raise DataError(f"{what}: {path} has no '{key}' entry (keys: {', '.join(map(str, entry))}); "
                            f"it is not the official format")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[label_key])
    values = 3 * side * side
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != values:
        raise DataError(f"{what}: {path} 'data' is {data.dtype} of shape {data.shape}, expected uint8 N x {values} "
                        f"(3 x {side} x {side} per image)")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{what}: {path} '{label_key}' has shape {labels.shape}, expected {len(data)} integer labels")
    return data.reshape(-1, 3, side, side), labels.astype(np.int64)


def read_cifar100(folder: Path, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                 torch.Tensor, list[str]]:
    """(x_train, y_train, x_test, y_test, class names) from ``folder`` (``cifar-100-python/``)."""
    folder = require_files(folder, FILES, "CIFAR-100", f"torchvision's {FOLDER}/ ({', '.join(FILES)}, {META})",
                           ORIGIN)
    out = []
    for name in FILES:
        path = folder / name
        x, y = images_and_labels(read_pickle(path, "CIFAR-100"), path, "fine_labels", 32, "CIFAR-100")
        out += [torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)]
    classes = [str(i) for i in range(NUM_CLASSES)]
    if (folder / META).exists():
        names = read_pickle(folder / META, "CIFAR-100").get("fine_label_names")
        if names is not None:
            if len(names) != NUM_CLASSES:
                raise DataError(f"CIFAR-100: {folder / META} names {len(names)} classes, expected {NUM_CLASSES}")
            classes = [str(n) for n in names]
    return out[0], out[1], out[2], out[3], classes
