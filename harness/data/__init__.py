"""Data: CIFAR-10 (and CIFAR-100, ImageNet16-120) loading and caching, protocol splits, in-memory batches."""
from harness.data.cifar import CIFAR10_CLASSES, RawImages, find_cifar10, load_cifar10
from harness.data.datasets import DATASETS, eval_halves, find_dataset, get_dataset, load_dataset
from harness.data.splits import Splits, make_splits
from harness.data.tensors import CIFAR10_MEAN, CIFAR10_STD, BatchStream, augment, to_float

__all__ = [
    "CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "DATASETS", "BatchStream", "RawImages", "Splits",
    "augment", "eval_halves", "find_cifar10", "find_dataset", "get_dataset", "load_cifar10", "load_dataset",
    "make_splits", "to_float",
]
