"""The data sets a run trains on (``--dataset``): CIFAR-10, CIFAR-100 and ImageNet16-120, the three
NAS-Bench-201 reports. Each is found under the data dir's ``datasets/``, decoded once into the
uint8 cache (``HARNESS_CACHE_DIR/<name>-<key>.pt``) and split as the benchmark uses it:

============== ======= ==== ================= ==============================================
name           classes px   training split    evaluation set
============== ======= ==== ================= ==============================================
cifar10        10      32   50,000 train      10,000 test (whole)
cifar100       100     32   50,000 train      10,000 test, halved: 5,000 valid + 5,000 test
imagenet16-120 120     16   151,700 train     6,000 val, halved: 3,000 valid + 3,000 test
============== ======= ==== ================= ==============================================

The supernet protocol is the same for all three (``harness.data.splits``): a class-balanced half of
the training split trains the weights, the other half gives ``search`` and ``score``; a budget's
``epochs`` counts passes over that half (ImageNet16-120's is about 3x CIFAR's). The evaluation set is
used only by the harness-trained ground truth (the test half; CIFAR-10: the whole test set).

CIFAR-10 is read by ``harness.data.cifar`` exactly as before (its cache, splits and tensors are
unchanged); the others by ``harness.data.cifar100`` and ``harness.data.imagenet16``.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.core.errors import ConfigError, DataError, unknown_name
from harness.core.seeding import numpy_rng
from harness.data import cifar100, imagenet16
from harness.data.cifar import (HOW_TO_PROVIDE, RawImages, _load_cache, _save_cache, cache_key, cifar10_candidates,
                                find_cifar10, first_source, load_cifar10)
from harness.data.tensors import CIFAR10_MEAN, CIFAR10_STD

log = logging.getLogger(__name__)

DEFAULT_DATASET = "cifar10"
READER_VERSION = 1  # of the CIFAR-100 / ImageNet16-120 readers: part of their cache key

Reader = Callable[[Path, bool], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]]


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # what --dataset takes
    label: str  # for messages
    num_classes: int
    image_size: int  # the files' native resolution
    mean: tuple[float, float, float]  # NB201's normalisation, [0, 1] units
    std: tuple[float, float, float]
    train_images: int  # the official training split
    eval_images: int  # the official evaluation set (test, or ImageNet16's val)
    halved: bool  # the evaluation set is halved into valid / test (NB201's x-valid / x-test)
    folder: str = ""  # under DATA_DIR/datasets/
    origin: str = ""  # where the data comes from (one phrase)
    reader: Reader | None = None


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec("cifar10", "CIFAR-10", 10, 32, CIFAR10_MEAN, CIFAR10_STD, 50_000, 10_000, False),
    # NB201 (xautodl get_datasets): CIFAR-100 mean/std 129.3, 124.1, 112.4 / 68.2, 65.4, 70.4 (x 1/255)
    "cifar100": DatasetSpec("cifar100", "CIFAR-100", 100, 32, (129.3 / 255, 124.1 / 255, 112.4 / 255),
                            (68.2 / 255, 65.4 / 255, 70.4 / 255), 50_000, 10_000, True, cifar100.FOLDER,
                            cifar100.ORIGIN, cifar100.read_cifar100),
    # ImageNet16: 122.68, 116.66, 104.01 / 63.22, 61.26, 65.09 (x 1/255)
    "imagenet16-120": DatasetSpec("imagenet16-120", "ImageNet16-120", 120, 16,
                                  (122.68 / 255, 116.66 / 255, 104.01 / 255), (63.22 / 255, 61.26 / 255, 65.09 / 255),
                                  151_700, 6_000, True, imagenet16.FOLDER, imagenet16.ORIGIN,
                                  imagenet16.read_imagenet16_120),
}


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    return DATASETS[name]


def check_dataset(name: str) -> DatasetSpec:
    """The spec, or a one-line ConfigError for ``--dataset NAME`` naming the choices."""
    try:
        return get_dataset(name)
    except ConfigError as exc:
        raise ConfigError(f"--dataset {name}: {exc}") from None


# --- finding the files ---------------------------------------------------------------------
def candidates(name: str, data_dir: Path) -> list[Path]:
    """The places looked at for ``name`` under ``data_dir``, in priority order."""
    spec = get_dataset(name)
    if spec.reader is None:
        return cifar10_candidates(data_dir)
    return [Path(data_dir) / "datasets" / spec.folder]


def find_dataset(name: str, data_dir: Path) -> Path:
    """The source of ``name`` under ``data_dir``; a missing data set is one DataError line naming
    the folders searched and where the data comes from."""
    spec = get_dataset(name)
    if spec.reader is None:
        return find_cifar10(data_dir)
    data_dir = Path(data_dir).expanduser()
    return first_source(data_dir, candidates(name, data_dir), (spec.folder,), spec.label, spec.origin)


def check_available(name: str, data_dir: Path | None) -> None:
    """Raise the one-line DataError ``load_dataset`` would, without reading anything: the data set
    is not under ``data_dir``, or there is no data dir and it cannot be downloaded (CIFAR-10 and
    CIFAR-100 can be, by torchvision)."""
    spec = get_dataset(name)
    if data_dir is not None:
        find_dataset(name, Path(data_dir))
    elif spec.reader is not None and spec.name != "cifar100":
        raise DataError(f"no data dir given for {spec.label}, and it cannot be downloaded automatically: "
                        f"{spec.origin}; {HOW_TO_PROVIDE}")


# --- checks and the cache --------------------------------------------------------------------
def check_images(raw: RawImages, spec: DatasetSpec) -> str | None:
    """What is wrong with ``raw`` as ``spec``'s data, or None."""
    if len(raw.classes) != spec.num_classes:
        return f"{len(raw.classes)} classes, expected {spec.num_classes}"
    side = spec.image_size
    for split in ("train", "test"):
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            return f"{split} arrays are not tensors"
        if x.dtype != torch.uint8 or x.dim() != 4 or tuple(x.shape[1:]) != (3, side, side):
            return f"x_{split} has dtype {x.dtype} and shape {tuple(x.shape)}, expected uint8 N x 3 x {side} x {side}"
        if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
            return f"y_{split} has dtype {y.dtype} and shape {tuple(y.shape)}, expected int64 of length {x.shape[0]}"
        if y.numel() == 0:
            return f"the {split} split is empty"
        if int(y.min()) < 0 or int(y.max()) >= spec.num_classes:
            return f"y_{split} has labels outside [0, {spec.num_classes})"
        counts = torch.bincount(y, minlength=spec.num_classes)
        missing = [raw.classes[c] for c, n in enumerate(counts.tolist()) if n == 0]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            return f"the {split} split has no images of class {', '.join(missing[:5])}{more}"
    return None


