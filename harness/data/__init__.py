"""CIFAR-10 data: loading and caching, protocol splits, in-memory batches."""
from harness.data.cifar import CIFAR10_CLASSES, RawImages, find_cifar10, load_cifar10
from harness.data.splits import Splits, make_splits
from harness.data.tensors import CIFAR10_MEAN, CIFAR10_STD, BatchStream, augment, to_float

__all__ = [
    "CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "BatchStream", "RawImages", "Splits",
    "augment", "find_cifar10", "load_cifar10", "make_splits", "to_float",
]