def cache_path(name: str, source: Path, cache_dir: Path) -> Path:
    """``cache_dir/<name>-<key>.pt``; the key hashes the source (path, sizes, mtimes), the cache
    format and the reader's version."""
    text = f"{name}|r{READER_VERSION}|{cache_key(source)}"
    return Path(cache_dir).expanduser() / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.pt"


def _download(spec: DatasetSpec, root: Path) -> Path:
    check_available(spec.name, None)
    import torchvision

    root.mkdir(parents=True, exist_ok=True)
    try:
        torchvision.datasets.CIFAR100(str(root), train=True, download=True)
    except Exception as e:  # noqa: BLE001 -- network errors of all kinds
        raise DataError(f"downloading CIFAR-100 into {root} failed ({type(e).__name__}: {e}); {HOW_TO_PROVIDE}") from e
    return root / spec.folder


def load_dataset(name: str, data_dir: Path | None, cache_dir: Path, download: bool = False,
                 progress: bool = True) -> RawImages:
    """``name``'s training split and evaluation set (whole) as uint8 tensors, decoded once then read
    from ``cache_dir``. CIFAR-10: ``load_cifar10`` itself."""
    spec = get_dataset(name)
    if spec.reader is None:
        return load_cifar10(data_dir, cache_dir, download=download, progress=progress)
    cache_dir = Path(cache_dir).expanduser()
    if data_dir is None:
        if not download:
            raise DataError(f"no data dir given for {spec.label}; {HOW_TO_PROVIDE}")
        source = cache_dir / "torchvision" / spec.folder
        if not source.exists():
            source = _download(spec, cache_dir / "torchvision")
    else:
        source = find_dataset(name, Path(data_dir))
    source = source.resolve()
    try:
        cpath = cache_path(name, source, cache_dir)
    except OSError as e:
        raise DataError(f"cannot read {spec.label} source {source}: {e}") from e
    if cpath.exists():
        raw = _load_cache(cpath, check=lambda r: check_images(r, spec), what=spec.label)
        if raw is not None:
            log.debug("%s loaded from cache %s", spec.label, cpath)
            return raw
    log.info("decoding %s from %s (once; cached in %s)", spec.label, source, cpath)
    x_train, y_train, x_eval, y_eval, classes = spec.reader(source, progress)
    raw = RawImages(x_train=x_train, y_train=y_train, x_test=x_eval, y_test=y_eval, classes=classes,
                    source=f"{spec.folder}:{source}")
    problem = check_images(raw, spec)
    if problem:
        raise DataError(f"{source} is not usable {spec.label}: {problem}")
    for what, n, official in (("training", len(y_train), spec.train_images), ("evaluation", len(y_eval),
                                                                               spec.eval_images)):
        if n != official:
            log.warning("%s at %s has %d %s images; the official set has %d", spec.label, source, n, what, official)
    _save_cache(raw, cpath, what=spec.label)
    return raw


# --- the benchmark's splits of the evaluation set ----------------------------------------------
def eval_halves(y_eval: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(valid, test): the evaluation set halved, class-balanced (per class a seeded permutation split
    in half; ``valid`` gets the smaller half of an odd class), as sorted index arrays. Depends only on
    the labels and ``seed`` (the protocol's, never a job's)."""
    y = np.asarray(y_eval)
    rng = numpy_rng("eval-halves", int(seed))
    valid, test = [], []
    for c in np.unique(y):
        perm = rng.permutation(np.flatnonzero(y == c))
        half = len(perm) // 2
        valid.append(perm[:half])
        test.append(perm[half:])

    def cat(parts):
        return np.sort(np.concatenate(parts).astype(np.int64)) if parts else np.empty(0, np.int64)

    return cat(valid), cat(test)


def final_test_set(name: str, raw: RawImages) -> tuple[torch.Tensor, torch.Tensor]:
    """The images a trained network is measured on: CIFAR-10's whole test set, else the test half."""
    if not get_dataset(name).halved:
        return raw.x_test, raw.y_test
    _, test = eval_halves(raw.y_test.numpy())
    idx = torch.as_tensor(test, dtype=torch.long)
    return raw.x_test[idx], raw.y_test[idx]


def benchmark_splits(name: str, raw: RawImages) -> dict[str, int]:
    """Image counts of the benchmark's splits (the manifest's record)."""
    if not get_dataset(name).halved:
        return {"train": len(raw.y_train), "test": len(raw.y_test)}
    valid, test = eval_halves(raw.y_test.numpy())
    return {"train": len(raw.y_train), "valid": len(valid), "test": len(test)}


__all__ = ["DATASETS", "DEFAULT_DATASET", "DatasetSpec", "benchmark_splits", "cache_path", "candidates",
           "check_available", "check_dataset", "check_images", "eval_halves", "final_test_set", "find_dataset", "get_dataset",
           "load_dataset"]
